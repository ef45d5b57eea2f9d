"""The bench's warm-up set: one image per distinct upright size (the models' input shapes follow it)."""

from __future__ import annotations

import cv2
import numpy as np

from cli.bench_model import one_per_size


def _jpeg(width: int, height: int) -> bytes:
    ok, encoded = cv2.imencode(".jpg", np.full((height, width, 3), 128, dtype=np.uint8))
    assert ok
    return encoded.tobytes()


def test_one_image_per_distinct_size_in_order() -> None:
    images = [
        ("a.jpg", _jpeg(64, 48)),
        ("b.jpg", _jpeg(64, 48)),
        ("c.jpg", _jpeg(48, 64)),
        ("d.txt", b"not an image"),  # left to the timed run, which reports it
        ("e.jpg", _jpeg(64, 48)),
        ("f.jpg", _jpeg(32, 32)),
    ]
    assert [name for name, _ in one_per_size(images, max_pixels=10_000)] == ["a.jpg", "c.jpg", "f.jpg"]


def test_images_over_the_pixel_limit_are_skipped() -> None:
    assert one_per_size([("big.jpg", _jpeg(200, 200))], max_pixels=100) == []
