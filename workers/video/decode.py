"""Streaming demux and decode: video frames one at a time, and the audio packets as they are (to be copied).

Nothing is kept: the caller holds the frames it still needs (the pipeline's look-ahead window) and lets
the rest go. A decode error anywhere fails the video (``VALIDATION_ERROR``): a video is blurred whole
or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator

import av.error
from av.audio.stream import AudioStream
from av.container import InputContainer
from av.packet import Packet
from av.stream import Stream
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from shared.errors import ValidationError


def demux(
    container: InputContainer, video: VideoStream, audio: AudioStream | None
) -> Iterator[VideoFrame | Packet[Stream]]:
    """The video stream's frames in presentation order, and ``audio``'s packets, interleaved as stored."""
    video.thread_type = "AUTO"  # frame and slice threads: decoding is a large part of a video's CPU
    streams = [video] if audio is None else [video, audio]
    frames = 0
    try:
        for packet in container.demux(streams):
            if packet.stream is video:
                # A packet with no data (at the end) flushes the decoder's delayed frames.
                for frame in video.codec_context.decode(packet):
                    frames += 1
                    yield frame
            elif packet.dts is not None:  # the demuxer's own flush packets carry nothing to copy
                yield packet
    except av.error.FFmpegError as exc:
        raise ValidationError(f"the video could not be decoded after {frames} frames: {exc}") from exc
