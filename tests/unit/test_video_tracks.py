"""The video tracker (workers/video/tracks.py) on made-up detections: gaps bridged, boxes grown while
moving, every-Nth-frame interpolation, extension before and after, and what is final when."""

from __future__ import annotations

import pytest

from shared.settings import VideoSettings
from workers.detectors.base import BoxF, RawDetection
from workers.video.run import track_params
from workers.video.tracks import Tracker, TrackParams, iou


def _det(box: BoxF, label: str = "face") -> tuple[BoxF, RawDetection]:
    return box, RawDetection(label, 0.9, box)  # type: ignore[arg-type]


def _moving(frame: int, speed: float = 4.0, y: float = 50.0) -> BoxF:
    """A 40x40 box moving right by ``speed`` px per frame."""
    x = 10 + speed * frame
    return (x, y, x + 40, y + 40)


def _covers(outer: BoxF, inner: BoxF) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3]


def _run(tracker: Tracker, frames: dict[int, list[tuple[BoxF, RawDetection]]], last: int) -> None:
    for frame in range(last + 1):
        if frame in frames:
            tracker.update(frame, frames[frame])


def test_a_gap_is_bridged_by_interpolation_and_covers_the_object() -> None:
    tracker = Tracker(TrackParams(max_gap=5, extend=0, growth=1.0))
    seen = {f: [_det(_moving(f))] for f in range(20) if f not in (8, 9, 10, 11)}  # the detector blinks
    _run(tracker, seen, 19)
    assert len(tracker.all_tracks()) == 1
    for frame in range(20):
        boxes = tracker.boxes_at(frame)
        assert len(boxes) == 1, frame
        assert _covers(boxes[0].box, _moving(frame)), (frame, boxes[0].box)


def test_a_gap_longer_than_max_gap_starts_a_new_track_and_leaves_the_gap() -> None:
    tracker = Tracker(TrackParams(max_gap=2, extend=0))
    seen = {f: [_det(_moving(f))] for f in (0, 1, 2, 8, 9)}
    _run(tracker, seen, 9)
    assert len(tracker.all_tracks()) == 2
    assert tracker.boxes_at(5) == []


def test_boxes_grow_with_motion_and_not_when_still() -> None:
    still, moving = Tracker(TrackParams(extend=0)), Tracker(TrackParams(extend=0, growth=1.0))
    _run(still, {f: [_det(_moving(f, speed=0))] for f in range(5)}, 4)
    _run(moving, {f: [_det(_moving(f, speed=6))] for f in range(5)}, 4)
    assert still.boxes_at(2)[0].box == _moving(2, speed=0)
    x1, y1, x2, y2 = moving.boxes_at(2)[0].box
    bx1, by1, bx2, by2 = _moving(2, speed=6)
    assert (x1, x2) == pytest.approx((bx1 - 6, bx2 + 6))  # one frame's motion on each side
    assert (y1, y2) == (by1, by2)  # no vertical motion, no vertical growth


def test_extension_reaches_before_the_first_and_after_the_last_sighting() -> None:
    tracker = Tracker(TrackParams(max_gap=0, extend=2, growth=1.0))
    _run(tracker, {f: [_det(_moving(f))] for f in range(5, 10)}, 9)
    assert tracker.boxes_at(2) == [] and tracker.boxes_at(12) == []
    for frame in (3, 4, 10, 11):
        (box,) = tracker.boxes_at(frame)
        assert _covers(box.box, _moving(frame)), frame  # extrapolated along the motion


def test_every_nth_frame_detection_is_interpolated_between() -> None:
    params = track_params(VideoSettings(detect_every_n=3, track_max_gap=1, track_extend=0))
    assert (params.max_gap, params.extend) == (5, 2)
    tracker = Tracker(params)
    _run(tracker, {f: [_det(_moving(f, speed=5))] for f in range(0, 30, 3)}, 27)
    for frame in range(28):
        (box,) = tracker.boxes_at(frame)
        assert _covers(box.box, _moving(frame, speed=5)), frame
    # One missed pass (frame 15) is still bridged: 12 -> 18 is a gap of 5 frames.
    gappy = Tracker(params)
    _run(gappy, {f: [_det(_moving(f, speed=5))] for f in range(0, 30, 3) if f != 15}, 27)
    assert len(gappy.all_tracks()) == 1


def test_classes_are_tracked_apart_and_two_objects_stay_two_tracks() -> None:
    tracker = Tracker(TrackParams())
    for frame in range(6):
        face = _det(_moving(frame), "face")
        plate = _det(_moving(frame), "plate")
        other = _det(_moving(frame, y=200.0), "face")
        tracker.update(frame, [face, plate, other])
    labels = sorted(t.label for t in tracker.all_tracks())
    assert labels == ["face", "face", "plate"]
    assert all(len(t.sightings) == 6 for t in tracker.all_tracks())


def test_a_frame_is_final_only_once_no_later_sighting_can_reach_it() -> None:
    tracker = Tracker(TrackParams(max_gap=3, extend=1))
    tracker.update(0, [_det(_moving(0))])
    tracker.update(3, [])
    assert not tracker.settled(1)
    # A sighting on frame 4 would still bridge frames 1-3: the track is kept.
    tracker.finish_before(1)
    assert tracker.active and not tracker.finished
    tracker.update(4, [])
    assert tracker.settled(1) and not tracker.settled(2)
    # Frame 4 had none: no later sighting can continue it, and its extension ends at frame 1.
    tracker.finish_before(2)
    assert not tracker.active and len(tracker.finished) == 1


def test_frames_must_come_in_order() -> None:
    tracker = Tracker(TrackParams())
    tracker.update(3, [])
    with pytest.raises(ValueError, match="after frame 3"):
        tracker.update(3, [])


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
