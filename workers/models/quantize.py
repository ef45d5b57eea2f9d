"""Derived plate models: float32 with dynamic axes, and an int8 (QDQ, per-channel) variant for CPUs.

platedet ships as float16, 1x3x640x640, with batch 1 and the 640x640 anchor grid (8400 cells) baked into
its box decoding (constant anchor points and strides, Reshape targets such as ``[1, 4, 16, 8400]``). Every
derived variant is cut just before that decoding (:func:`cut_plate_head`): the model then ends at the raw
head outputs, which hold no size, and :mod:`workers.detectors.plates` decodes them for whatever input it
gave. That makes height and width dynamic, so a 16:9 photo runs as 640x384 instead of 640x640 (40 % less
work), and only the few candidates above the threshold go through the distance decoding. The remaining
Reshape targets that bake in batch 1 (``[1, 65, -1]``) get a 0 ("copy this dimension from the input").
The worker runs each variant as two halves (:func:`split_plate_masks`): the mask prototypes are computed
only in a window around each plate found.

CPU kernels for float16 are emulated, so the float32 copy costs the same per pass; int8 with VNNI/AMX is
what makes the CPU path fast. Static quantization is calibrated on real photos (scikit-image's sample
photos, read from its wheel, never from a model hub) with synthetic plates pasted in, so the activation
ranges of the plate channels are seen. Deterministic: same inputs, same file.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

RGB = npt.NDArray[np.uint8]
PLATE_SIZE = 640
PAD_VALUE = 114
_FLOAT16 = 10
_FLOAT = 1
_MIN_OPSET = 13
FACE_PERCENTILE = 99.999


def float16_to_float32(model: Any) -> Any:
    """Return a copy of ``model`` computing in float32: weights, constants, casts and I/O types."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for index, init in enumerate(graph.initializer):
        if init.data_type == _FLOAT16:
            array = numpy_helper.to_array(init).astype(np.float32)
            graph.initializer[index].CopyFrom(numpy_helper.from_array(array, init.name))
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == _FLOAT16:
                attr.i = _FLOAT
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == _FLOAT16:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float32)))
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type == _FLOAT16:
            value.type.tensor_type.elem_type = _FLOAT
    return model


# The head tensors the plate detector decodes itself, under the names the derived models give them.
PLATE_HEAD = {
    # b x 65 x anchors: per anchor 4 sides x 16 distance bins (DFL logits) and the plate logit; anchors
    # are the cells of the stride 8, 16 and 32 grids, row by row, one grid after the other.
    "raw": "/model.22/Concat_4_output_0",
    "mask_coeffs": "/model.22/Concat_output_0",  # b x 32 x anchors
    "mask_protos": "output1",  # b x 32 x H/4 x W/4
}


def cut_plate_head(model: Any, head: dict[str, str] | None = None) -> Any:
    """Make ``head``'s tensors (new name -> tensor in the export) the model's only outputs and drop what
    no longer feeds them; the input's height and width become dynamic."""
    import onnx

    head = PLATE_HEAD if head is None else head
    graph = model.graph
    produced = {output for node in graph.node for output in node.output}
    missing = [tensor for tensor in head.values() if tensor not in produced]
    if missing:
        raise ValueError(f"not a platedet export: no {missing}")
    renamed = {tensor: name for name, tensor in head.items()}
    inferred = onnx.shape_inference.infer_shapes(model).graph
    infos = {info.name: info for info in [*inferred.value_info, *inferred.output]}
    needed = set(head.values())
    kept = []
    for node in reversed(graph.node):
        if any(output in needed for output in node.output):
            kept.append(node)
            needed.update(node.input)
    kept.reverse()
    for node in kept:
        for index, output in enumerate(node.output):
            if output in renamed:
                node.output[index] = renamed[output]
    del graph.node[:]
    graph.node.extend(kept)
    initializers = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    del graph.output[:]
    for name, tensor in head.items():
        output = graph.output.add()
        output.CopyFrom(infos[tensor])
        output.name = name
        for axis, dim in enumerate(output.type.tensor_type.shape.dim):
            if axis != 1:  # channels stay fixed; batch, anchors and spatial sizes follow the input
                dim.dim_param = f"{name}_{axis}"
    dims = graph.input[0].type.tensor_type.shape.dim
    if len(dims) == 4:
        dims[2].dim_param, dims[3].dim_param = "height", "width"
    del graph.value_info[:]
    return model


# The neck's stride-8 feature map (batch x 128 x H/8 x W/8): the mask prototypes are computed from it alone.
PLATE_FEATURES = "/model.15/cv2/act/Mul_output_0"


