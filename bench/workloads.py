"""Inputs shared by the pytest benchmarks and `compare_core.py`, so both measure the same work.

Everything is deterministic (fixed seeds, fixed keys) and built once, outside any timed region:
wire-format RTP packets of a steady 20 ms Opus stream carrying an RFC 6464 audio-level extension,
a speech-like 48 kHz signal, 20 ms frames of it at 8 and 48 kHz, and N-participant mix inputs.
"""

from __future__ import annotations

import numpy as np

from mixer._jitter import JitterBuffer
from mixer._rtp import RtpPacket, audio_level_extension, build_rtp

# The stream under test: Opus at 48 kHz, 20 ms per packet (RFC 7587 section 4.1).
SAMPLE_RATE = 48000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 960
NARROWBAND_RATE = 8000
NARROWBAND_SAMPLES = NARROWBAND_RATE * FRAME_MS // 1000  # 160
PAYLOAD_TYPE = 111  # dynamic, as browsers number Opus
SSRC = 0x1234ABCD
AUDIO_LEVEL_EXT_ID = 1  # urn:ietf:params:rtp-hdrext:ssrc-audio-level, as negotiated in SDP
RTP_PAYLOAD_BYTES = 160  # a 40 kbit/s Opus frame
SRTP_PAYLOAD_BYTES = 88  # 12-byte header + 88 = the "~100 byte" packet of the SRTP benchmark
SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"
# Fixed master key + salt (30 bytes each) so runs are comparable; never use fixed keys on a wire.
SRTP_KEY_A = bytes(range(1, 31))
SRTP_KEY_B = bytes(range(101, 131))


def rtp_packet(seq: int, timestamp: int, level: int = 40, voice: bool = True,
               payload_bytes: int = RTP_PAYLOAD_BYTES) -> bytes:
    """One wire packet: 12-byte header + 8-byte one-byte-profile extension (RFC 8285 section 4.2)
    holding the RFC 6464 level + `payload_bytes` of payload. The default is 12+8+160 = 180 bytes."""
    payload = bytes((seq + i) & 0xFF for i in range(payload_bytes))
    return build_rtp(PAYLOAD_TYPE, seq & 0xFFFF, timestamp & 0xFFFFFFFF, SSRC, payload,
                     extension_profile=0xBEDE,
                     extension_data=audio_level_extension(AUDIO_LEVEL_EXT_ID, level, voice))


def steady_stream(count: int, first_seq: int = 65000, first_ts: int = 0xFFFF0000,
                  start_ms: float = 1000.0) -> tuple[list[bytes], list[float]]:
    """`count` packets of a steady stream and their arrival times, exactly 20 ms apart.

    The defaults start close to both wrap-arounds so that sequence (16-bit) and timestamp (32-bit)
    wrapping is part of the measured path.
    """
    packets = [rtp_packet(first_seq + i, first_ts + i * FRAME_SAMPLES, level=30 + i % 60)
               for i in range(count)]
    arrivals = [start_ms + i * FRAME_MS for i in range(count)]
    return packets, arrivals


class SteadyStream:
    """Drives one JitterBuffer with one packet per call, as a real 20 ms receive loop would:
    put() the next packet (arrival time advancing by 20 ms), then pop() at the same instant.

    Packets come from a small pool of parsed RtpPacket objects whose sequence number and
    timestamp are advanced in place, so the stream can run forever (across wrap-around) without
    rebuilding packets; the pool is larger than the buffer, so no slot ever holds a reused object.
    """

    POOL = 256

    def __init__(self, buffer: JitterBuffer | None = None, first_seq: int = 65000):
        self.buffer = buffer if buffer is not None else JitterBuffer(clock_rate=SAMPLE_RATE,
                                                                     frame_ms=FRAME_MS)
        self._pool = [RtpPacket.parse(rtp_packet(first_seq + i, 0)) for i in range(self.POOL)]
        self._i = 0
        self._seq = first_seq
        self._ts = 0xFFFF0000
        self._now = 1000.0

    def __call__(self) -> tuple:
        packet = self._pool[self._i]
        self._i = (self._i + 1) % self.POOL
        packet.sequence_number = self._seq
        packet.timestamp = self._ts
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + FRAME_SAMPLES) & 0xFFFFFFFF
        now = self._now
        self._now = now + FRAME_MS
        self.buffer.put(packet, now)
        return self.buffer.pop(now)


