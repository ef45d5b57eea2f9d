"""``veil blur``'s progress: plain lines (counts, rate and ETA from an injected clock) when not on a
terminal, a tqdm bar on one."""

from __future__ import annotations

import io

from cli.blur_progress import BarProgress, LineProgress, eta_text, make_progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_count_from_earlier_runs_with_this_runs_rate() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = LineProgress(total=10, already=4, stream=stream, clock=clock)
    clock.now += 2.0
    progress.finished("a/b.jpg", True, "1 face")
    clock.now += 2.0
    progress.finished("c.png", False, "VALIDATION_ERROR")
    progress.note("interrupted")
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[ 5/10] ok a/b.jpg (1 face) failed 0 · 0.50 img/s · ETA 0:10"
    assert lines[1] == "[ 6/10] FAILED c.png (VALIDATION_ERROR) failed 1 · 0.50 img/s · ETA 0:08"
    assert lines[2] == "interrupted"


def test_eta_text() -> None:
    assert eta_text(0) == "0:00"
    assert eta_text(75.4) == "1:15"
    assert eta_text(3 * 3600 + 61) == "3:01:01"


def test_a_terminal_gets_a_bar_and_a_pipe_gets_lines() -> None:
    assert isinstance(make_progress(3, 0, io.StringIO()), LineProgress)
    terminal = Terminal()
    bar = make_progress(3, 1, terminal)
    assert isinstance(bar, BarProgress)
    bar.finished("a.jpg", True, "nothing found")
    bar.finished("b.jpg", False, "DETECTION_FAILED")
    bar.close()
    shown = terminal.getvalue()
    assert "3/3" in shown
    assert "failed=1" in shown
    assert "failed b.jpg: DETECTION_FAILED" in shown
