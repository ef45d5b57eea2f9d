"""A corpus of malformed and unusual images, built in code (nothing binary is committed), each with the
outcome Veil owes it. One function per case; :data:`CORPUS` lists them all.

An outcome is one of three, and never a 5xx or a dead worker:

* :class:`Refused`: the gateway answers 4xx before anything is stored or queued (native status and code;
  each facade renders it in its own shape);
* :class:`Failed`: the gateway accepts it (its structure is whole), the worker cannot decode it and fails
  the job with a code; nothing is written;
* :class:`Blurred`: a real image people send: the job succeeds and the result is re-encoded from decoded
  pixels (so nothing but pixels survives), in the format the input was sniffed as.

Most cases are built from scikit-image's astronaut (512x512, one face at about x 180-270, y 58-178) so a
blurred result can be checked where the face is; what each case stands for and why its outcome is the
right one is in its docstring.
"""

from __future__ import annotations

import base64
import functools
import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import cv2
import numpy as np
from PIL import Image

from tests.images import astronaut_rgb

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ZIP_MARKER = b"VEIL-POLYGLOT-ZIP-TAIL"  # inside the ZIP member: must never reach a result
FACE = (200, 80, 250, 160)  # x1, y1, x2, y2: inside the astronaut's face, blurred whenever faces are


@dataclass(frozen=True)
class Refused:
    """4xx from the gateway's check (native API status and code), with ``says`` in the message."""

    status: int
    code: str
    says: str


@dataclass(frozen=True)
class Failed:
    """Accepted, then the job fails with ``code``: no result is ever written."""

    code: str


@dataclass(frozen=True)
class Blurred:
    """The job succeeds; the result is a ``content_type`` still of ``size`` with ``depth`` bits per channel
    (16-bit PNG stays 16-bit), its face blurred when ``face`` (the image shows the astronaut)."""

    content_type: str
    size: tuple[int, int] = (512, 512)
    depth: int = 8
    face: bool = True


Outcome = Refused | Failed | Blurred


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    outcome: Outcome
    # What the client claims it is (multipart filename and content type): never trusted, bytes are sniffed.
    filename: str = "image.jpg"
    content_type: str = "image/jpeg"


# -- building blocks ----------------------------------------------------------------------------------------


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


@functools.cache
def astronaut_jpeg() -> bytes:
    return _encode(Image.fromarray(astronaut_rgb()), "JPEG", quality=90)


@functools.cache
def astronaut_png() -> bytes:
    return _encode(Image.fromarray(astronaut_rgb()), "PNG")


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _insert_before_idat(png: bytes, chunk: bytes) -> bytes:
    at = png.index(b"IDAT") - 4  # the chunk's length field
    return png[:at] + chunk + png[at:]


def _frames() -> list[Image.Image]:
    """Two 64x64 frames: a face in the second one only would be a leak if a decoder showed frame one."""
    small = Image.fromarray(astronaut_rgb()).resize((64, 64))
    return [Image.new("RGB", (64, 64), (40, 90, 160)), small]


# -- the cases ----------------------------------------------------------------------------------------------


