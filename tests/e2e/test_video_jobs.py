"""Video jobs through the live stack (real gateway, worker, Redis, SeaweedFS and models): a short astronaut
clip with audio is blurred on every frame and keeps its audio; its record reports progress; a running video
is cancelled and leaves no result; ``veil blur`` blurs a folder mixing a photo and a video.

Speed is never asserted: the waits are hang guards only.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import av
import cv2
import numpy as np
import pytest

from shared.storage import ObjectStore
from tests.e2e.conftest import REPO, LiveStack
from tests.images import astronaut_bgr
from tests.video_clips import face_box, frames, make_clip

pytestmark = [pytest.mark.integration, pytest.mark.models]

SIZE = (320, 320)
FRAMES = 24
FPS = 12


async def submit(http: aiohttp.ClientSession, stack: LiveStack, body: bytes, field: str = "image") -> str:
    form = aiohttp.FormData()
    form.add_field(field, body, filename="clip.mp4")
    async with http.post("/v1/jobs", data=form, headers={"X-API-Key": stack.api_key}) as response:
        created = await response.json()
        assert response.status == 202, created
    job_id: str = created["id"]
    return job_id


async def job_of(http: aiohttp.ClientSession, stack: LiveStack, job_id: str) -> dict[str, Any]:
    async with http.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": stack.api_key}) as response:
        job: dict[str, Any] = await response.json()
        assert response.status == 200, job
    return job


async def until(
    http: aiohttp.ClientSession, stack: LiveStack, job_id: str, statuses: set[str], within: float = 120
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Poll until the job's status is one of ``statuses``; returns it and every progress seen on the way."""
    deadline = asyncio.get_running_loop().time() + within
    seen: list[dict[str, Any]] = []
    while True:
        job = await job_of(http, stack, job_id)
        if job.get("progress"):
            seen.append(job["progress"])
        if job["status"] in statuses:
            return job, seen
        assert asyncio.get_running_loop().time() < deadline, job  # a hang guard, not a speed check
        await asyncio.sleep(0.1)


def sharpness(rgb: np.ndarray[Any, Any]) -> float:
    """Variance of the Laplacian: high for a sharp face, low once blurred."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def decoded(body: bytes) -> tuple[list[np.ndarray[Any, Any]], int, float]:
    """The result's RGB frames, its audio streams and its frame rate."""
    with av.open(io.BytesIO(body), mode="r") as container:
        audio = len(container.streams.audio)
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 0)
        pictures = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    return pictures, audio, fps


async def test_a_clip_is_blurred_on_every_frame_and_keeps_its_audio(live_stack: LiveStack) -> None:
    clip = make_clip(FRAMES, SIZE, fps=FPS, audio=True)
    async with aiohttp.ClientSession(live_stack.url) as http:
        job_id = await submit(http, live_stack, clip, field="video")
        job, _seen = await until(http, live_stack, job_id, {"succeeded", "failed"})
        assert job["status"] == "succeeded", job
        assert job["input"]["format"] == "mp4" and job["input"]["frames"] == FRAMES
        assert job["input"]["fps"] == FPS and job["input"]["codec"] == "h264"
        assert job["progress"]["frames_done"] == job["progress"]["frames_total"] == FRAMES
        assert job["result"]["content_type"] == "video/mp4"
        faces = [d for d in job["detections"] if d["class"] == "face"]
        assert faces and faces[0]["first_frame"] == 0 and faces[0]["last_frame"] == FRAMES - 1, faces
        async with http.get(f"/v1/jobs/{job_id}/result", headers={"X-API-Key": live_stack.api_key}) as got:
            assert got.status == 200
            body = await got.read()
    pictures, audio, fps = decoded(body)
    assert audio == 1 and fps == FPS
    assert len(pictures) == FRAMES
    x1, y1, x2, y2 = face_box(SIZE)
    for index, (source, result) in enumerate(zip(frames(FRAMES, SIZE), pictures, strict=True)):
        assert result.shape == source.shape
        before, after = sharpness(source[y1:y2, x1:x2]), sharpness(result[y1:y2, x1:x2])
        assert after < before * 0.3, f"frame {index}: the face is not blurred ({before:.0f} -> {after:.0f})"
        # Far from the face (the bottom fifth: the suit and the flag's pole), only the codec's loss.
        far = np.abs(source[-SIZE[1] // 5 :].astype(np.int16) - result[-SIZE[1] // 5 :].astype(np.int16))
        assert float(far.mean()) < 8, f"frame {index}: pixels far from the face changed"


async def test_a_running_video_is_cancelled_and_leaves_no_result(live_stack: LiveStack) -> None:
    # Long enough that it is still running when the cancel lands (a hang guard bounds the wait).
    clip = make_clip(240, SIZE, fps=24, audio=False)
    async with aiohttp.ClientSession(live_stack.url) as http:
        job_id = await submit(http, live_stack, clip)
        running, _ = await until(http, live_stack, job_id, {"running", "succeeded", "failed"})
        assert running["status"] == "running", running
        headers = {"X-API-Key": live_stack.api_key}
        async with http.post(f"/v1/jobs/{job_id}/cancel", headers=headers) as response:
            assert response.status == 202, await response.text()
        job, _ = await until(http, live_stack, job_id, {"succeeded", "failed"})
        assert job["status"] == "failed", job
        assert job["error"]["code"] == "CANCELLED", job
        assert job["result"] is None
        async with http.get(f"/v1/jobs/{job_id}/result", headers=headers) as response:
            assert response.status == 409
            assert (await response.json())["code"] == "JOB_FAILED"
        async with http.post(f"/v1/jobs/{job_id}/cancel", headers=headers) as response:
            assert response.status == 409  # nothing left to cancel
    store = ObjectStore(live_stack.settings.s3)
    assert not store.exists(store.result_key(job_id, "mp4"))
    assert not store.exists(store.upload_key(job_id))


def test_the_folder_client_blurs_a_photo_and_a_video(live_stack: LiveStack, tmp_path: Path) -> None:
    photos, out = tmp_path / "mixed", tmp_path / "blurred"
    (photos / "clips").mkdir(parents=True)
    assert cv2.imwrite(str(photos / "astronaut.png"), astronaut_bgr())
    (photos / "clips" / "walk.mov").write_bytes(make_clip(12, (192, 192), fps=12, container="mov"))
    (photos / "notes.txt").write_text("not a photo\n")
    command = [
        sys.executable, "-m", "cli.main", "--data-dir", str(tmp_path / "no-stack"), "blur", str(photos),
        "--out", str(out), "--url", live_stack.url, "--api-key", live_stack.api_key, "--json",
    ]  # fmt: skip
    run = subprocess.run(
        command, cwd=REPO, env=dict(os.environ), capture_output=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    manifest = json.loads(run.stdout)
    assert manifest["counts"] == {"succeeded": 2, "failed": 0, "skipped": 1, "not_sent": 0}
    assert (out / "astronaut.png").is_file()
    result = out / "clips" / "walk.mov.mp4"  # the result is an MP4: its suffix is added
    pictures, _audio, _fps = decoded(result.read_bytes())
    assert len(pictures) == 12
