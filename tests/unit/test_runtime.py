from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from shared.errors import ModelsNotReadyError
from workers.runtime import CPU, CUDA, TENSORRT, create_session, provider_options, select_providers

GPU_BUILD = [TENSORRT, CUDA, CPU]
CPU_BUILD = ["AzureExecutionProvider", CPU]


def test_cuda_preferred_when_available() -> None:
    chosen = select_providers([CUDA, CPU], GPU_BUILD, enable_tensorrt=False, require_gpu=False)
    assert chosen == [CUDA, CPU]


def test_tensorrt_only_when_enabled_and_first() -> None:
    assert select_providers([CUDA, CPU], GPU_BUILD, enable_tensorrt=True, require_gpu=False) == [
        TENSORRT,
        CUDA,
        CPU,
    ]
    # Listed in the preference but not enabled: left out (engine builds are slow and opt-in).
    assert select_providers([TENSORRT, CUDA], GPU_BUILD, enable_tensorrt=False, require_gpu=False) == [
        CUDA,
        CPU,
    ]


def test_tensorrt_enabled_but_missing_is_skipped() -> None:
    assert select_providers([CUDA, CPU], [CUDA, CPU], enable_tensorrt=True, require_gpu=False) == [CUDA, CPU]


def test_cpu_always_last_and_once() -> None:
    assert select_providers([CPU, CUDA], GPU_BUILD, enable_tensorrt=False, require_gpu=False) == [CUDA, CPU]
    assert select_providers([], CPU_BUILD, enable_tensorrt=False, require_gpu=False) == [CPU]
    assert select_providers([CUDA], CPU_BUILD, enable_tensorrt=True, require_gpu=False) == [CPU]


def test_unavailable_preferences_are_dropped_in_order() -> None:
    available = ["ROCMExecutionProvider", CUDA, CPU]
    chosen = select_providers(
        ["OpenVINOExecutionProvider", CUDA, "ROCMExecutionProvider"],
        available,
        enable_tensorrt=False,
        require_gpu=False,
    )
    assert chosen == [CUDA, "ROCMExecutionProvider", CPU]


def test_require_gpu_without_gpu_raises() -> None:
    with pytest.raises(ModelsNotReadyError, match="GPU is required"):
        select_providers([CUDA, CPU], CPU_BUILD, enable_tensorrt=False, require_gpu=True)


def test_require_gpu_with_gpu_passes() -> None:
    chosen = select_providers([CUDA, CPU], GPU_BUILD, enable_tensorrt=False, require_gpu=True)
    assert chosen[0] == CUDA


def test_provider_options(tmp_path: Path) -> None:
    cuda = provider_options(CUDA, model_dir=tmp_path)
    assert cuda["cudnn_conv_algo_search"] == "DEFAULT"
    assert cuda["arena_extend_strategy"] == "kSameAsRequested"
    trt = provider_options(TENSORRT, model_dir=tmp_path)
    assert trt["trt_fp16_enable"] == "True"
    assert trt["trt_engine_cache_enable"] == "True"
    cache = Path(trt["trt_engine_cache_path"])
    assert cache.is_dir()
    assert cache.is_relative_to(tmp_path)
    assert provider_options(CPU, model_dir=tmp_path) == {}


def _tiny_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def test_create_session_runs_on_cpu(tmp_path: Path) -> None:
    model = _tiny_model(tmp_path / "tiny.onnx")
    session = create_session(model, [CPU], intra_op_threads=1, model_dir=tmp_path)
    assert session.get_providers() == [CPU]
    (out,) = session.run(None, {"x": np.array([[-1.0, 2.0]], dtype=np.float32)})
    assert out.tolist() == [[0.0, 2.0]]


@pytest.mark.gpu
@pytest.mark.skipif(CUDA not in ort.get_available_providers(), reason="CUDAExecutionProvider not available")
def test_create_session_uses_cuda(tmp_path: Path) -> None:
    model = _tiny_model(tmp_path / "tiny.onnx")
    providers = select_providers(
        [CUDA, CPU], ort.get_available_providers(), enable_tensorrt=False, require_gpu=True
    )
    session = create_session(model, providers, intra_op_threads=0, model_dir=tmp_path)
    assert session.get_providers()[0] == CUDA
