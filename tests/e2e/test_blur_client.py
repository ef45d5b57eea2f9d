"""``veil blur`` against the live stack (real gateway, worker, Redis, SeaweedFS and models): a tree of 120
small images in nested folders is killed (SIGKILL) after about half and run again, and ends with every
image blurred once, mirrored, and no finished file uploaded again, counted by the gateway's own
``/metrics``; Ctrl-C (SIGINT) finishes what is in flight and exits 130.

The kill is timed by the state file's finished lines, never by a clock. Speed is never asserted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cli.blur_state import STATE_DIR, STATE_FILE, TEMP_DIR
from tests.e2e.conftest import REPO, LiveStack
from tests.images import astronaut_bgr

pytestmark = [pytest.mark.integration, pytest.mark.models]

CONCURRENCY = 4
ASTRONAUT = "people/astronaut.png"
ASTRONAUT_HEAD = (175, 55, 270, 180)  # x1, y1, x2, y2: where its face is
NOT_IMAGES = ["notes.txt", "people/list.csv", "cars/fake.jpg"]


def _small(seed: int, plate: bool) -> np.ndarray[Any, Any]:
    """96x64: a smooth random gradient, some with a light plate-like box with dark characters."""
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, 255, size=(2, 2, 3)).astype(np.float32)
    image = cv2.resize(corners, (96, 64), interpolation=cv2.INTER_LINEAR).astype(np.uint8)
    if plate:
        cv2.rectangle(image, (24, 36), (72, 52), (235, 235, 235), -1)
        cv2.putText(image, "AB12", (27, 50), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (20, 20, 20), 1, cv2.LINE_AA)
    return image


def _make_tree(root: Path, images: int) -> list[str]:
    """``images`` images under nested folders (JPEG and PNG) plus a few files that are not images."""
    rels = [ASTRONAUT]
    for n in range(images - 1):
        top = "cars" if n % 3 else "streets"
        rels.append(f"{top}/day{n % 4}/shot{n % 2}/img{n:03d}.{'png' if n % 5 == 0 else 'jpg'}")
    for n, rel in enumerate(rels):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image = astronaut_bgr() if rel == ASTRONAUT else _small(n, plate=n % 4 == 1)
        assert cv2.imwrite(str(path), image)
    for rel in NOT_IMAGES:
        (root / rel).write_text("not an image\n")
    return rels


def _read(path: Path) -> np.ndarray[Any, Any]:
    image = cv2.imread(str(path))
    assert image is not None, f"{path} is not an image"
    return np.asarray(image)


def _jobs_created(url: str) -> int:
    """Uploads the gateway accepted (``veil_http_requests_total``, POST /v1/jobs, 202)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    accepted = {"method": "POST", "route": "/v1/jobs", "status": "202"}
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "veil_http_requests_total" and sample.labels == accepted
        )
    )


def _finished(out: Path) -> dict[str, dict[str, Any]]:
    """The state file's complete lines, by relative path (a line cut by the kill is skipped)."""
    path = out / STATE_DIR / STATE_FILE
    entries: dict[str, dict[str, Any]] = {}
    lines = path.read_bytes().splitlines() if path.exists() else []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        entries[entry["rel"]] = entry
    return entries


def _start(
    stack: LiveStack, tmp_path: Path, photos: Path, out: Path, log: str, *extra: str
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "cli.main", "--data-dir", str(tmp_path / "no-stack"), "blur", str(photos),
        "--out", str(out), "--url", stack.url, "--api-key", stack.api_key,
        "--concurrency", str(CONCURRENCY), *extra,
    ]  # fmt: skip
    stdout = (tmp_path / f"{log}.out").open("wb")
    stderr = (tmp_path / f"{log}.err").open("wb")
    return subprocess.Popen(command, cwd=REPO, env=dict(os.environ), stdout=stdout, stderr=stderr)


def _until_finished_lines(proc: subprocess.Popen[bytes], out: Path, count: int) -> None:
    """Wait (polling the state file) until ``count`` files are finished; the process must still be running."""
    deadline = time.monotonic() + 240  # a hang guard only, never an expectation of speed
    while len(_finished(out)) < count:
        assert proc.poll() is None, f"veil blur exited early ({proc.returncode})"
        assert time.monotonic() < deadline, f"only {len(_finished(out))} finished"
        time.sleep(0.05)


