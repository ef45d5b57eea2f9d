"""What an uploaded image is: magic-byte sniffing, then a check that it is whole; nothing is decoded.

Runs before anything is stored or queued, so a truncated or unreadable upload is a 400 at once. Pillow's
``Image.open`` reads headers only: size and pixel limits come from there, before any pixel exists (a 143 KB
PNG can declare 7000x7000, 147 MB once decoded: the check must not pay for that, nor let a few at once
take the gateway's memory). Wholeness comes from the file's structure, which costs no decompression:

* JPEG: the header segments are parsed, then an end-of-image marker is looked for after the scan data;
* PNG: the chunks are walked by their length fields from IHDR to IEND (at least one IDAT; CRCs are not
  recomputed, the data not inflated); EXIF orientation comes from the eXIf chunk found on the way (Pillow's
  own ``getexif`` would decode the image to look for it after the pixel data);
* WebP: the RIFF size must fit the data, and the chunks in it fit the RIFF size, with an image chunk
  (``VP8 ``, ``VP8L`` or an animation frame) among them.

Damage inside compressed data that keeps the structure whole (flipped bytes in a PNG's IDAT or a JPEG's
scan) passes here; the worker's decode finds it and fails the job with ``VALIDATION_ERROR``. Decoding here
would repeat the worker's own decode for every image to catch that rare case.
Structure is checked before Pillow reads the header, so a truncated file is reported as truncated. Other
formats are 415, named where known (GIF, SVG, HEIF, videos...); so are animated PNG and WebP
(:func:`shared.imageformat.is_animated`): Veil blurs still images, and a decoder shows only an
animation's first frame.
CPU work: async callers go through :func:`gateway.submission.inspect`, in a thread for PNG and WebP.
"""

from __future__ import annotations

import io
import struct

from PIL import Image, UnidentifiedImageError

from shared.errors import PayloadTooLargeError, UnsupportedMediaError, ValidationError
from shared.imageformat import is_animated, pixel_weight, sniff_format, sniff_video
from shared.jobs import ImageFormat, InputInfo
from shared.jpeg import START_OF_SCAN, header_segments
from shared.settings import LimitSettings

_PILLOW_FORMATS = {ImageFormat.JPEG: "JPEG", ImageFormat.PNG: "PNG", ImageFormat.WEBP: "WEBP"}

# Formats recognised only to name them in the 415 answer.
_UNSUPPORTED_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"%PDF", "PDF"),
)
_SUPPORTED = "JPEG, PNG or WebP"
_UTF8_BOM = b"\xef\xbb\xbf"
_SVG_HEAD_BYTES = 4096  # an XML declaration, comments and a doctype may come before the <svg> element
_EXIF_ORIENTATION = 0x0112
_ROTATED_ORIENTATIONS = {5, 6, 7, 8}


def supported_format(data: bytes) -> ImageFormat:
    """The image's format (:func:`shared.imageformat.sniff_format`), or 400/415 naming what it is instead."""
    if not data:
        raise ValidationError("the image is empty")
    found = sniff_format(data)
    if found is not None:
        return found
    if data[4:8] == b"ftyp" and data[8:12] in {b"heic", b"heix", b"mif1", b"avif"}:
        raise UnsupportedMediaError(f"HEIF/AVIF images are not supported; send {_SUPPORTED}")
    video = sniff_video(data)
    if video is not None:  # where only photos are taken (the vendor facades); POST /v1/jobs takes videos
        raise UnsupportedMediaError(f"{video.name} videos are not supported here; send {_SUPPORTED}")
    for signature, name in _UNSUPPORTED_SIGNATURES:
        if data.startswith(signature):
            raise UnsupportedMediaError(f"{name} images are not supported; send {_SUPPORTED}")
    if _looks_like_svg(data):
        raise UnsupportedMediaError(f"SVG images are not supported; send {_SUPPORTED}")
    raise UnsupportedMediaError(f"not a supported image; send {_SUPPORTED}")


def _looks_like_svg(data: bytes) -> bool:
    """Markup with an ``<svg`` element near its start (only to name it in the 415 answer)."""
    head = data[:_SVG_HEAD_BYTES].removeprefix(_UTF8_BOM).lstrip().lower()
    return head.startswith(b"<") and b"<svg" in head


def jpeg_is_complete(data: bytes) -> bool:
    """Whether a JPEG's scan data is followed by its end-of-image marker, as a truncated upload's is not.

    The header segments are walked to the first start-of-scan, so an end marker inside an embedded EXIF
    thumbnail does not count; inside scan data a 0xFF byte is always stuffed or a restart marker, so the
    first 0xFFD9 after it is the real end (trailing bytes after it are allowed)."""
    for segment in header_segments(data):
        if segment.marker == START_OF_SCAN:
            # Searched from the end, where a complete file has it: rfind stops at once, find would walk
            # the whole scan (~0.25 ms for 270 KB); whether any exists is the same answer.
            return data.rfind(b"\xff\xd9", segment.offset + 2) != -1
    return False


_PNG_SIGNATURE_BYTES = 8
_PNG_MAX_CHUNK = 2**31 - 1  # the PNG spec's limit on a chunk's length
_WEBP_IMAGE_CHUNKS = frozenset({b"VP8 ", b"VP8L", b"ANMF"})


