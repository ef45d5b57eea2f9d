"""What the queue costs around the models: the measurement behind docs/decisions.md, "arq".

Starts a Redis of its own, and a worker built by a checkout's ``workers.main.build_worker`` in a process
of its own, with its start-up and cron jobs left out (no models, no store: what is measured is arq's
loop and its Redis calls) and two stand-in functions. Then, in order:

* idle: the worker's and Redis's CPU (ms per second, psutil) over ``--idle`` seconds with nothing queued;
* lone jobs: ``--jobs`` jobs queued one at a time, 0.3-1 s apart, each recording how long after its
  enqueue it started (enqueue to start, both clocks on this machine);
* load (``--load N``): N jobs queued at once, each sleeping ``--work`` seconds (no CPU), the worker's and
  Redis's CPU per job, and jobs per second: bound by the worker's job slots, the worst case for a poll;
  with ``--laned``, each job instead holds one of 2 "lanes" (a semaphore) for ``--work`` seconds between
  two 30 ms sleeps (its fetch and store), as Veil's jobs wait for an inference lane: bound by the lanes;
* enqueue (``--enqueue N``): client CPU per submission's Redis work (the job record and the queued job)
  as the checkout's gateway does it, ``time.process_time()`` over N of them.

  .venv/bin/python -m load.arq_queue_cost --poll 0.25 --idle 30 --jobs 30 --load 150 --enqueue 2000

``--tree DIR`` measures another checkout with this one's venv, e.g. the commit before the change:
``git archive <commit> workers shared gateway cli | tar -x -C /tmp/old`` then ``--tree /tmp/old``. A tree
whose gateway announced enqueues on a channel (``shared.queue.queued_channel``) gets them announced here too.
``--poll`` overrides the worker's poll delay (default: the tree's own).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
LANES = 2  # --laned: inference lanes, as on the 2-core CI machine


def _worker_process(url: str, queue: str, poll: str) -> None:
    """Run a checkout's worker (``sys.path`` set by the caller) with stand-in functions until killed."""
    from arq.worker import func

    from shared.settings import load_settings
    from workers.main import build_worker

    async def probe(ctx: dict[str, Any], enqueued: float) -> None:
        started = time.time()
        await ctx["redis"].rpush(queue + ":lat", repr(started - enqueued))

    async def work(ctx: dict[str, Any], seconds: float) -> None:
        await asyncio.sleep(seconds)
        await ctx["redis"].rpush(queue + ":done", b"1")

    lanes: list[asyncio.Semaphore] = []

    async def laned(ctx: dict[str, Any], io_s: float, lane_s: float) -> None:
        if not lanes:
            lanes.append(asyncio.Semaphore(LANES))
        await asyncio.sleep(io_s)  # fetch
        async with lanes[0]:
            await asyncio.sleep(lane_s)  # detect, on one of the lanes
        await asyncio.sleep(io_s)  # store
        await ctx["redis"].rpush(queue + ":done", b"1")

    async def nothing(ctx: dict[str, Any]) -> None:
        return None

    settings = load_settings()
    settings = settings.model_copy(
        update={"redis": settings.redis.model_copy(update={"url": url, "queue_name": queue})}
    )
    worker = build_worker(settings)
    worker.on_startup = worker.on_shutdown = nothing  # no models, no store
    for name in [name for name in worker.functions if name.startswith("cron:")]:
        del worker.functions[name]  # the sweeper needs the real context
    worker.cron_jobs = []
    worker.functions["probe"] = func(probe, name="probe")
    worker.functions["work"] = func(work, name="work")
    worker.functions["laned"] = func(laned, name="laned")
    if poll != "tree":
        worker.poll_delay_s = float(poll)
    print(f"worker: {type(worker).__name__}, poll_delay {worker.poll_delay_s}", flush=True)
    worker.run()


def _cpu_ms(proc: Any) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system) * 1000


