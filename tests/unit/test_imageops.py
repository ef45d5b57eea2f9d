from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from shared.errors import PayloadTooLargeError, ValidationError
from shared.imageformat import is_animated, sniff_format
from shared.jobs import ImageFormat
from tests.images import astronaut_bgr
from workers import imageops, metadata

BIG = 10**9


def _photo(h: int = 120, w: int = 160) -> npt.NDArray[np.uint8]:
    return np.asarray(cv2.resize(astronaut_bgr(), (w, h)), dtype=np.uint8)


def _encode(pixels: npt.NDArray[Any], ext: str, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, pixels, params or [])
    assert ok
    return bytes(buf.tobytes())


def _tiff_orientation(value: int) -> bytes:
    # Little-endian TIFF header, IFD0 with a single Orientation (0x0112, SHORT) entry.
    return (
        b"II*\x00"
        + struct.pack("<I", 8)
        + struct.pack("<H", 1)
        + struct.pack("<HHIHH", 0x0112, 3, 1, value, 0)
    )


def _jpeg_with_orientation(pixels: npt.NDArray[np.uint8], value: int) -> bytes:
    jpeg = _encode(pixels, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95])
    payload = b"Exif\x00\x00" + _tiff_orientation(value)
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + app1 + jpeg[2:]


def _png_with_exif(pixels: npt.NDArray[Any], body: bytes) -> bytes:
    png = _encode(pixels, ".png")
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    return png[:33] + chunk + png[33:]  # right after IHDR (8 + 25 bytes)


def _png_with_orientation(pixels: npt.NDArray[Any], value: int) -> bytes:
    return _png_with_exif(pixels, _tiff_orientation(value))


def _pillow(pixels: npt.NDArray[np.uint8], fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels[:, :, ::-1])).save(out, fmt, **params)
    return out.getvalue()


def _animated(fmt: str) -> bytes:
    first, second = (Image.fromarray(np.ascontiguousarray(p[:, :, ::-1])) for p in (_photo(), _photo()[::-1]))
    out = io.BytesIO()
    first.save(out, fmt, save_all=True, append_images=[second], duration=100, loop=0)
    return out.getvalue()


# -- decode ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "fmt"), [(".jpg", ImageFormat.JPEG), (".png", ImageFormat.PNG), (".webp", ImageFormat.WEBP)]
)
def test_decode_formats(ext: str, fmt: ImageFormat) -> None:
    image = imageops.decode(_encode(_photo(), ext), max_pixels=BIG)
    assert image.format is fmt
    assert (image.width, image.height) == (160, 120)
    assert image.bgr.shape == (120, 160, 3)
    assert image.bgr.dtype == np.uint8


@pytest.mark.parametrize(
    ("pixels", "ext"),
    [
        (np.zeros((30, 50, 4), np.uint8), ".webp"),  # lossy with alpha: VP8X
        (np.zeros((30, 50, 3), np.uint8), ".webp"),  # lossy: VP8
        (np.zeros((30, 50, 3), np.uint8), ".jpg"),
        (np.zeros((30, 50), np.uint16), ".png"),
    ],
)
def test_probe_reads_size_from_header(pixels: npt.NDArray[Any], ext: str) -> None:
    _, w, h = imageops.probe(_encode(pixels, ext))
    assert (w, h) == (50, 30)


def test_probe_lossless_webp() -> None:
    _, w, h = imageops.probe(
        _encode(np.zeros((30, 50, 3), np.uint8), ".webp", [cv2.IMWRITE_WEBP_QUALITY, 101])
    )
    assert (w, h) == (50, 30)


def test_png_keeps_alpha_gray_and_16_bit() -> None:
    bgra = np.dstack([_photo(), np.full((120, 160), 128, np.uint8)])
    image = imageops.decode(_encode(bgra, ".png"), max_pixels=BIG)
    assert image.pixels.shape == (120, 160, 4)
    assert image.bgr.shape == (120, 160, 3)

    gray = cv2.cvtColor(_photo(), cv2.COLOR_BGR2GRAY)
    image = imageops.decode(_encode(gray, ".png"), max_pixels=BIG)
    assert image.pixels.shape == (120, 160)
    assert image.bgr.shape == (120, 160, 3)

    deep = _photo().astype(np.uint16) * 257
    image = imageops.decode(_encode(deep, ".png"), max_pixels=BIG)
    assert image.pixels.dtype == np.uint16
    assert np.array_equal(image.bgr, _photo())


def test_jpeg_orientation_applied() -> None:
    pixels = _photo(60, 100)
    image = imageops.decode(_jpeg_with_orientation(pixels, 6), max_pixels=BIG)
    assert (image.width, image.height) == (60, 100)  # rotated 90° clockwise
    expected = np.rot90(pixels, -1).astype(int)
    assert np.abs(image.bgr.astype(int) - expected).mean() < 8


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_png_orientation_applied(orientation: int) -> None:
    pixels = _photo(60, 100)
    image = imageops.decode(_png_with_orientation(pixels, orientation), max_pixels=BIG)
    # OpenCV's own JPEG path is the reference for what each orientation means.
    reference = imageops.decode(_jpeg_with_orientation(pixels, orientation), max_pixels=BIG)
    assert image.pixels.shape == reference.pixels.shape
    assert np.abs(image.bgr.astype(int) - reference.bgr.astype(int)).mean() < 8


