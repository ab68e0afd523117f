"""`voicemix serve`: controller + media engine + STUN/TURN in one process, on one uvloop loop.

The one command that gives a working voice backend on embedded defaults: the engine is in-process
(the controller calls its methods directly), the registry is in memory, the store and certificate
are in the data directory.

SIGTERM drains the engine (no new calls; current ones are ended by the controller, with their
records, when the drain deadline comes), then stops; SIGINT or a second SIGTERM stops at once.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import logging
from collections.abc import AsyncIterator

import uvloop

from controller.cli import add_common_arguments, settings_from, stop_on_signals
from mixer.engine.cli import until_stopped
from mixer.engine.metrics import EngineCollector
from mixer.turn.metrics import TurnCollector
from mixer.engine.client import InProcessEngine
from mixer.logs import configure_logging
from controller.server import ControllerServer
from controller.settings import ControllerSettings
from mixer.engine.engine import Engine
from mixer.settings import EngineSettings

log = logging.getLogger("voicemix.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)


async def start_turn(settings: ControllerSettings, media_ip: str | None = None):
    """The embedded STUN/TURN server if `mixer.turn` exists and TURN is enabled, else None.
    `media_ip`: the in-process engine's media address, the one private (or loopback) address TURN
    may relay to, so a client behind a UDP-blocking firewall reaches the engine through it."""
    if not settings.turn_enabled:
        log.info("TURN disabled by settings (VOICEMIX_TURN_ENABLED=false)")
        return None
    if importlib.util.find_spec("mixer.turn") is None:
        log.info("TURN absent: mixer.turn is not installed; STUN/TURN not started")
        return None
    from mixer.turn import TurnServer
    from mixer.turn.settings import TurnSettings

    # the controller hands out REST credentials signed with its TURN secret: TURN must check them
    # with the same one (generated on first start when not configured)
    allowed = [f"{media_ip}/32"] if media_ip else []
    server = TurnServer(TurnSettings(secret=settings.turn_secret, listen=settings.turn_listen,
                                     allowed_peer_ips=allowed))
    await server.start()
    log.info("TURN started (%s)", settings.turn_listen)
    return server


@contextlib.asynccontextmanager
async def serving(settings: ControllerSettings, engine_settings: EngineSettings | None = None,
                  announce=print) -> AsyncIterator[tuple[ControllerServer, Engine, object]]:
    """Engine, controller and STUN/TURN on this loop, as `voicemix serve` runs them (the tests of
    the web client run exactly this); yields (controller, engine, TURN server or None). The
    engine records into the controller's data directory unless `engine_settings` say otherwise."""
    engine = Engine(engine_settings or EngineSettings(data_dir=settings.data_dir,
                                                      recordings_dir=settings.recordings_path))
    engine.start()
    log.info("engine started in-process: media %s ports %s", engine.settings.media_ip,
             engine.settings.media_ports)
    controller = ControllerServer(settings, [InProcessEngine(engine)], announce=announce)
    turn = None
    try:
        await controller.start()
        announce(f"voicemix: web client at {controller.url}/"
                 + (" (development mode: demo identities on)" if settings.dev else ""))
        turn = await start_turn(controller.settings, engine.settings.media_ip)
        controller.metrics.add(EngineCollector(engine), before=engine.clock.after_tick)
        if turn is not None:
            controller.metrics.add(TurnCollector(turn))
        yield controller, engine, turn
    finally:
        await controller.stop()
        if turn is not None:
            await turn.stop()
            log.info("TURN stopped")
        engine.stop()
        log.info("engine stopped")


async def serve(settings: ControllerSettings, announce=print) -> None:
    early_stop = stop_on_signals()  # a signal while starting stops at once
    async with serving(settings, announce=announce) as (_controller, engine, _turn):
        gc.freeze()  # start-up objects live as long as the process (see mixer.engine.cli)
        if not early_stop.is_set():
            await until_stopped(engine)  # SIGTERM drains, SIGINT or a second SIGTERM stops


def development_settings(settings: ControllerSettings) -> ControllerSettings:
    """`voicemix serve` is the development setup: demo identities on unless VOICEMIX_DEV (or
    the config file) says otherwise."""
    if "dev" not in settings.model_fields_set:
        settings.dev = True
    return settings


def run(args: argparse.Namespace) -> int:
    configure_logging()
    uvloop.run(serve(development_settings(settings_from(args))))
    return 0
