"""Voice processing on one talker's decoded 48 kHz frames, before the mix: noise suppression
(RNNoise) and automatic gain. Pure signal processing (no I/O, no clock): the MCU owns one of each
per talker that asks for it, so the cost is per talker, never per listener."""


class VoiceProcessingError(Exception):
    """Voice processing cannot run (its library is missing or failed to load)."""