def png_structure(data: bytes) -> bytes | None:
    """Walk a PNG's chunks by their lengths to IEND; returns its eXIf chunk's body (or None).

    Raises :class:`ValidationError` when the file ends before IEND (truncated), a length is out of range
    or there is no IDAT. Bytes after IEND are allowed, as decoders ignore them."""
    size = len(data)
    pos = _PNG_SIGNATURE_BYTES
    exif: bytes | None = None
    image_data = False
    while pos + 8 <= size:
        length, kind = struct.unpack_from(">I4s", data, pos)
        if length > _PNG_MAX_CHUNK:
            raise ValidationError(f"the PNG image is corrupt: a {kind!r} chunk claims {length} bytes")
        end = pos + 12 + length  # length, type, data, CRC
        if end > size:
            raise ValidationError(
                f"the PNG image is truncated: a {kind!r} chunk needs {end} bytes, the file has {size}"
            )
        if kind == b"IEND":
            if not image_data:
                raise ValidationError("the PNG image is corrupt: it has no image data (IDAT)")
            return exif
        if kind == b"IDAT":
            image_data = True
        elif kind == b"eXIf" and exif is None:
            exif = data[pos + 8 : pos + 8 + length]
        pos = end
    raise ValidationError("the PNG image is truncated: it ends before its IEND chunk")


def webp_structure(data: bytes) -> None:
    """Check that a WebP's RIFF size fits the data and its chunks fit the RIFF size, with an image chunk
    among them; raises :class:`ValidationError` otherwise. Bytes after the RIFF chunk are allowed."""
    size = len(data)
    riff_end = 8 + int.from_bytes(data[4:8], "little")
    if riff_end > size:
        raise ValidationError(
            f"the WEBP image is truncated: its RIFF header declares {riff_end} bytes, the file has {size}"
        )
    pos = 12  # after "RIFF", the size and "WEBP"
    image_data = False
    while pos < riff_end:
        if pos + 8 > riff_end:
            raise ValidationError("the WEBP image is truncated: it ends inside a chunk header")
        kind, length = struct.unpack_from("<4sI", data, pos)
        end = pos + 8 + length
        if end > riff_end:
            raise ValidationError(f"the WEBP image is truncated: its {kind!r} chunk runs past the end")
        image_data = image_data or kind in _WEBP_IMAGE_CHUNKS
        pos = end + (length & 1)  # chunks are padded to an even length
    if not image_data:
        raise ValidationError("the WEBP image is corrupt: it has no image data")


def inspect_image(data: bytes, limits: LimitSettings) -> InputInfo:
    """Sniff, open (headers only) and check ``data`` (see the module's text); returns the
    orientation-corrected size and the format. Never decodes pixels.

    Raises 415 for unsupported formats and animations, 413 when the image has too many pixels or too long
    a side, and 400 when it is truncated or corrupt.
    """
    image_format = supported_format(data)
    if is_animated(data):
        raise UnsupportedMediaError(
            f"animated {image_format.name} images are not supported: Veil blurs still images;"
            f" send one frame as {_SUPPORTED}"
        )
    png_exif: bytes | None = None
    if image_format is ImageFormat.PNG:
        png_exif = png_structure(data)
    elif image_format is ImageFormat.WEBP:
        webp_structure(data)
    try:
        with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[image_format]]) as image:
            width, height = image.size
            _check_dimensions(width, height, limits, pixel_weight(data))
            if image_format is ImageFormat.PNG:
                orientation = _orientation(png_exif)
            else:  # JPEG and WebP: from the header, no decode
                orientation = image.getexif().get(_EXIF_ORIENTATION)
            if image_format is ImageFormat.JPEG and not jpeg_is_complete(data):
                raise ValidationError("the JPEG image is truncated: its scan data has no end marker")
    except Image.DecompressionBombError as exc:
        # Pillow's own ceiling (far above Veil's) was hit before the size could be read back.
        raise PayloadTooLargeError(
            f"the image has too many pixels, over the limit of {limits.max_pixels}"
        ) from exc
    except UnidentifiedImageError as exc:  # its text names Pillow's buffer object: not for the client
        raise ValidationError(f"the {image_format.name} image is corrupt: its header cannot be read") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise ValidationError(f"the {image_format.name} image is corrupt or truncated: {exc}") from exc
    if orientation in _ROTATED_ORIENTATIONS:
        width, height = height, width
    return InputInfo(width=width, height=height, format=image_format)


def _orientation(exif: bytes | None) -> int | None:
    """The Orientation tag of a PNG's eXIf block; None when absent or unreadable (as the worker reads an
    unreadable block: orientation 1, not a reason to refuse the image)."""
    if not exif:
        return None
    parsed = Image.Exif()
    try:
        parsed.load(exif)
        value = parsed.get(_EXIF_ORIENTATION)
    except Exception:  # any malformed TIFF structure; Pillow raises a variety of types for it
        return None
    return value if isinstance(value, int) else None


def _check_dimensions(width: int, height: int, limits: LimitSettings, weight: int = 1) -> None:
    if width <= 0 or height <= 0:
        raise ValidationError(f"the image has no pixels ({width}x{height})")
    if width * height * weight > limits.max_pixels:
        counted = " of 16 bits per channel, which count twice," if weight == 2 else ""
        raise PayloadTooLargeError(
            f"the image is {width}x{height} = {width * height} pixels{counted} over the limit of"
            f" {limits.max_pixels}"
        )
    if max(width, height) > limits.max_side:
        raise PayloadTooLargeError(
            f"the image is {width}x{height}, over the limit of {limits.max_side} pixels per side"
        )
