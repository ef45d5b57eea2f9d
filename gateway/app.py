"""The gateway application: typed state, clean-up contexts pairing each resource's start and stop, routes
and the error middleware. ``create_app(settings)`` is all a runner or a test needs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway import metrics, requestid
from gateway.backends import connect_redis
from gateway.errors import ERROR_RENDERERS, ErrorRenderers, error_middleware
from gateway.inputs import body_limit
from gateway.routes import (
    admin,
    bulk,
    deliveries,
    demo,
    docs,
    health,
    jobs,
    plateblurer,
    platerecognizer,
    usage,
    vehicore,
)
from gateway.state import API_KEYS, REDIS, SETTINGS, STORE, SUBMITTER, URL_FETCHER
from gateway.submission import JobSubmitter
from gateway.urlfetch import UrlFetcher
from shared.apikeys import ApiKeyStore
from shared.settings import Settings
from shared.storage import ObjectStore
from shared.urlguard import UrlAllowlist, create_guarded_session

log = logging.getLogger(__name__)


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    redis = connect_redis(settings.redis)
    app[REDIS] = redis
    app[API_KEYS] = ApiKeyStore(redis, settings.redis.prefix)
    yield
    await redis.aclose(close_connection_pool=True)


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    # No network here: the gateway starts while the store is down (requests answer 503, /readyz says why).
    # Creating the bucket is provisioning (`veil up`, the worker), not the gateway's business.
    app[STORE] = ObjectStore(app[SETTINGS].s3)
    yield


async def url_fetcher_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    session = create_guarded_session(UrlAllowlist(settings.effective_url_allowlist()))
    app[URL_FETCHER] = UrlFetcher.from_settings(session, settings)
    yield
    await session.close()


async def submitter_ctx(app: web.Application) -> AsyncIterator[None]:
    submitter = JobSubmitter(app[SETTINGS], app[STORE], app[REDIS])
    app[SUBMITTER] = submitter
    yield
    await submitter.close()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware],
        # Bodies are streamed with their own limits (gateway.inputs); this only bounds request.read().
        client_max_size=body_limit(settings.limits.max_upload_bytes),
    )
    app[SETTINGS] = settings
    app[ERROR_RENDERERS] = ErrorRenderers()
    app.cleanup_ctx.extend([redis_ctx, store_ctx, url_fetcher_ctx, submitter_ctx])
    app.add_routes(health.routes)
    app.add_routes(jobs.routes)
    app.add_routes(bulk.routes)
    app.add_routes(deliveries.routes)
    app.add_routes(demo.routes)
    app.add_routes(docs.routes)
    app.add_routes(admin.routes)
    app.add_routes(usage.routes)
    metrics.setup(app)
    requestid.setup(app)  # after metrics: outermost of all
    # Vendor-compatible facades: routes, error shapes (and Plate Recognizer's optional on-prem listener).
    for facade in (vehicore, platerecognizer, plateblurer):
        facade.setup(app)
    return app
