"""A simulated call participant: a real UDP RTP (or SRTP) client that talks and listens.

It offers SDP like a softphone would (Opus or G.711, RFC 6464 audio levels, rtcp-mux), sends a
talk pattern of tone bursts as real encoded RTP on a 20 ms clock, optionally through injected loss
and jitter, answers the engine's RTCP with its own reports, and records every packet it receives so
that afterwards it can say what it heard: which voices, how loud, how much was lost, and how long
each talk-spurt onset took from the talker's send to this listener's receive.
"""
from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from mixer import _mix, _rtp
from mixer.codec import CODECS, FRAME_MS, FRAME_SAMPLES, MIX_RATE, FrameDecoder, FrameEncoder
from mixer.rtp.rtcp import (
    RtcpError, RtcpReceiverReport, is_rtcp, parse_compound, serialize_compound,
)
from mixer.rtp.srtp import SrtpContext
from mixer.rtp.stats import ReceiveStatistics, RoundTrip, SendStatistics, learn_from_reports
from mixer.sdp import offer_audio, parse
from mixer.sdp.crypto import parse_crypto

AUDIO_LEVEL_EXT_ID = 1
RAMP_MS = 5  # raised-cosine fade at burst edges: no clicks, crisp onsets
SLOT_MS = 250  # talk pattern granularity


def talk_pattern(index: int, participants: int, seconds: float) -> np.ndarray:
    """Whether participant `index` talks in each SLOT_MS slot: turns of two slots, at most two
    talkers at once, so every voice is heard over a call while bridges keep only a few talkers."""
    period = max(participants, 3)
    slots = int(np.ceil(seconds * 1000 / SLOT_MS))
    return np.array([(s + index) % period < 2 for s in range(slots)], dtype=bool)


def talk_signal(freq_hz: float, pattern: np.ndarray, amplitude: float = 0.2) -> np.ndarray:
    """Tone bursts following `pattern`, with RAMP_MS fades."""
    slot = MIX_RATE * SLOT_MS // 1000
    gate = np.repeat(pattern.astype(np.float64), slot)
    ramp = MIX_RATE * RAMP_MS // 1000
    kernel = np.hanning(2 * ramp + 1)
    gate = np.convolve(gate, kernel / kernel.sum(), mode="same")
    t = np.arange(len(gate)) / MIX_RATE
    return (np.sin(2 * np.pi * freq_hz * t) * gate * amplitude * 32767).astype(np.int16)


@dataclass
class Impairment:
    """Network trouble injected on this participant's outgoing packets."""

    loss_percent: float = 0.0
    jitter_ms: float = 0.0  # each packet delayed by uniform(0, jitter_ms): reorders when > 20
    seed: int = 0


@dataclass
class Received:
    packets: list = field(default_factory=list)  # (arrival_s, seq, ts, payload)
    # the same packets by SSRC: an SFU sends each forwarded speaker as its own stream
    streams: dict = field(default_factory=dict)  # ssrc -> [(arrival_s, seq, ts, payload)]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: "SimulatedParticipant") -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr) -> None:
        self.owner._on_datagram(data)

    def error_received(self, exc) -> None:
        pass


# Opens the participant's media transport instead of a plain UDP socket (e.g. a TURN allocation over
# TCP, mixer.turn.client.TurnDatagramTransport): given the protocol factory, returns a transport with
# `sendto(data, addr)`, `close()` and `get_extra_info("sockname")` -> the address to offer in SDP.
TransportFactory = Callable[[Callable[[], asyncio.DatagramProtocol]], Awaitable[asyncio.BaseTransport]]


