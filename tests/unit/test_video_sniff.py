"""Videos told by their first bytes (shared.imageformat.sniff_video), an MP4's boxes walked
(gateway.videocheck.iso_structure), and the job contract's versioning of video jobs."""

from __future__ import annotations

import pytest

from gateway.imagecheck import supported_format
from gateway.videocheck import iso_structure
from shared.errors import UnsupportedMediaError, ValidationError
from shared.imageformat import sniff_format, sniff_video
from shared.jobs import (
    CONTRACT_VERSION,
    ImageFormat,
    InputInfo,
    JobRecord,
    JobRequest,
    ObjectRef,
    VideoFormat,
)


def ftyp(brand: bytes) -> bytes:
    return b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x02\x00isomiso2"


EBML = b"\x1a\x45\xdf\xa3\x9fB\x86\x81\x01B\xf7\x81\x01B\xf2\x81\x04B\xf3\x81\x08B\x82\x84"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (ftyp(b"isom"), VideoFormat.MP4),
        (ftyp(b"mp42"), VideoFormat.MP4),
        (ftyp(b"M4A "), VideoFormat.MP4),  # audio only: the probe says so (415), not the sniff
        (ftyp(b"qt  "), VideoFormat.MOV),
        (EBML + b"matroska", VideoFormat.MKV),
        (EBML + b"webm", VideoFormat.WEBM),
        (ftyp(b"heic"), None),  # HEIF and AVIF stills are ftyp files too
        (ftyp(b"avif"), None),
        (ftyp(b"mif1"), None),
        (b"\xff\xd8\xff\xe0", None),
        (b"RIFF\x00\x00\x00\x00AVI LIST", None),
        (b"", None),
        (b"\x00\x00\x00\x18ftyp", None),  # no brand
    ],
)
def test_sniff_video(head: bytes, expected: VideoFormat | None) -> None:
    assert sniff_video(head) is expected
    if expected is not None:
        assert sniff_format(head) is None  # never both a photo and a video


def test_a_video_where_only_photos_are_taken_is_named() -> None:
    with pytest.raises(
        UnsupportedMediaError, match=r"^MOV videos are not supported here; send JPEG, PNG or WebP"
    ):
        supported_format(ftyp(b"qt  "))
    with pytest.raises(UnsupportedMediaError, match="HEIF/AVIF"):
        supported_format(ftyp(b"heic"))


def box(kind: bytes, body: bytes) -> bytes:
    return (8 + len(body)).to_bytes(4, "big") + kind + body


def test_iso_structure_walks_the_top_level_boxes() -> None:
    whole = ftyp(b"isom") + box(b"mdat", b"x" * 100) + box(b"moov", b"y" * 20)
    iso_structure(whole, VideoFormat.MP4)
    truncated = r"MP4 video is truncated: its b'moov' box needs 160 bytes, the file has 155"
    with pytest.raises(ValidationError, match=truncated):
        iso_structure(whole[:-5], VideoFormat.MP4)
    with pytest.raises(ValidationError, match="it ends inside a box header"):
        iso_structure(whole + b"\x00\x00", VideoFormat.MP4)
    with pytest.raises(ValidationError, match=r"no index \(moov box\)"):
        iso_structure(ftyp(b"isom") + box(b"mdat", b"x"), VideoFormat.MP4)
    with pytest.raises(ValidationError, match="claims 3 bytes"):
        iso_structure(ftyp(b"isom") + b"\x00\x00\x00\x03free", VideoFormat.MP4)
    large = (1).to_bytes(4, "big") + b"mdat" + (16 + 4).to_bytes(8, "big") + b"abcd"
    iso_structure(ftyp(b"isom") + large + box(b"moov", b""), VideoFormat.MOV)  # a 64-bit size
    iso_structure(
        ftyp(b"isom") + box(b"moov", b"") + b"\x00\x00\x00\x00mdat rest", VideoFormat.MP4
    )  # to the end


def request_for(info: InputInfo, **extra: object) -> JobRequest:
    return JobRequest.model_validate(
        {
            "id": "a" * 32,
            "owner": "k",
            "source": ObjectRef(bucket="b", key="uploads/a"),
            "input": info,
            **extra,
        }
    )


def test_video_jobs_are_contract_version_2_and_photo_jobs_stay_1() -> None:
    video = InputInfo(
        width=64, height=48, format=VideoFormat.WEBM, duration=1.5, fps=25.0, frames=37, codec="vp9"
    )
    assert CONTRACT_VERSION == 2
    assert request_for(video).version == 2
    assert JobRequest.model_validate_json(request_for(video).model_dump_json()).version == 2
    with pytest.raises(ValueError, match="a video job needs contract version 2"):
        request_for(video, version=1)
    photo = InputInfo(width=64, height=48, format=ImageFormat.PNG)
    assert request_for(photo).version == 1
    # a photo job's JSON is what every worker of before reads: no video fields in it
    assert request_for(photo).model_dump(mode="json")["input"] == {"width": 64, "height": 48, "format": "png"}
    assert video.is_video and not photo.is_video
    assert VideoFormat.WEBM.content_type == "video/webm" and VideoFormat.MOV.content_type == "video/quicktime"


def test_a_record_reads_back_its_video_input_and_progress() -> None:
    record = JobRecord.model_validate(
        {
            "id": "a" * 32,
            "owner": "k",
            "options": {},
            "input": {"width": 8, "height": 8, "format": "mkv", "fps": 30, "frames": 3, "duration": 0.1},
            "progress": {"frames_done": 1, "frames_total": 3, "eta_seconds": 0.2},
        }
    )
    again = JobRecord.model_validate_json(record.model_dump_json())
    assert again.input is not None and again.input.format is VideoFormat.MKV
    assert again.progress is not None and again.progress.frames_done == 1
