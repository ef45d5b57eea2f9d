"""Blurring a frame's tracked boxes (workers/video/hide.py): the request's padding, sigma and strengths."""

from __future__ import annotations

import numpy as np

from shared.jobs import BlurOptions
from workers.video.hide import blurs_for, hide
from workers.video.tracks import TrackBox

FACE = TrackBox(1, "face", (10.0, 10.0, 30.0, 30.0))
PLATE = TrackBox(2, "plate", (50.0, 40.0, 90.0, 52.0))


def test_regions_are_padded_and_clipped_to_the_frame() -> None:
    blurs = blurs_for(
        [FACE, TrackBox(3, "face", (90.0, 50.0, 130.0, 90.0))], BlurOptions(padding=0.5), 100, 60
    )
    assert blurs == [((0, 0, 40, 40), None), ((70, 30, 100, 60), None)]


def test_the_request_sigma_and_strengths_apply_per_class() -> None:
    assert [s for _, s in blurs_for([FACE, PLATE], BlurOptions(blur=12), 100, 60)] == [12, 12]
    # Plate Recognizer's strength 0: reported, not blurred.
    kept = blurs_for([FACE, PLATE], BlurOptions(plate_strength=0, face_strength=10), 100, 60)
    assert len(kept) == 1 and kept[0][1] is not None and kept[0][1] > 1


def test_hide_blurs_only_inside_the_regions() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(60, 100, 3), dtype=np.uint8)
    out, regions = hide(frame, [FACE], BlurOptions(padding=0))
    assert regions == [(10, 10, 30, 30)]
    changed = np.any(out != frame, axis=2)
    assert changed[10:30, 10:30].mean() > 0.9
    changed[10:30, 10:30] = False
    assert not changed.any()
    same, none = hide(frame, [], BlurOptions())
    assert same is frame and none == []
