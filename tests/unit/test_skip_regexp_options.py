"""skip_regexp at the gateway: the native option and Plate Recognizer's repeatable field, and the read
plate in Plate Recognizer's ``plates[].result`` (no network, no models)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.facade import Form
from gateway.options import parse_blur_options
from gateway.routes import platerecognizer
from shared.errors import ValidationError
from shared.jobs import BlurOptions, Detection, ImageFormat, InputInfo, JobRecord, JobStatus, ResultInfo


def test_native_option_takes_one_pattern_or_a_list() -> None:
    assert parse_blur_options({"skip_regexp": "^AB"}).skip_regexp == ("^AB",)
    assert parse_blur_options({"skip_regexp": ["^AB", "X.*"]}).skip_regexp == ("^AB", "X.*")
    with pytest.raises(ValidationError, match="skip_regexp: 'AB\\(' is not a regular expression"):
        parse_blur_options({"skip_regexp": "AB("})
    with pytest.raises(ValidationError, match="skip_regexp: at most 20 patterns"):
        parse_blur_options({"skip_regexp": ["a"] * 21})


def test_platerecognizer_skip_regexp_repeats() -> None:
    form = Form(values={"skip_regexp": ["^ab", "", "xy\\d+"], "plates": ["10"]})
    options, _ = platerecognizer.parse_options(form)
    assert options.skip_regexp == ("^ab", "xy\\d+")  # an empty value is no pattern
    assert platerecognizer.parse_options(Form(values={"plates": ["10"]}))[0].skip_regexp == ()
    with pytest.raises(ValidationError, match="skip_regexp: at most"):
        platerecognizer.parse_options(Form(values={"skip_regexp": ["a"] * 21}))


def _record(*detections: Detection) -> JobRecord:
    return JobRecord(
        id="a" * 32,
        owner="k",
        status=JobStatus.SUCCEEDED,
        input=InputInfo(width=1000, height=500, format=ImageFormat.JPEG),
        options=BlurOptions(),
        detections=list(detections),
        result=ResultInfo(
            url="http://s3/x", expires_at=datetime.now(UTC), content_type="image/jpeg", key="results/x.jpg"
        ),
    )


def test_platerecognizer_result_carries_the_read_plate() -> None:
    read = Detection.model_validate(
        {
            "class": "plate",
            "score": 0.81,
            "box": [500, 300, 700, 360],
            "sources": ["platedet", "text"],
            "text": "AB-123 CD",
            "text_score": 0.9712,
            "skipped": True,
        }
    )
    unread = Detection.model_validate({"class": "plate", "score": 0.5, "box": [10, 10, 60, 30]})
    body = platerecognizer.blur_response(_record(read, unread), None, "x.jpg", None)
    plates: list[dict[str, Any]] = body["plates"]  # type: ignore[assignment]
    first, second = plates
    assert first["result"] == {
        "box": {"xmin": 500, "ymin": 300, "xmax": 700, "ymax": 360},
        "dscore": 0.81,
        "plate": "ab123cd",  # as Snapshot writes plates: lower case, letters and digits
        "score": 0.9712,
        "candidates": [{"plate": "ab123cd", "score": 0.9712}],
    }
    assert second["result"] == {"box": {"xmin": 10, "ymin": 10, "xmax": 60, "ymax": 30}, "dscore": 0.5}
