"""voicemix media engine: RTP/SRTP, jitter buffers, codecs, MCU and SFU conferences."""

__version__ = "0.1.0"