def truncated_jpeg() -> Case:
    """A JPEG cut in the middle of its scan (an interrupted upload): 400 from the structure check."""
    data = astronaut_jpeg()
    return Case("truncated_jpeg", data[: len(data) // 2], Refused(400, "VALIDATION_ERROR", "truncated"))


def truncated_png() -> Case:
    """A PNG cut inside its IDAT: 400 from the chunk walk (no inflate)."""
    data = astronaut_png()
    return Case(
        "truncated_png",
        data[: len(data) // 2],
        Refused(400, "VALIDATION_ERROR", "truncated"),
        "image.png",
        "image/png",
    )


def truncated_webp() -> Case:
    """A WebP shorter than its RIFF header says: 400."""
    data = _encode(Image.fromarray(astronaut_rgb()), "WEBP", quality=80)
    return Case(
        "truncated_webp",
        data[: len(data) // 2],
        Refused(400, "VALIDATION_ERROR", "truncated"),
        "image.webp",
        "image/webp",
    )


def wrong_magic() -> Case:
    """A PNG whose signature's first byte is damaged: no known format by its magic bytes, whatever its name
    and content type say: 415."""
    data = b"\x88" + astronaut_png()[1:]
    return Case(
        "wrong_magic",
        data,
        Refused(415, "UNSUPPORTED_MEDIA_TYPE", "not a supported image"),
        "image.png",
        "image/png",
    )


def jpeg_magic_png_body() -> Case:
    """JPEG's magic bytes in front of a PNG: sniffed as JPEG, which it is not: 400."""
    return Case(
        "jpeg_magic_png_body", b"\xff\xd8\xff" + astronaut_png(), Refused(400, "VALIDATION_ERROR", "corrupt")
    )


def misnamed_png() -> Case:
    """A whole PNG sent as ``image.jpg`` / ``image/jpeg``: the bytes decide, so it is blurred as the PNG
    it is (and comes back as PNG)."""
    return Case("misnamed_png", astronaut_png(), Blurred("image/png"))


def png_16bit() -> Case:
    """A 16-bit RGB PNG (scanners, HDR exports): a real image, blurred at 16 bits and returned as a 16-bit
    PNG (detectors see an 8-bit copy; the blur runs on the stored pixels)."""
    bgr16 = np.ascontiguousarray(astronaut_rgb()[:, :, ::-1]).astype(np.uint16) * 257
    ok, encoded = cv2.imencode(".png", bgr16)
    assert ok
    return Case("png_16bit", encoded.tobytes(), Blurred("image/png", depth=16), "image.png", "image/png")


def cmyk_jpeg() -> Case:
    """A CMYK JPEG (print workflows): a real image, converted to RGB by the decoder (colours kept) and
    returned as an ordinary RGB JPEG."""
    data = _encode(Image.fromarray(astronaut_rgb()).convert("CMYK"), "JPEG", quality=90)
    return Case("cmyk_jpeg", data, Blurred("image/jpeg"))


def huge_png_header() -> Case:
    """68 bytes of PNG whose header declares 60000x60000 (3.6 G pixels, ~10 GB decoded): refused from the
    header alone (413), never decoded."""
    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    data = (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )
    return Case(
        "huge_png_header",
        data,
        Refused(413, "PAYLOAD_TOO_LARGE", "too many pixels"),
        "image.png",
        "image/png",
    )


def huge_jpeg_header() -> Case:
    """A small JPEG whose frame header says 60000x60000: 413 from the header, as for PNG."""
    data = bytearray(_encode(Image.new("RGB", (16, 16), (90, 90, 90)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    return Case("huge_jpeg_header", bytes(data), Refused(413, "PAYLOAD_TOO_LARGE", "too many pixels"))


def png_zip_polyglot() -> Case:
    """A whole PNG with a ZIP archive appended (a valid PNG and a valid ZIP at once). Sniffed and decoded
    as the PNG it starts with; the result is re-encoded from pixels, so the ZIP never rides along."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("payload.txt", ZIP_MARKER * 4)
    data = astronaut_png() + archive.getvalue()
    assert zipfile.is_zipfile(io.BytesIO(data))
    return Case("png_zip_polyglot", data, Blurred("image/png"), "image.png", "image/png")


def animated_gif() -> Case:
    """Veil blurs JPEG, PNG and WebP; GIF is not one of them: 415 naming it."""
    first, *rest = _frames()
    data = _encode(first, "GIF", save_all=True, append_images=rest, duration=100, loop=0)
    return Case("animated_gif", data, Refused(415, "UNSUPPORTED_MEDIA_TYPE", "GIF"), "anim.gif", "image/gif")


def animated_png() -> Case:
    """An APNG: a PNG decoder shows (and Veil would blur) the first frame only and drop the others, so a
    client would get a still back for an animation. Refused (415) as not supported, rather than changed
    silently; no frame is ever decoded."""
    first, *rest = _frames()
    data = _encode(first, "PNG", save_all=True, append_images=rest, duration=100, loop=0)
    return Case(
        "animated_png",
        data,
        Refused(415, "UNSUPPORTED_MEDIA_TYPE", "animated"),
        "anim.png",
        "image/png",
    )


def animated_webp() -> Case:
    """An animated WebP: as for APNG, only the first frame would be decoded: 415."""
    first, *rest = _frames()
    data = _encode(first, "WEBP", save_all=True, append_images=rest, duration=100, loop=0)
    return Case(
        "animated_webp",
        data,
        Refused(415, "UNSUPPORTED_MEDIA_TYPE", "animated"),
        "anim.webp",
        "image/webp",
    )


def svg() -> Case:
    """SVG is a document, not pixels (and can carry scripts and external references): 415 naming it."""
    data = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="512" height="512">'
        b'<rect width="512" height="512" fill="#369"/></svg>\n'
    )
    return Case("svg", data, Refused(415, "UNSUPPORTED_MEDIA_TYPE", "SVG"), "image.svg", "image/svg+xml")


def png_corrupt_idat() -> Case:
    """A PNG whose chunks are whole but whose compressed pixels are damaged: the gateway checks structure,
    not pixels (see gateway/imagecheck.py), so it is accepted; the worker's decode fails and the job fails
    with VALIDATION_ERROR. Nothing is written."""
    data = bytearray(astronaut_png())
    start = data.index(b"IDAT") + 100
    for at in range(start, start + 300):
        data[at] ^= 0x5A
    return Case("png_corrupt_idat", bytes(data), Failed("VALIDATION_ERROR"), "image.png", "image/png")


def png_truncated_exif() -> Case:
    """A PNG whose eXIf chunk names an Orientation entry but ends before its value. Unreadable EXIF is
    dropped (orientation 1), as the gateway's check reads it: the image is blurred, not failed."""
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1) + struct.pack(">HH", 0x0112, 3)
    data = _insert_before_idat(astronaut_png(), png_chunk(b"eXIf", tiff))
    return Case("png_truncated_exif", data, Blurred("image/png"), "image.png", "image/png")


CORPUS: tuple[Callable[[], Case], ...] = (
    truncated_jpeg,
    truncated_png,
    truncated_webp,
    wrong_magic,
    jpeg_magic_png_body,
    misnamed_png,
    png_16bit,
    cmyk_jpeg,
    huge_png_header,
    huge_jpeg_header,
    png_zip_polyglot,
    animated_gif,
    animated_png,
    animated_webp,
    svg,
    png_corrupt_idat,
    png_truncated_exif,
)


@functools.cache
def cases() -> tuple[Case, ...]:
    return tuple(build() for build in CORPUS)


def refused() -> list[Case]:
    return [case for case in cases() if isinstance(case.outcome, Refused)]


def accepted() -> list[Case]:
    """The cases the gateway queues: they reach a worker."""
    return [case for case in cases() if not isinstance(case.outcome, Refused)]


# -- the input paths ----------------------------------------------------------------------------------------
# Every way a client hands Veil image bytes: the native API (multipart, base64, api4ai's Buffer with its
# wait/output options) and each vendor facade, with how each renders the native API's error.

MULTIPART = "multipart"
BASE64 = "base64"
API4AI = "api4ai"
VEHICORE = "vehicore"
PLATERECOGNIZER = "platerecognizer"
PLATEBLURER = "plateblurer"
PATHS = (MULTIPART, BASE64, API4AI, VEHICORE, PLATERECOGNIZER, PLATEBLURER)
NATIVE_PATHS = (MULTIPART, BASE64, API4AI)


@dataclass(frozen=True)
class Post:
    """One request: ``url`` (path and query) and the keyword arguments for aiohttp's ``post``."""

    url: str
    headers: dict[str, str]
    data: aiohttp.FormData | None = None
    json: dict[str, object] | None = None


def _form(field: str, case: Case, **values: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field(field, case.data, filename=case.filename, content_type=case.content_type)
    for name, value in values.items():
        form.add_field(name, value)
    return form


def post(path: str, case: Case, token: str, *, wait: bool = True) -> Post:
    """The request that submits ``case`` through ``path`` with API key ``token``. Facades wait for the job
    by design; ``wait`` is api4ai's (False: answered 202 at once, as without a worker)."""
    encoded = base64.b64encode(case.data).decode("ascii")
    key = {"X-API-Key": token}
    if path == MULTIPART:
        return Post("/v1/jobs", key, data=_form("image", case))
    if path == BASE64:
        return Post("/v1/jobs", key, json={"image_base64": encoded})
    if path == API4AI:
        document: dict[str, object] = {
            "image": {"type": "Buffer", "data": list(case.data)},
            "objects_to_hide": "Everything",
            "output": "base64",
            "wait": wait,
        }
        return Post("/v1/jobs", key, json=document)
    if path == VEHICORE:
        return Post("/api/anonymize/all?response=image", key, data=_form("image", case))
    if path == PLATERECOGNIZER:
        auth = {"Authorization": f"Token {token}"}
        return Post("/v1/blur", auth, data=_form("upload", case, faces="10", plates="10"))
    if path == PLATEBLURER:
        basic = base64.b64encode(f"user:{token}".encode()).decode("ascii")
        document = {"base64_Photo_String": encoded, "photo_url": "NO"}
        return Post("/plateblurer.aspx", {"Authorization": f"Basic {basic}"}, json=document)
    raise ValueError(f"no input path {path!r}")


def rendered(path: str, status: int, code: str) -> tuple[int, str | None]:
    """The status and code ``path`` answers for a native ``status`` / ``code`` (docs/facades.md): VehiCore
    folds 413 into 400 VALIDATION_ERROR and sends 415 without a code; Plate Recognizer answers 415 as 400
    and has no codes; PlateBlurer's ``cd`` is 1013 for 413 and 2001 for other bad images."""
    if path in NATIVE_PATHS:
        return status, code
    if path == VEHICORE:
        if status in (400, 413):
            return 400, "VALIDATION_ERROR"
        return status, None if status in (415, 503) else code
    if path == PLATERECOGNIZER:
        return (400 if status == 415 else status), None
    if path == PLATEBLURER:
        return (413, "1013") if status == 413 else (400, "2001")
    raise ValueError(f"no input path {path!r}")


def error_of(path: str, body: object) -> tuple[str | None, str]:
    """(code, message) of an error body in ``path``'s shape; AssertionError when it is not that shape."""
    if path in NATIVE_PATHS or path == VEHICORE:
        assert isinstance(body, dict) and isinstance(body.get("message"), str), body
        assert set(body) <= {"message", "code", "job_id"}, body
        code = body.get("code")
        assert code is None or isinstance(code, str), body
        return code, body["message"]
    if path == PLATERECOGNIZER:
        assert isinstance(body, dict) and set(body) <= {"error", "job_id"}, body
        assert isinstance(body["error"], str), body
        return None, body["error"]
    if path == PLATEBLURER:
        assert isinstance(body, list) and len(body) == 1 and isinstance(body[0], dict), body
        item = body[0]
        assert isinstance(item.get("cd"), str) and isinstance(item.get("description"), str), body
        return item["cd"], item["description"]
    raise ValueError(f"no input path {path!r}")
