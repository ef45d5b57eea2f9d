"""``veil eval``'s labelled set: the labels file, what it labels (plates or faces) and its images."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click


class EvalError(click.ClickException):
    pass


def load_labels(path: Path) -> list[dict[str, Any]]:
    """The labels: a JSON list of objects with at least ``file`` and ``boxes``."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EvalError(f"cannot read labels {path}: {exc}") from exc
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and "file" in e and "boxes" in e for e in entries
    ):
        raise EvalError(f"{path}: expected a JSON list of objects with 'file' and 'boxes'")
    return entries


def infer_kind(entries: Sequence[dict[str, Any]]) -> str:
    """``plates`` or ``faces``, from the labels' informational keys."""
    keys = set().union(*(entry.keys() for entry in entries)) if entries else set()
    if {"country", "plate_texts"} & keys:
        return "plates"
    if {"subset", "classes"} & keys:
        return "faces"
    raise EvalError("cannot tell whether the labels are plates or faces; pass --targets")


def image_files(entries: Sequence[dict[str, Any]], images_dir: Path) -> list[Path]:
    """The labelled images, in the labels' order; an error naming the first missing ones."""
    files = [images_dir / entry["file"] for entry in entries]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise EvalError(
            f"{len(missing)} labelled images are missing from {images_dir}: {', '.join(missing[:5])}"
        )
    return files
