"""`voicemix controller`: the signaling controller over HTTPS, in front of remote engines."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import uvloop

from controller.server import ControllerServer
from mixer.engine.client import engine_url
from controller.settings import ControllerSettings, load_settings
from mixer.logs import configure_logging

log = logging.getLogger("voicemix.controller")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", help="HOST:PORT of the REST API (default 127.0.0.1:8443)")
    parser.add_argument("--config", help="settings file (TOML or JSON) with VOICEMIX_ names in "
                        "lower case, e.g. data_dir = \"/var/lib/voicemix\"")
    parser.add_argument("--data-dir", help="store, certificate, secrets, recordings")
    parser.add_argument("--insecure-http", action="store_true", default=None,
                        help="serve plain HTTP instead of HTTPS (loopback tests only)")
    parser.add_argument("--redis-url", help="shared call registry, e.g. redis://127.0.0.1:6379/0")
    parser.add_argument("--database-url", help="shared store, postgresql://user:password@host/db "
                        "(default: SQLite in the data directory)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--engine", action="append", dest="engines", metavar="URL",
                        help="control URL of a media engine (repeatable), e.g. http://127.0.0.1:8790")


def settings_from(args: argparse.Namespace, **extra) -> ControllerSettings:
    return load_settings(args.config, listen=args.listen, data_dir=args.data_dir,
                         insecure_http=args.insecure_http, redis_url=args.redis_url,
                         database_url=args.database_url, **extra)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM; install it before starting anything, so a signal that
    comes while services are still starting stops them cleanly too."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def wait_for_signal() -> None:
    await stop_on_signals().wait()


async def serve(settings: ControllerSettings) -> None:
    stop = stop_on_signals()
    server = ControllerServer(settings)
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()


def run(args: argparse.Namespace) -> int:
    configure_logging()
    settings = settings_from(args, engines=args.engines)
    if not settings.engines:
        print("voicemix controller: give at least one --engine URL (or run `voicemix serve`)")
        return 2
    for url in settings.engines:
        try:
            engine_url(url)
        except ValueError as exc:
            print(f"voicemix controller: {exc}", file=sys.stderr)
            return 2
    uvloop.run(serve(settings))
    return 0