class SimulatedParticipant:
    """One participant; `offer()` -> engine -> `accept(answer)` -> `start()` ... `stop()`."""

    def __init__(self, name: str, freq_hz: float, signal: np.ndarray, *, codec: str = "opus",
                 srtp: bool = False, impairment: Impairment | None = None,
                 send_audio_level: bool = True, host: str = "127.0.0.1",
                 transport_factory: TransportFactory | None = None,
                 claimed_level: int | None = None) -> None:
        self.name = name
        self.freq_hz = freq_hz
        self.signal = signal
        self.codec = codec
        self.use_srtp = srtp
        self.impairment = impairment or Impairment()
        self.send_audio_level = send_audio_level
        # a forger: every packet claims this RFC 6464 level (0 is loudest), whatever it carries
        self.claimed_level = claimed_level
        self.host = host
        self.transport_factory = transport_factory
        self._rng = random.Random(self.impairment.seed)
        self.encoder = FrameEncoder(codec)
        self.clock_rate = CODECS[codec].clock_rate
        self.ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._ts = secrets.randbits(32)
        self.sent = SendStatistics()
        self.round_trip = RoundTrip()
        self.receive: ReceiveStatistics | None = None   # the stream received last
        self.receive_by_ssrc: dict[int, ReceiveStatistics] = {}  # an SFU sends one per speaker
        self.received = Received()
        self.send_times: list[float] = []  # monotonic send time of each frame
        self.dropped_by_impairment = 0
        self.bad_packets = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._local_crypto = None
        self.srtp: SrtpContext | None = None
        self._remote: tuple[str, int] | None = None
        self._pt: int | None = None
        self._frame_index = 0
        self._timer: asyncio.TimerHandle | None = None
        self._start_s = 0.0
        self._last_rtcp = 0.0
        self._rtcp_timer: asyncio.TimerHandle | None = None
        self.finished = asyncio.Event()

    async def offer(self) -> str:
        if self.transport_factory is not None:
            self._transport = await self.transport_factory(lambda: _Protocol(self))
        else:
            loop = asyncio.get_running_loop()
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self), local_addr=(self.host, 0))
        local_ip, port = self._transport.get_extra_info("sockname")[:2]
        sdp, self._local_crypto = offer_audio(
            local_ip=local_ip, local_port=port, codecs=(self.codec,), srtp=self.use_srtp,
            rtcp_mux=True, audio_level_ext_id=AUDIO_LEVEL_EXT_ID if self.send_audio_level else None)
        return sdp

    def accept(self, answer_sdp: str) -> None:
        """Take the engine's answer: where to send, which payload type, which key it sends with."""
        answer = parse(answer_sdp)
        media = next(m for m in answer.media if m.media == "audio")
        address = (media.connection or answer.connection).address
        self._remote = (address, media.port)
        self._pt = int(media.formats[0])
        if self.use_srtp:
            remote = parse_crypto(media.attribute("crypto"))
            self.srtp = SrtpContext(remote.suite, self._local_crypto.key, remote.key)
        # RTCP from the start, talking or not (RFC 3550 6: receivers report too). It is also what
        # tells the engine a participant that never talks wants the media (docs/security.md)
        self._rtcp_timer = asyncio.get_running_loop().call_soon(self._rtcp_tick)

    def _rtcp_tick(self) -> None:
        if self._transport is None:
            return
        now = time.monotonic()
        if now - self._last_rtcp >= 1.0:
            self._last_rtcp = now
            self._send_rtcp()
        self._rtcp_timer = asyncio.get_running_loop().call_later(1.0, self._rtcp_tick)

    # ------------------------------------------------------------------------------------- sending
    def start(self, at_s: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._start_s = at_s if at_s is not None else loop.time() + 0.02
        self._frame_index = 0
        self._timer = loop.call_at(self._start_s, self._send_next)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.finished.set()

    def close(self) -> None:
        self.stop()
        if self._rtcp_timer is not None:
            self._rtcp_timer.cancel()
            self._rtcp_timer = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self.srtp = None

    def _send_next(self) -> None:
        loop = asyncio.get_running_loop()
        k = self._frame_index
        frame = self.signal[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES]
        if len(frame) < FRAME_SAMPLES:
            self.stop()
            return
        self.send_times.append(time.monotonic())
        self._send_frame(frame)
        self._frame_index += 1
        now = time.monotonic()
        if now - self._last_rtcp >= 1.0:
            self._last_rtcp = now
            self._send_rtcp()
        self._timer = loop.call_at(self._start_s + self._frame_index * FRAME_MS / 1000, self._send_next)

    def _send_frame(self, frame: np.ndarray) -> None:
        payload = self.encoder.encode(frame)
        ext_profile, ext = -1, None
        if self.send_audio_level:
            level = _mix.audio_level(frame) if self.claimed_level is None else self.claimed_level
            ext_profile = _rtp.EXTENSION_PROFILE_ONE_BYTE
            ext = _rtp.audio_level_extension(AUDIO_LEVEL_EXT_ID, level, level < 127)
        packet = _rtp.build_rtp(self._pt, self._seq, self._ts, self.ssrc, payload,
                                 self._frame_index == 0, ext_profile, ext)
        self.sent.on_sent(len(payload), self._ts, time.time())
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + CODECS[self.codec].samples_per_frame) & 0xFFFFFFFF
        if self.srtp is not None:
            packet = self.srtp.protect(packet)
        self._impair_and_send(packet)

    def _impair_and_send(self, packet: bytes) -> None:
        imp = self.impairment
        if imp.loss_percent and self._rng.random() * 100 < imp.loss_percent:
            self.dropped_by_impairment += 1
            return
        if imp.jitter_ms:
            asyncio.get_running_loop().call_later(self._rng.uniform(0, imp.jitter_ms) / 1000,
                                                  self._sendto, packet)
        else:
            self._sendto(packet)

    def _sendto(self, packet: bytes) -> None:
        if self._transport is not None:
            self._transport.sendto(packet, self._remote)

    def _send_rtcp(self) -> None:
        now = time.time()
        blocks = [self.receive.report_block(now)] if self.receive is not None else []
        report = (self.sent.sender_report(self.ssrc, self.clock_rate, now, blocks) if self.sent.packets
                  else RtcpReceiverReport(ssrc=self.ssrc, reports=blocks))
        data = serialize_compound([report])
        if self.srtp is not None:
            data = self.srtp.protect_rtcp(data)
        self._sendto(data)

    # ----------------------------------------------------------------------------------- receiving
    def _on_datagram(self, data: bytes) -> None:
        if is_rtcp(data):
            self._on_rtcp(data)
            return
        if self.srtp is not None:
            data = self.srtp.unprotect(data)
            if data is None:
                self.bad_packets += 1
                return
        try:
            packet = _rtp.RtpPacket.parse(data)
        except _rtp.RtpError:
            self.bad_packets += 1
            return
        if self.receive is None or packet.ssrc != self.receive.ssrc:
            self.receive = self.receive_by_ssrc.get(packet.ssrc)
            if self.receive is None:
                self.receive = ReceiveStatistics(packet.ssrc, self.clock_rate, packet.sequence_number)
                self.receive_by_ssrc[packet.ssrc] = self.receive
        self.receive.on_rtp(packet.sequence_number, packet.timestamp, len(packet.payload), time.time())
        entry = (time.monotonic(), packet.sequence_number, packet.timestamp, packet.payload)
        self.received.packets.append(entry)
        self.received.streams.setdefault(packet.ssrc, []).append(entry)

    def _on_rtcp(self, data: bytes) -> None:
        if self.srtp is not None:
            data = self.srtp.unprotect_rtcp(data)
            if data is None:
                return
        try:
            packets = parse_compound(data)
        except RtcpError:
            return
        learn_from_reports(packets, self.ssrc, self.receive, self.round_trip, time.time())

    # ------------------------------------------------------------------------------------ analysis
    def heard_audio(self) -> tuple[np.ndarray, np.ndarray]:
        """What this participant received, decoded in sequence order with PLC for gaps.

        Returns (pcm at 48 kHz, arrival time of the packet each sample came in; NaN for concealed).
        """
        pcm, times, _ = decode_stream(self.received.packets, self.codec)
        return pcm, times

    def heard_streams(self) -> dict[int, tuple[np.ndarray, np.ndarray, FrameDecoder]]:
        """Each received SSRC decoded on its own: {ssrc: (pcm, arrival times, its decoder)}."""
        return {ssrc: decode_stream(packets, self.codec)
                for ssrc, packets in self.received.streams.items()}

    def stats(self) -> dict:
        return {
            "name": self.name,
            "sent": self.sent.packets,
            "dropped_by_impairment": self.dropped_by_impairment,
            "received": len(self.received.packets),
            "receive": self.receive.stats() if self.receive is not None else None,
            "bad_packets": self.bad_packets,
            **self.round_trip.stats(),
        }


