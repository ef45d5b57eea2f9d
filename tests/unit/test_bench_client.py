"""The HTTP client that bench, eval and load share, against a stand-in for the API on loopback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cli.client import ApiError, VeilClient

KEY = "k-123"


def _app() -> web.Application:
    polls: dict[str, int] = {}
    uploads: list[dict[str, Any]] = []

    def authorized(request: web.Request) -> None:
        if request.headers.get("X-API-Key") != KEY:
            raise web.HTTPUnauthorized()

    async def submit(request: web.Request) -> web.Response:
        authorized(request)
        form = await request.post()
        image = form["image"]
        assert isinstance(image, web.FileField)
        fields = {name: str(value) for name, value in form.items() if name != "image"}
        uploads.append({"filename": image.filename, "data": image.file.read().decode("latin-1"), **fields})
        return web.json_response({"id": "j1", "status": "queued"}, status=202)

    async def job(request: web.Request) -> web.Response:
        authorized(request)
        job_id = request.match_info["id"]
        if job_id == "stuck":
            return web.json_response({"id": job_id, "status": "running"})
        if job_id != "j1":
            return web.json_response({"message": "no such job", "code": "NOT_FOUND"}, status=404)
        polls[job_id] = polls.get(job_id, 0) + 1
        status = "succeeded" if polls[job_id] >= 2 else "running"
        return web.json_response({"id": job_id, "status": status, "uploads": uploads})

    async def result(request: web.Request) -> web.Response:
        authorized(request)
        return web.Response(body=b"blurred", content_type="image/jpeg")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/v1/jobs", submit)
    app.router.add_get("/v1/jobs/{id}", job)
    app.router.add_get("/v1/jobs/{id}/result", result)
    app.router.add_get("/healthz", health)
    return app


@pytest.fixture
async def api() -> AsyncIterator[VeilClient]:
    server = TestServer(_app(), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            yield VeilClient(http, str(server.make_url("/")), KEY)
    finally:
        await server.close()


async def test_submit_poll_and_fetch(api: VeilClient) -> None:
    status, created = await api.submit_photo('a "b".jpg', b"\xff\xd8 image", {"targets": "plates"})
    assert (status, created) == (202, {"id": "j1", "status": "queued"})
    job = await api.until_finished(created, 0.01, time.monotonic() + 60)
    assert job is not None and job["status"] == "succeeded"
    assert job["uploads"] == [{"filename": "a %22b%22.jpg", "data": "\xff\xd8 image", "targets": "plates"}]
    assert await api.result("j1") == (200, b"blurred")
    assert await api.health() == 200


async def test_a_poll_answered_with_an_error_raises(api: VeilClient) -> None:
    with pytest.raises(ApiError) as raised:
        await api.until_finished({"id": "gone", "status": "queued"}, 0.01, time.monotonic() + 60)
    assert raised.value.status == 404 and raised.value.body["code"] == "NOT_FOUND"
    assert (await api.job("gone"))[0] == 404


async def test_a_job_unfinished_past_the_deadline_is_none(api: VeilClient) -> None:
    assert await api.until_finished({"id": "stuck", "status": "queued"}, 0.01, time.monotonic() - 1) is None
    # A job the upload's answer already shows finished is not polled.
    done = {"id": "stuck", "status": "failed"}
    assert await api.until_finished(done, 0.01, time.monotonic() - 1) == done
