"""What a running worker holds: built once at start-up, handed to every task through arq's ``ctx``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from shared.jobstore import JobStore
from shared.settings import Settings
from shared.storage import ObjectStore
from workers.pipeline import Anonymizer

CTX_KEY = "veil"


@dataclass
class WorkerContext:
    id: str
    settings: Settings
    redis: Redis
    store: ObjectStore
    jobs: JobStore
    anonymizer: Anonymizer
    # One thread: onnxruntime already spreads one inference over the cores; more would oversubscribe.
    inference: ThreadPoolExecutor


def worker_context(ctx: dict[str, Any]) -> WorkerContext:
    state = ctx[CTX_KEY]
    assert isinstance(state, WorkerContext)
    return state