# IFD0 with one Orientation entry that ends after its tag and type: the value is past the block's end.
_CUT_ORIENTATION = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1) + struct.pack(">HH", 0x0112, 3)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_an_orientation_cut_off_before_its_value_is_upright_not_a_failure(fmt: str) -> None:
    """Unreadable EXIF is dropped whole (as the gateway's check reads it): decoded as stored."""
    pixels = _photo(60, 100)
    if fmt == "PNG":
        data = _png_with_exif(pixels, _CUT_ORIENTATION)
    else:
        data = _pillow(pixels, "WEBP", lossless=True, exif=_CUT_ORIENTATION)
    assert metadata.exif_payload(data, imageops.probe(data)[0]) == _CUT_ORIENTATION
    image = imageops.decode(data, max_pixels=BIG)
    assert np.array_equal(image.bgr, pixels)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animations_are_refused_from_their_first_bytes(fmt: str) -> None:
    """The decoder would return the first frame only; bulk probes read a header prefix, which is enough."""
    data = _animated(fmt)
    assert is_animated(data) and is_animated(data[:64])
    assert not is_animated(_pillow(_photo(), fmt))
    for blob in (data, data[:64]):
        with pytest.raises(ValidationError, match="animated images are not supported"):
            imageops.probe(blob)
    with pytest.raises(ValidationError, match="animated images are not supported"):
        imageops.decode(data, max_pixels=BIG)


@pytest.mark.parametrize(
    "blob", [b"", b"hello world", b"\xff\xd8\xff" + b"\x00" * 20, b"\x89PNG\r\n\x1a\n" + b"\x00" * 40]
)
def test_garbage_is_a_validation_error(blob: bytes) -> None:
    with pytest.raises(ValidationError, match="could not be decoded"):
        imageops.decode(blob, max_pixels=BIG)


def test_truncated_png_is_a_validation_error() -> None:
    png = _encode(_photo(), ".png")
    with pytest.raises(ValidationError):
        imageops.decode(png[:60], max_pixels=BIG)


def test_too_many_pixels_refused_before_decoding() -> None:
    blob = _encode(_photo(), ".jpg")
    with pytest.raises(PayloadTooLargeError):
        imageops.decode(blob, max_pixels=160 * 120 - 1)
    assert imageops.decode(blob, max_pixels=160 * 120).width == 160
    deep = _encode(_photo().astype(np.uint16) * 257, ".png")  # 16-bit: each pixel counts twice
    with pytest.raises(PayloadTooLargeError):
        imageops.decode(deep, max_pixels=2 * 160 * 120 - 1)
    assert imageops.decode(deep, max_pixels=2 * 160 * 120).width == 160


# -- encode ------------------------------------------------------------------------------------------------


def test_encode_strips_exif() -> None:
    image = imageops.decode(_jpeg_with_orientation(_photo(), 6), max_pixels=BIG)
    out = imageops.encode(image.pixels, ImageFormat.JPEG)
    assert b"Exif" not in out
    again = imageops.decode(out, max_pixels=BIG)
    assert (again.width, again.height) == (image.width, image.height)  # stays upright, no tag to re-apply


@pytest.mark.parametrize("fmt", list(ImageFormat))
@pytest.mark.parametrize(
    "pixels",
    [
        np.zeros((20, 30), np.uint8),
        np.zeros((20, 30, 3), np.uint8),
        np.zeros((20, 30, 4), np.uint8),
        np.zeros((20, 30, 3), np.uint16),
    ],
    ids=["gray", "bgr", "bgra", "bgr16"],
)
def test_encode_every_layout(fmt: ImageFormat, pixels: npt.NDArray[Any]) -> None:
    out = imageops.encode(pixels, fmt)
    assert sniff_format(out) is fmt
    assert imageops.decode(out, max_pixels=BIG).width == 30


def test_png_round_trip_is_exact() -> None:
    bgra = np.dstack([_photo(), np.arange(120 * 160, dtype=np.uint32).reshape(120, 160).astype(np.uint8)])
    out = imageops.decode(imageops.encode(bgra, ImageFormat.PNG), max_pixels=BIG)
    assert np.array_equal(out.pixels, bgra)


# -- blur --------------------------------------------------------------------------------------------------

REGIONS = [(20, 10, 70, 60), (100, 50, 150, 110)]


def _inside(shape: tuple[int, ...], regions: list[tuple[int, int, int, int]]) -> npt.NDArray[np.bool_]:
    mask = np.zeros(shape[:2], dtype=bool)
    for x1, y1, x2, y2 in regions:
        mask[y1:y2, x1:x2] = True
    return mask


