"""What a running worker holds: built once at start-up, handed to every task through arq's ``ctx``."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis

from shared.jobs import BlurOptions
from shared.jobstore import JobStore
from shared.settings import Settings
from shared.storage import ObjectStore
from shared.transfer import ObjectTransfer
from workers.pipeline import AnonymizeResult

CTX_KEY = "veil"


class Runner(Protocol):
    """What the task needs: :class:`workers.engine.Engine` (or a bare ``Anonymizer``). ``expired`` says
    when the job's detection time is up; the runner stops between model passes once it does."""

    providers: list[str]

    def run(
        self,
        data: bytes,
        options: BlurOptions,
        *,
        max_pixels: int,
        face_max_side: int,
        logo: bytes | None = None,
        expired: Callable[[], bool] | None = None,
    ) -> AnonymizeResult: ...


@dataclass
class WorkerContext:
    id: str
    settings: Settings
    redis: Redis
    store: ObjectStore
    transfer: ObjectTransfer  # the hot GET / PUT / DELETE of image bytes, each within the store timeout
    jobs: JobStore
    anonymizer: Runner
    # The inference lanes: one thread per image in flight through the pipeline (decode, detect, blur,
    # encode). Sized by the runtime plan: one per core on CPU (single-threaded sessions), a few on a GPU.
    inference: ThreadPoolExecutor
    # Set when the worker is told to stop: arq cancels its jobs to run them again elsewhere, so a cancelled
    # job is handed back (queued), not failed as on arq's job timeout (workers/tasks.py).
    stopping: bool = False


def worker_context(ctx: dict[str, Any]) -> WorkerContext:
    state = ctx[CTX_KEY]
    assert isinstance(state, WorkerContext)
    return state
