"""Video jobs are one switch (``VEIL_VIDEO__ENABLED``): off, the gateway refuses videos and workers take none;
on, they run under their own arq timeout, so a photo job's timeout stays what it was."""

from __future__ import annotations

import asyncio

import pytest

from gateway.submission import inspect_media
from shared.errors import UnsupportedMediaError
from shared.jobs import BlurOptions, ImageFormat, InputInfo, JobRequest, ObjectRef, VideoFormat
from shared.queue import ANONYMIZE_FUNCTION, ANONYMIZE_VIDEO_FUNCTION
from shared.settings import Settings
from tests.video_clips import make_clip
from workers.main import video_functions
from workers.sweeper import job_timeout


def _settings(enabled: bool) -> Settings:
    base = Settings()
    return base.model_copy(update={"video": base.video.model_copy(update={"enabled": enabled})})


def test_off_by_default_the_gateway_answers_a_video_with_415() -> None:
    clip = make_clip(4, (64, 48))
    with pytest.raises(UnsupportedMediaError, match="video jobs are off on this deployment"):
        asyncio.run(inspect_media(clip, _settings(False), videos=True))
    info = asyncio.run(inspect_media(clip, _settings(True), videos=True))
    assert info.is_video


def test_workers_take_video_jobs_only_when_on_with_their_own_timeout() -> None:
    assert video_functions(_settings(False)) == []
    on = _settings(True)
    (function,) = video_functions(on)
    assert function.name == ANONYMIZE_VIDEO_FUNCTION != ANONYMIZE_FUNCTION
    assert function.timeout_s == on.video.job_timeout_seconds
    assert job_timeout(on, video=True) == on.video.job_timeout_seconds
    assert job_timeout(on) == on.worker.job_timeout_seconds


def test_a_video_request_is_queued_under_the_video_function() -> None:
    video = InputInfo(width=64, height=48, format=VideoFormat.MP4)
    photo = InputInfo(width=64, height=48, format=ImageFormat.JPEG)
    assert video.is_video and not photo.is_video
    request = JobRequest(
        id="j", owner="o", source=ObjectRef(bucket="b", key="k"), input=video, options=BlurOptions()
    )
    assert request.input.is_video