def split_plate_masks(model: Any, features: str = PLATE_FEATURES) -> tuple[Any, Any]:
    """Split a cut plate model (outputs ``raw``, ``mask_coeffs``, ``mask_protos``) in two.

    The body ends at ``raw``, ``mask_coeffs`` and the stride-8 ``features``; the mask model maps those
    features to ``mask_protos``. The prototype branch costs about a quarter of a whole pass, yet a plate's
    mask only needs the prototypes around its box: the detector runs the mask model on a small window of
    the features per plate (:mod:`workers.detectors.plates`). Convolutions are local, so a window with a
    margin gives the same prototypes as the whole map inside it. Works on float and QDQ models alike.
    """
    import copy

    import onnx
    from onnx import helper

    graph = model.graph
    produced = {output for node in graph.node for output in node.output}
    if features not in produced or "mask_protos" not in produced:
        raise ValueError(f"not a cut plate model: no {features} or mask_protos")
    elem_type = graph.input[0].type.tensor_type.elem_type  # float or float16, like the features
    features_info = helper.make_tensor_value_info("features", elem_type, ["batch", 128, "fh", "fw"])

    def needed_nodes(outputs: list[str], stop: str | None = None) -> list[Any]:
        needed, kept = set(outputs), []
        for node in reversed(graph.node):
            if any(output in needed for output in node.output):
                kept.append(node)
                needed.update(name for name in node.input if name != stop)
        return list(reversed(kept))

    def subgraph(nodes: list[Any], inputs: list[Any], outputs: list[Any], name: str) -> Any:
        used = {name_in for node in nodes for name_in in node.input}
        initializers = [init for init in graph.initializer if init.name in used]
        sub = helper.make_graph(nodes, name, inputs, outputs, initializers)
        made = helper.make_model(sub, opset_imports=model.opset_import, ir_version=model.ir_version)
        onnx.checker.check_model(made)
        return made

    body_nodes = [copy.deepcopy(n) for n in needed_nodes(["raw", "mask_coeffs", features])]
    body_nodes.append(helper.make_node("Identity", [features], ["features"], name="features"))
    body_outputs = [copy.deepcopy(o) for o in graph.output if o.name != "mask_protos"]
    body = subgraph(body_nodes, [copy.deepcopy(graph.input[0])], [*body_outputs, features_info], "plates")

    mask_nodes = [copy.deepcopy(n) for n in needed_nodes(["mask_protos"], stop=features)]
    for node in mask_nodes:
        for index, name_in in enumerate(node.input):
            if name_in == features:
                node.input[index] = "features"
    protos = next(copy.deepcopy(o) for o in graph.output if o.name == "mask_protos")
    masks = subgraph(mask_nodes, [features_info], [protos], "plate_masks")
    return body, masks


def write_plate_split(source: Path, body_target: Path, masks_target: Path) -> None:
    """Write the two halves of a derived plate model (see :func:`split_plate_masks`)."""
    import onnx

    body, masks = split_plate_masks(onnx.load(str(source)))
    _save(masks, masks_target)
    _save(body, body_target)


def make_batch_dynamic(model: Any, name: str = "batch") -> Any:
    """Make the leading axis of inputs/outputs symbolic and fix Reshape targets that bake in batch 1."""
    from onnx import numpy_helper

    graph = model.graph
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = name
    del graph.value_info[:]  # stale batch-1 shapes; onnxruntime re-infers them
    inits = {init.name: index for index, init in enumerate(graph.initializer)}
    users: dict[str, set[str]] = {}
    for node in graph.node:
        for position, name_in in enumerate(node.input):
            users.setdefault(name_in, set()).add(node.op_type if position == 1 else "other")
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] not in inits:
            continue
        if users[node.input[1]] != {"Reshape"}:
            raise ValueError(f"shape constant {node.input[1]} is used by other nodes too")
        index = inits[node.input[1]]
        shape = numpy_helper.to_array(graph.initializer[index]).copy()
        if shape.size and shape[0] == 1:
            shape[0] = 0  # allowzero=0: copy the batch dimension from the input
            graph.initializer[index].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
    return model


def letterbox(image: RGB, size: int = PLATE_SIZE) -> npt.NDArray[np.float32]:
    """The plate detector's preprocessing: keep aspect, pad with grey, 0..1 float, 1x3xSxS."""
    h, w = image.shape[:2]
    ratio = min(size / h, size / w)
    new_w, new_h = max(1, round(w * ratio)), max(1, round(h * ratio))
    interp = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interp)
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    left, top = (size - new_w) // 2, (size - new_h) // 2
    canvas[top : top + new_h, left : left + new_w] = resized
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)


