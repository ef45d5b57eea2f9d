"""`veil up` survives its children dying: kill -9 the worker mid-batch, or Redis with jobs queued, and the
supervisor starts it again while the others keep running; no job is lost and every one succeeds once."""

from __future__ import annotations

import collections
import os
import re
import signal
import time
import urllib.error
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from tests.faults.up import CHILD_NAMES, VeilUp, veil_up
from tests.images import BGRImage, astronaut_bgr, make_plate_scene

pytestmark = [pytest.mark.integration, pytest.mark.models]


def _photos(count: int) -> list[tuple[str, BGRImage]]:
    """Half astronauts (a face), half 1280x960 plate scenes (slower: more in flight at once)."""
    photos: list[tuple[str, BGRImage]] = []
    for i in range(count):
        photos.append(
            (f"plate{i}", make_plate_scene(seed=i)[0]) if i % 2 else (f"astronaut{i}", astronaut_bgr())
        )
    return photos


def _assert_results_fetchable(up: VeilUp, job_ids: list[str]) -> None:
    for job_id in job_ids:
        status, body = up.get(f"/v1/jobs/{job_id}/result")  # 302 to the presigned URL, followed
        assert status == 200, (job_id, status, body[:200])
        assert body[:2] == b"\xff\xd8", f"job {job_id}: the result is not a JPEG"


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:  # not listening yet, or still loading its append-only file
        return False


def _submit_unless_unavailable(up: VeilUp, name: str) -> str | None:
    """The job's id, or None while the gateway answers 503 (the store not back yet); other errors raise."""
    try:
        return up.submit(astronaut_bgr(), name)
    except urllib.error.HTTPError as exc:
        if exc.code == 503:
            return None
        raise


def _succeeded_lines(up: VeilUp, job_id: str) -> int:
    """How many times a worker logged the job as succeeded (one worker.log across its restarts)."""
    return (up.data_dir / "worker.log").read_text(errors="replace").count(f"job {job_id} succeeded")


@pytest.mark.timeout(420)
def test_worker_killed_mid_batch_is_restarted_and_every_job_succeeds_once(tmp_path: Path) -> None:
    # A killed worker's jobs run again once arq's in-progress marks expire: the longest function timeout
    # + 10 s. Webhook deliveries have 30 s, so blur jobs at 30 s (not the default 45) cost nothing; any
    # less would be no sooner, and would time out the 8 jobs a fresh worker starts at once on 2 cores.
    with veil_up(tmp_path, {"VEIL_WORKER__JOB_TIMEOUT_SECONDS": "30"}) as up:
        before = up.wait_for_children("all four children", lambda c: set(c) == set(CHILD_NAMES))
        client = up.redis_client()
        job_ids = [up.submit(image, name) for name, image in _photos(20)]

        deadline = time.monotonic() + 60
        while not any(
            r is not None and r.status.value == "running" for r in up.records(client, job_ids).values()
        ):
            assert time.monotonic() < deadline, "no job started running within 60s"
            time.sleep(0.02)
        os.kill(before["worker"], signal.SIGKILL)
        killed_at = datetime.now(UTC)
        at_kill = up.records(client, job_ids)

        after = up.wait_for_children(
            "the supervisor did not start a new worker",
            lambda c: c.get("worker", before["worker"]) != before["worker"],
        )
        records = up.wait_finished(client, job_ids, timeout=240)

        assert re.search(r"worker exited \(code -9; log: .*\); restarting in 1s \(restart 1\)", up.printed())
        for name in ("redis", "seaweedfs", "gateway"):  # left running, untouched
            assert after[name] == before[name], (name, before, after)
        assert after["worker"] != before["worker"]

        lost = [job_id for job_id, record in records.items() if record is None]
        assert not lost, f"job records lost: {lost}"
        finished = {job_id: record for job_id, record in records.items() if record is not None}
        failed = {
            job_id: (r.status.value, r.error)
            for job_id, r in finished.items()
            if r.status.value != "succeeded"
        }
        assert not failed, failed
        twice = [job_id for job_id in job_ids if _succeeded_lines(up, job_id) > 1]
        assert not twice, f"jobs a worker finished twice: {twice}"
        attempts = collections.Counter(r.attempts for r in finished.values())
        rerun = {job_id: r for job_id, r in finished.items() if r.attempts > 1}
        assert rerun, (
            f"no job was interrupted by the kill (attempts {dict(attempts)}); the kill came too late"
        )
        _assert_results_fetchable(up, job_ids)

        running_at_kill = sum(1 for r in at_kill.values() if r is not None and r.status.value == "running")
        done_at_kill = sum(1 for r in at_kill.values() if r is not None and r.status.finished)
        picked_up = sorted(
            round((r.finished_at - killed_at).total_seconds(), 1) for r in rerun.values() if r.finished_at
        )
        print(
            f"\n[worker kill] {len(job_ids)} jobs: {done_at_kill} done, {running_at_kill} running at kill; "
            f"all succeeded, none lost, none logged succeeded twice; "
            f"attempts {dict(sorted(attempts.items()))}; "
            f"re-run jobs finished {picked_up} s after the kill; "
            f"succeeded log lines {sum(_succeeded_lines(up, j) for j in job_ids)}"
        )


