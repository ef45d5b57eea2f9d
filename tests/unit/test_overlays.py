"""workers/overlays.py: blur strength → sigma, logo warp, exclusion filter, panorama chunks."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from shared.errors import ValidationError
from shared.jobs import Exclusion
from workers.detectors.base import RawDetection
from workers.overlays import (
    decode_logo,
    exclusion_filter,
    order_corners,
    split_chunks,
    strength_sigma,
    warp_logo,
)

PLATE = ((100.0, 50.0), (200.0, 55.0), (198.0, 85.0), (98.0, 80.0))  # TL, TR, BR, BL


def test_strength_sigma() -> None:
    assert strength_sigma(0, (0, 0, 100, 40)) is None
    weak, strong = strength_sigma(1, (0, 0, 100, 40)), strength_sigma(10, (0, 0, 100, 40))
    assert weak is not None and strong is not None
    assert weak < strong
    assert strong == pytest.approx(25.0)  # a quarter of the longest side
    assert strength_sigma(1, (0, 0, 4, 4)) == 1.0  # never under 1
    for bad in (-1, 11):
        with pytest.raises(ValueError, match=r"0\.\.10"):
            strength_sigma(bad, (0, 0, 10, 10))


def test_order_corners_any_input_order() -> None:
    shuffled = (PLATE[2], PLATE[0], PLATE[3], PLATE[1])
    assert order_corners(shuffled) == PLATE
    # cv2.boxPoints order (bottom-left first) as the plate detector gives it
    assert order_corners((PLATE[3], PLATE[0], PLATE[1], PLATE[2])) == PLATE
    with pytest.raises(ValueError, match="4 corners"):
        order_corners(PLATE[:3])


def _logo(alpha: int = 255) -> np.ndarray:
    logo = np.zeros((30, 100, 4), np.uint8)
    logo[:, :, :3] = (255, 0, 0)  # blue in BGR
    logo[:, :, 3] = alpha
    return logo


def test_warp_logo_covers_the_polygon_only() -> None:
    image = np.full((200, 300, 3), 80, np.uint8)
    out = warp_logo(image, _logo(), PLATE)
    assert out is not image and (image == 80).all()  # input untouched
    centre = out[67, 150]
    assert centre[0] > 240 and centre[1] < 15 and centre[2] < 15
    assert (out[:40] == 80).all() and (out[100:] == 80).all()  # nothing outside changes
    assert (out[:, :90] == 80).all() and (out[:, 210:] == 80).all()


def test_warp_logo_alpha_and_layouts() -> None:
    gray = np.full((120, 260), 10, np.uint8)
    half = warp_logo(gray, _logo(alpha=128), PLATE)
    assert 10 < int(half[67, 150]) < 30 + 10  # half-transparent blue over dark gray
    bgra16 = np.zeros((120, 260, 4), np.uint16)
    out = warp_logo(bgra16, _logo(), PLATE)
    assert out.dtype == np.uint16
    assert out[67, 150, 0] == 65535 and out[67, 150, 3] == 65535
    clipped = warp_logo(np.zeros((60, 150, 3), np.uint8), _logo(), PLATE)  # polygon runs off the image
    assert clipped[55, 120, 0] > 200
    outside = warp_logo(np.zeros((10, 10, 3), np.uint8), _logo(), PLATE)
    assert not outside.any()


def test_decode_logo() -> None:
    ok, png = cv2.imencode(".png", np.full((8, 16, 3), 200, np.uint8))
    assert ok
    logo = decode_logo(png.tobytes())
    assert logo.shape == (8, 16, 4) and (logo[:, :, 3] == 255).all()
    ok, gray = cv2.imencode(".png", np.full((8, 16), 7, np.uint8))
    assert decode_logo(gray.tobytes()).shape == (8, 16, 4)
    with pytest.raises(ValidationError):
        decode_logo(b"not an image")


def _det(box: tuple[float, float, float, float], label: str = "plate", score: float = 0.9) -> RawDetection:
    return RawDetection(label, score, box, None)  # type: ignore[arg-type]


def test_exclusion_filter() -> None:
    dets = [_det((10, 10, 30, 30)), _det((450, 450, 470, 470)), _det((200, 200, 260, 240))]
    assert exclusion_filter(dets, None, 500, 500) == dets
    top = Exclusion(top=10)  # centre y=20 < 50
    assert exclusion_filter(dets, top, 500, 500) == dets[1:]
    right_bottom = Exclusion(right=10, bottom=10)
    assert exclusion_filter(dets, right_bottom, 500, 500) == [dets[0], dets[2]]
    box = Exclusion(box=(190, 190, 300, 300))
    assert exclusion_filter(dets, box, 500, 500) == dets[:2]
    with pytest.raises(ValueError, match="xmin < xmax"):
        Exclusion(box=(10, 10, 5, 20))
    with pytest.raises(ValueError, match="less than or equal to 100"):
        Exclusion(top=101)


def test_split_chunks() -> None:
    assert split_chunks(800, 600, 20) == [(0, 800)]  # not wide: one chunk
    chunks = split_chunks(4000, 600, 20)
    assert chunks[0][0] == 0 and chunks[-1][1] == 4000
    assert all(x2 - x1 == 800 for x1, x2 in chunks)
    for (_, a2), (b1, _) in itertools.pairwise(chunks):
        assert a2 - b1 >= 0.2 * 800 - 1  # at least the requested overlap
    assert len(split_chunks(4000, 600, 50)) > len(chunks)
    with pytest.raises(ValueError, match="overlap"):
        split_chunks(4000, 600, 100)


@pytest.mark.parametrize(("count", "overlap"), [(2, 0), (3, 10), (4, 25), (16, 50)])
def test_split_into_a_given_number_of_chunks(count: int, overlap: float) -> None:
    # Plate Recognizer's client sends `split N`: N chunks, whatever the aspect.
    chunks = split_chunks(3000, 500, overlap, count)
    assert len(chunks) == count
    assert chunks[0][0] == 0 and chunks[-1][1] == 3000
    width = chunks[0][1] - chunks[0][0]
    assert all(x2 - x1 == width for x1, x2 in chunks)
    for (_, a2), (b1, _) in itertools.pairwise(chunks):
        assert a2 - b1 >= overlap / 100 * width - 1


def test_one_chunk_is_the_whole_width() -> None:
    assert split_chunks(3000, 500, 20, 1) == [(0, 3000)]
    with pytest.raises(ValueError, match="at least 1"):
        split_chunks(3000, 500, 20, 0)
