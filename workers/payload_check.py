"""Which objects a job's payload may touch: the worker's own check of what the gateway should have queued,
so a forged or stale payload can never read another job's upload or result, nor delete what is not its own."""

from __future__ import annotations

from shared.errors import ValidationError
from shared.jobs import JobRequest, ObjectRef
from shared.objectkeys import check_key
from shared.storage import ObjectStore


def refusal(store: ObjectStore, request: JobRequest) -> str | None:
    """Why this payload's objects must not be touched, or None. The gateway only ever queues its own upload
    (``uploads/<job id>`` in Veil's bucket, deleted when the job ends) or a canonical key in a bucket of
    the client's (never deleted); bulk copies go to a client's bucket. Anything else (another job's upload
    or result, a key the store would normalise into another object) is refused before it is read."""
    own_upload = ObjectRef(bucket=store.bucket, key=store.upload_key(request.id))
    keys = [("source.key", request.source.key)]
    if request.output is not None:
        keys.append(("output.key", request.output.key))
    if request.options.logo_key is not None:
        keys.append(("logo_key", request.options.logo_key))
    try:
        for field, key in keys:
            check_key(key, field)
    except ValidationError as exc:
        return exc.message
    if request.source.bucket == store.bucket and request.source != own_upload:
        return "the source is in Veil's own bucket but is not this job's upload"
    if request.delete_source and request.source != own_upload:
        return "only the job's own upload is deleted when it ends"
    if request.output is not None and request.output.bucket == store.bucket:
        return "a blurred copy is never written into Veil's own bucket"
    return None
