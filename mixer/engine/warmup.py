"""Warm the media paths once before the clock starts, so the first ticks with media are on time.

The first Opus encode and decode, the first mix, the first SRTP protect/unprotect and the first RTP
parse of a process pay one-time costs (library initialisation, page faults in libopus and libsrtp,
lazily built tables) inside whatever tick first meets them. Running each once on silence before
the first tick moves that cost to start-up, where nobody is waiting for audio.
"""
from __future__ import annotations

import time

import numpy as np

from mixer import _mix, _rtp
from mixer.codec import FRAME_SAMPLES, FrameDecoder, FrameEncoder
from mixer.rtp.srtp import SrtpContext

WARMUP_PAYLOAD_TYPE = 111
WARMUP_SUITE = "AES_CM_128_HMAC_SHA1_80"


def warm_media_paths() -> float:
    """Encode, decode, mix and SRTP-protect one frame of silence; returns the milliseconds it took."""
    began = time.perf_counter()
    frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
    payload = FrameEncoder("opus").encode(frame)
    decoder = FrameDecoder("opus")
    decoder.decode(payload)
    decoder.take_frame()
    frames = np.zeros((2, FRAME_SAMPLES), dtype=np.int16)
    total = np.zeros(FRAME_SAMPLES, dtype=np.int16)
    minus = np.zeros((2, FRAME_SAMPLES), dtype=np.int16)
    _mix.mix_minus(frames, total, minus)
    _mix.audio_level(frame)
    key = bytes(range(30))
    sender = SrtpContext(WARMUP_SUITE, key, key)
    receiver = SrtpContext(WARMUP_SUITE, key, key)
    wire = sender.protect(_rtp.build_rtp(WARMUP_PAYLOAD_TYPE, 1, 960, 0x5EED, payload, False,
                                         _rtp.EXTENSION_PROFILE_ONE_BYTE,
                                         _rtp.audio_level_extension(1, _rtp.AUDIO_LEVEL_SILENT, False)))
    _rtp.RtpPacket.parse(receiver.unprotect(wire))
    return (time.perf_counter() - began) * 1000.0