async def _measure(args: argparse.Namespace, url: str, queue: str, worker_pid: int, redis_pid: int) -> None:
    import psutil
    from arq import create_pool
    from arq.connections import RedisSettings

    import shared.queue as queue_module
    from shared.jobs import ImageFormat, InputInfo, JobRecord, JobRequest, ObjectRef
    from shared.jobstore import JobStore
    from shared.settings import load_settings

    announce = hasattr(queue_module, "queued_channel")
    pool = None
    try:
        pool = await create_pool(
            RedisSettings.from_dsn(url),
            job_serializer=queue_module.serialize,
            job_deserializer=queue_module.deserialize,
            default_queue_name=queue,
        )

        async def enqueue(function: str, *job_args: Any) -> None:
            job = await pool.enqueue_job(function, *job_args, _queue_name=queue)
            if announce and job is not None:
                await pool.publish(queue_module.queued_channel(queue), job.job_id)

        await asyncio.sleep(5)  # imports done, the loop polling
        wproc, rproc = psutil.Process(worker_pid), psutil.Process(redis_pid)
        if args.idle:
            w0, r0, t0 = _cpu_ms(wproc), _cpu_ms(rproc), time.monotonic()
            await asyncio.sleep(args.idle)
            secs = time.monotonic() - t0
            w1, r1 = _cpu_ms(wproc), _cpu_ms(rproc)
            print(f"idle {secs:.0f} s: worker {(w1 - w0) / secs:.2f} ms/s, redis {(r1 - r0) / secs:.2f} ms/s")
        if args.jobs:
            lat = []
            for _ in range(args.jobs):
                await asyncio.sleep(random.uniform(0.3, 1.0))
                await enqueue("probe", time.time())
                _, started = await pool.blpop([queue + ":lat"], timeout=30)
                lat.append(float(started) * 1000)
            lat.sort()
            print(
                f"lone jobs ({len(lat)}), enqueue to start: median {statistics.median(lat):.1f} ms, "
                f"p90 {lat[int(0.9 * len(lat)) - 1]:.1f} ms, max {lat[-1]:.1f} ms"
            )
        if args.load:
            w0, r0, t0 = _cpu_ms(wproc), _cpu_ms(rproc), time.monotonic()
            for _ in range(args.load):
                if args.laned:
                    await enqueue("laned", 0.03, args.work)
                else:
                    await enqueue("work", args.work)
            for _ in range(args.load):
                await pool.blpop([queue + ":done"], timeout=60)
            secs = time.monotonic() - t0
            w1, r1 = _cpu_ms(wproc), _cpu_ms(rproc)
            print(
                f"load {args.load} x {args.work} s{' on 2 lanes' if args.laned else ''}: "
                f"{args.load / secs:.2f} jobs/s, "
                f"worker {(w1 - w0) / args.load:.2f} ms/job, redis {(r1 - r0) / args.load:.2f} ms/job"
            )
        if args.enqueue:
            redis_settings = load_settings().redis.model_copy(update={"url": url})
            jobs = JobStore(pool, redis_settings.prefix)
            info = InputInfo(width=640, height=480, format=ImageFormat.JPEG)

            async def submit() -> None:
                job_id = uuid.uuid4().hex
                source = ObjectRef(bucket="veil", key=f"uploads/{job_id}")
                request = JobRequest(id=job_id, owner="k", source=source, input=info)
                record = JobRecord(id=job_id, owner="k", input=info, options=request.options)
                if hasattr(queue_module, "stage_anonymize"):  # the one-pipeline script of before
                    async with pool.pipeline(transaction=True) as pipe:
                        jobs.stage_put(pipe, record)
                        queue_module.stage_anonymize(
                            pipe, request, queue + ":enq", expires_extra_ms=pool.expires_extra_ms
                        )
                        await pipe.execute()
                else:
                    await jobs.put(record)
                    await queue_module.enqueue_anonymize(pool, request, queue + ":enq")

            for _ in range(200):
                await submit()
            c0 = time.process_time()
            for _ in range(args.enqueue):
                await submit()
            cpu = (time.process_time() - c0) / args.enqueue * 1000
            print(f"enqueue with its record ({args.enqueue}): {cpu:.3f} ms client CPU each")
    finally:
        if pool is not None:
            await pool.aclose()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url, queue, poll, tree = sys.argv[2:6]
        sys.path.insert(0, tree)
        _worker_process(url, queue, poll)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", default=str(HERE), help="checkout to measure (default: this one)")
    parser.add_argument("--poll", default="tree", help="poll delay in seconds (default: the tree's)")
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--load", type=int, default=0)
    parser.add_argument("--work", type=float, default=1.1)
    parser.add_argument("--laned", action="store_true")
    parser.add_argument("--enqueue", type=int, default=0)
    args = parser.parse_args()
    args.tree = str(Path(args.tree).resolve())
    sys.path.insert(0, args.tree)
    from cli.embedded import start_redis

    server = start_redis(Path(tempfile.mkdtemp(prefix="veil-arq-cost-")))
    queue = f"measure:{uuid.uuid4().hex[:6]}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "load.arq_queue_cost", "--worker", server.url, queue, args.poll, args.tree],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=HERE,
    )
    try:
        assert worker.stdout is not None
        print(worker.stdout.readline().strip(), f"(tree {args.tree})")
        asyncio.run(_measure(args, server.url, queue, worker.pid, server.proc.pid))
    finally:
        worker.terminate()
        worker.wait(10)
        server.stop()


if __name__ == "__main__":
    main()
