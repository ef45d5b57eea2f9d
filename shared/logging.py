"""One log format for every process: JSON lines on stderr, so logs from gateway and workers can be joined."""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar

from pythonjsonlogger.core import LogData
from pythonjsonlogger.orjson import OrjsonFormatter

# The HTTP request being handled in this context (set by the gateway's request-id middleware).
current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)

# LogRecord attribute -> key in the line. Extras other than these (aiohttp's access logger passes a dozen)
# are left out, so every line has the same few keys.
_RENAMES = {"asctime": "ts", "levelname": "level", "name": "logger", "message": "msg", "exc_info": "exc"}
_KEYS = ("ts", "level", "logger", "msg", "job_id", "request_id", "exc")


class JsonFormatter(OrjsonFormatter):
    """``ts`` is UTC with milliseconds (``2026-11-23T08:01:02.345Z``), comparable across hosts; the
    seconds part is formatted once per second, as a busy worker logs several lines per job. ``job_id`` and
    ``request_id`` (from the record, else the request being handled) are added when there is one, and
    ``exc`` when an exception is logged."""

    def __init__(self) -> None:
        super().__init__(["asctime", "levelname", "name", "message"], rename_fields=_RENAMES)
        self._second = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        created = record.created
        whole = int(created)
        if whole != self._second[0]:
            self._second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
        return f"{self._second[1]}.{int((created - whole) * 1000):03d}Z"

    def process_log_record(self, log_data: LogData) -> LogData:
        log_data["level"] = str(log_data["level"]).lower()
        log_data["request_id"] = log_data.get("request_id") or current_request_id.get()
        return {key: log_data[key] for key in _KEYS if log_data.get(key) is not None}


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # boto's per-request debug lines drown everything else.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
