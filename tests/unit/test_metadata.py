"""``keep_metadata`` keeps an allowlist of descriptive EXIF tags and nothing else: never the IFD1 thumbnail
(an unblurred copy of the photo), GPS, MakerNote, free text, XMP or IPTC. Run through the Anonymizer with
fake detectors, as the worker runs it, for JPEG, PNG and WebP."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from typing import Any, cast

import cv2
import pytest
from PIL import ExifTags, Image

from shared.jobs import BlurOptions, ImageFormat
from tests.images import astronaut_bgr
from tests.unit.test_pipeline import FACE, FakeDetector
from workers import metadata
from workers.pipeline import Anonymizer

ASCII, SHORT, LONG, RATIONAL, UNDEFINED = 2, 3, 4, 5, 7
Entry = tuple[int, int, Any]  # tag, TIFF type, value (str, bytes or a tuple of ints)


def _thumbnail() -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.resize(astronaut_bgr(), (64, 64)), [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok
    return bytes(buf.tobytes())


THUMBNAIL = _thumbnail()  # what cameras put in IFD1: a small, unblurred copy of the photo
MAKERNOTE = b"MAKERNOTE owner=Jane Doe serial=SN-0042 faces=3"
USER_COMMENT = b"ASCII\x00\x00\x00met Jane at 12 Elm Street"
DESCRIPTION = "Jane Doe in front of her house"
BODY_SERIAL = "BODY-SN-777"
GPS_METHOD = b"ASCII\x00\x00\x00GPS-SECRET-FIX"
XMP = b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>XMP-SECRET-PERSON</x:xmpmeta>"
IPTC = b"Photoshop 3.0\x008BIM\x04\x04\x00\x00\x00\x00\x00\x10IPTC-SECRET-NAME"
SECRETS = {  # what must never reach a result, by name (so a failure says which)
    "thumbnail": THUMBNAIL,
    "thumbnail scan data": THUMBNAIL[-64:],  # in case it was copied in part
    "MakerNote": MAKERNOTE,
    "UserComment": USER_COMMENT[8:],
    "ImageDescription": DESCRIPTION.encode(),
    "BodySerialNumber": BODY_SERIAL.encode(),
    "GPSProcessingMethod": GPS_METHOD[8:],
    "XMP": b"XMP-SECRET-PERSON",
    "IPTC": b"IPTC-SECRET-NAME",
}


def _value(order: str, kind: int, value: Any) -> tuple[bytes, int]:
    if kind == ASCII:
        raw = value.encode() + b"\x00"
        return raw, len(raw)
    if kind == UNDEFINED:
        return value, len(value)
    code = {SHORT: "H", LONG: "I", RATIONAL: "I"}[kind]
    raw = struct.pack(f"{order}{len(value)}{code}", *value)
    return raw, len(value) // 2 if kind == RATIONAL else len(value)


def _ifd(order: str, start: int, entries: list[Entry], next_ifd: int = 0) -> bytes:
    """One IFD at offset ``start``, its long values right after it (even-padded, as TIFF wants)."""
    data_at = start + 2 + 12 * len(entries) + 4
    table, data = struct.pack(order + "H", len(entries)), b""
    for tag, kind, value in sorted(entries, key=lambda entry: entry[0]):
        raw, count = _value(order, kind, value)
        if len(raw) <= 4:
            table += struct.pack(order + "HHI", tag, kind, count) + raw.ljust(4, b"\x00")
        else:
            table += struct.pack(order + "HHII", tag, kind, count, data_at + len(data))
            data += raw + b"\x00" * (len(raw) & 1)
    return table + struct.pack(order + "I", next_ifd) + data


def camera_exif(order: str = "<", orientation: int = 6) -> bytes:
    """A camera-like EXIF block: IFD0 → Exif IFD (with MakerNote), GPS IFD, and IFD1 with a JPEG thumbnail."""

    def parts(exif_at: int, gps_at: int, ifd1_at: int, thumb_at: int) -> list[bytes]:
        ifd0 = [
            (0x010E, ASCII, DESCRIPTION),
            (0x010F, ASCII, "VeilCam"),
            (0x0110, ASCII, "Model X100"),
            (0x0112, SHORT, (orientation,)),
            (0x0131, ASCII, "Firmware 1.2"),
            (0x0132, ASCII, "2024:05:06 07:08:09"),
            (0x8298, ASCII, "(c) Example Photos"),
            (0x8769, LONG, (exif_at,)),
            (0x8825, LONG, (gps_at,)),
        ]
        exif = [
            (0x829A, RATIONAL, (1, 250)),
            (0x829D, RATIONAL, (28, 10)),
            (0x8827, SHORT, (200,)),
            (0x9000, UNDEFINED, b"0232"),
            (0x9003, ASCII, "2024:05:06 07:08:09"),
            (0x920A, RATIONAL, (50, 1)),
            (0x927C, UNDEFINED, MAKERNOTE),
            (0x9286, UNDEFINED, USER_COMMENT),
            (0xA431, ASCII, BODY_SERIAL),
        ]
        gps = [
            (0x0001, ASCII, "N"),
            (0x0002, RATIONAL, (52, 1, 22, 1, 1234, 100)),
            (0x0003, ASCII, "E"),
            (0x0004, RATIONAL, (4, 1, 53, 1, 5678, 100)),
            (0x001B, UNDEFINED, GPS_METHOD),
        ]
        ifd1 = [(0x0103, SHORT, (6,)), (0x0201, LONG, (thumb_at,)), (0x0202, LONG, (len(THUMBNAIL),))]
        return [
            _ifd(order, 8, ifd0, next_ifd=ifd1_at),
            _ifd(order, exif_at, exif),
            _ifd(order, gps_at, gps),
            _ifd(order, ifd1_at, ifd1),
        ]

    sizes = [len(part) for part in parts(0, 0, 0, 0)]  # pointer values don't change the sizes
    offsets = [8 + sum(sizes[:n]) for n in range(1, 5)]
    header = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
    return header + b"".join(parts(*offsets)) + THUMBNAIL


def _encoded(ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, astronaut_bgr())
    assert ok
    return bytes(buf.tobytes())


def jpeg_source(tiff: bytes) -> bytes:
    """A JPEG with the EXIF block, an XMP APP1 and an IPTC APP13 segment."""
    jpeg = metadata.with_exif(_encoded(".jpg"), ImageFormat.JPEG, tiff)
    xmp = b"http://ns.adobe.com/xap/1.0/\x00" + XMP
    extra = b"\xff\xe1" + struct.pack(">H", len(xmp) + 2) + xmp
    extra += b"\xff\xed" + struct.pack(">H", len(IPTC) + 2) + IPTC
    return jpeg[:2] + extra + jpeg[2:]


def png_source(tiff: bytes) -> bytes:
    """A PNG with an eXIf chunk and an XMP iTXt chunk."""
    png = metadata.with_exif(_encoded(".png"), ImageFormat.PNG, tiff)
    body = b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + XMP
    chunk = struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(b"iTXt" + body))
    return png[:-12] + chunk + png[-12:]  # before IEND


def webp_source(tiff: bytes) -> bytes:
    """An extended WebP with an EXIF chunk and an XMP chunk (VP8X flags say so)."""
    webp = metadata.with_exif(_encoded(".webp"), ImageFormat.WEBP, tiff)
    chunks = webp[12:] + b"XMP " + struct.pack("<I", len(XMP)) + XMP + b"\x00" * (len(XMP) & 1)
    chunks = chunks[:8] + bytes([chunks[8] | 0x04]) + chunks[9:]  # the XMP flag
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


SOURCES: dict[ImageFormat, Callable[[bytes], bytes]] = {
    ImageFormat.JPEG: jpeg_source,
    ImageFormat.PNG: png_source,
    ImageFormat.WEBP: webp_source,
}


def _blur(source: bytes, keep_metadata: bool = True) -> bytes:
    anonymizer = Anonymizer(cast(Any, FakeDetector([FACE])), cast(Any, FakeDetector([])))
    options = BlurOptions(keep_metadata=keep_metadata)
    return anonymizer.run(source, options, max_pixels=10**8, face_max_side=640).image


def _assert_no_secrets(out: bytes) -> None:
    leaked = [name for name, secret in SECRETS.items() if secret in out]
    assert not leaked


def test_sources_carry_what_the_tests_look_for() -> None:
    # The fixtures are real: Pillow finds the thumbnail, GPS and MakerNote that the results must not have.
    for fmt, build in SOURCES.items():
        with Image.open(io.BytesIO(build(camera_exif()))) as image:
            exif = image.getexif()
        assert exif.get_ifd(ExifTags.IFD.IFD1)[0x0202] == len(THUMBNAIL), fmt
        assert exif.get_ifd(ExifTags.IFD.GPSInfo)[0x0001] == "N", fmt
        assert exif.get_ifd(ExifTags.IFD.Exif)[0x927C] == MAKERNOTE, fmt
        assert exif[0x0112] == 6, fmt


@pytest.mark.parametrize("fmt", list(SOURCES))
@pytest.mark.parametrize("order", ["<", ">"])
def test_kept_metadata_is_the_allowlist_only(fmt: ImageFormat, order: str) -> None:
    out = _blur(SOURCES[fmt](camera_exif(order)))

    _assert_no_secrets(out)
    block = metadata.exif_payload(out, fmt)
    assert block is not None
    assert b"\xff\xd8" not in block  # no embedded JPEG of any kind
    if fmt is ImageFormat.JPEG:
        assert out.find(b"\xff\xd8", 2) == -1  # the result's own SOI is the only one
    with Image.open(io.BytesIO(out)) as image:
        exif = image.getexif()
        assert "xmp" not in image.info
    assert exif[0x0112] == 1  # the pixels were turned; viewers must not turn them again
    assert (exif[0x010F], exif[0x0110], exif[0x0132]) == ("VeilCam", "Model X100", "2024:05:06 07:08:09")
    assert exif[0x8298] == "(c) Example Photos"
    assert 0x010E not in exif  # ImageDescription: free text
    assert 0x8825 not in exif and not exif.get_ifd(ExifTags.IFD.GPSInfo)
    assert not exif.get_ifd(ExifTags.IFD.IFD1)
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    assert sub[0x9003] == "2024:05:06 07:08:09"
    assert float(sub[0x829A]) == pytest.approx(1 / 250)
    assert float(sub[0x829D]) == pytest.approx(2.8)
    assert sub[0x8827] == 200
    assert sub[0x9000] == b"0232"
    assert not {0x927C, 0x9286, 0xA431} & set(sub)  # MakerNote, UserComment, BodySerialNumber


@pytest.mark.parametrize("fmt", list(SOURCES))
def test_stripped_by_default(fmt: ImageFormat) -> None:
    out = _blur(SOURCES[fmt](camera_exif()), keep_metadata=False)
    _assert_no_secrets(out)
    assert metadata.exif_payload(out, fmt) is None


def _broken_blocks() -> dict[str, bytes]:
    good = camera_exif()
    (exif_at,) = struct.unpack_from("<I", good, 8 + 2 + 12 * 7 + 8)  # IFD0's 8th entry: the Exif pointer
    return {
        "not tiff": b"this is not a TIFF block at all",
        "header only": b"II*\x00",
        "IFD0 past the end": b"II*\x00" + struct.pack("<I", 4096),
        "truncated": good[:40],
        "value past the end": b"II*\x00\x08\x00\x00\x00\x01\x00"
        + struct.pack("<HHII", 0x010F, ASCII, 64, 9999)
        + b"\x00" * 4,
        "Exif IFD past the end": good[:exif_at] + b"\xff",
    }


@pytest.mark.parametrize("broken", list(_broken_blocks()))
def test_unreadable_exif_is_dropped_not_copied(broken: str) -> None:
    block = _broken_blocks()[broken]
    out = _blur(jpeg_source(block))
    assert metadata.exif_payload(out, ImageFormat.JPEG) is None
    assert block not in out


def test_orientation_still_read_from_the_source() -> None:
    assert metadata.orientation(camera_exif("<", 8)) == 8
    assert metadata.orientation(camera_exif(">", 3)) == 3
    source = jpeg_source(camera_exif())
    assert metadata.orientation(metadata.exif_payload(source, ImageFormat.JPEG) or b"") == 6


def test_an_oversized_allowlisted_value_is_skipped() -> None:
    # An allowlisted name does not make any payload welcome: a 1 kB "Software" is not a software name.
    ifd0 = [(0x010F, ASCII, "VeilCam"), (0x0131, ASCII, "x" * 1000)]
    block = metadata.allowlisted(b"II*\x00" + struct.pack("<I", 8) + _ifd("<", 8, ifd0))
    assert block is not None and b"x" * 257 not in block
    with Image.open(io.BytesIO(metadata.with_exif(_encoded(".png"), ImageFormat.PNG, block))) as image:
        exif = image.getexif()
    assert dict(exif) == {0x010F: "VeilCam", 0x0112: 1}


def test_an_orientation_entry_cut_off_before_its_value_reads_as_upright() -> None:
    # IFD0 with one Orientation SHORT entry whose value bytes are missing (found by tests/malformed.py).
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHI", 0x0112, 3, 1)
    assert metadata.orientation(tiff) == 1