def srtp_stream(count: int = 65536) -> list[bytes]:
    """`count` ~100-byte RTP packets with consecutive sequence numbers 0..count-1 (mod 2**16).

    With count == 65536 the list can be cycled forever: the sequence number keeps incrementing
    by one across the wrap, which libsrtp's rollover-counter estimate (RFC 3711 section 3.3.1)
    treats as the next packet, so the replay check never fires.
    """
    payload = bytes(range(SRTP_PAYLOAD_BYTES))
    return [build_rtp(0, i & 0xFFFF, (i * 160) & 0xFFFFFFFF, SSRC, payload) for i in range(count)]


def speech_like(seconds: float, rate: int = SAMPLE_RATE, seed: int = 7) -> np.ndarray:
    """A deterministic voice-like int16 signal: a harmonic source whose pitch glides between
    100 and 220 Hz, shaped by three formant-like resonance weights, amplitude-modulated at a
    syllable rate (~4 Hz) and mixed with low-level noise. Peaks around -6 dBFS."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = 160 + 60 * np.sin(2 * np.pi * 0.7 * t) * np.sin(2 * np.pi * 0.13 * t + 1)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    signal = np.zeros(n)
    for k in range(1, 30):
        freq = k * f0
        weight = sum(np.exp(-((freq - fc) / bw) ** 2) for fc, bw in ((700, 150), (1200, 200),
                                                                     (2600, 300)))
        weight = (weight + 0.05) / k ** 0.5
        signal += np.where(freq < rate / 2, weight, 0.0) * np.sin(k * phase)
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t) ** 2
    signal = signal * syllables + 0.02 * rng.standard_normal(n)
    signal *= 16000 / np.max(np.abs(signal))
    return signal.astype(np.int16)


def frames(pcm: np.ndarray, frame_samples: int) -> list[np.ndarray]:
    """Split into contiguous 20 ms frames (each its own C-contiguous array)."""
    count = len(pcm) // frame_samples
    return [np.ascontiguousarray(pcm[i * frame_samples:(i + 1) * frame_samples])
            for i in range(count)]


def speech_frames(seconds: float = 1.0) -> list[np.ndarray]:
    """1 s of 48 kHz speech as 50 frames of 960 samples."""
    return frames(speech_like(seconds), FRAME_SAMPLES)


def narrowband_frames(seconds: float = 1.0) -> list[np.ndarray]:
    """1 s of 8 kHz speech as 50 frames of 160 samples."""
    return frames(speech_like(seconds, rate=NARROWBAND_RATE), NARROWBAND_SAMPLES)


def conference(n: int, seed: int = 11) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs and preallocated outputs of one mix tick with `n` participants.

    Returns (frames (n, 960) int16, total (960,) int16, minus (n, 960) int16). Each participant
    is a different 20 ms slice of speech at a level between -40 and -20 dBFS (ordinary talkers,
    so large mixes do saturate, as they would).
    """
    rng = np.random.default_rng(seed)
    source = speech_like(4.0)
    offsets = rng.integers(0, len(source) - FRAME_SAMPLES, size=n)
    gains = 10 ** (rng.uniform(-40, -20, size=n) / 20) * 32768 / 16000
    mix = np.empty((n, FRAME_SAMPLES), dtype=np.int16)
    for i in range(n):
        mix[i] = np.clip(source[offsets[i]:offsets[i] + FRAME_SAMPLES] * gains[i],
                         -32768, 32767).astype(np.int16)
    return mix, np.empty(FRAME_SAMPLES, dtype=np.int16), np.empty((n, FRAME_SAMPLES), dtype=np.int16)


def mix_minus_reference(mix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The obvious numpy mix-minus: int32 sum, subtract, clip, astype."""
    acc = mix.sum(axis=0, dtype=np.int32)
    total = np.clip(acc, -32768, 32767).astype(np.int16)
    minus = np.clip(acc - mix, -32768, 32767).astype(np.int16)
    return total, minus
