"""``veil blur``'s resume state: which inputs are finished, in an append-only JSON-lines file in the output
folder (``.veil-blur/state.jsonl``), one line per finished file written and fsynced once its result is in
place, so a run that is interrupted or killed loses at most the files it had in flight.

An input is finished when a line has its relative path, size, mtime (ns) and the job options it was sent
with, and the result that line names still exists: a changed file, other options or a deleted result send
it again. A line cut short by a kill is ignored. One run at a time per output folder (an ``flock``).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cli.blur_files import InputFile

STATE_DIR = ".veil-blur"  # in the output folder; holds the state file and results being written
STATE_FILE = "state.jsonl"
TEMP_DIR = "tmp"


class StateError(Exception):
    """The state cannot be opened (another run holds it, or the folder cannot be written)."""


@dataclass(frozen=True)
class Finished:
    rel: str
    size: int
    mtime_ns: int
    options: dict[str, str]
    output: str  # the result's path relative to the output folder
    job: str
    detections: list[Any]
    blurred_regions: list[Any]


def _parse(line: bytes) -> Finished | None:
    try:
        return Finished(**json.loads(line))
    except (ValueError, TypeError):  # cut short by a kill, or not ours: as if absent
        return None


class BlurState:
    """Open with :meth:`open`; holds the output folder's lock until :meth:`close`."""

    def __init__(self, out: Path, handle: BinaryIO, entries: dict[str, Finished]) -> None:
        self.out = out
        self.temp_dir = out / STATE_DIR / TEMP_DIR
        self._handle = handle
        self._entries = entries  # the latest line per relative path

    @classmethod
    def open(cls, out: Path) -> BlurState:
        folder = out / STATE_DIR
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle = (folder / STATE_FILE).open("a+b")
        except OSError as exc:
            raise StateError(f"cannot write the state in {folder}: {exc}") from exc
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise StateError(f"another `veil blur` is writing to {out}") from exc
        handle.seek(0)
        text = handle.read()
        if text and not text.endswith(b"\n"):
            handle.write(b"\n")  # end a line cut short, so the next one starts clean
        entries = {f.rel: f for f in map(_parse, text.splitlines()) if f is not None}
        temp = folder / TEMP_DIR
        shutil.rmtree(temp, ignore_errors=True)  # results a killed run was writing
        temp.mkdir()
        return cls(out, handle, entries)

    def finished(self, item: InputFile, options: dict[str, str]) -> Finished | None:
        """The line saying ``item`` is done with these options, if it is and its result is still there."""
        entry = self._entries.get(item.rel)
        if entry is None or (entry.size, entry.mtime_ns, entry.options) != (
            item.size,
            item.mtime_ns,
            options,
        ):
            return None
        return entry if (self.out / entry.output).is_file() else None

    def record(self, entry: Finished) -> None:
        """Append ``entry`` and fsync it: call once its result is in place."""
        self._handle.write(json.dumps(asdict(entry), separators=(",", ":")).encode() + b"\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._entries[entry.rel] = entry

    def close(self) -> None:
        self._handle.close()  # releases the lock

    def __enter__(self) -> BlurState:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
