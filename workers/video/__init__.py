"""Video jobs in the worker (docs/video.md): probe (:mod:`.probe`), streaming decode (:mod:`.decode`),
detection on frames (:mod:`.detect`), tracking (:mod:`.tracks`), blurring (:mod:`.hide`), H.264/MP4
encoding (:mod:`.encode`), and the loop that ties them (:mod:`.run`)."""

from workers.video.probe import VideoInfo, check_limits, probe_video
from workers.video.run import TrackedDetection, VideoResult, anonymize_video

__all__ = ["TrackedDetection", "VideoInfo", "VideoResult", "anonymize_video", "check_limits", "probe_video"]
