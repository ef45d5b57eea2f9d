"""What an uploaded image is: magic-byte sniffing, then a check that it is whole.

Runs before anything is stored or queued, so a truncated or unreadable upload is a 400 at once. PNG and WebP
are decoded by Pillow. A JPEG is checked by its structure instead (headers parsed by Pillow, then an
end-of-image marker after the scan data): decoding it here would repeat the worker's own decode (about 4 ms
of the gateway's ~15 ms of CPU per photo), and Pillow's decode catches little else, since libjpeg only warns
about damaged scan data. A JPEG the worker cannot decode fails its job with ``VALIDATION_ERROR``.
CPU work: async callers go through :func:`gateway.submission.inspect`, which decodes in a thread.
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from shared.errors import PayloadTooLargeError, UnsupportedMediaError, ValidationError
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
_EXIF_ORIENTATION = 0x0112
_ROTATED_ORIENTATIONS = {5, 6, 7, 8}


def sniff_format(data: bytes) -> ImageFormat:
    """The image format from the file's first bytes (never from a name or a client's content type)."""
    if not data:
        raise ValidationError("the image is empty")
    if data.startswith(b"\xff\xd8\xff"):
        return ImageFormat.JPEG
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ImageFormat.PNG
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ImageFormat.WEBP
    if data[4:8] == b"ftyp" and data[8:12] in {b"heic", b"heix", b"mif1", b"avif"}:
        raise UnsupportedMediaError(f"HEIF/AVIF images are not supported; send {_SUPPORTED}")
    for signature, name in _UNSUPPORTED_SIGNATURES:
        if data.startswith(signature):
            raise UnsupportedMediaError(f"{name} images are not supported; send {_SUPPORTED}")
    raise UnsupportedMediaError(f"not a supported image; send {_SUPPORTED}")


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


def inspect_image(data: bytes, limits: LimitSettings) -> InputInfo:
    """Sniff, open and check ``data`` (see the module's text); returns the orientation-corrected size and
    the format.

    Raises 415 for unsupported formats, 413 when the image has too many pixels or too long a side, and
    400 when it is truncated or corrupt.
    """
    image_format = sniff_format(data)
    try:
        with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[image_format]]) as image:
            width, height = image.size
            _check_dimensions(width, height, limits)
            orientation = image.getexif().get(_EXIF_ORIENTATION)
            if image_format is not ImageFormat.JPEG:
                image.load()
            elif not jpeg_is_complete(data):
                raise ValidationError("the JPEG image is truncated: its scan data has no end marker")
    except Image.DecompressionBombError as exc:
        raise PayloadTooLargeError(f"the image has too many pixels: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ValidationError(f"the {image_format.name} image is corrupt or truncated: {exc}") from exc
    if orientation in _ROTATED_ORIENTATIONS:
        width, height = height, width
    return InputInfo(width=width, height=height, format=image_format)


def _check_dimensions(width: int, height: int, limits: LimitSettings) -> None:
    if width <= 0 or height <= 0:
        raise ValidationError(f"the image has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise PayloadTooLargeError(
            f"the image is {width}x{height} = {width * height} pixels, over the limit of {limits.max_pixels}"
        )
    if max(width, height) > limits.max_side:
        raise PayloadTooLargeError(
            f"the image is {width}x{height}, over the limit of {limits.max_side} pixels per side"
        )
