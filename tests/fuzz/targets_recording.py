"""Fuzz targets for the engine's media files and recordings: the Ogg Opus demuxer and the WAV
header parser that players run on files, and a participant track fed any packet sequence.

The checks are the promises: a bad file is refused with the parser's own error (OggError,
WavError), never anything else; a track never raises, whatever arrives (any order, SSRC, sequence
and timestamp, garbage payloads), writes a file ffmpeg-readable by construction (only packets
libopus' parser accepts), and never runs ahead of the clock by more than its restart limit.
"""
from __future__ import annotations

import io
import struct
import tempfile
from pathlib import Path

from mixer import _rtp
from mixer._opus import OpusEncoder, OpusError, packet_duration
from mixer.media.ogg import OggError, OggOpusReader, OggOpusWriter, read_packets, read_pages
from mixer.media.recorder import MAX_SKEW_MS, ParticipantTrack
from mixer.media.wav import WavError, parse_wav_header, wav_header
from tests.fuzz.registry import InvariantBroken, target

import numpy as np


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise InvariantBroken(what)


def _duration(packet: bytes) -> int:
    try:
        return packet_duration(packet)
    except OpusError as exc:
        raise ValueError(str(exc)) from None


def _ogg_seeds() -> list[bytes]:
    out = io.BytesIO()
    encoder = OpusEncoder(48000, 1, "voip", 20, 32000, 5, False, 0, False)
    writer = OggOpusWriter(out, pre_skip=312)
    for k in range(5):
        packet = encoder.encode(np.full(960, 100 * k, dtype=np.int16))
        writer.write(packet, 960)
    writer.write_gap(2400)
    writer.close()
    return [out.getvalue()]


@target("ogg_opus", "mixer.media.ogg.OggOpusReader: OggError only, on any bytes; every packet it "
        "yields lies inside the input", seeds=_ogg_seeds, max_len=8192)
def ogg_opus_target():
    def check(data: bytes) -> None:
        try:
            reader = OggOpusReader(io.BytesIO(data))
            total = 0
            for packet, trim in reader.packets(_duration):
                total += len(packet)
                _check(0 <= trim <= 5760, f"end trim {trim}")
            _check(total <= len(data), "more packet bytes than input bytes")
        except OggError:
            pass
        try:  # the page layer alone, on the same bytes
            for _ in read_packets(read_pages(io.BytesIO(data))):
                pass
        except OggError:
            pass
    return check


@target("wav_header", "mixer.media.wav.parse_wav_header: WavError only; an accepted header's "
        "data lies inside the file", seeds=lambda: [wav_header(48000, 1, 960) + bytes(960),
                                                   wav_header(8000, 2, 0)], max_len=2048)
def wav_header_target():
    def check(data: bytes) -> None:
        try:
            fmt = parse_wav_header(data, len(data))
        except WavError:
            return
        _check(fmt.data_offset <= len(data) and fmt.data_offset + fmt.data_bytes <= len(data),
               "data outside the file")
        _check(fmt.data_bytes % (2 * fmt.channels) == 0, "a partial sample frame")
    return check


_PACKET = struct.Struct("!BHIB")  # flags (ssrc choice), seq, timestamp, arrival step (ms)


def _track_seeds() -> list[bytes]:
    encoder = OpusEncoder(48000, 1, "voip", 20, 32000, 5, False, 0, False)
    payload = encoder.encode(np.zeros(960, dtype=np.int16))
    return [b"".join(_PACKET.pack(0, k, 960 * k, 20) + bytes([len(payload)]) + payload
                     for k in range(6))]


@target("recording_track", "mixer.media.recorder.ParticipantTrack: any packet sequence is placed "
        "or counted, never raises; the track never runs ahead of the clock by more than the "
        "restart limit", seeds=_track_seeds, max_len=4096)
def recording_track_target():
    directory = Path(tempfile.mkdtemp(prefix="voicemix-fuzz-track-"))

    def check(data: bytes) -> None:
        for fmt in ("ogg", "wav"):
            path = directory / f"t.{fmt}"
            track = ParticipantTrack("leg", "x", "opus", path, fmt, 32000, 0.0, 0.0, 30.0)
            now = 0.0
            offset = 0
            while offset + _PACKET.size + 1 <= len(data):
                flags, seq, timestamp, step = _PACKET.unpack_from(data, offset)
                length = data[offset + _PACKET.size]
                payload = data[offset + _PACKET.size + 1:offset + _PACKET.size + 1 + length]
                offset += _PACKET.size + 1 + length
                now += step
                packet = _rtp.RtpPacket.parse(_rtp.build_rtp(111, seq, timestamp, 1 + (flags & 3), payload))
                track.on_packet(packet, now)
                track.release(now)
            track.finish(now)
            limit = now + 30.0 + MAX_SKEW_MS + 120.0 + 20.0  # delay, a restart's reach, one packet
            _check(track.written / 48.0 <= limit + 3 * 20.0, f"{fmt} track ends at "
                   f"{track.written / 48:.0f} ms for a clock at {now:.0f} ms")
    return check
