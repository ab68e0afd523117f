"""Audio codecs behind one shape: RTP payloads in, 48 kHz mono 20 ms frames out, and back.

The mixer works at 48 kHz in 20 ms frames (960 samples). Opus runs natively at that rate; G.711
(PCMU/PCMA, 8 kHz) is resampled by the compiled polyphase resampler. Decoders keep a small sample
FIFO so that packets of other durations (10, 30, 40, 60 ms ptime) still yield whole 20 ms frames.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixer import _g711, _jitter, _resample
from mixer._opus import OpusDecoder, OpusEncoder, OpusError

MIX_RATE = 48000
FRAME_MS = 20
FRAME_SAMPLES = MIX_RATE * FRAME_MS // 1000  # 960
# G.711 concealment (a simple form of G.711 Appendix I): repeat the last frame, 6 dB quieter each
# time, for at most this many frames, then silence.
G711_CONCEAL_FRAMES = 3
_MAX_PENDING = 5760 * 2


@dataclass(frozen=True)
class CodecInfo:
    """What the SDP names and what the RTP clock runs at (RFC 3551, RFC 7587)."""

    name: str
    clock_rate: int
    static_payload_type: int | None

    @property
    def samples_per_frame(self) -> int:
        return self.clock_rate * FRAME_MS // 1000


CODECS = {
    "opus": CodecInfo("opus", 48000, None),
    "PCMU": CodecInfo("PCMU", 8000, 0),
    "PCMA": CodecInfo("PCMA", 8000, 8),
}


class CodecError(Exception):
    """A payload could not be decoded (the caller conceals instead)."""


class FrameDecoder:
    """Decodes one incoming stream into 48 kHz 20 ms frames, with concealment for lost packets."""

    def __init__(self, codec: str) -> None:
        if codec not in CODECS:
            raise ValueError(f"unsupported codec {codec!r}")
        self.codec = codec
        self._pending = np.zeros(_MAX_PENDING, dtype=np.int16)
        self._count = 0
        self._scratch = np.zeros(5760, dtype=np.int16)
        self._frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self._concealed_run = 0
        if codec == "opus":
            self._opus = OpusDecoder(MIX_RATE, 1, FRAME_MS)
        else:
            self._upsampler = _resample.Resampler(8000, MIX_RATE)
            self._narrow = np.zeros(5760, dtype=np.int16)
            self._decode_g711 = (_g711.ulaw_decode_into if codec == "PCMU"
                                 else _g711.alaw_decode_into)
        self.decoded = 0
        self.concealed = 0
        self.fec_recovered = 0
        self.errors = 0

    @property
    def has_frame(self) -> bool:
        """True when a whole 20 ms frame is waiting (no packet needed this tick)."""
        return self._count >= FRAME_SAMPLES

    def _append(self, samples: np.ndarray) -> None:
        n = min(len(samples), _MAX_PENDING - self._count)
        self._pending[self._count:self._count + n] = samples[:n]
        self._count += n

    def decode(self, payload: bytes) -> None:
        """Decode one packet's payload into the FIFO; a corrupt payload is concealed instead."""
        try:
            if self.codec == "opus":
                n = self._opus.decode_into(payload, self._scratch)
                self._append(self._scratch[:n])
            else:
                n = self._decode_g711(payload, self._narrow)
                wide = self._upsampler.process_into(self._narrow[:n], self._scratch)
                self._append(self._scratch[:wide])
        except (OpusError, ValueError):
            self.errors += 1
            self.conceal()
            return
        self.decoded += 1
        self._concealed_run = 0

    def conceal(self) -> None:
        """One frame of loss concealment: Opus PLC, or a fading repeat for G.711."""
        self.concealed += 1
        self._concealed_run += 1
        if self.codec == "opus":
            n = self._opus.conceal_into(self._scratch[:FRAME_SAMPLES])
            self._append(self._scratch[:n])
            return
        if self._concealed_run <= G711_CONCEAL_FRAMES:
            faded = (self._frame.astype(np.int32) >> self._concealed_run).astype(np.int16)
            self._append(faded)
        else:
            self._append(np.zeros(FRAME_SAMPLES, dtype=np.int16))

    def recover_with_fec(self, next_payload: bytes) -> None:
        """Rebuild the lost frame from the next packet's in-band FEC (Opus LBRR), else conceal."""
        if self.codec != "opus":
            self.conceal()
            return
        try:
            n = self._opus.decode_fec_into(next_payload, self._scratch[:FRAME_SAMPLES])
        except OpusError:
            self.errors += 1
            self.conceal()
            return
        self._append(self._scratch[:n])
        self.fec_recovered += 1

    def play(self, status: int, packet, next_packet) -> None:
        """Act on one jitter-buffer decision: decode a FRAME; rebuild a LOSS from the next
        packet's FEC when it is already here, else conceal; conceal once on an UNDERRUN; nothing
        while buffering or idle."""
        if status == _jitter.FRAME:
            self.decode(packet.payload)
        elif status == _jitter.LOSS:
            if next_packet is not None:
                self.recover_with_fec(next_packet.payload)
            else:
                self.conceal()
        elif status == _jitter.UNDERRUN:
            self.conceal()

    def take_frame(self) -> np.ndarray | None:
        """The next 20 ms frame (a view valid until the next call), or None if not enough audio."""
        if self._count < FRAME_SAMPLES:
            return None
        self._frame[:] = self._pending[:FRAME_SAMPLES]
        rest = self._count - FRAME_SAMPLES
        if rest:
            self._pending[:rest] = self._pending[FRAME_SAMPLES:self._count]
        self._count = rest
        return self._frame

    def take_samples(self) -> np.ndarray:
        """Everything decoded and not yet taken (a copy), whatever its length: for writers that
        follow packets rather than 20 ms ticks (a recording's participant track)."""
        samples = self._pending[:self._count].copy()
        self._count = 0
        return samples

    def reset(self) -> None:
        """Forget buffered audio (after a talk spurt ended), keeping codec state."""
        self._count = 0

    @property
    def pending(self) -> int:
        """Decoded samples waiting to be taken (the playout's share of the delay)."""
        return self._count

    def stretch(self, operation) -> int:
        """Apply a time-scale operation (`mixer.timestretch.accelerate` or `cut`) to the
        waiting samples; returns how many samples it added (negative: removed), 0 if it declined."""
        changed = operation(self._pending[:self._count])
        if changed is None:
            return 0
        n = min(len(changed), _MAX_PENDING)
        self._pending[:n] = changed[:n]
        delta = n - self._count
        self._count = n
        return delta

    def stats(self) -> dict:
        return {"decoded": self.decoded, "concealed": self.concealed,
                "fec_recovered": self.fec_recovered, "decode_errors": self.errors}

    @staticmethod
    def idle_stats() -> dict:
        """stats() of a decoder that never ran (callers that create decoders lazily)."""
        return {"decoded": 0, "concealed": 0, "fec_recovered": 0, "decode_errors": 0}


