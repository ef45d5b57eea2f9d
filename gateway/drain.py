"""Serving the gateway, and stopping it without cutting requests: on SIGTERM (Kubernetes) or SIGINT,

1. ``/readyz`` answers 503 at once, so a load balancer stops sending here, while requests are still served
   for ``VEIL_GATEWAY__SHUTDOWN_DELAY_SECONDS`` (the time it takes the balancer to notice; 0 by default);
2. the listener closes and idle keep-alive connections with it; requests in progress get
   ``VEIL_GATEWAY__DRAIN_SECONDS`` to finish (aiohttp's ``shutdown_timeout``), then are cancelled;
3. the clean-up contexts close Redis, the HTTP client and the rest, and the process exits 0.

A second signal skips what is left: the process exits at once, cutting what is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable

from aiohttp import web

from shared.settings import Settings

log = logging.getLogger("gateway")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs'

# Set once the gateway was told to stop: /readyz answers 503 from then on (gateway/routes/health.py).
DRAINING = web.AppKey("draining", asyncio.Event)


def _stop_signals() -> asyncio.Queue[signal.Signals]:
    received: asyncio.Queue[signal.Signals] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, received.put_nowait, signum)
    return received


async def _interrupted(work: Awaitable[None], signals: asyncio.Queue[signal.Signals]) -> bool:
    """Run ``work`` to its end, unless a signal comes first: then cancel it and say so."""
    task = asyncio.ensure_future(work)
    waiting = asyncio.ensure_future(signals.get())
    await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiting.cancel()
        task.result()
        return False
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return True


async def serve(app: web.Application, settings: Settings) -> None:
    """Serve ``app`` on the gateway's host and port until a stop signal, then drain (module docstring)."""
    gateway = settings.gateway
    app[DRAINING] = draining = asyncio.Event()
    signals = _stop_signals()
    runner = web.AppRunner(
        app,
        handle_signals=False,  # ours above: aiohttp's would close the listener before /readyz could say so
        shutdown_timeout=gateway.drain_seconds,
        access_log_format=ACCESS_LOG_FORMAT,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, gateway.host, gateway.port).start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("serving on http://%s:%d", gateway.host, gateway.port)

    signum = await signals.get()
    draining.set()
    log.info(
        "%s: draining: /readyz answers 503; serving %g s more, then open requests get %g s to finish "
        "(a second signal stops at once)",
        signum.name,
        gateway.shutdown_delay_seconds,
        gateway.drain_seconds,
    )
    if await _interrupted(asyncio.sleep(gateway.shutdown_delay_seconds), signals) or await _interrupted(
        runner.cleanup(), signals
    ):
        log.warning("stopped at once by a second signal: open requests were cut")
        return
    log.info("drained: every open request finished or was cut after %g s; exiting", gateway.drain_seconds)
