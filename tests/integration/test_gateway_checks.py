"""The submitter's image checks run at most as many at once as it has check slots (one per core by
default): a burst of uploads waits for a free slot instead of holding every image in a check at the
same time."""

from __future__ import annotations

import asyncio

import pytest

from gateway.backends import connect_redis
from gateway.submission import JobSubmitter, check_slots
from shared.jobs import ImageFormat
from shared.settings import Settings
from shared.storage import ObjectStore

pytestmark = pytest.mark.integration


async def test_a_check_waits_for_a_free_slot(
    settings: Settings, store: ObjectStore, camera_png: bytes
) -> None:
    assert check_slots() >= 1
    connection = connect_redis(settings.redis)
    slots = asyncio.Semaphore(1)
    submitter = JobSubmitter(settings, store, connection, checks=slots)
    try:
        await slots.acquire()  # the one slot, taken here as a running check would take it
        waiting = asyncio.ensure_future(submitter.inspect(camera_png))
        await asyncio.sleep(0.2)  # far longer than the check itself takes
        assert not waiting.done()
        slots.release()
        assert (await waiting).format is ImageFormat.PNG
        # Many at once all get their turn.
        infos = await asyncio.gather(*(submitter.inspect(camera_png) for _ in range(6)))
        assert {(info.width, info.height) for info in infos} == {(512, 512)}
    finally:
        await submitter.close()
        await connection.aclose(close_connection_pool=True)
