"""The per-request options the vendor facades need, through the Anonymizer with fake detectors: blur
strength per class, exclusion zones, panorama chunks, a logo on plates, and kept (upright) EXIF."""

from __future__ import annotations

import io
import struct
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from shared.jobs import BlurOptions, Exclusion, ImageFormat
from tests.images import astronaut_bgr
from tests.unit.test_pipeline import FACE, PLATE, FakeDetector
from workers import metadata
from workers.imageops import decode
from workers.pipeline import Anonymizer

LIMITS: dict[str, Any] = {"max_pixels": 10**8, "face_max_side": 640}


def _encode(image: npt.NDArray[np.uint8], ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return bytes(buf.tobytes())


def _run(
    options: BlurOptions, data: bytes | None = None, **kwargs: Any
) -> tuple[Any, FakeDetector, FakeDetector]:
    face, plate = FakeDetector([FACE]), FakeDetector([PLATE])
    anonymizer = Anonymizer(cast(Any, face), cast(Any, plate))
    result = anonymizer.run(data or _encode(astronaut_bgr()), options, **LIMITS, **kwargs)
    return result, face, plate


def _changed(result: Any) -> npt.NDArray[np.bool_]:
    before = astronaut_bgr()
    after = decode(result.image, max_pixels=10**8).pixels
    return np.asarray(np.any(before != after, axis=2))


def test_strength_zero_reports_but_does_not_blur() -> None:
    result, _, _ = _run(BlurOptions(face_strength=0, plate_strength=10))
    assert [d.label for d in result.detections] == ["face", "plate"]
    assert len(result.regions) == 1  # only the plate was blurred
    x1, y1, x2, y2 = result.regions[0]
    changed = _changed(result)
    assert changed[y1:y2, x1:x2].mean() > 0.9
    assert changed.sum() == changed[y1:y2, x1:x2].sum()


def test_exclusion_drops_detections_in_the_margin() -> None:
    # The face's centre is in the top 40 % of the image; the plate's is not.
    result, _, _ = _run(BlurOptions(exclusion=Exclusion(top=40)))
    assert [d.label for d in result.detections] == ["plate"]


def test_split_runs_chunks_as_extra_tiles() -> None:
    wide = np.ascontiguousarray(np.tile(astronaut_bgr(), (1, 4, 1)))  # 2048 x 512
    result, face, _ = _run(BlurOptions(split=True, split_overlap=20, targets=("faces",)), _encode(wide))
    shapes = [call[0] for call in face.calls]
    assert shapes[0] == (512, 2048, 3)  # the whole image first
    assert len(shapes) > 1
    assert all(shape[0] == 512 and shape[1] < 2048 for shape in shapes[1:])
    # The same fake face in every chunk lands at different image x positions, merged with the whole pass.
    assert len(result.detections) >= 1


def test_logo_is_warped_onto_plates() -> None:
    logo = np.zeros((20, 60, 3), np.uint8)
    logo[:, :, 2] = 255  # red
    result, _, _ = _run(BlurOptions(targets=("plates",), plate_strength=0), logo=_encode(logo))
    after = decode(result.image, max_pixels=10**8).pixels
    x1, y1, x2, y2 = (int(v) for v in PLATE.box)
    centre = after[(y1 + y2) // 2, (x1 + x2) // 2]
    assert centre[2] > 200
    assert centre[0] < 60  # red, where the plate was
    assert result.regions  # the logo changed pixels there, so the plate's region is reported


def _jpeg_with_orientation(value: int) -> bytes:
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    tiff += struct.pack("<HHII", 0x0112, 3, 1, value) + struct.pack("<I", 0)
    plain = _encode(astronaut_bgr(), ".jpg")
    return metadata.with_exif(plain, ImageFormat.JPEG, tiff)


def test_metadata_is_stripped_by_default_and_kept_upright_on_request() -> None:
    source = _jpeg_with_orientation(6)
    assert metadata.orientation(metadata.exif_payload(source, ImageFormat.JPEG) or b"") == 6
    stripped, _, _ = _run(BlurOptions(), source)
    assert metadata.exif_payload(stripped.image, ImageFormat.JPEG) is None
    kept, _, _ = _run(BlurOptions(keep_metadata=True), source)
    exif = metadata.exif_payload(kept.image, ImageFormat.JPEG)
    assert exif is not None
    assert metadata.orientation(exif) == 1  # pixels were turned, so the tag must not turn them again
    assert (kept.width, kept.height) == (512, 512)


def test_png_metadata_round_trip() -> None:
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, 3, 0) + struct.pack(">I", 0)
    png = metadata.with_exif(_encode(astronaut_bgr()), ImageFormat.PNG, tiff)
    assert metadata.orientation(metadata.exif_payload(png, ImageFormat.PNG) or b"") == 3
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None  # the chunk is valid PNG
    kept, _, _ = _run(BlurOptions(keep_metadata=True), png)
    assert metadata.orientation(metadata.exif_payload(kept.image, ImageFormat.PNG) or b"") == 1


def _tiff_with_orientation(value: int) -> bytes:
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    return tiff + struct.pack("<HHIHH", 0x0112, 3, 1, value, 0) + struct.pack("<I", 0)


@pytest.mark.parametrize(
    ("channels", "params"),
    [
        (3, [cv2.IMWRITE_WEBP_QUALITY, 90]),  # simple lossy: "VP8 "
        (3, [cv2.IMWRITE_WEBP_QUALITY, 101]),  # lossless: "VP8L"
        (4, [cv2.IMWRITE_WEBP_QUALITY, 90]),  # lossy with alpha: already extended, "VP8X"
    ],
)
def test_webp_metadata_round_trip(channels: int, params: list[int]) -> None:
    pixels = astronaut_bgr()
    if channels == 4:
        pixels = np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)])
        pixels[:64, :64, 3] = 0  # some transparency, so the encoder keeps an alpha plane
    ok, out = cv2.imencode(".webp", pixels, params)
    assert ok
    plain = out.tobytes()
    webp = metadata.with_exif(plain, ImageFormat.WEBP, _tiff_with_orientation(6))
    assert webp[12:16] == b"VP8X" and webp[20] & 0x08  # extended, EXIF flag set
    assert struct.unpack("<I", webp[4:8])[0] == len(webp) - 8  # RIFF size
    assert metadata.orientation(metadata.exif_payload(webp, ImageFormat.WEBP) or b"") == 6
    assert metadata.webp_size(webp) == (512, 512)
    with Image.open(io.BytesIO(webp)) as image:  # another reader agrees: pixels, alpha and tag
        assert image.getexif().get(0x0112) == 6
        assert image.mode == ("RGBA" if channels == 4 else "RGB")
    same = cv2.imdecode(np.frombuffer(webp, np.uint8), cv2.IMREAD_UNCHANGED)
    before = cv2.imdecode(np.frombuffer(plain, np.uint8), cv2.IMREAD_UNCHANGED)
    assert same is not None and before is not None and np.array_equal(same, before)


def test_webp_metadata_kept_upright_on_request() -> None:
    _, out = cv2.imencode(".webp", astronaut_bgr(), [cv2.IMWRITE_WEBP_QUALITY, 90])
    source = metadata.with_exif(out.tobytes(), ImageFormat.WEBP, _tiff_with_orientation(6))
    kept, _, _ = _run(BlurOptions(keep_metadata=True), source)
    assert kept.format is ImageFormat.WEBP
    assert metadata.orientation(metadata.exif_payload(kept.image, ImageFormat.WEBP) or b"") == 1
    stripped, _, _ = _run(BlurOptions(), source)
    assert metadata.exif_payload(stripped.image, ImageFormat.WEBP) is None
