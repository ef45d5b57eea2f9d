"""Several sources per class, fused (workers.detectors.fusion), skip_regexp, and the Anonymizer with fake
second sources: sources recorded, per-source thresholds and timings, plates left alone by their text."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

import cv2
import numpy as np
import orjson
import pytest

from shared.errors import ModelsNotReadyError
from shared.jobs import MAX_SKIP_PATTERNS, BlurOptions, Detection, JobRequest, Target, plate_key
from shared.settings import WorkerSettings
from tests.images import astronaut_bgr
from workers import sources as sources_mod
from workers import tiling
from workers.detection import SOURCE_TIMING, DetectionConfig
from workers.detectors.base import RawDetection
from workers.detectors.fusion import FACE_MATCH, PLATE_MATCH, fuse, skip_matching
from workers.pipeline import Anonymizer

FACE = RawDetection("face", 0.9, (180.0, 60.0, 270.0, 180.0))
PLATE = RawDetection(
    "plate", 0.8, (300.0, 400.0, 400.0, 430.0), ((300, 400), (400, 400), (400, 430), (300, 430))
)
# PP-OCR's plate from the same plate's text: a little wider, inside vertically; and a second plate.
TEXT_ON_PLATE = RawDetection(
    "plate", 0.7, (296.0, 405.0, 404.0, 425.0), None, text="AB 123 CD", text_score=0.93
)
OTHER_TEXT = RawDetection("plate", 0.65, (20.0, 300.0, 90.0, 320.0), None, text="XY-987", text_score=0.88)


# -- fusion -------------------------------------------------------------------------------------------------


def test_faces_found_by_both_become_one_region_covering_both() -> None:
    retina = RawDetection("face", 0.75, (175.0, 50.0, 268.0, 185.0))
    alone = RawDetection("face", 0.8, (10.0, 10.0, 40.0, 45.0))
    fused = fuse([("centerface", [FACE]), ("retinaface", [retina, alone])], FACE_MATCH)
    assert fused == [
        RawDetection("face", 0.9, (175.0, 50.0, 270.0, 185.0), sources=("centerface", "retinaface")),
        replace(alone, sources=("retinaface",)),
    ]


def test_neighbouring_faces_stay_apart() -> None:
    beside = RawDetection("face", 0.8, (250.0, 60.0, 340.0, 180.0))  # IoU ~0.13 with FACE
    fused = fuse([("centerface", [FACE]), ("retinaface", [beside])], FACE_MATCH)
    assert [d.sources for d in fused] == [("centerface",), ("retinaface",)]


def test_text_on_a_plate_adds_its_reading_and_extent() -> None:
    fused = fuse([("platedet", [PLATE]), ("text", [TEXT_ON_PLATE, OTHER_TEXT])], PLATE_MATCH)
    first, second = fused
    assert first.sources == ("platedet", "text")
    assert first.box == (296.0, 400.0, 404.0, 430.0)  # covers both: the sources disagree on extent
    assert first.polygon == PLATE.polygon and first.score == 0.8
    assert (first.text, first.text_score) == ("AB 123 CD", 0.93)
    assert second == replace(OTHER_TEXT, sources=("text",))


def test_one_source_still_records_itself_and_nothing_is_nothing() -> None:
    assert fuse([("platedet", [PLATE]), ("text", [])], PLATE_MATCH) == [replace(PLATE, sources=("platedet",))]
    assert fuse([("centerface", []), ("retinaface", [])], FACE_MATCH) == []


def test_tiling_keeps_sources_and_text() -> None:
    tagged = replace(TEXT_ON_PLATE, sources=("text",))
    shifted = tiling.shift(tagged, 10, 5)
    assert shifted.box == (306.0, 410.0, 414.0, 430.0)
    assert (shifted.text, shifted.sources) == (tagged.text, ("text",))
    merged = tiling.merge([replace(PLATE, sources=("platedet",)), shifted], 0.5)
    assert len(merged) == 1
    assert merged[0].sources == ("platedet", "text") and merged[0].text == "AB 123 CD"
    assert merged[0].polygon == PLATE.polygon


# -- skip_regexp --------------------------------------------------------------------------------------------


def test_plate_key() -> None:
    assert plate_key("AB-123 cd") == "ab123cd"
    assert plate_key(" 7·ABC.123 ") == "7abc123"


def test_skip_matches_the_whole_read_text_case_insensitively() -> None:
    options = BlurOptions(skip_regexp=("ab\\d+CD",))
    unread = replace(PLATE, sources=("platedet",))
    read = replace(TEXT_ON_PLATE, sources=("text",))
    face = replace(FACE, text="AB123CD")  # only plates are ever skipped
    out = skip_matching([unread, read, face], options.skip_patterns())
    assert [d.skipped for d in out] == [False, True, False]
    # A prefix is not a match: the pattern must cover the whole plate.
    assert not skip_matching([read], BlurOptions(skip_regexp=("ab",)).skip_patterns())[0].skipped
    assert skip_matching([read], BlurOptions(skip_regexp=("ab.*",)).skip_patterns())[0].skipped
    assert skip_matching([read], []) == [read]


def test_skip_regexp_is_validated_and_bounded() -> None:
    assert BlurOptions.model_validate({"skip_regexp": "^AB"}).skip_regexp == ("^AB",)
    assert BlurOptions.model_validate({"skip_regexp": ["a", "b"]}).skip_regexp == ("a", "b")
    for bad, needle in (
        (["AB("], "not a regular expression"),
        (["x" * 101], "1 to 100 characters"),
        ([""], "1 to 100 characters"),
        (["a"] * (MAX_SKIP_PATTERNS + 1), "at most"),
    ):
        with pytest.raises(ValueError, match=needle):
            BlurOptions.model_validate({"skip_regexp": bad})


def test_contract_stays_backward_compatible() -> None:
    # Jobs without skip_regexp serialise as before, so workers that predate it still take them.
    assert "skip_regexp" not in BlurOptions().model_dump(mode="json")
    assert BlurOptions(skip_regexp=("a",)).model_dump(mode="json")["skip_regexp"] == ["a"]
    old = {"class": "plate", "score": 0.5, "box": [1, 2, 3, 4], "polygon": None}
    det = Detection.model_validate(old)
    assert (det.sources, det.text, det.text_score, det.skipped) == ([], None, None, False)
    dumped = orjson.loads(det.model_dump_json(by_alias=True))
    assert dumped == {**old, "sources": [], "text": None, "text_score": None, "skipped": False}
    assert JobRequest.model_fields["options"].annotation is BlurOptions


# -- the Anonymizer with second sources ----------------------------------------------------------------------


class Fake:
    def __init__(self, found: list[RawDetection], recognizer: object | None = None) -> None:
        self.found = found
        self.calls: list[tuple[Any, ...]] = []
        self.recognizer = recognizer

    def detect(self, image: Any, *args: Any, **kwargs: Any) -> list[RawDetection]:
        self.calls.append((image.shape, *args, kwargs))
        return self.found


def _png() -> bytes:
    ok, buf = cv2.imencode(".png", astronaut_bgr())
    assert ok
    return bytes(buf.tobytes())


def _run(anonymizer: Anonymizer, **options: Any) -> Any:
    return anonymizer.run(_png(), BlurOptions(**options), max_pixels=10**8, face_max_side=640)


def test_every_source_runs_fused_and_timed() -> None:
    retina = RawDetection("face", 0.95, (176.0, 55.0, 272.0, 182.0))
    crowd = RawDetection("face", 0.8, (20.0, 400.0, 32.0, 414.0))  # a small face only YuNet finds
    centerface, retinaface, yunet = Fake([FACE]), Fake([retina]), Fake([crowd, retina])
    platedet, text = Fake([PLATE]), Fake([TEXT_ON_PLATE, OTHER_TEXT])
    anonymizer = Anonymizer(
        cast(Any, centerface),
        cast(Any, platedet),
        retinaface=cast(Any, retinaface),
        plate_text=cast(Any, text),
        yunet=cast(Any, yunet),
    )
    assert anonymizer.sources == {
        "face": ["centerface", "retinaface", "yunet"],
        "plate": ["platedet", "text"],
    }
    result = _run(anonymizer)
    assert [d.sources for d in result.detections] == [
        ("centerface", "retinaface", "yunet"),
        ("yunet",),
        ("platedet", "text"),
        ("text",),
    ]
    assert len(result.regions) == 4
    # RetinaFace at its own floor (0.75), not the face default (0.3); upscale 2; YuNet at 0.7, upscale 3;
    # text at >= 0.6, platedet's plates (box ∪ polygon) passed as known, and read there too.
    assert retinaface.calls == [((512, 512, 3), 0.75, 640, {"upscale": 2.0})]
    assert yunet.calls == [((512, 512, 3), 0.7, 640, {"upscale": 3.0})]
    ((_shape, score, kwargs),) = text.calls
    assert score == 0.6 and kwargs["known"] == [PLATE.box] and kwargs["read_known"] is True
    sources_ms = {k for k in result.timings_ms if k.startswith(SOURCE_TIMING)}
    names = ("centerface", "retinaface", "yunet", "platedet", "text")
    assert sources_ms == {f"{SOURCE_TIMING}{n}" for n in names}
    # A request's min_score raises a second source's floor, never lowers it.
    _run(anonymizer, min_score=0.9, targets=(Target.FACES,))
    assert retinaface.calls[-1][1] == 0.9
    _run(anonymizer, min_score=0.1, targets=(Target.FACES,))
    assert retinaface.calls[-1][1] == 0.75 and yunet.calls[-1][1] == 0.7


def test_permissive_profile_finds_plates_from_text_alone() -> None:
    text = Fake([OTHER_TEXT])
    anonymizer = Anonymizer(cast(Any, Fake([])), None, plate_text=cast(Any, text))
    assert anonymizer.sources == {"face": ["centerface"], "plate": ["text"]}
    result = _run(anonymizer)
    assert [d.sources for d in result.detections] == [("text",)]
    assert text.calls[0][2]["known"] == []
    assert not any(k.startswith(SOURCE_TIMING) for k in result.timings_ms)  # one source per class
    with pytest.raises(ValueError, match="no plate detector"):
        Anonymizer(cast(Any, Fake([])), None)
    with pytest.raises(ValueError, match="no plate detector"):
        Anonymizer(
            cast(Any, Fake([])), None, config=DetectionConfig(plate_text="off"), plate_text=cast(Any, text)
        )


def test_fallback_reads_text_only_where_platedet_found_nothing() -> None:
    config = DetectionConfig(plate_text="fallback")
    text = Fake([OTHER_TEXT])
    _run(Anonymizer(cast(Any, Fake([])), cast(Any, Fake([PLATE])), config=config, plate_text=cast(Any, text)))
    assert text.calls == []
    result = _run(
        Anonymizer(cast(Any, Fake([])), cast(Any, Fake([])), config=config, plate_text=cast(Any, text))
    )
    assert len(text.calls) == 1
    assert [d.sources for d in result.detections] == [("text",)]


def test_a_plate_whose_text_matches_is_reported_skipped_and_left_alone() -> None:
    skipped_plate = replace(TEXT_ON_PLATE, box=(300.0, 400.0, 420.0, 440.0))
    anonymizer = Anonymizer(cast(Any, Fake([])), cast(Any, Fake([PLATE])), plate_text=cast(Any, Fake([])))
    source = _png()
    result = anonymizer.run(
        source, BlurOptions(skip_regexp=("ab123cd",)), max_pixels=10**8, face_max_side=640
    )
    assert [d.skipped for d in result.detections] == [False]  # unread: never skipped
    assert len(result.regions) == 1

    anonymizer = Anonymizer(
        cast(Any, Fake([])), cast(Any, Fake([])), plate_text=cast(Any, Fake([skipped_plate]))
    )
    kept = anonymizer.run(source, BlurOptions(skip_regexp=("ab123cd",)), max_pixels=10**8, face_max_side=640)
    (plate,) = kept.detections
    assert plate.skipped and plate.text == "AB 123 CD"
    assert kept.regions == []
    before = cv2.imdecode(np.frombuffer(source, np.uint8), cv2.IMREAD_COLOR)
    after = cv2.imdecode(np.frombuffer(kept.image, np.uint8), cv2.IMREAD_COLOR)
    assert before is not None and after is not None
    assert np.array_equal(before, after)  # PNG: lossless, nothing blurred
    blurred = anonymizer.run(source, BlurOptions(skip_regexp=("zz.*",)), max_pixels=10**8, face_max_side=640)
    assert not blurred.detections[0].skipped and len(blurred.regions) == 1


# -- the profiles -------------------------------------------------------------------------------------------


def test_model_names_per_profile() -> None:
    best = WorkerSettings()
    assert sources_mod.model_names(best, face_model="fp32", plate_model="int8") == [
        "centerface-fp32",
        "retinaface-mnet025",
        "yunet-2023mar",
        "platedet-int8",
        "ppocr-v4-det",
        "ppocr-v4-rec",
    ]
    permissive = WorkerSettings(
        models="permissive", face_retinaface=False, face_yunet=False, plate_text_read=False
    )
    assert sources_mod.model_names(permissive, face_model="int8", plate_model="int8") == [
        "centerface-int8",
        "ppocr-v4-det",
    ]
    off = WorkerSettings(plate_text="off", face_retinaface=False, face_yunet=False)
    assert sources_mod.model_names(off, face_model="fp32", plate_model="fp32") == [
        "centerface-fp32",
        "platedet-fp32",
    ]
    sources_mod.check_profile(off)
    with pytest.raises(ModelsNotReadyError, match="PLATE_TEXT"):
        sources_mod.check_profile(WorkerSettings(models="permissive", plate_text="off"))


def test_text_runs_at_the_photos_resolution_when_it_is_the_only_plate_source() -> None:
    assert sources_mod.text_max_side(WorkerSettings()) == 640
    assert sources_mod.text_max_side(WorkerSettings(models="permissive")) == 1280
    assert sources_mod.text_max_side(WorkerSettings(models="permissive", plate_text_max_side=960)) == 960
