"""Stand-ins for the worker's detector runner in tests that exercise the task around it (the store, Redis,
arq), not detection: the "result" is the input's bytes, as an 8x8 PNG with nothing found."""

from __future__ import annotations

from shared.jobs import ImageFormat
from workers.pipeline import AnonymizeResult


def passthrough_result(data: bytes, timings_ms: dict[str, float] | None = None) -> AnonymizeResult:
    return AnonymizeResult(
        image=data,
        content_type="image/png",
        format=ImageFormat.PNG,
        width=8,
        height=8,
        detections=[],
        regions=[],
        timings_ms=dict(timings_ms or {}),
    )
