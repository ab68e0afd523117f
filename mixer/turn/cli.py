"""`voicemix turn`: the STUN binding service and TURN server as one process."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import uvloop

from prometheus_client import CollectorRegistry
from prometheus_client.process_collector import ProcessCollector

from mixer.logs import LogSettings, configure_logging
from mixer.metrics import exposition, serve_metrics
from mixer.turn.metrics import TurnCollector
from mixer.turn.server import TurnServer
from mixer.turn.settings import TurnSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", help="HOST:PORT for STUN/TURN over UDP and TCP (default 127.0.0.1:3478)")
    parser.add_argument("--relay-ip", help="address of the relayed UDP sockets (default 127.0.0.1)")
    parser.add_argument("--relay-ports", help="relay UDP port range, e.g. 50000-59999")
    parser.add_argument("--tls-listen", help="HOST:PORT for TURN over TLS (with --tls-cert/--tls-key)")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--realm")
    parser.add_argument("--user", action="append", metavar="NAME:PASSWORD",
                        help="a static long-term user (repeatable; adds to VOICEMIX_TURN_STATIC_USERS)")
    parser.add_argument("--allow-loopback-peers", action="store_true", default=None,
                        help="relay to loopback peers (tests, one-machine setups)")
    parser.add_argument("--verbose", action="store_true", help="log every allocation")


def settings_from(args: argparse.Namespace) -> TurnSettings:
    overrides = {name: value for name, value in (
        ("listen", args.listen), ("relay_ip", args.relay_ip), ("relay_ports", args.relay_ports),
        ("tls_listen", args.tls_listen), ("tls_cert", args.tls_cert), ("tls_key", args.tls_key),
        ("realm", args.realm), ("allow_loopback_peers", args.allow_loopback_peers)) if value is not None}
    settings = TurnSettings(**overrides)
    if args.user:
        users = dict(settings.static_users)
        for entry in args.user:
            name, sep, password = entry.partition(":")
            if not sep or not name:
                raise SystemExit(f"--user wants NAME:PASSWORD, got {entry!r}")
            users[name] = password
        settings = settings.model_copy(update={"static_users": users})
    return settings


async def serve(settings: TurnSettings) -> None:
    server = TurnServer(settings)
    await server.start()
    metrics = None
    if settings.metrics_listen:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(TurnCollector(server))
        ProcessCollector(registry=registry)

        async def text() -> bytes:
            return exposition(registry)
        metrics, _ = await serve_metrics(text, settings.metrics_listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if metrics is not None:
        await metrics.cleanup()
    await server.stop()


def run(args: argparse.Namespace) -> int:
    settings = LogSettings()
    if args.verbose:
        settings.log_level = "debug"
    configure_logging(settings)
    uvloop.run(serve(settings_from(args)))
    return 0
