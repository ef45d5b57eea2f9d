"""The gateway's PNG and WebP check: pixel limits from the header and wholeness from the file's
structure (PNG chunks up to IEND, WebP's RIFF size), without decoding, so a small file of huge
dimensions costs the gateway nothing like its pixels."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from gateway.imagecheck import inspect_image
from shared.errors import PayloadTooLargeError, UnsupportedMediaError, ValidationError
from shared.jobs import ImageFormat
from shared.settings import LimitSettings
from tests.images import astronaut_rgb

REPO = Path(__file__).resolve().parents[2]
BIG = 7000  # 49 M pixels: under the default limit of 50 M; 147 MB as RGB once decoded


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def blank_png(width: int, height: int) -> bytes:
    """An all-black RGB PNG, compressed row by row (the test never holds the pixels either)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * width)  # filter type 0, then the row's pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = [_chunk(b"IDAT", idat[i : i + 8192]) for i in range(0, len(idat), 8192)]
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + b"".join(chunks) + _chunk(b"IEND", b"")


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


@pytest.fixture(scope="module")
def big_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """(7000x7000 image, small image of the same format) per format, on disk for a fresh interpreter."""
    folder = tmp_path_factory.mktemp("big")
    small = Image.fromarray(astronaut_rgb())
    files = {
        "png": (blank_png(BIG, BIG), _encode(small, "PNG")),
        "webp": (_encode(Image.new("RGB", (BIG, BIG)), "WEBP", lossless=True), _encode(small, "WEBP")),
    }
    paths = {}
    for name, (big, little) in files.items():
        paths[name] = (folder / f"big.{name}", folder / f"small.{name}")
        paths[name][0].write_bytes(big)
        paths[name][1].write_bytes(little)
    return paths


_MEASURE = """
import json, sys, tracemalloc
from pathlib import Path
from gateway.imagecheck import inspect_image
from shared.settings import LimitSettings

def peak_rss() -> int:  # this process's own high-water mark (ru_maxrss may carry the parent's over exec)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")

big, small = Path(sys.argv[1]).read_bytes(), Path(sys.argv[2]).read_bytes()
inspect_image(small, LimitSettings())  # plugins imported, codecs loaded
Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts again from here
before = peak_rss()
tracemalloc.start()
info = inspect_image(big, LimitSettings())
traced = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
grown = peak_rss() - before
measured = {"size": [info.width, info.height], "traced": traced, "rss_grown": grown, "bytes": len(big)}
print(json.dumps(measured))
"""


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_a_huge_small_file_is_checked_without_its_pixels(
    big_files: dict[str, tuple[Path, Path]], fmt: str
) -> None:
    big, small = big_files[fmt]
    # A fresh interpreter: its peak RSS says what this one check cost. tracemalloc alone would miss
    # Pillow's image memory (plain malloc, no Python objects); the process's high-water mark sees it.
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(big), str(small)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    measured = json.loads(run.stdout)
    assert measured["size"] == [BIG, BIG]
    assert measured["bytes"] < 200_000
    pixels = BIG * BIG
    assert measured["traced"] < pixels // 16, measured
    assert measured["rss_grown"] < pixels // 8, measured


def test_pixel_limits_refuse_the_huge_file_from_its_header(big_files: dict[str, tuple[Path, Path]]) -> None:
    for fmt in ("png", "webp"):
        data = big_files[fmt][0].read_bytes()
        with pytest.raises(PayloadTooLargeError, match="pixels"):
            inspect_image(data, LimitSettings(max_pixels=BIG * BIG - 1))
        with pytest.raises(PayloadTooLargeError):
            inspect_image(data, LimitSettings(max_side=BIG - 1))
        assert inspect_image(data, LimitSettings()).format is ImageFormat(fmt)


def _png() -> bytes:
    return _encode(Image.fromarray(astronaut_rgb()), "PNG")


