"""EXIF, read and carried over: where it sits in each format, its orientation, and an allowlisted copy of
it for an encoded result (``keep_metadata``). Pure bytes in, bytes out.

A kept block is rebuilt, never copied: only the descriptive tags below survive, in a fresh little-endian
TIFF block with no IFD1, so no thumbnail (an unblurred copy of the photo), GPS, MakerNote, free text or
serial numbers can ride along. Anything unreadable is dropped whole rather than copied. Pixels are always
turned upright before detection, so the block gets Orientation = 1; otherwise viewers would turn the
result a second time.
"""

from __future__ import annotations

import struct
import zlib

from shared.jobs import ImageFormat
from shared.jpeg import header_segments

_EXIF_HEADER = b"Exif\x00\x00"
_ORIENTATION_TAG = 0x0112
_EXIF_IFD_TAG = 0x8769
_SHORT, _LONG = 3, 4
# IFD0 tags kept. Not ImageDescription (free text), nor anything that points elsewhere but the Exif IFD.
_KEPT_IFD0 = frozenset(
    {
        0x010F,  # Make
        0x0110,  # Model
        0x011A,  # XResolution
        0x011B,  # YResolution
        0x0128,  # ResolutionUnit
        0x0131,  # Software
        0x0132,  # DateTime
        0x013B,  # Artist: the photographer's credit, as Copyright
        0x8298,  # Copyright
    }
)
# Exif IFD tags kept: capture settings and times. Not MakerNote, UserComment, serial numbers, owner name,
# ImageUniqueID, nor PixelX/YDimension (they describe the source, not the turned result: the image says).
_KEPT_EXIF = frozenset(
    {
        0x829A,  # ExposureTime
        0x829D,  # FNumber
        0x8822,  # ExposureProgram
        0x8827,  # ISOSpeedRatings
        0x9000,  # ExifVersion
        0x9003,  # DateTimeOriginal
        0x9004,  # DateTimeDigitized
        0x9010,  # OffsetTime
        0x9011,  # OffsetTimeOriginal
        0x9012,  # OffsetTimeDigitized
        0x9201,  # ShutterSpeedValue
        0x9202,  # ApertureValue
        0x9204,  # ExposureBiasValue
        0x9205,  # MaxApertureValue
        0x9207,  # MeteringMode
        0x9209,  # Flash
        0x920A,  # FocalLength
        0x9290,  # SubSecTime
        0x9291,  # SubSecTimeOriginal
        0x9292,  # SubSecTimeDigitized
        0xA001,  # ColorSpace
        0xA402,  # ExposureMode
        0xA403,  # WhiteBalance
        0xA405,  # FocalLengthIn35mmFilm
        0xA406,  # SceneCaptureType
        0xA432,  # LensSpecification
        0xA433,  # LensMake
        0xA434,  # LensModel
    }
)
# TIFF value types kept, as (struct code, numbers per value): values are re-packed little-endian number
# by number. Others (floats, IFD pointers) are not used by the tags above.
_TYPES = {
    1: ("B", 1),  # BYTE
    2: ("B", 1),  # ASCII
    3: ("H", 1),  # SHORT
    4: ("I", 1),  # LONG
    5: ("I", 2),  # RATIONAL
    7: ("B", 1),  # UNDEFINED
    9: ("i", 1),  # SLONG
    10: ("i", 2),  # SRATIONAL
}
_MAX_VALUE = 256  # bytes: plenty for any kept tag; longer values are skipped, so none can carry a payload
_VP8X_EXIF = 0x08  # WebP extended-format flags
_VP8X_ALPHA = 0x10


def exif_payload(data: bytes, fmt: ImageFormat) -> bytes | None:
    """The TIFF-structured EXIF block of an encoded image (without JPEG's ``Exif\\0\\0`` header), if any."""
    payload: bytes | None = None
    if fmt is ImageFormat.JPEG:
        for segment in header_segments(data):  # metadata segments all come before the scan
            body = data[segment.offset + 4 : segment.end]
            if segment.marker == 0xE1 and body.startswith(_EXIF_HEADER):
                payload = body
                break
    elif fmt is ImageFormat.PNG:
        i = 8
        while i + 8 <= len(data):
            (length,) = struct.unpack(">I", data[i : i + 4])
            kind = data[i + 4 : i + 8]
            if kind == b"eXIf":
                payload = data[i + 8 : i + 8 + length]
                break
            if kind == b"IEND":
                break
            i += 12 + length
    elif fmt is ImageFormat.WEBP and data[12:16] == b"VP8X":  # only extended WebP carries EXIF
        i = 12
        while i + 8 <= len(data):
            kind = data[i : i + 4]
            (length,) = struct.unpack("<I", data[i + 4 : i + 8])
            if kind == b"EXIF":
                payload = data[i + 8 : i + 8 + length]
                break
            i += 8 + length + (length & 1)
    if payload is not None and payload.startswith(_EXIF_HEADER):
        payload = payload[len(_EXIF_HEADER) :]
    return payload or None


