"""onnxruntime sessions: each provider's options, and a session created from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from workers.plan import select_providers
from workers.sessions import CPU, CUDA, TENSORRT, create_session, provider_options


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


def test_create_session_without_spinning(tmp_path: Path) -> None:
    model = _tiny_model(tmp_path / "tiny.onnx")
    session = create_session(model, [CPU], intra_op_threads=2, model_dir=tmp_path, allow_spinning=False)
    (out,) = session.run(None, {"x": np.array([[3.0, -2.0]], dtype=np.float32)})
    assert out.tolist() == [[3.0, 0.0]]
