"""Images shared by the facade end-to-end tests."""

from __future__ import annotations

import cv2

from tests.images import astronaut_bgr, make_plate_scene

PLATE_SCENE, PLATE_BOX = make_plate_scene()


def jpeg(image: object) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])  # type: ignore[call-overload]
    assert ok
    return bytes(buffer.tobytes())


PLATE_JPEG = jpeg(PLATE_SCENE)
ASTRONAUT_JPEG = jpeg(astronaut_bgr())