def test_killed_half_way_and_run_again_blurs_every_image_once(live_stack: LiveStack, tmp_path: Path) -> None:
    photos, out = tmp_path / "photos", tmp_path / "blurred"
    rels = _make_tree(photos, 120)
    before = _jobs_created(live_stack.url)

    first = _start(live_stack, tmp_path, photos, out, "first")
    try:
        _until_finished_lines(first, out, 60)
    finally:
        first.kill()  # SIGKILL: no handler runs, the state is what was fsynced
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    done_first = _finished(out)
    after_kill = _jobs_created(live_stack.url)
    assert 60 <= len(done_first) < 120, "the first run finished before it could be killed"
    # What was uploaded but not finished when killed: at most the jobs in flight.
    assert len(done_first) <= after_kill - before <= len(done_first) + CONCURRENCY

    second = _start(live_stack, tmp_path, photos, out, "second", "--json")
    assert second.wait(timeout=280) == 0, (tmp_path / "second.err").read_text()[-3000:]
    after = _jobs_created(live_stack.url)

    # Nothing finished was uploaded again: the second run uploads the rest, and at most the first run's
    # uploads still in flight when killed may have been counted by the gateway after `after_kill`.
    assert 120 - len(done_first) <= after - after_kill <= 120 - len(done_first) + CONCURRENCY
    done = _finished(out)
    assert sorted(done) == sorted(rels)
    assert len({entry["job"] for entry in done.values()}) == 120  # one job per image
    for rel, entry in done_first.items():
        assert done[rel]["job"] == entry["job"]  # the first run's results kept, not redone
    mirrored = sorted(
        p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and STATE_DIR not in p.parts
    )
    assert mirrored == sorted(rels)
    assert list((out / STATE_DIR / TEMP_DIR).iterdir()) == []
    for rel in rels:
        assert _read(out / rel).shape == _read(photos / rel).shape, rel

    manifest = json.loads((tmp_path / "second.out").read_text())
    assert manifest["counts"] == {"succeeded": 120, "failed": 0, "skipped": 3, "not_sent": 0}
    by_path = {f["path"]: f for f in manifest["files"]}
    assert sorted(p for p, f in by_path.items() if f["status"] == "skipped") == sorted(NOT_IMAGES)
    faces = [d for d in by_path[ASTRONAUT]["detections"] if d["class"] == "face"]
    assert faces, by_path[ASTRONAUT]
    x1, y1, x2, y2 = ASTRONAUT_HEAD
    head_before = _read(photos / ASTRONAUT)[y1:y2, x1:x2].astype(np.int16)
    head_after = _read(out / ASTRONAUT)[y1:y2, x1:x2].astype(np.int16)
    assert float(np.abs(head_before - head_after).mean()) > 5  # the face was blurred
    summary = (tmp_path / "second.err").read_text()
    assert f"({len(done_first)} by an earlier run)" in summary
    assert "skipped (not JPEG, PNG or WebP)" in summary


def test_ctrl_c_finishes_what_is_in_flight_and_exits_130(live_stack: LiveStack, tmp_path: Path) -> None:
    photos, out = tmp_path / "photos", tmp_path / "blurred"
    rels = _make_tree(photos, 30)
    before = _jobs_created(live_stack.url)

    run = _start(live_stack, tmp_path, photos, out, "interrupted")
    _until_finished_lines(run, out, 5)
    run.send_signal(signal.SIGINT)
    assert run.wait(timeout=120) == 130, (tmp_path / "interrupted.err").read_text()[-3000:]
    finished = _finished(out)
    interrupted = _jobs_created(live_stack.url)
    assert interrupted - before == len(finished)  # every job it started was finished and recorded
    assert len(finished) < 30
    err = (tmp_path / "interrupted.err").read_text()
    assert "interrupted: finishing the images in flight" in err
    assert f"interrupted: {30 - len(finished)} images not sent" in err
    assert list((out / STATE_DIR / TEMP_DIR).iterdir()) == []

    rerun = _start(live_stack, tmp_path, photos, out, "rerun")
    assert rerun.wait(timeout=200) == 0, (tmp_path / "rerun.err").read_text()[-3000:]
    assert _jobs_created(live_stack.url) - interrupted == 30 - len(finished)
    assert sorted(_finished(out)) == sorted(rels)
