"""Linking per-frame detections into tracks, and the box each track hides on every frame. Pure: no pixels.

A small SORT-style tracker (Bewley et al., 2016, without its Kalman filter): per class, each track's box is
predicted on the new frame by constant velocity (the last two sightings, smoothed), and detections are
matched to predictions greedily by IoU, best pair first. A detection nothing matches starts a new track.

What a track hides, so that a detector that blinks never lets the object show:

* every frame from its first to its last sighting: between two sightings (a gap of up to ``max_gap`` frames,
  or the frames ``detect_every_n`` skips) the box is interpolated linearly;
* ``extend`` frames before the first and after the last sighting, extrapolated by the track's velocity
  (an object is usually there a frame before the detector is sure of it);
* each box grown on every side by ``growth`` x the motion per frame (more while extrapolating), so a
  moving object stays covered between where it was seen and where it is interpolated.

Every detection is hidden, single sightings too: the tracker only ever adds cover, never removes it.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

from workers.detectors.base import BoxF, RawDetection


@dataclass(frozen=True)
class TrackParams:
    iou: float = 0.1  # least IoU between a track's predicted box and a detection that continues it
    max_gap: int = 5  # frames without a sighting a track bridges
    extend: int = 2  # frames hidden before the first and after the last sighting
    growth: float = 1.0  # boxes grow by this x the motion per frame, on each side

    @property
    def horizon(self) -> int:
        """How many frames later a frame's boxes are final: a sighting further on cannot reach back."""
        return max(self.max_gap, self.extend)


@dataclass(frozen=True)
class Sighting:
    frame: int
    box: BoxF  # what is hidden: the detection's cover (head, whole plate), before the request's padding
    detection: RawDetection


@dataclass(frozen=True)
class TrackBox:
    track_id: int
    label: str
    box: BoxF


@dataclass
class Track:
    id: int
    label: str
    sightings: list[Sighting] = field(default_factory=list)
    velocity: BoxF = (0.0, 0.0, 0.0, 0.0)  # change of each coordinate per frame

    @property
    def first(self) -> int:
        return self.sightings[0].frame

    @property
    def last(self) -> int:
        return self.sightings[-1].frame

    def add(self, sighting: Sighting) -> None:
        if self.sightings:
            prev = self.sightings[-1]
            step = _motion(prev.box, sighting.box, sighting.frame - prev.frame)
            # Smoothed after the first step: one jittery box should not swing the prediction.
            self.velocity = step if len(self.sightings) == 1 else _mix(self.velocity, step, 0.5)
        self.sightings.append(sighting)

    def predict(self, frame: int) -> BoxF:
        return _shifted(self.sightings[-1].box, self.velocity, frame - self.last)

    def box_at(self, frame: int, params: TrackParams) -> BoxF | None:
        """The box hidden on ``frame`` (grown), or None where the track does not reach."""
        if frame < self.first - params.extend or frame > self.last + params.extend:
            return None
        frames = [s.frame for s in self.sightings]
        if frame < self.first or frame > self.last:  # extrapolated, by the velocity at that end
            edge = self.sightings[0] if frame < self.first else self.sightings[-1]
            velocity = self._start_velocity() if frame < self.first else self.velocity
            distance = frame - edge.frame
            return _grown(_shifted(edge.box, velocity, distance), velocity, params.growth * abs(distance))
        at = bisect.bisect_left(frames, frame)
        if frames[at] == frame:
            motion = self._motion_around(at)
            return _grown(self.sightings[at].box, motion, params.growth)
        before, after = self.sightings[at - 1], self.sightings[at]
        span = after.frame - before.frame
        motion = _motion(before.box, after.box, span)
        box = _shifted(before.box, motion, frame - before.frame)
        return _grown(box, motion, params.growth)

    def best(self) -> Sighting:
        return max(self.sightings, key=lambda s: s.detection.score)

    def _start_velocity(self) -> BoxF:
        if len(self.sightings) < 2:
            return (0.0, 0.0, 0.0, 0.0)
        a, b = self.sightings[0], self.sightings[1]
        return _motion(a.box, b.box, b.frame - a.frame)

    def _motion_around(self, index: int) -> BoxF:
        """Motion per frame at a sighting: the larger of the steps to its neighbours, per coordinate."""
        s = self.sightings
        steps = [
            _motion(s[i].box, s[i + 1].box, s[i + 1].frame - s[i].frame)
            for i in (index - 1, index)
            if 0 <= i < len(s) - 1
        ]
        if not steps:
            return (0.0, 0.0, 0.0, 0.0)
        return tuple(max(abs(step[k]) for step in steps) for k in range(4))  # type: ignore[return-value]


