"""EXIF, read and carried over: where it sits in each format, its orientation, and copying it into an
encoded result (``keep_metadata``). Pure bytes in, bytes out.

Pixels are always turned upright before detection, so a kept EXIF block gets Orientation = 1; otherwise
viewers would rotate the result a second time.
"""

from __future__ import annotations

import struct
import zlib

from shared.jobs import ImageFormat
from shared.jpeg import header_segments

_EXIF_HEADER = b"Exif\x00\x00"
_ORIENTATION_TAG = 0x0112
_SHORT = 3
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
    (value,) = struct.unpack(order + "H", tiff[offset : offset + 2])
    return value if 1 <= value <= 8 else 1


def upright(tiff: bytes) -> bytes:
    """The EXIF block with Orientation set to 1 (the pixels were already turned)."""
    found = _orientation_entry(tiff)
    if found is None:
        return tiff
    order, offset = found
    return tiff[:offset] + struct.pack(order + "H", 1) + tiff[offset + 2 :]


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
