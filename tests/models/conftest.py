"""Real models, fetched once into .cache/models (the same cache `make models` fills)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.detectors import FaceDetector, PlateDetector
from workers.models.prepare import ModelPaths, ensure_models, ensure_plate_model
from workers.sessions import CPU, create_session

MODEL_DIR = Path(".cache/models")


@pytest.fixture(scope="session")
def model_paths() -> ModelPaths:
    return ensure_models(MODEL_DIR)


@pytest.fixture(scope="session")
def face_detector(model_paths: ModelPaths) -> FaceDetector:
    return FaceDetector(create_session(model_paths.faces, [CPU], intra_op_threads=0, model_dir=MODEL_DIR))


@pytest.fixture(scope="session")
def plate_detector(model_paths: ModelPaths) -> PlateDetector:
    files = ensure_plate_model(MODEL_DIR, "fp32")  # derived: cut before the decoding, any input size
    return PlateDetector(
        create_session(files.body, [CPU], intra_op_threads=0, model_dir=MODEL_DIR),
        create_session(files.masks, [CPU], intra_op_threads=0, model_dir=MODEL_DIR),
    )
