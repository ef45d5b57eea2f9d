"""``veil keys`` and ``veil usage`` as an operator runs them, against the live stack (real gateway, worker,
Redis and SeaweedFS): a key created with limits blurs a photo, ``list``/``show``/``usage`` print its real
figures (and CSV), ``update`` and ``rotate`` change it, ``export`` holds the job, ``erase --yes`` leaves no
Redis key and no object behind; bad arguments are refused with a message."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import requests
from click.testing import CliRunner, Result
from PIL import Image
from skimage import data

from cli.main import main
from shared.storage import ObjectStore
from tests.e2e.conftest import LiveStack

pytestmark = [pytest.mark.integration, pytest.mark.models]


def _runner(env: dict[str, str], data_dir: Path) -> Any:
    def run(*args: str, ok: bool = True) -> Result:
        result = CliRunner().invoke(main, ["--data-dir", str(data_dir), *args], env=env)
        if ok:
            assert result.exit_code == 0, (result.output, result.exception)
        return result

    return run


@pytest.fixture
def veil(live_stack: LiveStack, stack_env: dict[str, str], tmp_path: Path) -> Any:
    """Run ``veil ...`` in-process against the live stack's Redis and store (a data dir with no stack)."""
    return _runner({**stack_env, "VEIL_REDIS__URL": live_stack.settings.redis.url}, tmp_path / "data")


@pytest.fixture
def veil_local(stack_env: dict[str, str], tmp_path: Path) -> Any:
    """The same against the session's Redis and store: no gateway or worker needed."""
    return _runner(stack_env, tmp_path / "data")


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, format="JPEG", quality=90)  # type: ignore[no-untyped-call]
    return buffer.getvalue()


def _submit_and_wait(stack: LiveStack, token: str, image: bytes) -> dict[str, Any]:
    headers = {"X-API-Key": token}
    files = {"image": ("a.jpg", image, "image/jpeg")}
    created = requests.post(f"{stack.url}/v1/jobs", files=files, headers=headers, timeout=30)
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    deadline = time.monotonic() + 60
    while True:
        job: dict[str, Any] = requests.get(
            f"{stack.url}/v1/jobs/{job_id}", headers=headers, timeout=10
        ).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def _status(stack: LiveStack, token: str) -> int:
    return requests.get(f"{stack.url}/v1/usage", headers={"X-API-Key": token}, timeout=10).status_code


