"""What a bot participant plays: `tone:<Hz>` or a recording of this service (the engine plays it).

The controller only parses and checks the request; the audio is made by an engine player
(`EngineClient.add_player`), never in the controller.
"""
from __future__ import annotations

MIN_TONE_HZ, MAX_TONE_HZ = 20.0, 20000.0


class PlayError(ValueError):
    """A bot's `play` value that names nothing playable."""


def parse_tone(play: str) -> float | None:
    """The frequency of `tone:<hz>`, None if `play` is not a tone; PlayError if a bad one."""
    if not play.startswith("tone:"):
        return None
    try:
        freq = float(play[5:])
    except ValueError:
        raise PlayError(f"{play!r}: the tone frequency must be a number of Hz") from None
    if not MIN_TONE_HZ <= freq <= MAX_TONE_HZ:  # also false for nan
        raise PlayError(f"{play!r}: the tone frequency must be within 20..20000 Hz")
    return freq
