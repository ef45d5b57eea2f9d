"""The safety net under every deletion (docs/privacy.md, part B): Veil's bucket carries lifecycle rules that
expire uploads and results, and the hourly sweep (``sweep_expired``) deletes what is past its time for a
store that does not apply them: uploads older than a day (an upload orphaned by a gateway that died
before queueing its job, a logo whose facade and worker both lost track of it), results past their TTL."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from shared.jobs import utcnow
from shared.settings import Settings
from shared.storage import ObjectStore
from tests.fakes import worker_state
from workers import sweeper
from workers.context import CTX_KEY

pytestmark = pytest.mark.integration


def test_veils_bucket_expires_uploads_and_results(settings: Settings, store: ObjectStore) -> None:
    rules = store._s3.get_bucket_lifecycle_configuration(Bucket=store.bucket)["Rules"]
    expiring = {
        rule["Filter"]["Prefix"]: rule["Expiration"]["Days"] for rule in rules if rule["Status"] == "Enabled"
    }
    assert expiring == {settings.s3.uploads_prefix: 1, settings.s3.results_prefix: 1}


async def test_the_hourly_sweep_deletes_stale_uploads_and_results(
    settings: Settings, store: ObjectStore, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This test's own prefixes in the shared bucket, so the sweep touches nothing else.
    base = f"expiry-test-{uuid.uuid4().hex[:8]}/"
    s3 = settings.s3.model_copy(
        update={"uploads_prefix": f"{base}uploads/", "results_prefix": f"{base}results/"}
    )
    tuned = settings.model_copy(update={"s3": s3})
    state = worker_state(tuned, redis, store)
    keys = [
        f"{base}uploads/{uuid.uuid4().hex}",
        f"{base}uploads/logo-{uuid.uuid4().hex}",
        f"{base}results/a.jpg",
    ]
    for key in keys:
        store.put(key, b"bytes", "application/octet-stream")

    assert await sweeper.sweep_expired({CTX_KEY: state}) == {"results": 0, "uploads": 0}  # all still fresh
    assert all(store.exists(key) for key in keys)

    later = utcnow() + timedelta(days=1, minutes=5)  # past a day, and past the results' TTL (a day)
    monkeypatch.setattr(sweeper, "utcnow", lambda: later)
    assert await sweeper.sweep_expired({CTX_KEY: state}) == {"results": 1, "uploads": 2}
    assert not any(store.exists(key) for key in keys)
    await state.transfer.close()
