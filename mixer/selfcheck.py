"""`voicemix selfcheck`: the whole media path of a group call in one process, no sockets.

Each simulated participant speaks a tone; its audio is encoded (Opus or G.711), packetised as RTP with
an RFC 6464 audio level, SRTP-protected, put through simulated loss and jitter, then unprotected,
parsed, reordered by a jitter buffer, decoded (with PLC/FEC) and mixed. Every participant's
mix-minus is measured: it must contain every other tone and not its own.
"""
from __future__ import annotations

import argparse
import heapq
import random
import time

import numpy as np

from mixer import _jitter, _mix, _rtp
from mixer.analysis import TEST_TONES_HZ, tone, tone_levels_db
from mixer.codec import CODECS, FRAME_MS, FRAME_SAMPLES, FrameDecoder, FrameEncoder
from mixer.rtp.srtp import SrtpContext, generate_master_key

AUDIO_LEVEL_EXT_ID = 1
SUITE = "AES_CM_128_HMAC_SHA1_80"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--participants", type=int, default=4)
    parser.add_argument("-d", "--duration", type=float, default=3.0, help="seconds of audio")
    parser.add_argument("--codec", choices=["opus", "PCMU", "PCMA", "mixed"], default="mixed")
    parser.add_argument("--loss", type=float, default=2.0, help="random packet loss, percent")
    parser.add_argument("--jitter", type=float, default=15.0, help="max extra network delay, ms")
    parser.add_argument("--seed", type=int, default=1)


class _Leg:
    """Sender and receiver halves of one simulated participant."""

    def __init__(self, index: int, codec: str, duration: float) -> None:
        self.index = index
        self.codec = codec
        self.freq = TEST_TONES_HZ[index % len(TEST_TONES_HZ)]
        self.signal = tone(self.freq, duration + 1, amplitude=0.2)
        self.ssrc = 0x1000 + index
        self.encoder = FrameEncoder(codec)
        self.decoder = FrameDecoder(codec)
        client_key, server_key = generate_master_key(SUITE), generate_master_key(SUITE)
        self.client_srtp = SrtpContext(SUITE, client_key, server_key)
        self.server_srtp = SrtpContext(SUITE, server_key, client_key)
        info = CODECS[codec]
        self.clock_rate = info.clock_rate
        self.jitter_buffer = _jitter.JitterBuffer(clock_rate=info.clock_rate, frame_ms=FRAME_MS)
        self.heard: list[np.ndarray] = []
        self.sent = self.dropped = 0

    def packet(self, frame_index: int) -> bytes:
        pcm = self.signal[frame_index * FRAME_SAMPLES:(frame_index + 1) * FRAME_SAMPLES]
        payload = self.encoder.encode(pcm)
        ext = _rtp.audio_level_extension(AUDIO_LEVEL_EXT_ID, _mix.audio_level(pcm), True)
        rtp = _rtp.build_rtp(CODECS[self.codec].static_payload_type or 111, frame_index & 0xFFFF,
                              frame_index * CODECS[self.codec].samples_per_frame, self.ssrc,
                              payload, frame_index == 0, _rtp.EXTENSION_PROFILE_ONE_BYTE, ext)
        self.sent += 1
        return self.client_srtp.protect(rtp)


def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    codecs = ["opus", "PCMU"] if args.codec == "mixed" else [args.codec]
    legs = [_Leg(i, codecs[i % len(codecs)], args.duration) for i in range(args.participants)]
    frames = int(args.duration * 1000 / FRAME_MS)
    arrivals: list[tuple[float, int, int, bytes]] = []  # (arrival ms, order, leg, srtp bytes)
    started = time.perf_counter()
    for f in range(frames):
        for leg in legs:
            wire = leg.packet(f)
            if rng.random() * 100 < args.loss:
                leg.dropped += 1
                continue
            heapq.heappush(arrivals, (f * FRAME_MS + rng.uniform(0, args.jitter), len(arrivals),
                                      leg.index, wire))
    stacked = np.zeros((len(legs), FRAME_SAMPLES), dtype=np.int16)
    total = np.zeros(FRAME_SAMPLES, dtype=np.int16)
    minus = np.zeros_like(stacked)
    tick_ms = FRAME_MS / 2  # first tick half a frame after the first send
    for _ in range(frames + 10):
        while arrivals and arrivals[0][0] <= tick_ms:
            arrival, _, index, wire = heapq.heappop(arrivals)
            leg = legs[index]
            plain = leg.server_srtp.unprotect(wire)
            if plain is not None:
                leg.jitter_buffer.put(_rtp.RtpPacket.parse(plain), arrival)
        for leg in legs:
            _pull_frame(leg, tick_ms, stacked[leg.index])
        _mix.mix_minus(stacked, total, minus)
        for leg in legs:
            leg.heard.append(minus[leg.index].copy())
        tick_ms += FRAME_MS
    elapsed = time.perf_counter() - started
    return _report(legs, frames, elapsed, args)


def _pull_frame(leg: _Leg, now_ms: float, out: np.ndarray) -> None:
    while not leg.decoder.has_frame:
        status, packet = leg.jitter_buffer.pop(now_ms)
        leg.decoder.play(status, packet, leg.jitter_buffer.peek())
        if status not in (_jitter.FRAME, _jitter.LOSS):
            break
    frame = leg.decoder.take_frame()
    if frame is None:
        out[:] = 0
    else:
        out[:] = frame


def _report(legs: list[_Leg], frames: int, elapsed: float, args) -> int:
    freqs = [leg.freq for leg in legs]
    ok = True
    print(f"selfcheck: {len(legs)} participants, {args.duration:.1f} s, codec {args.codec}, "
          f"loss {args.loss}%, jitter 0..{args.jitter} ms, SRTP {SUITE}")
    print(f"{'leg':>3} {'codec':>5} {'tone':>6} {'sent':>5} {'lost':>4} {'late':>4} {'conc':>4} "
          f"{'fec':>4} {'delay':>6}  own(dB)  others(dB, min)  verdict")
    for leg in legs:
        heard = np.concatenate(leg.heard[25:])  # skip the first 0.5 s of buffering/warm-up
        levels = tone_levels_db(heard, freqs)
        own = levels[leg.freq]
        others = min(levels[f] for f in freqs if f != leg.freq) if len(legs) > 1 else 0.0
        good = own < -45 and others > -30
        ok &= good
        jb, dec = leg.jitter_buffer.stats(), leg.decoder.stats()
        print(f"{leg.index:>3} {leg.codec:>5} {leg.freq:>6.0f} {leg.sent:>5} {leg.dropped:>4} "
              f"{jb['late']:>4} {dec['concealed']:>4} {dec['fec_recovered']:>4} "
              f"{jb['mean_wait_ms']:>5.1f}ms {own:>8.1f} {others:>16.1f}  {'ok' if good else 'FAIL'}")
    audio_s = frames * FRAME_MS / 1000 * len(legs)
    print(f"processed {audio_s:.1f} s of participant audio in {elapsed:.2f} s "
          f"({audio_s / elapsed:.0f}x real time, one core)")
    print("selfcheck", "passed" if ok else "FAILED")
    return 0 if ok else 1