@dataclass(frozen=True)
class OpusSettings:
    """Encoder settings for everything the mixer sends as Opus."""

    bitrate: int = 32000
    complexity: int = 5
    fec: bool = True
    packet_loss_percent: int = 10
    dtx: bool = False

    @classmethod
    def for_engine(cls, settings) -> OpusSettings:
        """The engine's encoder settings (an EngineSettings) for streams whose receivers do not
        report back (recordings, forks, SFU players): FEC only when a fixed loss hint is set
        (`opus_packet_loss_percent`); the MCU's mixes follow their receivers' reports instead
        (mixer/mcu/encoding.py)."""
        fixed = settings.opus_packet_loss_percent
        return cls(settings.opus_bitrate, settings.opus_complexity,
                   bool(settings.opus_fec and fixed), fixed or 0, settings.opus_dtx)

    def with_fec(self, hint_percent: int) -> OpusSettings:
        """The same settings with in-band FEC at this loss hint (0: FEC off)."""
        return OpusSettings(self.bitrate, self.complexity, hint_percent > 0, hint_percent, self.dtx)


class FrameEncoder:
    """Encodes 48 kHz 20 ms frames into one codec's RTP payloads."""

    def __init__(self, codec: str, opus: OpusSettings = OpusSettings()) -> None:
        if codec not in CODECS:
            raise ValueError(f"unsupported codec {codec!r}")
        self.codec = codec
        self.info = CODECS[codec]
        if codec == "opus":
            self._opus = OpusEncoder(MIX_RATE, 1, "voip", FRAME_MS, opus.bitrate, opus.complexity,
                                     opus.fec, opus.packet_loss_percent, opus.dtx)
        else:
            self._downsampler = _resample.Resampler(MIX_RATE, 8000)
            self._narrow = np.zeros(FRAME_SAMPLES // 6, dtype=np.int16)
            self._encode_g711 = _g711.ulaw_encode if codec == "PCMU" else _g711.alaw_encode
        self.encoded = 0

    def continue_from(self, other: FrameEncoder) -> None:
        """Take over `other`'s encoder state (Opus only; G.711 has none): a receiver of `other`'s
        stream then hears no jump when its packets start coming from this encoder."""
        if self.codec == "opus" and other.codec == "opus":
            self._opus.copy_state_from(other._opus)

    def set_fec(self, hint_percent: int) -> None:
        """In-band FEC at this packet-loss hint (0: off); G.711 has none."""
        if self.codec == "opus":
            self._opus.set_fec(hint_percent > 0, hint_percent)

    def encode(self, frame: np.ndarray) -> bytes:
        self.encoded += 1
        if self.codec == "opus":
            return self._opus.encode(frame)
        self._downsampler.process_into(frame, self._narrow)
        return self._encode_g711(self._narrow)
