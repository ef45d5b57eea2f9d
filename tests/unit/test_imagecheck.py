"""The gateway's upload check: JPEG wholeness by structure, without decoding."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from gateway.imagecheck import inspect_image, jpeg_is_complete
from shared.errors import PayloadTooLargeError, UnsupportedMediaError, ValidationError
from shared.settings import LimitSettings
from tests.images import astronaut_rgb


def _jpeg(**params: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(astronaut_rgb()).save(out, "JPEG", **params)
    return out.getvalue()


def _with_thumbnail_exif() -> bytes:
    """A JPEG whose EXIF block carries a whole JPEG thumbnail, end marker included, before the scan."""
    thumb = io.BytesIO()
    Image.fromarray(astronaut_rgb()).resize((64, 64)).save(thumb, "JPEG")
    exif = b"Exif\x00\x00" + thumb.getvalue()  # not a valid TIFF: enough to place 0xFFD9 in APP1
    plain = _jpeg()
    app1 = b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif
    return plain[:2] + app1 + plain[2:]


@pytest.mark.parametrize("params", [{}, {"progressive": True}, {"quality": 30, "optimize": True}])
def test_whole_jpegs_pass(params: dict[str, object]) -> None:
    data = _jpeg(**params)
    assert jpeg_is_complete(data)
    assert jpeg_is_complete(data + b"trailing bytes some cameras append")
    info = inspect_image(data, LimitSettings())
    assert (info.width, info.height) == (512, 512)


def test_truncated_jpegs_fail_even_with_an_end_marker_in_the_exif_thumbnail() -> None:
    for data in (_jpeg(), _jpeg(progressive=True), _with_thumbnail_exif()):
        assert jpeg_is_complete(data)
        cut = data[: len(data) * 2 // 3]
        assert not jpeg_is_complete(cut)
        with pytest.raises(ValidationError, match="truncated"):
            inspect_image(cut, LimitSettings())
    assert not jpeg_is_complete(b"\xff\xd8\xff\xe0\x00\x01")  # a segment length below 2
    assert not jpeg_is_complete(b"\xff\xd8")


@pytest.mark.parametrize(
    "data",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg"/>',
        b'\xef\xbb\xbf\n  <?xml version="1.0"?>\n<!-- a drawing -->\n<SVG width="1" height="1"></SVG>',
        b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "x.dtd"><svg/>',
    ],
)
def test_svg_is_415_naming_it(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaError, match=r"^SVG images are not supported"):
        inspect_image(data, LimitSettings())


def test_other_markup_is_415_without_a_name() -> None:
    with pytest.raises(UnsupportedMediaError, match=r"^not a supported image"):
        inspect_image(b"<html><body>no drawing here</body></html>", LimitSettings())


def test_a_header_past_pillows_own_ceiling_is_413_with_veils_limit() -> None:
    """60000x60000 (3.6 G pixels) trips Pillow's decompression-bomb check before the size is read back:
    the answer names Veil's limit, not Pillow's."""
    data = bytearray(_jpeg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    limits = LimitSettings()
    with pytest.raises(PayloadTooLargeError) as refused:
        inspect_image(bytes(data), limits)
    assert refused.value.message == f"the image has too many pixels, over the limit of {limits.max_pixels}"


def test_an_unreadable_header_is_400_without_pillows_internals() -> None:
    with pytest.raises(ValidationError) as refused:
        inspect_image(b"\xff\xd8\xff" + b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, LimitSettings())
    assert refused.value.message == "the JPEG image is corrupt: its header cannot be read"


def test_a_16_bit_pngs_pixels_count_twice_against_the_limit() -> None:
    # 16 bits per channel take twice the memory once decoded (a 7000x7000 RGBA one peaked near 1 GB).
    deep = Image.fromarray(astronaut_rgb()[:100, :100, 0].astype("uint16") * 257)  # 16-bit grey
    out = io.BytesIO()
    deep.save(out, "PNG")
    data = out.getvalue()
    assert data[24] == 16  # IHDR bit depth
    with pytest.raises(PayloadTooLargeError, match="of 16 bits per channel, which count twice"):
        inspect_image(data, LimitSettings(max_pixels=2 * 100 * 100 - 1))
    assert inspect_image(data, LimitSettings(max_pixels=2 * 100 * 100)).width == 100
