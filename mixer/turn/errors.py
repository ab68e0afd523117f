"""Errors of the STUN/TURN layer: one family the caller can act on."""


class StunError(Exception):
    """Bytes that are not a well-formed STUN message or ChannelData frame (drop and count)."""
