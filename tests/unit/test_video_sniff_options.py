"""A video job's own options over the worker's video settings, and the progress it reports."""

from __future__ import annotations

from shared.jobs import BlurOptions
from shared.settings import VideoSettings
from workers.videojob import VideoWatch, job_settings


def test_the_jobs_options_win_where_set() -> None:
    worker = VideoSettings(keep_audio=True, detect_every_n=2)
    assert job_settings(worker, BlurOptions()) == worker
    own = job_settings(worker, BlurOptions(keep_audio=False, detect_every_n=5))
    assert (own.keep_audio, own.detect_every_n) == (False, 5)
    # unset in a photo's JSON: workers of before still read it
    assert "keep_audio" not in BlurOptions().model_dump(mode="json")


def test_progress_has_no_eta_before_the_first_frame() -> None:
    watch = VideoWatch()
    assert watch.report().model_dump() == {"frames_done": 0, "frames_total": 0, "eta_seconds": None}
    watch.progress(10, 40)
    report = watch.report()
    assert (report.frames_done, report.frames_total) == (10, 40)
    assert report.eta_seconds is not None and report.eta_seconds >= 0
