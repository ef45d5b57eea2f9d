"""What a poll does with one listed object of the watched prefix, from what Redis holds of it: its done
entry (``shared.watch``) and its job's record. Pure, so every case is a unit test; the poll
(``workers/watch.py``) carries the steps out."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from shared.bulk import is_image_key
from shared.jobs import JobRecord, JobStatus
from shared.watch import DoneEntry, Outcome

# A job whose record says queued (never started) this long after it was written may have been lost by
# arq (its queue entry expired or was lost with Redis): it is queued again. A job arq still holds is not
# queued twice (arq refuses the same id), and a run of a finished job writes nothing.
STALE_QUEUED = timedelta(minutes=10)

After = Literal["keep", "tag", "delete"]


class Step(StrEnum):
    NOTHING = "nothing"  # done, or its job is in flight
    START = "start"  # new: probe it and queue its job
    REQUEUE = "requeue"  # queued long ago and never started: queue it again (a no-op if arq has it)
    FINISH = "finish"  # its job ended: write the done entry, then apply `after`
    APPLY = "apply"  # done, but `after` (tag, delete) is not confirmed yet: again
    SKIP = "skip"  # not an image by its name: remembered as skipped, never read


def next_step(
    key: str, job_id: str, entry: DoneEntry | None, record: JobRecord | None, after: After, now: datetime
) -> Step:
    """``job_id`` names this version of the object (``shared.watch.object_job_id``): an entry for another
    job id is an older upload under the same key, so this one is new work."""
    if entry is not None and entry.job_id == job_id:
        if after == "delete" and entry.outcome is Outcome.SUCCEEDED:
            return Step.APPLY  # listed, so not deleted yet (or the same bytes dropped again that second)
        return Step.NOTHING if entry.applied or after == "keep" else Step.APPLY
    if not is_image_key(key):
        return Step.SKIP
    if record is None:
        return Step.START
    if record.status.finished:
        return Step.FINISH
    if record.status is JobStatus.QUEUED and record.attempts == 0 and now - record.created_at > STALE_QUEUED:
        return Step.REQUEUE
    return Step.NOTHING
