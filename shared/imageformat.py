"""Which of the supported image formats a file is, from its first bytes (never from a name or a client's
content type). Both sides use it: the gateway to refuse other formats, the worker to pick its decoder."""

from __future__ import annotations

from shared.jobs import ImageFormat


def sniff_format(data: bytes) -> ImageFormat | None:
    """JPEG, PNG or WebP by magic bytes; None for anything else."""
    if data[:3] == b"\xff\xd8\xff":
        return ImageFormat.JPEG
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ImageFormat.PNG
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ImageFormat.WEBP
    return None
