"""``veil bench --video FILE``: one video through the worker's video pipeline, in this process.

The engine is the worker's own (:func:`cli.bench_model.load_bench_engine`: same plan, warmed up), and the
video runs as a video job does: on one inference lane, through :func:`workers.video.anonymize_video`
(decode, detect, track, blur, encode; the output written to a temporary file and deleted). Reports frames
per second end to end (wall clock) and per stage (frames / the stage's own time), each stage's share, and
the process's CPU per frame. The worker's modules are imported inside, so ``veil`` starts without them.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import psutil

from cli.bench_model import load_bench_engine


def video_bench(settings: Any, path: Path, targets: list[str], every_n: int | None) -> dict[str, Any]:
    """Run the video once (after a warm-up of the engine) and return the report."""
    from shared.jobs import BlurOptions, Target
    from workers.video import anonymize_video, probe_video
    from workers.video.run import STAGES

    video = (
        settings.video if every_n is None else settings.video.model_copy(update={"detect_every_n": every_n})
    )
    info = probe_video(path)
    engine = load_bench_engine(settings)
    options = BlurOptions(targets=tuple(Target(t) for t in targets))
    process = psutil.Process()
    try:
        with tempfile.TemporaryDirectory(prefix="veil-bench-video-") as tmp:
            cpu = process.cpu_times()
            start = time.perf_counter()
            result = anonymize_video(
                path,
                Path(tmp) / "out.mp4",
                engine,
                options,
                settings=video,
                face_max_side=settings.worker.face_max_side,
            )
            wall = time.perf_counter() - start
            after = process.cpu_times()
    finally:
        engine.close()
    frames = result.frames_written
    cpu_s = (after.user - cpu.user) + (after.system - cpu.system)
    stages = {name: result.timings_ms.get(name, 0.0) for name in STAGES}
    whole = sum(stages.values()) or 1.0
    return {
        "video": str(path),
        "size": f"{info.width}x{info.height}",
        "codec": info.codec,
        "fps": info.fps,
        "frames": frames,
        "detect_every_n": video.detect_every_n,
        "frames_detected": result.frames_detected,
        "plan": engine.plan.describe(),
        "wall_s": round(wall, 2),
        "frames_per_s": round(frames / wall, 2) if wall else None,
        "realtime": round(frames / wall / info.fps, 3) if wall and info.fps else None,
        "cpu_ms_per_frame": round(cpu_s * 1000 / max(1, frames), 1),
        "stage_ms_per_frame": {name: round(ms / max(1, frames), 1) for name, ms in stages.items()},
        "stage_frames_per_s": {
            name: round(frames * 1000 / ms, 1) if ms else None for name, ms in stages.items()
        },
        "stage_share": {name: round(ms / whole, 3) for name, ms in stages.items()},
        "detect_parts_ms_per_frame": {
            name: round(result.timings_ms[name] / max(1, frames), 1)
            for name in ("detect_faces", "detect_plates")
            if name in result.timings_ms
        },
        "tracks": result.tracks_by_class,
        "rss_mb": round(process.memory_info().rss / 2**20, 1),
    }


def print_video_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(
        f"{report['video']}: {report['size']} {report['codec']} at {report['fps']:g} fps, "
        f"{report['frames']} frames, detecting every {report['detect_every_n']} "
        f"({report['frames_detected']} searched); plan {report['plan']}"
    )
    click.echo(
        f"end to end: {report['frames_per_s']} frames/s ({report['realtime']}x real time), "
        f"{report['wall_s']} s, {report['cpu_ms_per_frame']} ms CPU per frame, RSS {report['rss_mb']} MB"
    )
    click.echo(f"{'stage':<8} {'ms/frame':>9} {'frames/s':>9} {'share':>6}")
    for name, ms in report["stage_ms_per_frame"].items():
        fps = report["stage_frames_per_s"][name]
        click.echo(f"{name:<8} {ms:>9} {fps if fps is not None else '-':>9} {report['stage_share'][name]:>6}")
    click.echo(f"tracks: {report['tracks']}")
