"""The one error hierarchy of Veil.

Every failure a user can see is a :class:`VeilError` with a stable ``code``. Two branches matter:

* :class:`PermanentError` — retrying the same request cannot help (bad image, bad option, detection failed).
  The worker fails the job at once; the gateway answers 4xx.
* :class:`TransientError` — something outside the request is down, slow or full (Redis, S3, models
  loading, the queue at its limit, a key over its rate). The worker lets arq retry; the gateway answers 503
  (429 for a key over its rate), with ``Retry-After``.

No HTTP status lives here: the gateway maps these classes to statuses in one place (``gateway/errors.py``);
the worker records ``code`` and ``message`` on the failed job.
"""

from __future__ import annotations


class VeilError(Exception):
    code: str = "INTERNAL_ERROR"
    retry_after: float | None = None  # seconds a client should wait before trying again, when known

    def __init__(self, message: str, *, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retry_after is not None:
            self.retry_after = retry_after

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class PermanentError(VeilError):
    """Retrying will not help."""

    code = "PERMANENT_ERROR"


class ValidationError(PermanentError):
    """Missing or malformed input or option."""

    code = "VALIDATION_ERROR"


class UnauthorizedError(PermanentError):
    code = "UNAUTHORIZED"


class ForbiddenError(PermanentError):
    """The key is valid but may not do this (its scopes)."""

    code = "FORBIDDEN"


class InsufficientCreditsError(PermanentError):
    """The key's credit balance cannot pay for the job (``shared/quotas.py``); more credits are needed."""

    code = "INSUFFICIENT_CREDITS"


class NotFoundError(PermanentError):
    code = "NOT_FOUND"


class ConflictError(PermanentError):
    code = "NOT_FINISHED"


class GoneError(PermanentError):
    """It existed, but not any more (a result past its 24 h, or deleted by its owner)."""

    code = "GONE"


class PayloadTooLargeError(PermanentError):
    code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaError(PermanentError):
    code = "UNSUPPORTED_MEDIA_TYPE"


class DetectionError(PermanentError):
    """A detector raised or produced garbage: the job fails closed, nothing is written."""

    code = "DETECTION_FAILED"


class DetectionTimeoutError(DetectionError):
    code = "DETECTION_TIMEOUT"


class TransientError(VeilError):
    """Worth retrying later."""

    code = "UNAVAILABLE"


class StoreUnavailableError(TransientError):
    code = "STORE_UNAVAILABLE"


class QueueUnavailableError(TransientError):
    code = "QUEUE_UNAVAILABLE"


class QueueFullError(TransientError):
    """The queue holds as many jobs as the operator allows (``VEIL_REDIS__MAX_QUEUED_JOBS``)."""

    code = "QUEUE_FULL"


class RateLimitedError(TransientError):
    """One API key submitted faster than ``VEIL_GATEWAY__SUBMISSIONS_PER_SECOND`` allows."""

    code = "RATE_LIMITED"


class QuotaExceededError(TransientError):
    """The key reached one of its caps (``shared/quotas.py``): ``limit`` says which (``daily``,
    ``monthly`` or ``concurrent``); ``retry_after`` is when it lifts (the next UTC day or month)."""

    code = "QUOTA_EXCEEDED"

    def __init__(self, message: str, *, limit: str, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)
        self.limit = limit


class ModelsNotReadyError(TransientError):
    code = "MODELS_NOT_READY"


class UpstreamFetchError(PermanentError):
    """An ``image_url`` could not be fetched (refused by the SSRF guard, unreachable, bad status)."""

    code = "FETCH_FAILED"
