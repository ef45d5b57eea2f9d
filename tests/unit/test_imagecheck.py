"""The gateway's upload check: JPEG wholeness by structure, without decoding."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from gateway.imagecheck import inspect_image, jpeg_is_complete
from shared.errors import ValidationError
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
