"""Writing ``veil blur``'s results whole or not at all: each goes to a temporary file in the output folder
(same file system), is fsynced, then renamed over its place, so an interrupted run never leaves a partial
image where a result belongs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(temp_dir: Path, target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=temp_dir, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
