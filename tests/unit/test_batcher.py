"""The micro-batcher: batches fill to max_batch or leave after max_wait, errors stay with their item,
cancelled items are dropped; and the session wrapper pads, batches and crops back."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from workers.batcher import BatchedSession, BatcherClosedError, MicroBatcher, run_session_batch


class Recorder:
    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int | BaseException]:
        with self.lock:
            self.batches.append(list(items))
        time.sleep(self.delay)
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


def test_full_batch_runs_without_waiting() -> None:
    recorder = Recorder()
    # max_wait is ten minutes: results within the one-minute wait below mean the full batch did not wait.
    batcher: MicroBatcher[int, int] = MicroBatcher(recorder, max_batch=4, max_wait_ms=600_000)
    try:
        futures = [batcher.submit(i) for i in range(4)]
        assert [f.result(timeout=60) for f in futures] == [0, 10, 20, 30]
        assert recorder.batches == [[0, 1, 2, 3]]
    finally:
        batcher.close()


def test_partial_batch_leaves_after_max_wait() -> None:
    recorder = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(recorder, max_batch=8, max_wait_ms=50)
    try:
        start = time.monotonic()
        futures = [batcher.submit(i) for i in range(3)]
        assert [f.result(timeout=5) for f in futures] == [0, 10, 20]
        waited = time.monotonic() - start
        assert 0.04 <= waited < 2
        assert recorder.batches == [[0, 1, 2]]
    finally:
        batcher.close()


def test_batches_never_exceed_max_batch() -> None:
    recorder = Recorder(delay=0.01)
    batcher: MicroBatcher[int, int] = MicroBatcher(recorder, max_batch=3, max_wait_ms=5)
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(batcher, range(20)))
        assert results == [i * 10 for i in range(20)]
        assert all(1 <= len(b) <= 3 for b in recorder.batches)
        assert sorted(i for b in recorder.batches for i in b) == list(range(20))
    finally:
        batcher.close()


def test_per_item_errors_stay_with_their_item() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(Recorder(), max_batch=3, max_wait_ms=1000)
    try:
        futures = [batcher.submit(i) for i in (1, -1, 2)]
        assert futures[0].result(timeout=5) == 10
        with pytest.raises(ValueError, match="bad -1"):
            futures[1].result(timeout=5)
        assert futures[2].result(timeout=5) == 20
    finally:
        batcher.close()


def test_failed_batch_is_retried_item_by_item() -> None:
    calls: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        calls.append(list(items))
        if 13 in items:
            raise RuntimeError("unlucky")
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=3, max_wait_ms=1000)
    try:
        futures = [batcher.submit(i) for i in (1, 13, 2)]
        assert futures[0].result(timeout=5) == 1
        with pytest.raises(RuntimeError, match="unlucky"):
            futures[1].result(timeout=5)
        assert futures[2].result(timeout=5) == 2
        assert calls == [[1, 13, 2], [1], [13], [2]]
    finally:
        batcher.close()


def test_cancelled_items_are_dropped() -> None:
    recorder = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(recorder, max_batch=4, max_wait_ms=200)
    try:
        keep = batcher.submit(1)
        dropped = batcher.submit(2)
        assert dropped.cancel()
        assert keep.result(timeout=5) == 10
        assert dropped.cancelled()
        assert recorder.batches == [[1]]
    finally:
        batcher.close()


def test_closed_batcher_refuses_and_drains() -> None:
    recorder = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(recorder, max_batch=8, max_wait_ms=10_000)
    pending = batcher.submit(5)
    batcher.close()
    assert pending.result(timeout=5) == 50  # queued before close: still run
    with pytest.raises(BatcherClosedError):
        batcher.submit(6)


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(Recorder(), max_batch=0, max_wait_ms=1)


class FakeConvSession:
    """A 'model' that halves the spatial size (like a stride-2 head) and records the batch shapes."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def run(self, names: list[str] | None, feeds: dict[str, Any], run_options: Any = None) -> list[Any]:
        x = feeds["x"]
        self.shapes.append(x.shape)
        return [x[:, :1, ::2, ::2] * 2, x.reshape(x.shape[0], -1).sum(axis=1, keepdims=True)]

    def get_inputs(self) -> list[Any]:
        return ["x"]

    def get_providers(self) -> list[str]:
        return ["fake"]


def test_session_batch_pads_and_crops_back() -> None:
    session = FakeConvSession()
    a = np.ones((1, 3, 8, 12), np.float32)
    b = np.full((1, 3, 16, 8), 2, np.float32)
    out_a, out_b = run_session_batch(session, [(None, {"x": a}), (None, {"x": b})])
    assert session.shapes == [(2, 3, 16, 12)]  # one pass, padded to the largest size
    assert out_a[0].shape == (1, 1, 4, 6) and np.all(out_a[0] == 2)
    assert out_b[0].shape == (1, 1, 8, 4) and np.all(out_b[0] == 4)
    assert out_a[1].item() == a.sum() and out_b[1].item() == b.sum()  # zero padding adds nothing


def test_batched_session_merges_concurrent_calls_and_forwards_attributes() -> None:
    session = FakeConvSession()
    batched = BatchedSession(session, max_batch=4, max_wait_ms=2000, name="test")
    try:
        assert batched.get_inputs() == ["x"]
        blobs = [np.full((1, 3, 4, 4), i, np.float32) for i in range(4)]
        with ThreadPoolExecutor(4) as pool:
            outs = list(pool.map(lambda blob: batched.run(None, {"x": blob}), blobs))
        assert session.shapes == [(4, 3, 4, 4)]
        for i, (first, _) in enumerate(outs):
            assert first.shape == (1, 1, 2, 2) and np.all(first == 2 * i)
    finally:
        batched.close()
