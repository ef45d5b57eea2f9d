"""Claiming a queued arq job for this worker: arq's check-and-mark as one Redis script.

arq claims each job with WATCH in-progress key; EXISTS; ZSCORE; MULTI, PSETEX, EXEC (four round trips, on
a connection held for the whole exchange). The script does the same checks and the same write atomically
in one: same keys, same in-progress marker and lifetime, so arq workers and ours can share a queue.
"""

from __future__ import annotations

from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis

# KEYS: the job's in-progress key, the queue. ARGV: job id, now (ms), in-progress lifetime (ms).
# Returns the job's score when claimed; nil when it runs elsewhere, has left the queue, or is not due.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return false
end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then
    return false
end
redis.call('PSETEX', KEYS[1], ARGV[3], '1')
return score
"""


class JobClaimer:
    def __init__(self, redis: Redis, queue_name: str, in_progress_ms: int) -> None:
        self._script = redis.register_script(_CLAIM)  # EVALSHA, loaded on first use
        self._queue_name = queue_name
        self._in_progress_ms = in_progress_ms

    async def claim(self, job_id: str, now_ms: int) -> int | None:
        """The job's score (enqueue time or deferral, ms) if this worker now holds it, else None."""
        keys = [in_progress_key_prefix + job_id, self._queue_name]
        score = await self._script(keys=keys, args=[job_id, now_ms, self._in_progress_ms])
        return None if score is None else int(float(score))