_GLYPHS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


def _plate_patch(rng: np.random.Generator, width: int, height: int) -> RGB:
    """A flat plate: light background, dark border, dark characters; sometimes a coloured band."""
    base = int(rng.integers(200, 250))
    tint = rng.integers(-25, 10, size=3)
    plate = np.clip(np.full((height, width, 3), base) + tint, 0, 255).astype(np.uint8)
    top = 0
    if rng.random() < 0.5:
        top = max(4, height // 5)
        plate[:top] = rng.integers(0, 200, size=3).astype(np.uint8)
    text = "".join(rng.choice(list(_GLYPHS), size=int(rng.integers(6, 8))))
    font = cv2.FONT_HERSHEY_DUPLEX if rng.random() < 0.5 else cv2.FONT_HERSHEY_SIMPLEX
    thickness = max(1, height // 20)
    scale = cv2.getFontScaleFromHeight(font, max(4, int((height - top) * 0.6)), thickness)
    (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    scale *= min(1.0, width * 0.9 / max(1, tw))
    (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    origin = ((width - tw) // 2, top + (height - top + th) // 2)
    cv2.putText(plate, text, origin, font, scale, (20, 20, 25), thickness, cv2.LINE_AA)
    cv2.rectangle(plate, (0, 0), (width - 1, height - 1), (30, 30, 30), max(1, height // 30))
    return plate


def with_plates(photo: RGB, rng: np.random.Generator, count: int) -> RGB:
    """``photo`` with ``count`` slightly warped synthetic plates pasted on (a copy)."""
    scene = photo.copy()
    h, w = scene.shape[:2]
    for _ in range(count):
        pw = int(rng.uniform(0.08, 0.3) * w)
        ph = max(8, int(pw / rng.uniform(2.0, 4.5)))
        if pw >= w - 2 or ph >= h - 2:
            continue
        patch = _plate_patch(rng, pw * 2, ph * 2)
        x, y = int(rng.integers(0, w - pw)), int(rng.integers(0, h - ph))
        jitter = rng.uniform(-0.05, 0.05, size=(4, 2)) * np.array([pw, ph])
        dst = (np.array([[x, y], [x + pw, y], [x + pw, y + ph], [x, y + ph]]) + jitter).astype(np.float32)
        src = np.array([[0, 0], [pw * 2, 0], [pw * 2, ph * 2], [0, ph * 2]], dtype=np.float32)
        matrix = cv2.getPerspectiveTransform(src, dst)
        warped = cv2.warpPerspective(patch, matrix, (w, h), flags=cv2.INTER_AREA)
        mask = cv2.warpPerspective(np.full(patch.shape[:2], 255, np.uint8), matrix, (w, h)) > 127
        scene[mask] = warped[mask]
    return scene


def calibration_scenes(photos: Sequence[RGB], per_photo: int = 3, seed: int = 0) -> Iterator[RGB]:
    """Each photo as is, then ``per_photo - 1`` variants (flipped, rescaled) with synthetic plates."""
    rng = np.random.default_rng(seed)
    for photo in photos:
        yield photo
        for variant in range(per_photo - 1):
            image = photo[:, ::-1] if variant % 2 else photo
            scale = rng.uniform(0.6, 1.4)
            size = (max(32, int(image.shape[1] * scale)), max(32, int(image.shape[0] * scale)))
            image = np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
            yield with_plates(image, rng, int(rng.integers(1, 4)))


def _reader(input_name: str, blobs: list[npt.NDArray[np.float32]]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._items = iter(blobs)

        def __len__(self) -> int:
            return len(blobs)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._items = iter(blobs[start_index:end_index])

        def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
            blob = next(self._items, None)
            return None if blob is None else {input_name: blob}

    return Reader()


def _save(model: Any, target: Path) -> None:
    import onnx

    onnx.checker.check_model(model)
    partial = target.with_name(target.name + ".part")
    onnx.save(model, str(partial))
    os.replace(partial, target)


def write_dynamic_plates(source: Path, target: Path, head: dict[str, str] | None = None) -> None:
    """platedet in its shipped precision (float16, for GPUs), cut before its box decoding, dynamic axes."""
    import onnx

    _save(make_batch_dynamic(cut_plate_head(onnx.load(str(source)), head)), target)


def write_float32_plates(source: Path, target: Path, head: dict[str, str] | None = None) -> None:
    """platedet as float32, cut before its box decoding, dynamic axes (for CPUs without int8 speed-ups,
    and as the input to quantization)."""
    import onnx

    model = cut_plate_head(float16_to_float32(onnx.load(str(source))), head)
    _save(make_batch_dynamic(model), target)


def quantize_int8(
    source: Path,
    target: Path,
    input_name: str,
    blobs: list[npt.NDArray[np.float32]],
    exclude: Sequence[str] = (),
    percentile: float | None = None,
) -> None:
    """Static int8 QDQ quantization: per-channel int8 weights, uint8 activations; nodes named in
    ``exclude`` stay float. Activation ranges: min/max over the calibration inputs, or with
    ``percentile`` the range holding that share of values (a few extreme activations then no longer
    stretch the int8 steps of a whole tensor)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not blobs:
        raise ValueError("no calibration data")
    import onnx
    from onnx import version_converter

    with tempfile.TemporaryDirectory(prefix="veil-quant-") as scratch:
        model = onnx.load(str(source))
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset < _MIN_OPSET:  # per-channel DequantizeLinear (its axis attribute) needs opset 13
            model = version_converter.convert_version(model, _MIN_OPSET)
        upgraded = Path(scratch) / "source.onnx"
        onnx.save(model, str(upgraded))
        pre = Path(scratch) / "pre.onnx"
        quant_pre_process(str(upgraded), str(pre), skip_symbolic_shape=True)
        partial = target.with_name(target.name + ".part")
        quantize_static(
            str(pre),
            str(partial),
            _reader(input_name, blobs),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile if percentile else CalibrationMethod.MinMax,
            nodes_to_exclude=list(exclude),
            extra_options=_calibration_options(percentile),
        )
        os.replace(partial, target)
    log.info("quantized %s on %d calibration inputs", target.name, len(blobs))


def _calibration_options(percentile: float | None) -> dict[str, Any]:
    if percentile is None:
        return {}
    # Histograms are collected one input at a time ("strided", despite the option's name): memory stays
    # at one input's activations (all at once took 9 GB for CenterFace), and inputs may differ in size.
    return {"CalibPercentile": percentile, "CalibStridedMinMax": 1}


def quantize_plates(float32_model: Path, target: Path, photos: Sequence[RGB]) -> None:
    """The int8 plate model, calibrated on letterboxed photos with synthetic plates pasted on."""
    import onnx

    blobs = [letterbox(scene) for scene in calibration_scenes(photos)]
    model = onnx.load(str(float32_model))
    quantize_int8(float32_model, target, model.graph.input[0].name, blobs, plate_head_nodes(model))


def plate_head_nodes(model: Any) -> list[str]:
    """Nodes of the YOLO head to keep in float: the last convolution of each branch, the DFL and the
    box/score assembly. ``output0`` concatenates pixel coordinates (0..640) with scores (0..1); one int8
    scale for both would round every score to zero."""
    head = "/model.22/"
    return [
        node.name
        for node in model.graph.node
        if node.name.startswith(head)
        and not node.name.startswith(head + "proto/")
        and ("/dfl/" in node.name or not ("/conv/Conv" in node.name or "/act/" in node.name))
    ]


def face_blob(image: RGB, max_side: int, align: int = 32) -> npt.NDArray[np.float32]:
    """CenterFace's preprocessing: downscale to ``max_side``, raw 0..255 RGB, pad bottom/right to 32."""
    h, w = image.shape[:2]
    ratio = min(1.0, max_side / max(h, w))
    new_w, new_h = max(1, round(w * ratio)), max(1, round(h * ratio))
    resized = image if ratio == 1.0 else cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    blob = np.zeros((1, 3, -(-new_h // align) * align, -(-new_w // align) * align), dtype=np.float32)
    blob[0, :, :new_h, :new_w] = resized.transpose(2, 0, 1)
    return blob


def quantize_faces(prepared: Path, target: Path, photos: Sequence[RGB]) -> None:
    """The int8 CenterFace, calibrated on the photos at several sizes (its input size is dynamic).

    Percentile ranges, not min/max: with min/max, anon_recall on the faces set fell 0.8 points below float
    and det_recall 0.9 (in-process); at the 99.999th percentile anon_recall through the API equals bf16's
    and det_recall is 0.55 points lower (docs/accuracy.md)."""
    sides = (1280, 960, 640)
    blobs = [face_blob(photo, sides[i % len(sides)]) for i, photo in enumerate(photos)]
    quantize_int8(prepared, target, _input_name(prepared), blobs, percentile=FACE_PERCENTILE)


def _input_name(path: Path) -> str:
    import onnx

    name: str = onnx.load(str(path), load_external_data=False).graph.input[0].name
    return name
