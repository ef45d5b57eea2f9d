"""VEIL_WORKER__DETECTION: one switch that trades recall for throughput, explicit settings still winning."""

from __future__ import annotations

import pytest

from shared.settings import FAST_DETECTION, WorkerSettings, load_settings
from workers.sources import model_names


def test_thorough_is_the_default_and_runs_every_source() -> None:
    worker = WorkerSettings()
    assert worker.detection == "thorough"
    assert (worker.face_retinaface, worker.face_yunet, worker.plate_text) == (True, True, "on")


def test_fast_drops_the_extra_face_sources_and_reads_plates_only_as_a_fallback() -> None:
    worker = WorkerSettings(detection="fast")
    for name, value in FAST_DETECTION.items():
        assert getattr(worker, name) == value
    names = model_names(worker, face_model="fp32", plate_model="fp32")
    assert names[0] == "centerface-fp32"
    assert not any(name.startswith(("retinaface", "yunet")) for name in names)


def test_an_explicit_setting_wins_over_the_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEIL_WORKER__DETECTION", "fast")
    monkeypatch.setenv("VEIL_WORKER__FACE_YUNET", "true")
    monkeypatch.setenv("VEIL_WORKER__PLATE_TEXT", "on")
    worker = load_settings().worker
    assert worker.detection == "fast"
    assert (worker.face_retinaface, worker.face_yunet, worker.plate_text) == (False, True, "on")


def test_an_unknown_preset_is_refused_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEIL_WORKER__DETECTION", "fastest")
    with pytest.raises(ValueError, match="thorough"):
        load_settings()