def decode_stream(packets: list, codec: str) -> tuple[np.ndarray, np.ndarray, FrameDecoder]:
    """Decode one stream's (arrival_s, seq, ts, payload) packets in sequence order, concealing gaps.

    Returns (pcm at 48 kHz, arrival time of the packet each sample came in, NaN where concealed,
    and the decoder, whose counters say how much was concealed or failed to decode).
    """
    decoder = FrameDecoder(codec)
    if not packets:
        return np.zeros(0, dtype=np.int16), np.zeros(0), decoder
    # order by extended sequence number (handles wrap-around)
    first = packets[0][1]
    ordered = sorted(packets, key=lambda p: _rtp.seq_diff(p[1], first))
    pcm, times = [], []
    expected = None
    for arrival, seq, _ts, payload in ordered:
        if expected is not None:
            gap = _rtp.seq_diff(seq, expected)
            if gap < 0:
                continue  # duplicate
            for _ in range(min(gap, 50)):
                decoder.conceal()
                while (frame := decoder.take_frame()) is not None:
                    pcm.append(frame.copy())
                    times.append(np.full(FRAME_SAMPLES, np.nan))
        decoder.decode(payload)
        while (frame := decoder.take_frame()) is not None:
            pcm.append(frame.copy())
            times.append(np.full(FRAME_SAMPLES, arrival))
        expected = (seq + 1) & 0xFFFF
    return np.concatenate(pcm), np.concatenate(times), decoder
