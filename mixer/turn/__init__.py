"""STUN binding service (RFC 8489) and TURN server (RFC 8656): TCP/UDP/TLS clients, UDP relay.

Embed with `TurnServer(TurnSettings(...))` and `await start()` / `await stop()` on your event loop.
"""
from mixer.turn.server import TurnServer
from mixer.turn.settings import TurnSettings

__all__ = ["TurnServer", "TurnSettings"]
