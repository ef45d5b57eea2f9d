"""Hiding a frame's tracked boxes: the photo pipeline's regions and blur (:mod:`workers.imageops`), with the
request's padding, shrink, sigma and per-class strength."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from shared.jobs import BlurOptions
from workers import imageops, overlays
from workers.imageops import Region
from workers.video.tracks import TrackBox

RGB = npt.NDArray[np.uint8]


def blurs_for(
    boxes: Sequence[TrackBox], options: BlurOptions, width: int, height: int
) -> list[tuple[Region, float | None]]:
    """Each box's region and sigma (None: scaled to the region); a class at strength 0 is left out."""
    out: list[tuple[Region, float | None]] = []
    for box in boxes:
        strength = options.face_strength if box.label == "face" else options.plate_strength
        regions = imageops.regions_from_boxes(
            [box.box], padding=options.padding, shrink=options.shrink, width=width, height=height
        )
        for region in regions:
            if strength is None:
                out.append((region, options.blur))
            elif (sigma := overlays.strength_sigma(strength, region)) is not None:
                out.append((region, sigma))
    return out


def hide(rgb: RGB, boxes: Sequence[TrackBox], options: BlurOptions) -> tuple[RGB, list[Region]]:
    """A copy of ``rgb`` with every box blurred, and the regions that were."""
    height, width = rgb.shape[:2]
    blurs = blurs_for(boxes, options, width, height)
    if not blurs:
        return rgb, []
    out: RGB = imageops.blur_each(rgb, blurs)
    return out, [region for region, _ in blurs]
