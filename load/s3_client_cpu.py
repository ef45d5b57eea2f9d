"""Client CPU per S3 call (PUT, GET, DELETE of one image) for each way of talking to the store: the
measurement behind docs/decisions.md, "S3".

Starts a SeaweedFS of its own (``weed mini`` as ``veil up`` starts it), then runs every option in a process
of its own, ``--rounds`` times in rotating order. Each process warms up, then times N PUTs, N GETs and N
DELETEs one after the other on an event loop with ``time.process_time()`` (its own CPU, every thread, user
and system), and SeaweedFS's CPU over the same calls (psutil). CPU, not wall time: the machine may be
shared. Prints the median per call and per job (2 PUTs + a GET + a DELETE) and each round's job total.

  .venv/bin/python -m load.s3_client_cpu --image photo.jpg --rounds 3

Options (``--options``): ``boto3-thread`` (ObjectStore's client settings, asyncio.to_thread),
``veil-transfer`` (this checkout's shared.transfer.ObjectTransfer), ``aiohttp-presigned-boto3sign``
(URLs from boto3's presigner carried by aiohttp), ``aiohttp-presigned-fastsign`` (the same with the
hand-written SigV4 signer this repo had until docs/decisions.md "S3": put that file on ``PYTHONPATH`` as
``fast_presign.py``), ``aiobotocore`` (run by ``--aio-python``, an interpreter that has aiobotocore: it pins
botocore, so it usually needs a venv of its own). ``--python`` runs the others (default: this one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ATTEMPTS = 3
TIMEOUT = 5.0  # VEIL_S3__REQUEST_TIMEOUT_SECONDS's default
BUCKET = "bench"
ACCESS_KEY, SECRET_KEY = "veil", "veil-secret"
OPTIONS = (
    "boto3-thread",
    "veil-transfer",
    "aiohttp-presigned-boto3sign",
    "aiohttp-presigned-fastsign",
    "aiobotocore",
)

Op = Callable[[str, bytes], Awaitable[Any]]
Ops = tuple[Op, Op, Op, Callable[[], Awaitable[None]]]


def _config_kwargs() -> dict[str, Any]:
    """shared.storage's client settings."""
    per_attempt = TIMEOUT / ATTEMPTS
    return {
        "signature_version": "s3v4",
        "s3": {"addressing_style": "path"},
        "connect_timeout": per_attempt,
        "read_timeout": per_attempt,
        "retries": {"total_max_attempts": ATTEMPTS, "mode": "standard"},
        "max_pool_connections": 32,
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
    }


def _boto3_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name="us-east-1"
    )
    return session, session.client("s3", endpoint_url=endpoint, config=Config(**_config_kwargs()))


async def boto3_thread(endpoint: str) -> Ops:
    _, s3 = _boto3_client(endpoint)

    async def put(key: str, body: bytes) -> None:
        async with asyncio.timeout(TIMEOUT):
            await asyncio.to_thread(
                s3.put_object, Bucket=BUCKET, Key=key, Body=body, ContentType="image/jpeg"
            )

    def _get(key: str) -> bytes:
        data: bytes = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return data

    async def get(key: str, _: bytes) -> bytes:
        async with asyncio.timeout(TIMEOUT):
            return await asyncio.to_thread(_get, key)

    async def delete(key: str, _: bytes) -> None:
        async with asyncio.timeout(TIMEOUT):
            await asyncio.to_thread(s3.delete_object, Bucket=BUCKET, Key=key)

    async def close() -> None:
        s3.close()

    return put, get, delete, close


async def veil_transfer(endpoint: str) -> Ops:
    from shared.settings import S3Settings
    from shared.storage import ObjectStore
    from shared.transfer import ObjectTransfer

    settings = S3Settings(
        endpoint_url=endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY, bucket=BUCKET
    )
    transfer = ObjectTransfer.open(ObjectStore(settings))

    async def put(key: str, body: bytes) -> None:
        await transfer.put(key, body, "image/jpeg")

    async def get(key: str, _: bytes) -> bytes:
        return (await transfer.get(key)).body

    async def delete(key: str, _: bytes) -> None:
        await transfer.delete(key)

    return put, get, delete, transfer.close


