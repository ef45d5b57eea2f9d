"""Typed application state (``web.AppKey``), filled by the clean-up contexts in :mod:`gateway.app`."""

from __future__ import annotations

from aiohttp import web
from arq.connections import ArqRedis

from gateway.submission import JobSubmitter
from gateway.urlfetch import UrlFetcher
from shared.apikeys import ApiKeyStore
from shared.settings import Settings
from shared.storage import ObjectStore

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", ArqRedis)
STORE = web.AppKey("store", ObjectStore)
API_KEYS = web.AppKey("api_keys", ApiKeyStore)
URL_FETCHER = web.AppKey("url_fetcher", UrlFetcher)
SUBMITTER = web.AppKey("submitter", JobSubmitter)
