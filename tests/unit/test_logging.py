"""The JSON log line: UTC timestamps with milliseconds, the job and request ids, exceptions."""

from __future__ import annotations

import logging
import sys

import orjson

from shared.logging import JsonFormatter, current_request_id


def _record(created: float, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("veil.worker", logging.INFO, __file__, 1, "job %s done", ("j1",), None)
    record.created = created
    record.__dict__.update(extra)
    return record


def test_timestamps_are_utc_with_milliseconds() -> None:
    formatter = JsonFormatter()
    first = orjson.loads(formatter.format(_record(1_795_420_800.0421, job_id="j1")))
    assert first == {
        "ts": "2026-11-23T08:00:00.042Z",
        "level": "info",
        "logger": "veil.worker",
        "msg": "job j1 done",
        "job_id": "j1",
    }
    # Within the same second, and across into the next one.
    assert orjson.loads(formatter.format(_record(1_795_420_800.999)))["ts"] == "2026-11-23T08:00:00.999Z"
    assert orjson.loads(formatter.format(_record(1_795_420_801.0)))["ts"] == "2026-11-23T08:00:01.000Z"


def test_exceptions_are_kept() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = _record(0.5)
        record.exc_info = sys.exc_info()
    entry = orjson.loads(JsonFormatter().format(record))
    assert entry["ts"] == "1970-01-01T00:00:00.500Z"
    assert "RuntimeError: boom" in entry["exc"]


def test_request_id_comes_from_the_context_and_other_extras_are_left_out() -> None:
    token = current_request_id.set("req-1")
    try:
        entry = orjson.loads(JsonFormatter().format(_record(0.0, response_status=200, remote_address="x")))
    finally:
        current_request_id.reset(token)
    assert entry == {
        "ts": "1970-01-01T00:00:00.000Z",
        "level": "info",
        "logger": "veil.worker",
        "msg": "job j1 done",
        "request_id": "req-1",
    }
    # The record's own id wins over the context's.
    assert orjson.loads(JsonFormatter().format(_record(0.0, request_id="req-2")))["request_id"] == "req-2"