@pytest.mark.parametrize(
    "pixels",
    [
        _photo(),
        cv2.cvtColor(_photo(), cv2.COLOR_BGR2GRAY),
        np.dstack([_photo(), np.full((120, 160), 200, np.uint8)]),
        _photo().astype(np.uint16) * 257,
    ],
    ids=["bgr", "gray", "bgra", "bgr16"],
)
@pytest.mark.parametrize("sigma", [None, 2.0, 30.0])
def test_blur_changes_only_regions(pixels: npt.NDArray[Any], sigma: float | None) -> None:
    before = pixels.copy()
    out = imageops.blur_regions(pixels, REGIONS, sigma)
    assert np.array_equal(pixels, before), "input must not be modified"
    assert out.shape == pixels.shape
    assert out.dtype == pixels.dtype
    inside = _inside(pixels.shape, REGIONS)
    assert np.array_equal(out[~inside], pixels[~inside])
    for x1, y1, x2, y2 in REGIONS:
        assert not np.array_equal(out[y1:y2, x1:x2], pixels[y1:y2, x1:x2])
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        assert np.array_equal(out[:, :, 3], pixels[:, :, 3]), "alpha is kept"


def test_blur_each_region_at_its_own_sigma_overlaps_blurred_twice() -> None:
    pixels = _photo()
    before = pixels.copy()
    left, right = (10, 10, 70, 70), (50, 30, 130, 100)  # they overlap in (50..70, 30..70)
    out = imageops.blur_each(pixels, [(left, 1.5), (right, None)])
    assert np.array_equal(pixels, before), "input must not be modified"
    assert np.array_equal(
        out[~_inside(pixels.shape, [left, right])], pixels[~_inside(pixels.shape, [left, right])]
    )
    # Each region at its own sigma: the left one as alone at 1.5; the right one as alone at its auto sigma
    # outside the overlap's reach.
    alone_left = imageops.blur_regions(pixels, [left], 1.5)
    assert np.array_equal(out[10:30, 10:50], alone_left[10:30, 10:50])
    alone_right = imageops.blur_regions(pixels, [right], None)
    assert np.abs(out[80:100, 90:130].astype(int) - alone_right[80:100, 90:130].astype(int)).max() <= 3
    # The overlap is the right region's blur of the already blurred left one: at least as smooth.
    overlap = (slice(30, 70), slice(50, 70))
    assert (
        cv2.Laplacian(out[overlap], cv2.CV_64F).var() <= cv2.Laplacian(alone_left[overlap], cv2.CV_64F).var()
    )


def test_linear_ramp_still_changes() -> None:
    # A linear ramp is a fixed point of a Gaussian blur; the region must change anyway.
    ramp = np.tile(np.arange(200, dtype=np.uint8), (100, 1))
    region = (50, 20, 150, 80)
    out = imageops.blur_regions(ramp, [region], 3.0)
    assert not np.array_equal(out[20:80, 50:150], ramp[20:80, 50:150])
    assert np.array_equal(out[:20], ramp[:20])


def test_flat_region_may_stay_identical() -> None:
    flat = np.full((50, 50, 3), 77, np.uint8)
    assert np.array_equal(imageops.blur_regions(flat, [(10, 10, 40, 40)], None), flat)


def test_blur_makes_plate_text_unreadable() -> None:
    canvas = np.full((300, 400, 3), 60, np.uint8)
    cv2.rectangle(canvas, (100, 120), (300, 180), (245, 245, 245), -1)
    cv2.putText(canvas, "ABC1234", (110, 168), cv2.FONT_HERSHEY_DUPLEX, 1.5, (10, 10, 10), 3)
    region = (100, 120, 300, 180)
    out = imageops.blur_regions(canvas, [region], None)
    before = cv2.Laplacian(cv2.cvtColor(canvas[120:180, 100:300], cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
    after = cv2.Laplacian(cv2.cvtColor(out[120:180, 100:300], cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
    assert after < before * 0.01  # edges (strokes) are gone
    # And no column profile of the glyphs survives: the region is close to a smooth blob.
    assert np.std(out[135:165, 110:290].astype(float), axis=1).max() < 25


def test_auto_sigma_scales_with_region() -> None:
    assert imageops.auto_sigma((0, 0, 10, 10)) == imageops.AUTO_SIGMA_MIN
    assert imageops.auto_sigma((0, 0, 500, 200)) == pytest.approx(100.0)


def test_big_region_big_sigma_blurs_the_whole_region() -> None:
    image = np.random.default_rng(0).integers(0, 256, size=(2000, 2000, 3), dtype=np.uint8)
    out = imageops.blur_regions(image, [(0, 0, 2000, 2000)], None)  # auto sigma 400
    assert out.shape == image.shape
    # Noise with a std of ~74 comes out nearly flat everywhere, edges included.
    assert out.astype(float).std() < 5
    assert np.abs(out[:50].astype(float) - out[:50].mean()).max() < 30
