"""No result ever carries the original's embedded thumbnail (an unblurred copy of the photo), GPS or other
private metadata, whether ``keep_metadata`` is asked for or not: through the real gateway and worker."""

from __future__ import annotations

import io

import pytest
from PIL import ExifTags, Image

from shared.jobs import ImageFormat
from tests.e2e.conftest import LiveStack
from tests.e2e.test_blur_end_to_end import download, submit_and_wait
from tests.unit.test_metadata import SECRETS, SOURCES, camera_exif
from workers import metadata

pytestmark = [pytest.mark.integration, pytest.mark.models]

NAMES = {ImageFormat.JPEG: "photo.jpg", ImageFormat.PNG: "photo.png", ImageFormat.WEBP: "photo.webp"}


@pytest.mark.parametrize("keep", ["true", "false"])
@pytest.mark.parametrize("fmt", list(SOURCES))
async def test_no_thumbnail_gps_or_private_tags_in_results(
    live_stack: LiveStack, fmt: ImageFormat, keep: str
) -> None:
    source = SOURCES[fmt](camera_exif())
    job = await submit_and_wait(live_stack, source, NAMES[fmt], keep_metadata=keep)
    assert job["status"] == "succeeded", job
    assert job["input"]["format"] == fmt.value
    result = await download(job["result"]["url"])

    assert not [name for name, secret in SECRETS.items() if secret in result]
    if fmt is ImageFormat.JPEG:
        assert result.find(b"\xff\xd8", 2) == -1  # one SOI: no JPEG inside the JPEG
    block = metadata.exif_payload(result, fmt)
    with Image.open(io.BytesIO(result)) as image:
        exif = image.getexif()
    assert not exif.get_ifd(ExifTags.IFD.IFD1)
    assert not exif.get_ifd(ExifTags.IFD.GPSInfo)
    assert ExifTags.IFD.GPSInfo not in exif
    if keep == "false":
        assert block is None
        return
    assert block is not None and b"\xff\xd8" not in block
    assert exif[0x0112] == 1
    assert exif[0x010F] == "VeilCam"  # the allowlisted tags do come through
