"""``VeilClient.until_finished`` with a growing wait (how ``veil blur`` polls), against a stand-in job."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cli.client import ApiError, VeilClient


@pytest.fixture
async def api() -> AsyncIterator[tuple[VeilClient, list[str]]]:
    polls: list[str] = []

    async def job(request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        polls.append(job_id)
        if job_id == "gone":
            return web.json_response({"message": "no such job", "code": "NOT_FOUND"}, status=404)
        status = "succeeded" if job_id == "slow" and len(polls) >= 3 else "running"
        return web.json_response({"id": job_id, "status": status})

    app = web.Application()
    app.router.add_get("/v1/jobs/{id}", job)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            yield VeilClient(http, str(server.make_url("/")), "k"), polls
    finally:
        await server.close()


async def test_polls_until_finished(api: tuple[VeilClient, list[str]]) -> None:
    client, polls = api
    job = await client.until_finished(
        {"id": "slow", "status": "queued"}, 0.01, time.monotonic() + 60, max_poll_s=0.02
    )
    assert job == {"id": "slow", "status": "succeeded"}
    assert polls == ["slow"] * 3


async def test_past_the_deadline_is_none_and_an_error_raises(api: tuple[VeilClient, list[str]]) -> None:
    client, polls = api
    stuck = {"id": "stuck", "status": "queued"}
    assert await client.until_finished(stuck, 0.01, time.monotonic() - 1, max_poll_s=0.02) is None
    assert polls == ["stuck"]  # one look, then the deadline
    with pytest.raises(ApiError) as raised:
        await client.until_finished(
            {"id": "gone", "status": "queued"}, 0.01, time.monotonic() + 60, max_poll_s=0.02
        )
    assert raised.value.status == 404
    done = {"id": "x", "status": "failed"}
    assert await client.until_finished(done, 0.01, time.monotonic() - 1, max_poll_s=0.02) == done
