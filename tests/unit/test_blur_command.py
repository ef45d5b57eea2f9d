"""``veil blur`` end to end against a stand-in for the API on loopback (the real stack: tests/e2e/
test_blur_client.py): failures listed with their code, retries of a busy service, a refused key, the inputs
it refuses, and exit statuses."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner, Result

from cli.blur_state import STATE_DIR, STATE_FILE
from cli.embedded import free_port
from cli.main import main

KEY = "k-blur"
JPEG = b"\xff\xd8\xff\xe0" + b"jpeg body"
PNG = b"\x89PNG\r\n\x1a\n" + b"png body"


@dataclass
class StandIn:
    url: str
    uploads: list[str] = field(default_factory=list)  # file names, in order
    polls: int = 0


def _app(stand_in: StandIn) -> web.Application:
    jobs: dict[str, dict[str, Any]] = {}
    data: dict[str, bytes] = {}
    busy_once: set[str] = set()

    def error(status: int, code: str) -> web.Response:
        return web.json_response({"message": f"stand-in {code}", "code": code}, status=status)

    async def submit(request: web.Request) -> web.Response:
        if request.headers.get("X-API-Key") != KEY:
            return error(401, "UNAUTHORIZED")
        form = await request.post()
        image = form["image"]
        assert isinstance(image, web.FileField)
        name = image.filename
        stand_in.uploads.append(name)
        if name.startswith("busy") and name not in busy_once:
            busy_once.add(name)
            return error(503, "QUEUE_FULL")
        if name.startswith("bad"):
            return error(400, "VALIDATION_ERROR")
        job_id = f"j{len(jobs)}"
        data[job_id] = image.file.read()
        failed = name.startswith("fail")
        jobs[job_id] = {
            "id": job_id,
            "status": "failed" if failed else "succeeded",
            "error": {"code": "DETECTION_FAILED", "message": "stand-in"} if failed else None,
            "detections": [] if failed else [{"class": "face", "score": 0.9, "box": [0, 0, 2, 2]}],
            "blurred_regions": [] if failed else [[0, 0, 2, 2]],
        }
        return web.json_response({"id": job_id, "status": "queued"}, status=202)

    async def job(request: web.Request) -> web.Response:
        stand_in.polls += 1
        record = jobs.get(request.match_info["id"])
        return web.json_response(record) if record else error(404, "NOT_FOUND")

    async def result(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"/store/{request.match_info['id']}")  # as the gateway: to the store

    async def store(request: web.Request) -> web.Response:
        return web.Response(body=data[request.match_info["id"]])  # the "blurred" copy: the same bytes

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/v1/jobs", submit)
    app.router.add_get("/v1/jobs/{id}", job)
    app.router.add_get("/v1/jobs/{id}/result", result)
    app.router.add_get("/store/{id}", store)
    app.router.add_get("/healthz", health)
    return app


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    """The stand-in on its own loop in a thread: the command runs its own ``asyncio.run``."""
    port = free_port()
    server = StandIn(url=f"http://127.0.0.1:{port}")
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_app(server))
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.run_until_complete(runner.cleanup())
        loop.close()


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    return root


def _blur(tmp_path: Path, *args: str, url: str = "http://127.0.0.1:9", key: str = KEY) -> Result:
    command = ["--data-dir", str(tmp_path / "no-stack"), "blur", *args, "--url", url, "--api-key", key]
    return CliRunner().invoke(main, command, catch_exceptions=False)


def test_failures_are_listed_with_their_code_and_a_rerun_sends_only_them(
    stand_in: StandIn, tmp_path: Path
) -> None:
    photos = _tree(
        tmp_path / "photos",
        {
            "a.jpg": JPEG,
            "sub/b.png": PNG,
            "sub/deeper/c": JPEG,
            "bad.jpg": JPEG,
            "fail.jpg": JPEG,
            "busy.jpg": JPEG,
            "notes.txt": b"not an image",
        },
    )
    out = tmp_path / "out"

    first = _blur(tmp_path, str(photos), "--out", str(out), "--json", url=stand_in.url)

    assert first.exit_code == 1, first.stderr
    assert "VALIDATION_ERROR  bad.jpg: stand-in VALIDATION_ERROR" in first.stderr
    assert "DETECTION_FAILED  fail.jpg: stand-in" in first.stderr
    assert "skipped (not JPEG, PNG or WebP):\n  notes.txt" in first.stderr
    assert (out / "a.jpg").read_bytes() == JPEG
    assert (out / "sub" / "b.png").read_bytes() == PNG
    assert (out / "sub" / "deeper" / "c.jpg").read_bytes() == JPEG  # no suffix: the format's added
    assert (out / "busy.jpg").read_bytes() == JPEG  # a 503 is tried again
    assert not (out / "bad.jpg").exists() and not (out / "fail.jpg").exists()
    manifest = json.loads(first.stdout)
    assert manifest["counts"] == {"succeeded": 4, "failed": 2, "skipped": 1, "not_sent": 0}
    by_path = {f["path"]: f for f in manifest["files"]}
    assert by_path["a.jpg"]["detections"][0]["class"] == "face"
    assert by_path["sub/deeper/c"]["output"] == "sub/deeper/c.jpg"
    assert by_path["fail.jpg"]["error"]["code"] == "DETECTION_FAILED"
    assert by_path["notes.txt"] == {"path": "notes.txt", "status": "skipped", "reason": "not an image"}
    assert sorted(stand_in.uploads) == ["a.jpg", "b.png", "bad.jpg", "busy.jpg", "busy.jpg", "c", "fail.jpg"]
    lines = (out / STATE_DIR / STATE_FILE).read_text().splitlines()
    assert len(lines) == 4

    stand_in.uploads.clear()
    second = _blur(tmp_path, str(photos), "--out", str(out), "--json", url=stand_in.url)

    assert second.exit_code == 1
    assert sorted(stand_in.uploads) == ["bad.jpg", "fail.jpg"]  # the finished ones are not sent again
    assert "(4 by an earlier run)" in second.stderr
    assert json.loads(second.stdout)["counts"]["succeeded"] == 4  # earlier runs' detections included


def test_everything_done_exits_0_without_calling_the_service(stand_in: StandIn, tmp_path: Path) -> None:
    photos = _tree(tmp_path / "photos", {"a.jpg": JPEG, "readme.md": b"# hi"})
    out = tmp_path / "out"
    assert _blur(tmp_path, str(photos), "--out", str(out), url=stand_in.url).exit_code == 0
    again = _blur(tmp_path, str(photos), "--out", str(out))  # the default URL: nothing listens there
    assert again.exit_code == 0, again.stderr
    assert "1 already blurred" in again.stderr


def test_a_refused_key_stops_the_run(stand_in: StandIn, tmp_path: Path) -> None:
    photos = _tree(tmp_path / "photos", {f"{n:02d}.jpg": JPEG for n in range(20)})
    result = _blur(
        tmp_path,
        str(photos),
        "--out",
        str(tmp_path / "out"),
        "--concurrency",
        "2",
        url=stand_in.url,
        key="nope",
    )
    assert result.exit_code == 1
    assert "the API key was refused: stopping" in result.stderr
    assert "UNAUTHORIZED  00.jpg" in result.stderr
    assert len(stand_in.uploads) <= 2  # only the ones already in flight
    assert "images not sent" in result.stderr


def test_an_unreachable_service_is_one_clear_error(tmp_path: Path) -> None:
    photos = _tree(tmp_path / "photos", {"a.jpg": JPEG})
    result = _blur(tmp_path, str(photos), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "cannot reach the service at http://127.0.0.1:9" in result.stderr


def test_an_output_folder_holding_the_inputs_is_refused(tmp_path: Path) -> None:
    photos = _tree(tmp_path / "photos", {"a.jpg": JPEG})
    result = _blur(tmp_path, str(photos), "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "holds the input" in result.stderr


def test_a_missing_path_is_refused(tmp_path: Path) -> None:
    result = _blur(tmp_path, str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_two_inputs_sharing_an_output_are_refused(tmp_path: Path) -> None:
    one = _tree(tmp_path / "one", {"a.jpg": JPEG})
    two = _tree(tmp_path / "two", {"a.jpg": JPEG})
    result = _blur(tmp_path, str(one), str(two), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "would both be written to a.jpg" in result.stderr


def test_an_output_folder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    photos = _tree(tmp_path / "photos", {"a.jpg": JPEG})
    (tmp_path / "out").write_text("a file")
    result = _blur(tmp_path, str(photos), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "is a file" in result.stderr