@pytest.mark.timeout(360)
def test_redis_killed_with_jobs_queued_comes_back_with_them_and_the_keys(tmp_path: Path) -> None:
    with veil_up(tmp_path) as up:
        before = up.wait_for_children("all four children", lambda c: set(c) == set(CHILD_NAMES))
        os.kill(before["worker"], signal.SIGSTOP)  # jobs stay queued
        try:
            job_ids = [up.submit(image, name) for name, image in _photos(10)]
            time.sleep(2)  # past the AOF's once-a-second fsync
            os.kill(before["redis"], signal.SIGKILL)
            after = up.wait_for_children(
                "the supervisor did not start Redis again",
                lambda c: c.get("redis", before["redis"]) != before["redis"],
            )
            client = up.redis_client()  # the same URL: same port
            deadline = time.monotonic() + 30
            while not _answers(client):
                assert time.monotonic() < deadline, "Redis did not answer on its old port within 30s"
                time.sleep(0.2)
            queued = up.records(client, job_ids)
            assert all(r is not None and r.status.value == "queued" for r in queued.values()), queued
        finally:
            os.kill(before["worker"], signal.SIGCONT)

        # The key still works (it lives hashed in Redis): the gateway answers with the job, not 401.
        deadline = time.monotonic() + 60
        while (status := up.get(f"/v1/jobs/{job_ids[0]}")[0]) != 200:
            assert status != 401, "the API key was lost with the Redis restart"
            assert time.monotonic() < deadline, f"GET /v1/jobs/<id> answered {status} for 60s"
            time.sleep(0.2)

        records = up.wait_finished(client, job_ids, timeout=180)
        assert all(r is not None and r.status.value == "succeeded" for r in records.values()), records
        _assert_results_fetchable(up, job_ids)
        assert re.search(r"redis exited \(code -9; log: .*\); restarting in 1s \(restart 1\)", up.printed())
        now = up.children()
        assert now["gateway"] == before["gateway"] and now["seaweedfs"] == before["seaweedfs"], (before, now)
        attempts = collections.Counter(r.attempts for r in records.values() if r is not None)
        worker_restarts = up.printed().count("worker exited")
        print(
            f"\n[redis kill] {len(job_ids)} queued jobs: all succeeded after the restart, none lost; "
            f"attempts {dict(sorted(attempts.items()))}; key still valid; redis pid {before['redis']} -> "
            f"{after['redis']}; worker restarts {worker_restarts}"
        )


def test_seaweedfs_killed_comes_back_on_its_ports_with_its_data(tmp_path: Path) -> None:
    with veil_up(tmp_path) as up:
        before = up.wait_for_children("all four children", lambda c: set(c) == set(CHILD_NAMES))
        client = up.redis_client()
        first = up.submit(astronaut_bgr(), "before")
        up.wait_finished(client, [first], timeout=60)
        os.kill(before["seaweedfs"], signal.SIGKILL)
        up.wait_for_children(
            "the supervisor did not start SeaweedFS again",
            lambda c: c.get("seaweedfs", before["seaweedfs"]) != before["seaweedfs"],
        )
        # The same S3 URL works again once the new weed answers (503 STORE_UNAVAILABLE until then).
        deadline = time.monotonic() + 60
        while (second := _submit_unless_unavailable(up, "after")) is None:
            assert time.monotonic() < deadline, "uploads still answered 503 60s after SeaweedFS was restarted"
            time.sleep(0.5)
        record = up.wait_finished(client, [second], timeout=60)[second]
        assert record is not None and record.status.value == "succeeded", record
        _assert_results_fetchable(up, [first, second])
        assert re.search(
            r"seaweedfs exited \(code -9; log: .*\); restarting in 1s \(restart 1\)", up.printed()
        )
        now = up.children()
        assert {k: now[k] for k in ("redis", "worker", "gateway")} == {
            k: before[k] for k in ("redis", "worker", "gateway")
        }
