"""The engine: its sessions as the plan asks for them, and a plan's refusal before anything loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import ModelsNotReadyError
from shared.settings import WorkerSettings
from workers import engine
from workers.engine import load_engine
from workers.plan import plan
from workers.sessions import CPU, CUDA, TENSORRT

GPU_BUILD = [TENSORRT, CUDA, CPU]
CPU_BUILD = ["AzureExecutionProvider", CPU]


def _worker(**values: object) -> WorkerSettings:
    return WorkerSettings(**values)


def test_plate_mask_windows_skip_tensorrt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each plate's mask window has its own size: TensorRT would build an engine per size."""
    asked: list[list[str]] = []
    monkeypatch.setattr(engine, "create_session", lambda path, providers, **kw: asked.append(providers))
    chosen = plan(_worker(enable_tensorrt=True), GPU_BUILD, cores=8, fast_int8=True)
    engine.open_session(tmp_path / "body.onnx", chosen, tmp_path, openvino=False)
    engine.open_session(tmp_path / "masks.onnx", chosen, tmp_path, openvino=False, tensorrt=False)
    assert asked == [[TENSORRT, CUDA, CPU], [CUDA, CPU]]


def test_load_engine_with_require_gpu_refuses_before_loading(tmp_path: Path) -> None:
    with pytest.raises(ModelsNotReadyError, match="GPU is required"):
        load_engine(_worker(require_gpu=True, model_dir=tmp_path), available=CPU_BUILD)
    assert not any(tmp_path.iterdir())  # failed before fetching anything
