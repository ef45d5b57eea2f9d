"""What reading the queue's depth costs per call: ``ZCARD`` on arq's queue key (what Veil's admission check,
metrics and bulk pacing do) against arq's public ``ArqRedis.queued_jobs()``, at growing depths.

    .venv/bin/python -m load.queue_depth_cost [--depths 10,100,1000,10000]

Starts its own redis-server (the embedded one) in a temp dir; client CPU and wall time per call.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from arq import create_pool
from arq.connections import RedisSettings

from cli.embedded import start_redis

QUEUE = "depth-bench:queue"


async def _measure(call: Callable[[], Awaitable[object]], reps: int) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(reps):
        await call()
    return 1000 * (time.process_time() - cpu) / reps, 1000 * (time.perf_counter() - wall) / reps


async def run(depths: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_redis(Path(tmp))
        try:
            pool = await create_pool(RedisSettings(host="127.0.0.1", port=server.port))
            queued = 0
            for depth in depths:
                while queued < depth:  # payloads of a real job's size (~1 KB)
                    await pool.enqueue_job("anonymize", {"n": queued, "pad": "x" * 900}, _queue_name=QUEUE)
                    queued += 1
                reps = 20 if depth <= 1000 else 3
                for name, call in (
                    ("zcard", lambda: pool.zcard(QUEUE)),
                    ("queued_jobs", lambda: pool.queued_jobs(queue_name=QUEUE)),
                ):
                    cpu, wall = await _measure(call, reps)
                    print(f"depth {depth:>6}  {name:<12} client CPU {cpu:9.2f} ms  wall {wall:9.2f} ms")
            await pool.aclose()
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--depths", default="10,100,1000,10000")
    args = parser.parse_args()
    asyncio.run(run([int(d) for d in args.depths.split(",")]))


if __name__ == "__main__":
    main()
