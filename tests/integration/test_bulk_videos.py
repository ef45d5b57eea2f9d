"""Bulk jobs take videos where video jobs are on: listed by suffix, told by their first bytes."""

from __future__ import annotations

import uuid

import pytest

from shared.bulk import is_image_key
from shared.errors import VeilError
from shared.jobs import VideoFormat
from shared.storage import ObjectStore
from tests.video_clips import make_clip
from workers.bulk import _probe_object

pytestmark = [pytest.mark.integration]


def test_videos_are_listed_only_where_video_jobs_are_on() -> None:
    assert is_image_key("a/b.JPG") and is_image_key("a/b.mp4", videos=True)
    assert not is_image_key("a/b.mp4") and not is_image_key("a/b.txt", videos=True)


def test_a_video_child_is_probed_by_its_bytes_and_refused_where_videos_are_off(store: ObjectStore) -> None:
    key = f"bulk-videos/{uuid.uuid4().hex}/clip.mp4"
    store.put(key, make_clip(4, (64, 48), audio=False), "video/mp4")
    info = _probe_object(store, store.bucket, key, videos=True)
    assert info.format is VideoFormat.MP4 and info.is_video
    with pytest.raises(VeilError):  # not a photo: the child fails, nothing is queued
        _probe_object(store, store.bucket, key)
    store.delete(key)
