"""Micro-batching across jobs: callers submit one item each; a batch runs when ``max_batch`` items wait or
``max_wait_ms`` has passed since the first of them arrived (the behaviour of Triton's dynamic batcher and
Ray Serve's ``@serve.batch``).

:class:`MicroBatcher` is thread-based because its callers are the worker's inference lanes (threads that
run the synchronous pipeline). :class:`BatchedSession` puts one in front of an onnxruntime session: the
detectors call ``session.run`` with a batch of 1 as before, and concurrent calls from several jobs are
concatenated along the batch axis. 4-D inputs of different sizes are padded bottom/right with zeros to the
largest size in the batch (what CenterFace's own preprocessing pads with), and spatial outputs are cropped
back per item.

With ``max_batch=1`` no batcher is used at all (no thread hop): on CPUs a batch of n costs n single passes,
so batching only adds waiting; on GPUs it fills the device.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from workers.sessions import ProviderSession, Session

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class BatcherClosedError(RuntimeError):
    pass


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: Future[R]
    enqueued: float


class MicroBatcher(Generic[T, R]):
    """Collects items from many threads into batches for ``run_batch``.

    ``run_batch(items)`` returns one result per item, in order; an entry may be an exception, which is then
    raised for that item only. If ``run_batch`` raises for a batch of several items, each item is retried
    alone so one bad input cannot fail the others. Items whose future was cancelled before their batch
    started are dropped.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], Sequence[R | BaseException]],
        *,
        max_batch: int,
        max_wait_ms: float,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self._queue: deque[_Pending[T, R]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.batches_run = 0
        self.items_run = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> Future[R]:
        future: Future[R] = Future()
        with self._cond:
            if self._closed:
                raise BatcherClosedError("the batcher is closed")
            self._queue.append(_Pending(item, future, time.monotonic()))
            self._cond.notify()
        return future

    def __call__(self, item: T) -> R:
        """Submit and wait: what a synchronous caller (an inference lane) uses."""
        return self.submit(item).result()

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop taking items; items already queued still run."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def _take(self) -> list[_Pending[T, R]] | None:
        with self._cond:
            while True:
                if not self._queue:
                    if self._closed:
                        return None
                    self._cond.wait()
                    continue
                deadline = self._queue[0].enqueued + self.max_wait
                remaining = deadline - time.monotonic()
                if len(self._queue) >= self.max_batch or remaining <= 0 or self._closed:
                    count = min(self.max_batch, len(self._queue))
                    return [self._queue.popleft() for _ in range(count)]
                self._cond.wait(remaining)

    def _loop(self) -> None:
        while (taken := self._take()) is not None:
            batch = [p for p in taken if p.future.set_running_or_notify_cancel()]
            if batch:
                self._execute(batch)

    def _execute(self, batch: list[_Pending[T, R]]) -> None:
        try:
            results = list(self._run_batch([p.item for p in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} items")
        except BaseException as exc:
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            log.warning("batch of %d failed (%s); running its items one by one", len(batch), exc)
            results = []
            for pending in batch:
                try:
                    results.extend(self._run_batch([pending.item]))
                except BaseException as single:
                    results.append(single)
        self.batches_run += 1
        self.items_run += len(batch)
        for pending, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)


Array = npt.NDArray[Any]
Feeds = dict[str, Array]


def _pad_to(array: Array, shape: tuple[int, ...]) -> Array:
    if array.shape[1:] == shape:
        return array
    padded = np.zeros((array.shape[0], *shape), dtype=array.dtype)
    padded[tuple(slice(0, n) for n in array.shape)] = array
    return padded


def run_session_batch(session: Session, calls: list[tuple[list[str] | None, Feeds]]) -> list[list[Array]]:
    """Run several single-item ``session.run`` calls as one batch; per-call outputs, cropped back.

    All calls must ask for the same outputs and feed the same input names, each with a batch of 1.
    """
    names, first = calls[0]
    if any(call_names != names or call.keys() != first.keys() for call_names, call in calls):
        raise ValueError("calls in one batch must feed the same inputs and ask for the same outputs")
    feeds: Feeds = {}
    scale: list[tuple[float, float]] = [(1.0, 1.0)] * len(calls)
    for key in first:
        arrays = [call[key] for _, call in calls]
        if any(a.shape[0] != 1 for a in arrays):
            raise ValueError("batched calls must have a batch of 1")
        target = tuple(max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim))
        feeds[key] = np.concatenate([_pad_to(a, target) for a in arrays])
        if arrays[0].ndim == 4 and len(first) == 1:
            scale = [(a.shape[2] / target[1], a.shape[3] / target[2]) for a in arrays]
    outputs: list[Array] = session.run(names, feeds)
    per_call: list[list[Array]] = []
    for index, (fy, fx) in enumerate(scale):
        items = []
        for out in outputs:
            piece = out[index : index + 1]
            if piece.ndim == 4 and (fy, fx) != (1.0, 1.0):
                piece = piece[:, :, : math.ceil(piece.shape[2] * fy), : math.ceil(piece.shape[3] * fx)]
            items.append(np.ascontiguousarray(piece))
        per_call.append(items)
    return per_call


class BatchedSession:
    """Looks like an onnxruntime session to a detector; ``run`` goes through a :class:`MicroBatcher`."""

    def __init__(self, session: ProviderSession, *, max_batch: int, max_wait_ms: float, name: str) -> None:
        self.session = session
        self.batcher: MicroBatcher[tuple[list[str] | None, Feeds], list[Array]] = MicroBatcher(
            lambda calls: run_session_batch(session, calls),
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            name=name,
        )

    def run(self, output_names: list[str] | None, input_feed: Feeds, run_options: Any = None) -> list[Array]:
        if run_options is not None:  # not batchable; rare
            result: list[Array] = self.session.run(output_names, input_feed, run_options)
            return result
        names = list(output_names) if output_names is not None else None
        return self.batcher((names, input_feed))

    def close(self) -> None:
        self.batcher.close()

    def __getattr__(self, name: str) -> Any:  # get_inputs, get_outputs, get_providers, ...
        return getattr(self.session, name)