async def aiohttp_presigned(endpoint: str, fast: bool) -> Ops:
    import aiohttp

    session, s3 = _boto3_client(endpoint)
    if fast:
        from fast_presign import PathStylePresigner  # type: ignore[import-not-found]

        signer = PathStylePresigner(endpoint, "us-east-1", session.get_credentials())

        def presign(method: str, operation: str, key: str, ctype: str | None = None) -> str:
            url: str = signer.url(method, BUCKET, key, expires_in=300, content_type=ctype)
            return url
    else:

        def presign(method: str, operation: str, key: str, ctype: str | None = None) -> str:
            params = {"Bucket": BUCKET, "Key": key, **({"ContentType": ctype} if ctype else {})}
            url: str = s3.generate_presigned_url(operation, Params=params, ExpiresIn=300)
            return url

    per_attempt = TIMEOUT / ATTEMPTS
    http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=64),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=per_attempt, sock_read=per_attempt),
    )

    async def put(key: str, body: bytes) -> None:
        async with asyncio.timeout(TIMEOUT):
            url = presign("PUT", "put_object", key, "image/jpeg")
            async with http.put(url, data=body, headers={"Content-Type": "image/jpeg"}) as response:
                assert response.status == 200, response.status
                await response.read()

    async def get(key: str, _: bytes) -> bytes:
        async with asyncio.timeout(TIMEOUT):
            async with http.get(presign("GET", "get_object", key)) as response:
                assert response.status == 200, response.status
                return await response.read()

    async def delete(key: str, _: bytes) -> None:
        async with asyncio.timeout(TIMEOUT):
            async with http.delete(presign("DELETE", "delete_object", key)) as response:
                assert response.status in (200, 204), response.status
                await response.read()

    return put, get, delete, http.close


async def aiobotocore_client(endpoint: str) -> Ops:
    from aiobotocore.config import AioConfig  # type: ignore[import-not-found]
    from aiobotocore.session import get_session  # type: ignore[import-not-found]

    context = get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=AioConfig(**_config_kwargs()),
    )
    s3 = await context.__aenter__()

    async def put(key: str, body: bytes) -> None:
        async with asyncio.timeout(TIMEOUT):
            await s3.put_object(Bucket=BUCKET, Key=key, Body=body, ContentType="image/jpeg")

    async def get(key: str, _: bytes) -> bytes:
        async with asyncio.timeout(TIMEOUT):
            response = await s3.get_object(Bucket=BUCKET, Key=key)
            async with response["Body"] as stream:
                data: bytes = await stream.read()
                return data

    async def delete(key: str, _: bytes) -> None:
        async with asyncio.timeout(TIMEOUT):
            await s3.delete_object(Bucket=BUCKET, Key=key)

    async def close() -> None:
        await context.__aexit__(None, None, None)

    return put, get, delete, close


