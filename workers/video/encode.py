"""The output: H.264 (libx264) in MP4, frame rate, timestamps and rotation kept, audio copied untouched.

Nothing else of the input is written: no container or stream metadata (GPS tracks, titles, device names,
dates), no subtitle, data or attachment streams. Audio MP4 cannot hold (Vorbis, PCM, ...) is re-encoded
to AAC; every other audio stream is copied packet for packet. The file is written only at ``dst``, and
the caller deletes it if anything fails (:func:`workers.video.run.anonymize_video` fails closed).
See docs/video.md for why H.264 and the licence of the encoder.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Final

import av
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.packet import Packet
from av.stream import Stream
from av.video.frame import VideoFrame

from shared.settings import VideoSettings

CONTENT_TYPE = "video/mp4"
EXTENSION = "mp4"
ENCODER: Final = "libx264"
# Audio codecs the MP4 muxer stores as they are; others are re-encoded to AAC.
MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "flac", "opus"})


class VideoWriter:
    """An MP4 being written at ``dst``: :meth:`frame` each frame in order, :meth:`audio` each packet,
    :meth:`close` to flush the encoder and finish the file."""

    def __init__(
        self,
        dst: Path,
        *,
        width: int,
        height: int,
        rate: Fraction,
        time_base: Fraction,
        rotation: int,
        audio: AudioStream | None,
        settings: VideoSettings,
    ) -> None:
        # faststart: the index up front, so a browser plays the result while it downloads.
        self._out: OutputContainer = av.open(
            str(dst), mode="w", format="mp4", container_options={"movflags": "+faststart"}
        )
        try:
            video = self._out.add_stream(
                ENCODER, rate=rate, options={"crf": str(settings.crf), "preset": settings.preset}
            )
            video.width, video.height = width - width % 2, height - height % 2  # yuv420p: even sides
            video.pix_fmt = "yuv420p"
            video.time_base = time_base
            if rotation:
                video.set_display_rotation(rotation)
            self._video = video
            self._audio_in = audio
            self._audio_out: AudioStream | None = None
            self._transcode = False
            if audio is not None:
                name = audio.codec_context.name
                if name in MP4_AUDIO:
                    self._audio_out = self._out.add_stream_from_template(audio)
                else:
                    self._transcode = True
                    self._audio_out = self._out.add_stream("aac", rate=audio.codec_context.sample_rate)
            self._out.metadata.clear()
        except Exception:
            self._out.close()
            raise

    def frame(self, frame: VideoFrame) -> None:
        frame.pict_type = av.video.frame.PictureType.NONE  # the encoder picks its own key frames
        self._out.mux(self._video.encode(frame))

    def audio(self, packet: Packet[Stream]) -> None:
        out = self._audio_out
        if out is None or self._audio_in is None:
            return
        if not self._transcode:
            packet.stream = out
            self._out.mux(packet)
            return
        for decoded in self._audio_in.codec_context.decode(packet):
            decoded.pts = None  # the encoder counts samples itself
            self._out.mux(out.encode(decoded))

    def close(self) -> None:
        """Flush the encoder(s) and write the file's index."""
        try:
            self._out.mux(self._video.encode(None))
            if self._transcode and self._audio_out is not None:
                self._out.mux(self._audio_out.encode(None))
        finally:
            self._out.close()

    def abort(self) -> None:
        self._out.close()
