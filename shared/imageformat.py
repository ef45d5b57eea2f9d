"""Which of the supported image formats a file is, from its first bytes (never from a name or a client's
content type). Both sides use it: the gateway to refuse other formats, the worker to pick its decoder.
Videos too (:func:`sniff_video`): an ISO base media ``ftyp`` box (MP4, QuickTime) or an EBML header
(Matroska, WebM), from the first bytes alone; whether one holds a stream Veil can decode is the gateway's
probe (gateway/videocheck.py).

Animations are refused on both sides (:func:`is_animated`): a PNG or WebP decoder hands back the first
frame only, so blurring one would silently turn an animation into a still of its first frame.
"""

from __future__ import annotations

import struct

from shared.jobs import ImageFormat, VideoFormat

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_WEBP_ANIMATION_FLAG = 0x02  # in the VP8X chunk's flags byte
_WEBP_ANIMATION_CHUNKS = frozenset({b"ANIM", b"ANMF"})
EBML_MAGIC = b"\x1a\x45\xdf\xa3"
# ftyp brands of HEIF and AVIF images (and their image sequences): not videos. Audio-only MP4 (M4A) is
# sniffed as MP4; the gateway's probe then finds no video stream in it.
_NOT_VIDEO_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}
)
_QUICKTIME_BRAND = b"qt  "
SNIFF_BYTES = 64  # enough for every signature here (a WebM's DocType sits in its first ~40 bytes)


def sniff_format(data: bytes) -> ImageFormat | None:
    """JPEG, PNG or WebP by magic bytes; None for anything else."""
    if data[:3] == b"\xff\xd8\xff":
        return ImageFormat.JPEG
    if data[:8] == PNG_SIGNATURE:
        return ImageFormat.PNG
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ImageFormat.WEBP
    return None


def sniff_video(data: bytes) -> VideoFormat | None:
    """MP4, MOV, MKV or WebM by magic bytes; None for anything else (HEIF and AVIF stills, whose files are
    ``ftyp`` boxes too, included). A Matroska file whose DocType says ``webm`` is WebM."""
    if data[4:8] == b"ftyp" and len(data) >= 12:
        brand = data[8:12]
        if brand in _NOT_VIDEO_BRANDS:
            return None
        return VideoFormat.MOV if brand == _QUICKTIME_BRAND else VideoFormat.MP4
    if data[:4] == EBML_MAGIC:
        return VideoFormat.WEBM if b"webm" in data[4:SNIFF_BYTES] else VideoFormat.MKV
    return None


def pixel_weight(data: bytes) -> int:
    """How many pixels one pixel of this image counts for against the pixel limit, which is counted in
    8-bit pixels: 2 for a 16-bit PNG (twice the memory once decoded, and through every copy the worker
    makes of it), else 1. From the PNG header (IHDR's bit depth); JPEG and WebP are always 8-bit."""
    if sniff_format(data) is ImageFormat.PNG and data[12:16] == b"IHDR" and len(data) > 24:
        return 2 if data[24] == 16 else 1
    return 1


def is_animated(data: bytes) -> bool:
    """Whether a PNG or WebP declares an animation: an APNG's ``acTL`` chunk (before its image data, as
    the APNG spec puts it), a WebP's animation flag or animation chunks. Reads chunk headers only, so a
    file's first bytes are enough (what is not there is not looked for); False for other formats."""
    fmt = sniff_format(data)
    if fmt is ImageFormat.PNG:
        return _png_is_animated(data)
    if fmt is ImageFormat.WEBP:
        return _webp_is_animated(data)
    return False


def _png_is_animated(data: bytes) -> bool:
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"acTL":
            return True
        if kind in (b"IDAT", b"IEND"):
            return False
        pos += 12 + length  # length, type, data, CRC
    return False


def _webp_is_animated(data: bytes) -> bool:
    pos = 12  # after "RIFF", the size and "WEBP"
    while pos + 8 <= len(data):
        kind, length = struct.unpack_from("<4sI", data, pos)
        if kind in _WEBP_ANIMATION_CHUNKS:
            return True
        if kind == b"VP8X" and pos + 8 < len(data) and data[pos + 8] & _WEBP_ANIMATION_FLAG:
            return True
        pos += 8 + length + (length & 1)  # chunks are padded to an even length
    return False