async def measure(args: argparse.Namespace, body: bytes) -> dict[str, Any]:
    """One option in this process."""
    import psutil

    factories: dict[str, Callable[[str], Awaitable[Ops]]] = {
        "boto3-thread": boto3_thread,
        "veil-transfer": veil_transfer,
        "aiohttp-presigned-boto3sign": lambda e: aiohttp_presigned(e, fast=False),
        "aiohttp-presigned-fastsign": lambda e: aiohttp_presigned(e, fast=True),
        "aiobotocore": aiobotocore_client,
    }
    put, get, delete, close = await factories[args.measure](args.endpoint)
    server = psutil.Process(args.server_pid)
    tag = uuid.uuid4().hex[:8]
    result: dict[str, Any] = {"option": args.measure, "n": args.n, "bytes": len(body)}
    try:
        for i in range(args.warmup):
            key = f"bench/{tag}/warm-{i}"
            await put(key, body)
            assert len(await get(key, body)) == len(body)
            await delete(key, body)
        keys = [f"bench/{tag}/{i}" for i in range(args.n)]
        for name, op in (("put", put), ("get", get), ("delete", delete)):
            server_before = sum(server.cpu_times()[:2])
            before = time.process_time()
            for key in keys:
                await op(key, body)
            result[f"{name}_cpu_ms"] = (time.process_time() - before) / args.n * 1000
            result[f"{name}_server_cpu_ms"] = (sum(server.cpu_times()[:2]) - server_before) / args.n * 1000
    finally:
        await close()
    import aiohttp
    import botocore

    result.update(botocore=botocore.__version__, aiohttp=aiohttp.__version__, python=sys.version.split()[0])
    try:
        import aiobotocore  # type: ignore[import-not-found]

        result["aiobotocore"] = aiobotocore.__version__
    except ImportError:
        pass
    return result


def _job(row: dict[str, Any], suffix: str = "cpu_ms") -> float:
    return float(2 * row[f"put_{suffix}"] + row[f"get_{suffix}"] + row[f"delete_{suffix}"])


def drive(args: argparse.Namespace) -> None:
    import boto3

    from cli.embedded import start_seaweed

    runs = [
        (option, args.aio_python if option == "aiobotocore" else args.python)
        for option in args.options.split(",")
    ]
    with tempfile.TemporaryDirectory() as tmp:
        server = start_seaweed(Path(tmp) / "seaweed")
        try:
            boto3.client(
                "s3",
                endpoint_url=server.s3_url,
                aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY,
                region_name="us-east-1",
            ).create_bucket(Bucket=BUCKET)
            results: dict[str, list[dict[str, Any]]] = {}
            for round_ in range(args.rounds):
                shift = round_ % len(runs)
                for option, python in runs[shift:] + runs[:shift]:
                    command = [python, "-m", "load.s3_client_cpu", "--measure", option, "--image", args.image]
                    command += ["--endpoint", server.s3_url, "--server-pid", str(server.proc.pid)]
                    command += ["-n", str(args.n), "--warmup", str(args.warmup)]
                    out = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ)
                    row = json.loads(out.stdout)
                    label = f"{option} (botocore {row['botocore']})"
                    results.setdefault(label, []).append(row)
                    print(f"round {round_ + 1}: {label}: job {_job(row):.2f} ms", file=sys.stderr, flush=True)
        finally:
            server.stop()
    print(f"client CPU, ms per call, median of {args.rounds} rounds of {args.n} calls each")
    print(
        f"{'option':50s} {'PUT':>6s} {'GET':>6s} {'DELETE':>6s} {'job':>6s} {'weed/job':>8s}  job per round"
    )
    for label, rows in results.items():
        med = {
            k: statistics.median(r[k] for r in rows) for k in ("put_cpu_ms", "get_cpu_ms", "delete_cpu_ms")
        }
        jobs = [_job(r) for r in rows]
        weed = statistics.median(_job(r, "server_cpu_ms") for r in rows)
        print(
            f"{label:50s} {med['put_cpu_ms']:6.2f} {med['get_cpu_ms']:6.2f} {med['delete_cpu_ms']:6.2f} "
            f"{statistics.median(jobs):6.2f} {weed:8.2f}  {' '.join(f'{j:.2f}' for j in jobs)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", required=True, help="the object to store (e.g. a ~270 KB JPEG)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-n", type=int, default=200, help="calls of each kind per round")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--options", default="boto3-thread,veil-transfer,aiohttp-presigned-boto3sign")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--aio-python", default=sys.executable)
    parser.add_argument("--measure", choices=OPTIONS, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(asyncio.run(measure(args, Path(args.image).read_bytes()))))
    else:
        drive(args)


if __name__ == "__main__":
    main()