def _orientation_entry(tiff: bytes) -> tuple[str, int] | None:
    """(byte order, offset of the Orientation value) in IFD0, if the tag is there as a SHORT."""
    if tiff[:4] == b"II*\x00":
        order = "<"
    elif tiff[:4] == b"MM\x00*":
        order = ">"
    else:
        return None
    try:
        (ifd,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
        for n in range(count):
            entry = ifd + 2 + 12 * n
            tag, kind = struct.unpack(order + "HH", tiff[entry : entry + 4])
            if tag == _ORIENTATION_TAG and kind == _SHORT:
                return order, entry + 8
    except struct.error:
        return None
    return None


def orientation(tiff: bytes) -> int:
    """EXIF Orientation 1..8 (1 when absent or unreadable)."""
    found = _orientation_entry(tiff)
    if found is None:
        return 1
    order, offset = found
    if offset + 2 > len(tiff):  # the entry is cut off before its value
        return 1
    (value,) = struct.unpack_from(order + "H", tiff, offset)
    return value if 1 <= value <= 8 else 1


Entries = dict[int, tuple[int, int, bytes]]  # tag -> (type, count, value packed little-endian)


def _read_ifd(tiff: bytes, order: str, offset: int, kept: frozenset[int]) -> Entries:
    """The ``kept`` tags of the IFD at ``offset``; struct.error when an offset or a value is past the end."""
    (count,) = struct.unpack_from(order + "H", tiff, offset)
    entries: Entries = {}
    for n in range(count):
        tag, kind, number, inline = struct.unpack_from(order + "HHI4s", tiff, offset + 2 + 12 * n)
        if tag not in kept or kind not in _TYPES or tag in entries:
            continue
        code, per = _TYPES[kind]
        numbers = number * per
        size = numbers * struct.calcsize(code)
        if size > _MAX_VALUE:
            continue
        if size > 4:
            (at,) = struct.unpack(order + "I", inline)
            raw = tiff[at : at + size]
        else:
            raw = inline[:size]
        values = struct.unpack(f"{order}{numbers}{code}", raw)  # struct.error when past the end
        entries[tag] = (kind, number, struct.pack(f"<{numbers}{code}", *values))
    return entries


def _write_ifd(entries: Entries, offset: int) -> bytes:
    """An IFD at ``offset`` with its long values right after it, and no next IFD (so never a thumbnail)."""
    data_at = offset + 2 + 12 * len(entries) + 4
    table, data = [struct.pack("<H", len(entries))], b""
    for tag in sorted(entries):  # TIFF wants ascending tags
        kind, count, value = entries[tag]
        if len(value) <= 4:
            table.append(struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\x00"))
        else:
            table.append(struct.pack("<HHII", tag, kind, count, data_at + len(data)))
            data += value + b"\x00" * (len(value) & 1)  # values start on even offsets
    return b"".join(table) + b"\x00\x00\x00\x00" + data


def allowlisted(tiff: bytes) -> bytes | None:
    """A fresh EXIF block with only the allowlisted tags of ``tiff`` and Orientation 1; None when ``tiff``
    cannot be read (keep nothing rather than copy what was not understood)."""
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(tiff[:4])
    if order is None:
        return None
    try:
        (ifd0_at,) = struct.unpack_from(order + "I", tiff, 4)
        ifd0 = _read_ifd(tiff, order, ifd0_at, _KEPT_IFD0 | {_EXIF_IFD_TAG})
        pointer = ifd0.pop(_EXIF_IFD_TAG, None)
        exif: Entries = {}
        if pointer is not None and pointer[:2] == (_LONG, 1):
            (exif_at,) = struct.unpack("<I", pointer[2])
            exif = _read_ifd(tiff, order, exif_at, _KEPT_EXIF)
    except struct.error:
        return None
    ifd0[_ORIENTATION_TAG] = (_SHORT, 1, struct.pack("<H", 1))
    if exif:
        ifd0[_EXIF_IFD_TAG] = (_LONG, 1, b"\x00" * 4)  # its offset is only known once IFD0 is laid out
        exif_at = 8 + len(_write_ifd(ifd0, 8))
        ifd0[_EXIF_IFD_TAG] = (_LONG, 1, struct.pack("<I", exif_at))
    block = b"II*\x00" + struct.pack("<I", 8) + _write_ifd(ifd0, 8)
    return block + _write_ifd(exif, len(block)) if exif else block


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def webp_size(data: bytes) -> tuple[int, int] | None:
    """A WebP's canvas size from its first chunk (extended, lossy or lossless), if readable."""
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _webp_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")


def _webp_with_exif(encoded: bytes, tiff: bytes) -> bytes:
    """An extended WebP (VP8X, EXIF flag set) with an EXIF chunk at the end, where the format puts it."""
    chunks = encoded[12:]
    first = chunks[:4]
    if first == b"VP8X":  # already extended (the encoder writes this when there is alpha)
        chunks = chunks[:8] + bytes([chunks[8] | _VP8X_EXIF]) + chunks[9:]
    else:
        size = webp_size(encoded)
        if size is None:
            return encoded  # not a WebP this module can read: drop the metadata rather than corrupt it
        width, height = size
        lossless_alpha = first == b"VP8L" and bool(int.from_bytes(encoded[21:25], "little") >> 28 & 1)
        flags = _VP8X_EXIF | (_VP8X_ALPHA if lossless_alpha else 0)
        canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        chunks = _webp_chunk(b"VP8X", bytes([flags, 0, 0, 0]) + canvas) + chunks
    chunks += _webp_chunk(b"EXIF", tiff)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def with_exif(encoded: bytes, fmt: ImageFormat, tiff: bytes) -> bytes:
    """``encoded`` (as written by the encoder: no metadata) with the EXIF block added."""
    if fmt is ImageFormat.JPEG:
        segment = _EXIF_HEADER + tiff
        if len(segment) + 2 > 0xFFFF:
            return encoded  # too large for one APP1 segment: drop rather than corrupt
        return encoded[:2] + b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + encoded[2:]
    if fmt is ImageFormat.PNG:
        ihdr_end = 8 + 12 + struct.unpack(">I", encoded[8:12])[0]
        return encoded[:ihdr_end] + _png_chunk(b"eXIf", tiff) + encoded[ihdr_end:]
    return _webp_with_exif(encoded, tiff)