def test_keys_and_usage_commands_end_to_end(
    veil: Any, live_stack: LiveStack, store: ObjectStore, tmp_path: Path
) -> None:
    created = veil("keys", "create", "--name", "fleet", "--credits", "3", "--daily-limit", "10")
    token = created.stdout.strip().splitlines()[-1]
    key_id = created.stderr.split("Created key ", 1)[1].split(" ", 1)[0]
    job = _submit_and_wait(live_stack, token, _jpeg())
    assert job["status"] == "succeeded", job
    faces = sum(1 for det in job["detections"] if det["class"] == "face")
    assert faces >= 1

    listing = veil("keys", "list").stdout.splitlines()
    assert listing[0].split()[:4] == ["ID", "NAME", "SCOPES", "CREDITS"]
    row = next(line.split() for line in listing if line.startswith(key_id))
    assert row[1:6] == ["fleet", "submit,read", "2", "1/10", "1"]  # 3 credits, one spent; 1 of 10 today

    csv_path = tmp_path / "usage.csv"
    table = veil("usage", "--key", key_id, "--csv", str(csv_path)).stdout.splitlines()
    assert table[0].split() == [
        "DAY",
        "KEY",
        "ID",
        "SUBMITTED",
        "SUCCEEDED",
        "FAILED",
        "FACES",
        "PLATES",
        "MEGAPIXELS",
        "CREDITS",
    ]
    day = table[1].split()
    assert day[1:5] == [key_id, "1", "1", "0"]
    assert day[5] == str(faces)
    assert day[-1] == "1"
    assert table[-1].split()[:4] == ["total", "1", "1", "0"]
    [written] = list(csv.DictReader(csv_path.open(encoding="utf-8")))
    assert (written["key_id"], written["submitted"], written["succeeded"], written["faces"]) == (
        key_id,
        "1",
        "1",
        str(faces),
    )
    assert float(written["megapixels"]) == pytest.approx(0.262, abs=0.001)

    shown = veil("keys", "show", key_id).stdout
    assert "2 credits left" in shown and "1/10 submissions" in shown
    updated = veil(
        "keys", "update", key_id, "--add-credits", "5", "--daily-limit", "none", "--name", "fleet-2"
    )
    assert "7 credits left" in updated.stdout and "today:       1 submissions" in updated.stdout

    rotated = veil("keys", "rotate", key_id, "--grace", "0")
    new_token = rotated.stdout.strip().splitlines()[-1]
    assert "no longer works" in rotated.stderr
    assert (_status(live_stack, token), _status(live_stack, new_token)) == (401, 200)

    out = tmp_path / "export.json"
    veil("keys", "export", key_id, "--out", str(out))
    document = orjson.loads(out.read_bytes())
    assert [exported["id"] for exported in document["jobs"]] == [job["id"]]
    assert document["key"]["name"] == "fleet-2"
    assert document["usage"][0]["succeeded"] == 1

    refused = veil("keys", "erase", key_id, ok=False)
    assert refused.exit_code == 2 and "add --yes" in refused.output
    erased = veil("keys", "erase", key_id, "--yes").stdout
    assert f"erased {key_id}: 1 jobs" in erased and "the key is revoked" in erased
    assert _status(live_stack, new_token) == 401
    client = redis.Redis.from_url(live_stack.settings.redis.url)
    try:
        left = [
            name
            for name in client.scan_iter(match=f"{live_stack.settings.redis.prefix}:*", count=1000)
            if key_id.encode() in name or job["id"].encode() in name
        ]
    finally:
        client.close()
    assert left == []
    assert store.list_keys(store.bucket, store.upload_key(job["id"]), 10)[0] == []
    assert store.list_keys(store.bucket, f"{store.settings.results_prefix}{job['id']}", 10)[0] == []
    assert veil("keys", "show", key_id, ok=False).exit_code == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keys", "create", "--name", "x", "--scopes", "owner"], "unknown scope 'owner'"),
        (["keys", "create", "--name", "x", "--credits", "-1"], "is not a whole number"),
        (["keys", "create", "--name", " "], "name must be 1 to 200 characters"),
        (["keys", "update", "abc"], "nothing to change"),
        (["keys", "update", "abc", "--credits", "1", "--add-credits", "1"], "not both"),
        (["keys", "update", "0123456789abcdef", "--name", "y"], "no key with id 0123456789abcdef"),
        (["keys", "rotate", "abc", "--grace", "-5"], "-5 is not in the range"),
        (["keys", "rotate", "0123456789abcdef"], "no key with id 0123456789abcdef"),
        (["keys", "revoke", "0123456789abcdef"], "no key with id 0123456789abcdef"),
        (["keys", "export", "0123456789abcdef"], "nothing is held about a key with id 0123456789abcdef"),
        (["keys", "erase", "0123456789abcdef", "--yes"], "nothing is held about a key with id"),
        (["usage", "--from", "2026-13-01"], "from is not a real date"),
        (["usage", "--from", "2026-02-02", "--to", "2026-02-01"], "is after to"),
        (["usage", "--from", "2024-01-01", "--to", "2025-06-01"], "at most 366"),
    ],
)
def test_bad_arguments_are_refused_with_a_message(veil_local: Any, args: list[str], message: str) -> None:
    result = veil_local(*args, ok=False)
    assert result.exit_code != 0
    assert message in result.output + result.stderr
