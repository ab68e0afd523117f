"""`voicemix engine`: one media engine process with its HTTP control API.

SIGTERM drains: no new conferences, the current ones go on until they end or `drain_timeout_s`
passes (then the engine ends them), and the process exits. A second SIGTERM, or SIGINT, stops at
once (conferences end, legs send RTCP BYE).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys

import uvloop

from mixer.engine.control import start_control_api
from mixer.engine.control_auth import ControlSecurityError, check_control_settings, control_tls_context
from mixer.engine.engine import Engine
from mixer.logs import configure_logging
from mixer.settings import EngineSettings

log = logging.getLogger("voicemix.engine")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--control", help="HOST:PORT of the control API (default 127.0.0.1:8790)")
    parser.add_argument("--media-ip", help="address for media sockets (default 127.0.0.1)")
    parser.add_argument("--ports", help="media UDP port range, e.g. 40000-49999")


def settings_from(args: argparse.Namespace) -> EngineSettings:
    overrides = {}
    if args.control:
        overrides["control_listen"] = args.control
    if args.media_ip:
        overrides["media_ip"] = args.media_ip
    if args.ports:
        overrides["media_ports"] = args.ports
    return EngineSettings(**overrides)


def split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def serve(settings: EngineSettings, announce=print) -> None:
    host, port = split_hostport(settings.control_listen)
    tls = check_control_settings(settings, host)  # refuses an open non-loopback control address
    context = None
    if tls:
        context, cert, fingerprint, created = control_tls_context(settings, host)
        if created:
            announce(f"voicemix engine: created a self-signed control certificate {cert}")
        # what the controller pins: --engine https://HOST:PORT#sha256=<this>
        announce(f"voicemix engine: control certificate SHA-256 fingerprint {fingerprint}")
        log.info("control certificate SHA-256 fingerprint %s", fingerprint)
    engine = Engine(settings)
    engine.start()
    scheme = "https" if tls else "http"
    try:
        runner, port = await start_control_api(engine, host, port, context)
    except BaseException:
        engine.stop()
        raise
    log.info("engine started: control %s://%s:%d (%s), media %s ports %s", scheme, host, port,
             "bearer secret" if settings.control_secret else "no authentication: loopback only",
             settings.media_ip, settings.media_ports)
    # Everything built so far lives as long as the process: keep it out of every collection, so
    # the collector's pauses stay short next to the 20 ms tick.
    gc.freeze()
    await until_stopped(engine)
    engine.stop()
    await runner.cleanup()
    log.info("engine stopped: control %s://%s:%d", scheme, host, port)


async def until_stopped(engine: Engine) -> None:
    """Return when the engine should stop: SIGINT or a second SIGTERM at once; after a first
    SIGTERM (or a drain through the control API), once the drain is complete."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_sigterm() -> None:
        if engine.draining:
            log.info("second SIGTERM: stopping now")
            stop.set()
        else:
            engine.drain()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    drained = loop.create_task(engine.drained())
    stopped = loop.create_task(stop.wait())
    await asyncio.wait({drained, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for task in (drained, stopped):
        task.cancel()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)


def run(args: argparse.Namespace) -> int:
    configure_logging()
    try:
        uvloop.run(serve(settings_from(args)))
    except ControlSecurityError as exc:
        log.error("engine not started: %s", exc)
        print(f"voicemix engine: not started: {exc}", file=sys.stderr)
        return 2
    return 0
