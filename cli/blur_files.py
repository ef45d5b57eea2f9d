"""``veil blur``'s inputs: the files under the paths given, each with the relative path its result mirrors,
told apart as images (photos and videos: :func:`shared.imageformat.sniff_format`,
:func:`~shared.imageformat.sniff_video`) or not by their first bytes, never by name.

A folder's files keep their path below that folder; a file given by name keeps its name. The output folder
is never walked (when it lies inside an input folder, its results are not inputs of the next run).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.imageformat import SNIFF_BYTES, sniff_format, sniff_video
from shared.jobs import ImageFormat, MediaFormat, VideoFormat

SUFFIXES: dict[MediaFormat, tuple[str, ...]] = {
    ImageFormat.JPEG: (".jpg", ".jpeg", ".jpe"),
    ImageFormat.PNG: (".png",),
    ImageFormat.WEBP: (".webp",),
    # A video's result is an MP4 (a MOV, MKV or WebM input's result gets ".mp4" added).
    VideoFormat.MP4: (".mp4", ".m4v"),
    VideoFormat.MOV: (".mov",),
    VideoFormat.MKV: (".mkv",),
    VideoFormat.WEBM: (".webm",),
}


class InputError(Exception):
    """The paths given cannot be blurred into the output folder as asked."""


@dataclass(frozen=True)
class InputFile:
    path: Path
    rel: str  # POSIX-style, relative to the folder it was found in (its name for a file given by name)
    size: int
    mtime_ns: int


@dataclass
class Inputs:
    images: list[InputFile]  # photos and videos
    others: list[InputFile]  # not JPEG, PNG, WebP, MP4, MOV, MKV or WebM: skipped, listed at the end
    unreadable: list[tuple[str, str]]  # (relative path, why): failures, counted as such


def sniff_media(head: bytes) -> MediaFormat | None:
    """A photo's or a video's format from a file's first :data:`SNIFF_BYTES`; None for anything else."""
    return sniff_format(head) or sniff_video(head)


def output_rel(rel: str, fmt: MediaFormat) -> str:
    """Where a result goes: the input's relative path, with the format's suffix added when its own suffix
    is not one of that format's (``a.JPG`` stays, a PNG named ``a.jpg`` becomes ``a.jpg.png``): appending
    rather than replacing keeps two inputs from ever sharing an output."""
    if Path(rel).suffix.lower() in SUFFIXES[fmt]:
        return rel
    return rel + SUFFIXES[fmt][0]


def check_out_dir(paths: Sequence[Path], out: Path) -> None:
    """Refuse an output folder that is an input or holds one: a result could land on an original."""
    out = out.resolve()
    for path in paths:
        given = path.resolve()
        if given == out or out in given.parents:
            raise InputError(f"--out {out} holds the input {path}: pick a folder outside it")


def _walk(root: Path, skip: Path) -> Iterator[Path]:
    # Symlinked folders are not followed (no loops); symlinked files are read like files.
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if (here / d).resolve() != skip)
        for name in sorted(files):
            yield here / name


def _entry(path: Path, rel: str) -> tuple[InputFile, bool]:
    """The file's entry and whether it is an image; OSError if it cannot be read."""
    with path.open("rb") as handle:
        stat = os.fstat(handle.fileno())
        is_image = sniff_media(handle.read(SNIFF_BYTES)) is not None
    return InputFile(path=path, rel=rel, size=stat.st_size, mtime_ns=stat.st_mtime_ns), is_image


def find_inputs(paths: Sequence[Path], out: Path) -> Inputs:
    """Every file under ``paths`` (recursively, sorted), split into images and the rest. Two inputs with
    the same relative path (from two folders given) would share an output: an :class:`InputError`."""
    skip = out.resolve()
    found: dict[str, Path] = {}
    for given in paths:
        if given.is_dir():
            pairs = [(p, p.relative_to(given).as_posix()) for p in _walk(given, skip)]
        elif given.is_file():
            pairs = [(given, given.name)]
        else:
            raise InputError(f"{given}: no such file or folder")
        for path, rel in pairs:
            if rel in found:
                raise InputError(f"{found[rel]} and {path} would both be written to {rel}")
            found[rel] = path
    inputs = Inputs(images=[], others=[], unreadable=[])
    for rel, path in found.items():
        try:
            entry, is_image = _entry(path, rel)
        except OSError as exc:  # vanished, a broken link, no permission: listed, the rest go on
            inputs.unreadable.append((rel, exc.strerror or str(exc)))
            continue
        (inputs.images if is_image else inputs.others).append(entry)
    return inputs
