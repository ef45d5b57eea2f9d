"""``veil bench --video FILE``: the worker's engine and video pipeline in-process, on a tiny clip."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from tests.images import astronaut_rgb

pytestmark = pytest.mark.models


def _clip(path: Path, frames: int = 6) -> None:
    with av.open(str(path), mode="w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 256, 192, "yuv420p"
        for i in range(frames):
            rgb = np.ascontiguousarray(astronaut_rgb()[40 + i : 232 + i : 1, 100:356])
            out.mux(video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(video.encode(None))


def test_bench_video_reports_frames_per_second_and_stages(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    _clip(clip)
    args = ["--data-dir", str(tmp_path / "no-stack"), "bench", "--video", str(clip), "--detect-every-n", "2"]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["frames"] == 6 and report["frames_detected"] == 3 and report["detect_every_n"] == 2
    assert report["size"] == "256x192" and report["frames_per_s"] > 0
    assert set(report["stage_ms_per_frame"]) == {"decode", "detect", "track", "blur", "encode"}
    assert report["tracks"].get("face") == 1

    text = CliRunner().invoke(main, args)
    assert text.exit_code == 0, text.output
    assert "frames/s" in text.output and "detect" in text.output


def test_bench_needs_images_or_a_video(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "bench"])
    assert result.exit_code != 0 and "--video FILE" in result.output
