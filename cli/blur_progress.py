"""``veil blur``'s progress on stderr: a tqdm bar (done/total, failed, rate, ETA) on a terminal, one plain
line per finished file otherwise (logs and CI keep every line; a bar would leave carriage returns there).

Counts start at the files an earlier run finished, so a resumed run shows where the whole folder stands;
rate and ETA are this run's own.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Protocol, TextIO

from tqdm import tqdm


class Progress(Protocol):
    def finished(self, rel: str, ok: bool, note: str) -> None:
        """One file done (``ok``) or failed; ``note`` is what was found, or the error code."""

    def note(self, text: str) -> None:
        """A line that is not a file's (an interruption), kept clear of the bar."""

    def close(self) -> None: ...


def eta_text(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class BarProgress:
    def __init__(self, total: int, already: int, stream: TextIO) -> None:
        self.failed = 0
        # Sized once, by shutil: a pty that reports 0x0 (as `script` makes) would get no bar at all from
        # tqdm's own probe; shutil falls back to 80x24 there.
        size = shutil.get_terminal_size()
        self.bar = tqdm(
            total=total,
            initial=already,
            file=stream,
            unit="img",
            desc="blur",
            ncols=size.columns,
            nrows=size.lines,
            smoothing=0.1,
        )
        self.bar.set_postfix(failed=0)

    def finished(self, rel: str, ok: bool, note: str) -> None:
        if not ok:
            self.failed += 1
            self.bar.write(f"failed {rel}: {note}", file=self.bar.fp)
        self.bar.set_postfix(failed=self.failed, refresh=False)
        self.bar.update(1)

    def note(self, text: str) -> None:
        self.bar.write(text, file=self.bar.fp)

    def close(self) -> None:
        self.bar.close()


class LineProgress:
    def __init__(
        self, total: int, already: int, stream: TextIO, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.total, self.done, self.failed, self.stream, self.clock = total, already, 0, stream, clock
        self.this_run = 0
        self.start = clock()

    def finished(self, rel: str, ok: bool, note: str) -> None:
        self.done += 1
        self.this_run += 1
        self.failed += 0 if ok else 1
        elapsed = self.clock() - self.start
        rate = self.this_run / elapsed if elapsed > 0 else 0.0
        eta = eta_text((self.total - self.done) / rate) if rate > 0 else "?"
        width = len(str(self.total))
        self.stream.write(
            f"[{self.done:>{width}}/{self.total}] {'ok' if ok else 'FAILED'} {rel} ({note}) "
            f"failed {self.failed} · {rate:.2f} img/s · ETA {eta}\n"
        )
        self.stream.flush()

    def note(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


def make_progress(total: int, already: int, stream: TextIO) -> Progress:
    """A bar when ``stream`` is a terminal, lines otherwise."""
    if stream.isatty():
        return BarProgress(total, already, stream)
    return LineProgress(total, already, stream)
