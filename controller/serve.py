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

from controller.cli import add_common_arguments, settings_from, stop_on_signals
from mixer.engine.client import InProcessEngine
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


async def serve(settings: ControllerSettings) -> None:
    stop = stop_on_signals()
    # the engine records into the controller's data directory unless told otherwise
    engine = Engine(EngineSettings(data_dir=settings.data_dir,
                                   recordings_dir=settings.recordings_path))
    engine.start()
    log.info("engine started in-process: media %s ports %s", engine.settings.media_ip,
             engine.settings.media_ports)
    controller = ControllerServer(settings, [InProcessEngine(engine)])
    turn = None
    try:
        await controller.start()
        turn = await start_turn(controller.settings, engine.settings.media_ip)
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