def _webp(**params: object) -> bytes:
    return _encode(Image.fromarray(astronaut_rgb()), "WEBP", **params)


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (64, 48), colour) for colour in ("red", "green", "blue")]
    return _encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_png(), id="png"),
        pytest.param(_png() + b"trailing bytes", id="png-trailing"),
        pytest.param(_encode(Image.new("LA", (40, 30)), "PNG"), id="png-la"),
        pytest.param(_encode(Image.new("P", (40, 30)), "PNG", transparency=0), id="png-palette"),
        pytest.param(_webp(), id="webp-lossy"),
        pytest.param(_webp(lossless=True), id="webp-lossless"),
        pytest.param(_encode(Image.new("RGBA", (40, 30)), "WEBP"), id="webp-alpha"),
    ],
)
def test_whole_images_pass(data: bytes) -> None:
    info = inspect_image(data, LimitSettings())
    assert info.width > 0 and info.height > 0


@pytest.mark.parametrize(
    ("data", "name"),
    [
        pytest.param(_animated("PNG"), "PNG", id="apng"),
        pytest.param(_animated("WEBP"), "WEBP", id="webp-animated"),
        pytest.param(_animated("WEBP")[:-10], "WEBP", id="webp-animated-cut"),
    ],
)
def test_animations_are_415(data: bytes, name: str) -> None:
    """A decoder shows an animation's first frame only: refused, not silently turned into a still."""
    with pytest.raises(UnsupportedMediaError, match=f"animated {name} images are not supported"):
        inspect_image(data, LimitSettings())


def _without_iend(data: bytes) -> bytes:
    assert data.endswith(_chunk(b"IEND", b""))
    return data[: -len(_chunk(b"IEND", b""))]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_png()[: len(_png()) // 2], id="png-half"),
        pytest.param(_png()[:-1], id="png-last-byte"),
        pytest.param(_without_iend(_png()), id="png-no-iend"),
        pytest.param(_png()[:33], id="png-header-only"),
        pytest.param(_png()[:37], id="png-cut-in-a-chunk-header"),
        pytest.param(_webp()[: len(_webp()) // 2], id="webp-half"),
        pytest.param(_webp()[:-1], id="webp-last-byte"),
        pytest.param(_webp(lossless=True)[:40], id="webp-lossless-cut"),
        pytest.param(_encode(Image.new("RGBA", (40, 30)), "WEBP")[:-10], id="webp-extended-cut"),
    ],
)
def test_truncated_images_are_400(data: bytes) -> None:
    with pytest.raises(ValidationError, match="truncated"):
        inspect_image(data, LimitSettings())


def test_structurally_broken_images_are_400() -> None:
    png = _png()
    no_idat = png[:33] + _chunk(b"IEND", b"")
    huge_chunk = png[:33] + struct.pack(">I", 0xFFFFFFF0) + b"IDAT" + png[41:]
    riff_lies = _webp()[:4] + struct.pack("<I", 0xFFFF) + _webp()[8:]
    no_frame = b"RIFF" + struct.pack("<I", 4 + 8 + 4) + b"WEBP" + b"XYZW" + struct.pack("<I", 4) + b"abcd"
    for data in (no_idat, huge_chunk, riff_lies, no_frame):
        with pytest.raises(ValidationError):
            inspect_image(data, LimitSettings())


def _chunks(png: bytes) -> list[bytes]:
    chunks, pos = [], 8
    while pos < len(png):
        length = struct.unpack_from(">I", png, pos)[0]
        chunks.append(png[pos : pos + 12 + length])
        pos += 12 + length
    return chunks


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_png_orientation_is_read_from_its_exif_chunk_before_or_after_the_pixels() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° when displayed
    png = _encode(Image.new("RGB", (300, 100)), "PNG", exif=exif)
    chunks = _chunks(png)
    assert any(chunk[4:8] == b"eXIf" for chunk in chunks)
    moved = [chunk for chunk in chunks if chunk[4:8] not in (b"eXIf", b"IEND")]
    moved += [chunk for chunk in chunks if chunk[4:8] == b"eXIf"] + [_chunk(b"IEND", b"")]
    after_pixels = png[:8] + b"".join(moved)
    broken_exif = png[:8] + b"".join(
        c if c[4:8] != b"eXIf" else _chunk(b"eXIf", b"MM\x00*junk") for c in chunks
    )
    for data, size in ((png, (100, 300)), (after_pixels, (100, 300)), (broken_exif, (300, 100))):
        info = inspect_image(data, LimitSettings())
        assert (info.width, info.height) == size
