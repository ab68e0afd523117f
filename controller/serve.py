"""`voicemix serve`: controller + media engine + STUN/TURN in one process, on one uvloop loop.

The one command that gives a working voice backend on embedded defaults: the engine is in-process
(the controller calls its methods directly), the registry is in memory, the store and certificate
are in the data directory.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import logging

import uvloop

from controller.cli import add_common_arguments, settings_from, stop_signals
from controller.engine_client import InProcessEngine
from controller.server import ControllerServer
from controller.settings import ControllerSettings
from mixer.engine.engine import Engine
from mixer.settings import EngineSettings

log = logging.getLogger("voicemix.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)


async def start_turn(settings: ControllerSettings):
    """The embedded STUN/TURN server if `mixer.turn` exists and TURN is enabled, else None."""
    if not settings.turn_enabled:
        log.info("TURN disabled by settings (VOICEMIX_TURN_ENABLED=false)")
        return None
    if importlib.util.find_spec("mixer.turn") is None:
        log.info("TURN absent: mixer.turn is not installed; STUN/TURN not started")
        return None
    from mixer.turn import TurnServer  # built in parallel; wired here when it lands

    server = TurnServer()
    await server.start()
    log.info("TURN started (%s)", settings.turn_listen)
    return server


async def serve(settings: ControllerSettings) -> None:
    stop = stop_signals()
    engine = Engine(EngineSettings())
    engine.start()
    log.info("engine started in-process: media %s ports %s", engine.settings.media_ip,
             engine.settings.media_ports)
    controller = ControllerServer(settings, [InProcessEngine(engine)])
    turn = None
    try:
        await controller.start()
        turn = await start_turn(settings)
        gc.freeze()  # start-up objects live as long as the process (see mixer.engine.cli)
        await stop.wait()
    finally:
        await controller.stop()
        if turn is not None:
            await turn.stop()
            log.info("TURN stopped")
        engine.stop()
        log.info("engine stopped")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvloop.run(serve(settings_from(args)))
    return 0