class Tracker:
    """Feed it each frame's detections in order (:meth:`update`), read each settled frame's boxes
    (:meth:`boxes_at`), and let it drop the tracks no later frame needs (:meth:`finish_before`)."""

    def __init__(self, params: TrackParams) -> None:
        self.params = params
        self.active: list[Track] = []
        self.finished: list[Track] = []
        self._next_id = 1
        self.seen = -1  # the last frame given to update

    def update(self, frame: int, detections: Sequence[tuple[BoxF, RawDetection]]) -> None:
        """The detections of ``frame`` (frames in increasing order; a frame not searched may be skipped):
        each box is what is hidden (the cover), the detection what is reported."""
        if frame <= self.seen:
            raise ValueError(f"frame {frame} given after frame {self.seen}")
        self.seen = frame
        reachable = [t for t in self.active if frame - t.last - 1 <= self.params.max_gap]
        pairs: list[tuple[float, int, int]] = []
        for ti, track in enumerate(reachable):
            predicted = track.predict(frame)
            for di, (box, det) in enumerate(detections):
                if det.label == track.label:
                    overlap = iou(predicted, box)
                    if overlap >= self.params.iou:
                        pairs.append((overlap, ti, di))
        pairs.sort(key=lambda p: -p[0])
        used_tracks: set[int] = set()
        used_dets: set[int] = set()
        for _, ti, di in pairs:
            if ti in used_tracks or di in used_dets:
                continue
            used_tracks.add(ti)
            used_dets.add(di)
            box, det = detections[di]
            reachable[ti].add(Sighting(frame, box, det))
        for di, (box, det) in enumerate(detections):
            if di not in used_dets:
                track = Track(self._next_id, det.label)
                self._next_id += 1
                track.add(Sighting(frame, box, det))
                self.active.append(track)

    def settled(self, frame: int) -> bool:
        """Whether ``frame``'s boxes are final: no sighting on a frame not yet given can reach it."""
        return frame <= self.seen - self.params.horizon

    def boxes_at(self, frame: int) -> list[TrackBox]:
        found = []
        for track in self.active:
            box = track.box_at(frame, self.params)
            if box is not None:
                found.append(TrackBox(track.id, track.label, box))
        return found

    def finish_before(self, frame: int) -> None:
        """Frames before ``frame`` are done: tracks that can reach no later frame move to ``finished``
        (and their sightings could be let go of by the caller)."""
        still: list[Track] = []
        for track in self.active:
            bridgeable = self.seen - track.last <= self.params.max_gap
            if bridgeable or track.last + self.params.extend >= frame:
                still.append(track)
            else:
                self.finished.append(track)
        self.active = still

    def all_tracks(self) -> list[Track]:
        return sorted([*self.finished, *self.active], key=lambda t: t.id)


def iou(a: BoxF, b: BoxF) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _motion(a: BoxF, b: BoxF, frames: int) -> BoxF:
    n = max(1, frames)
    return ((b[0] - a[0]) / n, (b[1] - a[1]) / n, (b[2] - a[2]) / n, (b[3] - a[3]) / n)


def _mix(a: BoxF, b: BoxF, weight: float) -> BoxF:
    return tuple(x * (1 - weight) + y * weight for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def _shifted(box: BoxF, velocity: BoxF, frames: int) -> BoxF:
    return tuple(v + d * frames for v, d in zip(box, velocity, strict=True))  # type: ignore[return-value]


def _grown(box: BoxF, motion: BoxF, factor: float) -> BoxF:
    """``box`` grown on the left/right by ``factor`` x the horizontal motion, top/bottom by the vertical."""
    dx = factor * max(abs(motion[0]), abs(motion[2]))
    dy = factor * max(abs(motion[1]), abs(motion[3]))
    x1, y1, x2, y2 = box
    return (x1 - dx, y1 - dy, x2 + dx, y2 + dy)
