"""``veil blur``'s resume state and atomic result writes: what counts as finished, what survives a kill
mid-line, one run per output folder."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from cli.blur_files import InputFile
from cli.blur_output import write_atomic
from cli.blur_state import STATE_DIR, STATE_FILE, BlurState, Finished, StateError

OPTIONS = {"targets": "faces"}


def _item(rel: str = "a/b.jpg", size: int = 10, mtime_ns: int = 123) -> InputFile:
    return InputFile(path=Path("/in") / rel, rel=rel, size=size, mtime_ns=mtime_ns)


def _finish(state: BlurState, item: InputFile, options: dict[str, str] = OPTIONS) -> Finished:
    entry = Finished(
        rel=item.rel,
        size=item.size,
        mtime_ns=item.mtime_ns,
        options=options,
        output=item.rel,
        job="job-1",
        detections=[{"class": "face", "score": 0.9, "box": [1, 2, 3, 4]}],
        blurred_regions=[[1, 2, 3, 4]],
    )
    write_atomic(state.temp_dir, state.out / entry.output, b"blurred")
    state.record(entry)
    return entry


def test_a_recorded_file_is_finished_in_the_next_run(tmp_path: Path) -> None:
    item = _item()
    with BlurState.open(tmp_path) as state:
        assert state.finished(item, OPTIONS) is None
        entry = _finish(state, item)
    with BlurState.open(tmp_path) as state:
        assert state.finished(item, OPTIONS) == entry


@pytest.mark.parametrize(
    "changed",
    [
        {"size": 11},
        {"mtime_ns": 124},
    ],
)
def test_a_changed_file_is_sent_again(tmp_path: Path, changed: dict[str, int]) -> None:
    item = _item()
    with BlurState.open(tmp_path) as state:
        _finish(state, item)
    with BlurState.open(tmp_path) as state:
        assert state.finished(dataclasses.replace(item, **changed), OPTIONS) is None  # type: ignore[arg-type]


def test_other_options_or_a_deleted_result_send_it_again(tmp_path: Path) -> None:
    item = _item()
    with BlurState.open(tmp_path) as state:
        _finish(state, item)
        assert state.finished(item, {"targets": "plates"}) is None
        (tmp_path / item.rel).unlink()
        assert state.finished(item, OPTIONS) is None


def test_the_latest_line_for_a_path_wins(tmp_path: Path) -> None:
    with BlurState.open(tmp_path) as state:
        _finish(state, _item(size=10))
        _finish(state, _item(size=20))
    with BlurState.open(tmp_path) as state:
        assert state.finished(_item(size=10), OPTIONS) is None
        assert state.finished(_item(size=20), OPTIONS) is not None


def test_a_line_cut_short_by_a_kill_is_ignored_and_the_next_one_kept(tmp_path: Path) -> None:
    with BlurState.open(tmp_path) as state:
        _finish(state, _item("one.jpg"))
    state_file = tmp_path / STATE_DIR / STATE_FILE
    with state_file.open("ab") as handle:
        handle.write(b'{"rel":"two.jpg","si')  # killed mid-write
    with BlurState.open(tmp_path) as state:
        assert state.finished(_item("one.jpg"), OPTIONS) is not None
        assert state.finished(_item("two.jpg"), OPTIONS) is None
        _finish(state, _item("three.jpg"))
    with BlurState.open(tmp_path) as state:
        assert state.finished(_item("three.jpg"), OPTIONS) is not None
    assert len(state_file.read_bytes().splitlines()) == 3  # one, the torn line, three


def test_one_run_per_output_folder(tmp_path: Path) -> None:
    with BlurState.open(tmp_path), pytest.raises(StateError, match="another `veil blur` is writing"):
        BlurState.open(tmp_path)
    BlurState.open(tmp_path).close()  # released on close


def test_results_a_killed_run_was_writing_are_cleared(tmp_path: Path) -> None:
    with BlurState.open(tmp_path) as state:
        (state.temp_dir / "x.part").write_bytes(b"half")
    with BlurState.open(tmp_path) as state:
        assert list(state.temp_dir.iterdir()) == []


def test_an_unwritable_output_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StateError, match="cannot write the state"):
        BlurState.open(blocker)


def test_write_atomic_writes_whole_files_and_leaves_no_temporary(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    target = tmp_path / "deep" / "er" / "a.jpg"
    write_atomic(temp, target, b"data")
    assert target.read_bytes() == b"data"
    assert os.listdir(temp) == []
    (tmp_path / "taken").mkdir()  # a folder where the result should go: the rename fails
    with pytest.raises(IsADirectoryError):
        write_atomic(temp, tmp_path / "taken", b"data")
    assert os.listdir(temp) == []
