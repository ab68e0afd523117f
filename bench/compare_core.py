"""Our compiled core against baselines, measured in one run on this machine.

    python bench/compare_core.py [--quick]

Every section times our implementation and one or more baselines on identical inputs (see
workloads.py), interleaved repeat by repeat so that background load hits all of them alike, and
prints ns/op (median and best of the repeats), ops/s (from the median) and the ratio. The issue's
two targets are checked at the end:

* RTP parse + jitter buffer insert + pop: ours >= 20x aiortc (RtpPacket.parse + JitterBuffer.add);
* mix_minus: ours within 3x of the memory-bandwidth bound, i.e. ours_time / bound_time <= 3, the
  bound being numpy copying the bytes the kernel must read and write (N*960*2 in, N*960*2 + 960*2
  out) between preallocated arrays.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import itertools
import os
import platform
import statistics
import struct
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # for tests.mixer.g711_reference

import numpy as np  # noqa: E402

import workloads as w  # noqa: E402
from mixer._jitter import JitterBuffer
from mixer._rtp import RtpPacket
from mixer._mix import mix_minus
from mixer._g711 import ulaw_decode_into, ulaw_encode
from mixer._opus import OpusDecoder, OpusEncoder  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop  # noqa: E402  (stdlib until 3.13; the classic C G.711)
    except ImportError:  # Python 3.13+: that baseline row is left out
        audioop = None

from tests.mixer.g711_reference import linear_to_ulaw, ulaw_to_linear  # noqa: E402

import aiortc  # noqa: E402
import aiortc.jitterbuffer  # noqa: E402
import aiortc.rtp  # noqa: E402
import opuslib  # noqa: E402
import opuslib.api.ctl  # noqa: E402
import opuslib.api.decoder  # noqa: E402
import opuslib.api.encoder  # noqa: E402
import pylibsrtp  # noqa: E402

try:
    from mixer.rtp.srtp import SrtpContext
except Exception as exc:  # noqa: BLE001 - another engineer may be mid-edit; say so, keep going
    SrtpContext = None
    SRTP_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
else:
    SRTP_IMPORT_ERROR = ""


# ------------------------------------------------------------------------------------------------
# Measurement
# ------------------------------------------------------------------------------------------------

@dataclass
class Impl:
    """One contender: `batch()` performs `ops` operations (packets, frames or mix ticks)."""
    label: str
    batch: Callable[[], object]
    ops: int
    role: str = "baseline"  # "ours", "baseline", "bound" or "reference"
    samples_ns: list[float] = field(default_factory=list)  # per-op times, one per repeat

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ns)

    @property
    def best(self) -> float:
        return min(self.samples_ns)


@dataclass
class Section:
    title: str
    impls: list[Impl]
    note: str = ""

    @property
    def ours(self) -> Impl:
        return next(i for i in self.impls if i.role == "ours")

    def impl(self, label_prefix: str) -> Impl:
        return next(i for i in self.impls if i.label.startswith(label_prefix))


def _time_calls(batch: Callable[[], object], calls: int) -> int:
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        batch()
    return time.perf_counter_ns() - t0


def measure(section: Section, target_ns: int, repeats: int) -> None:
    """Calibrate each contender to ~target_ns per sample, warm it up, then take `repeats`
    samples of every contender in turn (round-robin), with the garbage collector off."""
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        calls = {}
        for impl in section.impls:
            n = 1
            while True:
                elapsed = _time_calls(impl.batch, n)  # doubles as warm-up
                if elapsed >= target_ns or n >= 1 << 20:
                    break
                n = max(n * 2, int(n * target_ns / max(elapsed, 1) * 1.1))
            calls[impl.label] = n
            _time_calls(impl.batch, n)  # one more warm-up at the final size
        for _ in range(repeats):
            for impl in section.impls:
                n = calls[impl.label]
                impl.samples_ns.append(_time_calls(impl.batch, n) / (n * impl.ops))
    finally:
        if gc_was_enabled:
            gc.enable()


# ------------------------------------------------------------------------------------------------
# Baseline: a straightforward pure-Python RTP parser (struct-based)
# ------------------------------------------------------------------------------------------------

_RTP_FIXED = struct.Struct("!BBHII")
_RTP_EXT_HEADER = struct.Struct("!HH")


class PyRtpPacket:
    __slots__ = ("marker", "payload_type", "sequence_number", "timestamp", "ssrc", "csrc",
                 "extension_profile", "extension_data", "payload", "padding_size")


def py_parse(data: bytes) -> PyRtpPacket:
    """RFC 3550 section 5.1 + RFC 8285, validated like mixer._rtp.RtpPacket.parse."""
    n = len(data)
    if n < 12:
        raise ValueError("packet too short for an RTP header")
    b0, b1, seq, ts, ssrc = _RTP_FIXED.unpack_from(data)
    if b0 >> 6 != 2:
        raise ValueError("RTP version is not 2")
    cc = b0 & 0x0F
    offset = 12 + 4 * cc
    if offset > n:
        raise ValueError("CSRC list runs past the packet")
    end = n
    pad = 0
    if b0 & 0x20:
        pad = data[-1]
        if pad == 0 or n - pad < offset:
            raise ValueError("bad padding count")
        end = n - pad
    profile = -1
    ext = b""
    if b0 & 0x10:
        if offset + 4 > end:
            raise ValueError("extension header runs past the packet")
        profile, words = _RTP_EXT_HEADER.unpack_from(data, offset)
        offset += 4
        ext_end = offset + 4 * words
        if ext_end > end:
            raise ValueError("extension runs past the packet")
        ext = data[offset:ext_end]
        _py_validate_extension(ext, profile)
        offset = ext_end
    packet = PyRtpPacket()
    packet.marker = bool(b1 & 0x80)
    packet.payload_type = b1 & 0x7F
    packet.sequence_number = seq
    packet.timestamp = ts
    packet.ssrc = ssrc
    packet.csrc = struct.unpack_from(f"!{cc}I", data, 12) if cc else ()
    packet.extension_profile = profile
    packet.extension_data = ext
    packet.payload = data[offset:end]
    packet.padding_size = pad
    return packet


def _py_validate_extension(block: bytes, profile: int) -> None:
    i, n = 0, len(block)
    if profile == 0xBEDE:
        while i < n:
            ident = block[i] >> 4
            if ident == 0:
                i += 1
                continue
            if ident == 15:
                return
            length = (block[i] & 0x0F) + 1
            if i + 1 + length > n:
                raise ValueError("malformed one-byte header extension")
            i += 1 + length
    elif profile & 0xFFF0 == 0x1000:
        while i < n:
            if block[i] == 0:
                i += 1
                continue
            if i + 2 > n or i + 2 + block[i + 1] > n:
                raise ValueError("malformed two-byte header extension")
            i += 2 + block[i + 1]


# ------------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------------

def section_rtp_parse() -> Section:
    packets, _ = w.steady_stream(1024)
    ours_parse, aiortc_parse = RtpPacket.parse, aiortc.rtp.RtpPacket.parse
    a, b, c = ours_parse(packets[5]), py_parse(packets[5]), aiortc_parse(packets[5])
    assert (a.sequence_number, a.timestamp, a.payload) == (b.sequence_number, b.timestamp,
                                                           b.payload)
    assert (a.sequence_number, a.timestamp, a.payload) == (c.sequence_number, c.timestamp,
                                                           c.payload)
    assert a.extension_data == b.extension_data

    def ours():
        for data in packets:
            ours_parse(data)

    def pure_python():
        for data in packets:
            py_parse(data)

    def aiortc_():
        for data in packets:
            aiortc_parse(data)

    def floor():
        for data in packets:
            len(data)

    return Section(
        f"RTP parse ({len(packets[0])} B: 12 header + 8 audio-level ext + 160 payload)",
        [Impl("voicemix RtpPacket.parse", ours, len(packets), "ours"),
         Impl("pure-Python struct parser", pure_python, len(packets)),
         Impl("aiortc RtpPacket.parse", aiortc_, len(packets)),
         Impl("loop + len(data) (interpreter floor)", floor, len(packets), "reference")],
        note="aiortc with its default HeaderExtensionsMap (walks the elements, decodes none).")


STREAM_PACKETS = 2000  # 40 s of audio per batch, a fresh buffer each batch, across seq wrap


def section_parse_jitter() -> Section:
    packets, arrivals = w.steady_stream(STREAM_PACKETS)
    pairs = list(zip(packets, arrivals))
    ours_parse, aiortc_parse = RtpPacket.parse, aiortc.rtp.RtpPacket.parse
    AiortcJitterBuffer = aiortc.jitterbuffer.JitterBuffer

    def ours():
        jb = JitterBuffer(clock_rate=w.SAMPLE_RATE, frame_ms=w.FRAME_MS)
        put, pop = jb.put, jb.pop
        for data, now in pairs:
            put(ours_parse(data), now)
            pop(now)
        return jb

    def aiortc_():
        # aiortc's audio receiver: JitterBuffer(capacity=16, prefetch=4), and it sets
        # packet._data to the depayloaded payload (Opus: the payload itself) before add().
        jb = AiortcJitterBuffer(capacity=16, prefetch=4)
        add = jb.add
        frames = 0
        for data in packets:
            packet = aiortc_parse(data)
            packet._data = packet.payload
            if add(packet)[1] is not None:
                frames += 1
        return frames

    jb = ours()
    stats = jb.stats()
    assert stats["played"] == STREAM_PACKETS and stats["lost"] == stats["resets"] == 0, stats
    assert aiortc_() == STREAM_PACKETS - 4  # prefetch holds back 4 frames

    return Section(
        "RTP parse + jitter buffer put + pop, per packet (steady 20 ms stream)",
        [Impl("voicemix parse + JitterBuffer.put/pop", ours, STREAM_PACKETS, "ours"),
         Impl("aiortc parse + JitterBuffer.add", aiortc_, STREAM_PACKETS)],
        note=f"a fresh buffer per batch of {STREAM_PACKETS} packets (creation cost included, "
             "amortised); aiortc in its audio configuration (capacity 16, prefetch 4).")


def section_jitter_only() -> Section:
    packets, arrivals = w.steady_stream(STREAM_PACKETS)
    ours_packets = [RtpPacket.parse(p) for p in packets]
    ours_pairs = list(zip(ours_packets, arrivals))
    aiortc_packets = [aiortc.rtp.RtpPacket.parse(p) for p in packets]
    for p in aiortc_packets:
        p._data = p.payload
    AiortcJitterBuffer = aiortc.jitterbuffer.JitterBuffer

    def ours():
        jb = JitterBuffer(clock_rate=w.SAMPLE_RATE, frame_ms=w.FRAME_MS)
        put, pop = jb.put, jb.pop
        for packet, now in ours_pairs:
            put(packet, now)
            pop(now)

    def aiortc_():
        jb = AiortcJitterBuffer(capacity=16, prefetch=4)
        add = jb.add
        for packet in aiortc_packets:
            add(packet)

    return Section(
        "jitter buffer only (pre-parsed packets), per packet",
        [Impl("voicemix JitterBuffer.put + pop", ours, STREAM_PACKETS, "ours"),
         Impl("aiortc JitterBuffer.add", aiortc_, STREAM_PACKETS)])


def section_srtp() -> Section:
    stream = w.srtp_stream()  # 65536 packets: cycling keeps the index strictly increasing
    chunk = 1024

    def cycling():
        position = itertools.cycle(range(0, len(stream), chunk))
        return lambda: stream[(p := next(position)):p + chunk]

    profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80

    def raw_session(ssrc_type):
        policy = pylibsrtp.Policy(key=w.SRTP_KEY_A, ssrc_type=ssrc_type, srtp_profile=profile)
        policy.window_size = 128
        policy.allow_repeat_tx = False
        return pylibsrtp.Session(policy)

    raw_out = raw_session(pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    raw_in = raw_session(pylibsrtp.Policy.SSRC_ANY_INBOUND)
    raw_next = cycling()

    def raw():
        protect, unprotect = raw_out.protect, raw_in.unprotect
        for rtp in raw_next():
            unprotect(protect(rtp))

    impls = []
    if SrtpContext is not None:
        sender = SrtpContext(w.SRTP_SUITE, w.SRTP_KEY_A, w.SRTP_KEY_B)
        receiver = SrtpContext(w.SRTP_SUITE, w.SRTP_KEY_B, w.SRTP_KEY_A)
        ours_next = cycling()
        assert receiver.unprotect(sender.protect(stream[0])) == stream[0]
        ours_next()  # the check above sent sequence number 0: start timing at the next chunk

        def ours():
            protect, unprotect = sender.protect, receiver.unprotect
            for rtp in ours_next():
                unprotect(protect(rtp))

        impls.append(Impl("voicemix SrtpContext", ours, chunk, "ours"))
        role = "baseline"
    else:
        role = "ours"  # nothing of ours to compare: report the raw cost alone
    impls.append(Impl("pylibsrtp Session (raw)", raw, chunk, role))
    note = "ratio = SrtpContext overhead over the same libsrtp calls."
    if SRTP_IMPORT_ERROR:
        note = f"mixer.rtp.srtp unavailable ({SRTP_IMPORT_ERROR}): raw pylibsrtp only."
    return Section(f"SRTP protect + unprotect ({len(stream[0])} B RTP, {w.SRTP_SUITE})", impls,
                   note=note)


def opuslib_encoder(complexity: int) -> opuslib.Encoder:
    """opuslib configured like our OpusEncoder: VoIP, 32 kbit/s, voice, FEC at 10% loss."""
    encoder = opuslib.Encoder(w.SAMPLE_RATE, 1, opuslib.APPLICATION_VOIP)
    encoder.signal = 3001  # OPUS_SIGNAL_VOICE
    encoder.bitrate = 32000
    encoder.complexity = complexity
    # opuslib 3.0's `inband_fec` property setter is broken; call the ctl directly
    opuslib.api.encoder.encoder_ctl(encoder.encoder_state, opuslib.api.ctl.set_inband_fec, 1)
    encoder.packet_loss_perc = 10
    return encoder


def section_opus_encode(complexity: int) -> Section:
    frames = w.speech_frames()
    frames_bytes = [f.tobytes() for f in frames]
    ours_enc = OpusEncoder(complexity=complexity)
    theirs = opuslib_encoder(complexity)
    encode, their_encode = ours_enc.encode, theirs.encode

    def ours():
        for pcm in frames:
            encode(pcm)

    def opuslib_():
        for pcm in frames_bytes:
            their_encode(pcm, w.FRAME_SAMPLES)

    return Section(
        f"Opus encode, 20 ms 48 kHz mono speech, complexity {complexity}, 32 kbit/s",
        [Impl("voicemix OpusEncoder.encode", ours, len(frames), "ours"),
         Impl("opuslib Encoder.encode (ctypes)", opuslib_, len(frames))])


def section_opus_decode() -> Section:
    encoder = OpusEncoder()
    packets = [encoder.encode(f) for f in w.speech_frames()]
    ours_dec, theirs = OpusDecoder(), opuslib.Decoder(w.SAMPLE_RATE, 1)
    out = np.empty(w.FRAME_SAMPLES, dtype=np.int16)
    decode_into, decode, their_decode = ours_dec.decode_into, ours_dec.decode, theirs.decode

    def ours():
        for packet in packets:
            decode_into(packet, out)

    def ours_alloc():
        for packet in packets:
            decode(packet)

    def opuslib_():
        for packet in packets:
            their_decode(packet, w.FRAME_SAMPLES)

    return Section(
        "Opus decode, one 20 ms packet",
        [Impl("voicemix OpusDecoder.decode_into", ours, len(packets), "ours"),
         Impl("voicemix OpusDecoder.decode (allocating)", ours_alloc, len(packets), "reference"),
         Impl("opuslib Decoder.decode (ctypes)", opuslib_, len(packets))])


def section_opus_plc() -> Section:
    encoder = OpusEncoder()
    packets = [encoder.encode(f) for f in w.speech_frames()]
    ours_dec, theirs = OpusDecoder(), opuslib.Decoder(w.SAMPLE_RATE, 1)
    out = np.empty(w.FRAME_SAMPLES, dtype=np.int16)
    for packet in packets:
        ours_dec.decode_into(packet, out)
        theirs.decode(packet, w.FRAME_SAMPLES)
    conceal = ours_dec.conceal_into
    their_decode = opuslib.api.decoder.decode

    def ours():
        for _ in range(50):
            conceal(out)

    def opuslib_():
        # opuslib's Decoder.decode() needs len(data); PLC goes through its api module. Read the
        # state through `theirs` so the Decoder (whose __del__ frees the state) stays alive.
        state = theirs.decoder_state
        for _ in range(50):
            their_decode(state, None, 0, w.FRAME_SAMPLES, False, channels=1)

    return Section(
        "Opus PLC, one 20 ms frame (consecutive losses)",
        [Impl("voicemix OpusDecoder.conceal_into", ours, 50, "ours"),
         Impl("opuslib decode(NULL) (ctypes)", opuslib_, 50)])


def section_g711() -> Section:
    frames = w.narrowband_frames()
    frames_bytes = [f.tobytes() for f in frames]
    out = np.empty(w.NARROWBAND_SAMPLES, dtype=np.int16)
    # numpy baseline tables, from the plain-Python reference (the classic Sun formulation)
    all_pcm = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    encode_table = np.empty(65536, dtype=np.uint8)
    encode_table[all_pcm.view(np.uint16)] = [linear_to_ulaw(int(x)) for x in all_pcm]
    decode_table = np.array([ulaw_to_linear(c) for c in range(256)], dtype=np.int16)
    for pcm, raw in zip(frames, frames_bytes):
        assert ulaw_encode(pcm) == encode_table[pcm.view(np.uint16)].tobytes()
        if audioop is not None:
            assert ulaw_encode(pcm) == audioop.lin2ulaw(raw, 2)
        ulaw_decode_into(ulaw_encode(pcm), out)
        assert out.tobytes() == decode_table[np.frombuffer(ulaw_encode(pcm), np.uint8)].tobytes()

    def ours():
        for pcm in frames:
            ulaw_decode_into(ulaw_encode(pcm), out)

    def numpy_():
        take = np.take
        for pcm in frames:
            payload = encode_table[pcm.view(np.uint16)].tobytes()
            take(decode_table, np.frombuffer(payload, np.uint8), out=out)

    def audioop_():
        lin2ulaw, ulaw2lin = audioop.lin2ulaw, audioop.ulaw2lin
        for pcm in frames_bytes:
            ulaw2lin(lin2ulaw(pcm, 2), 2)

    return Section(
        "G.711 mu-law encode + decode, 160 samples",
        [Impl("voicemix ulaw_encode + ulaw_decode_into", ours, len(frames), "ours"),
         Impl("numpy table lookup", numpy_, len(frames))]
        + ([Impl("audioop lin2ulaw + ulaw2lin", audioop_, len(frames))] if audioop else []),
        note="all produce identical bytes (checked).")


def section_mix(n: int) -> Section:
    frames, total, minus = w.conference(n)
    copy_dst = np.empty_like(frames)
    total_src = np.empty_like(total)
    total_dst = np.empty_like(total)
    mix_minus(frames, total, minus)
    expected_total, expected_minus = w.mix_minus_reference(frames)
    assert np.array_equal(total, expected_total) and np.array_equal(minus, expected_minus)
    copyto = np.copyto

    def ours():
        mix_minus(frames, total, minus)

    def numpy_():
        w.mix_minus_reference(frames)

    def bound():
        copyto(copy_dst, frames)
        copyto(total_dst, total_src)

    megabytes = (2 * frames.nbytes + total.nbytes) / 1e6
    return Section(
        f"mix_minus N={n} x 960 samples (bound moves {megabytes:.3g} MB)",
        [Impl("voicemix mix_minus", ours, 1, "ours"),
         Impl("numpy sum/subtract/clip/astype", numpy_, 1),
         Impl("bound: np.copyto of the same bytes", bound, 1, "bound")])


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------

def _fmt_ns(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:,.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:,.2f} us"
    return f"{ns:,.1f} ns"


def _ratio_text(impl: Impl, ours: Impl) -> str:
    if impl is ours:
        return ""
    if impl.role == "bound":
        return f"ours_time/bound = {ours.median / impl.median:.2f}"
    if impl.role == "reference":
        return f"(reference) {impl.median / ours.median:.2f}x ours' time"
    return f"ours/this = {impl.median / ours.median:.2f}x"


def print_section(section: Section) -> None:
    ours = section.ours
    print(f"\n{section.title}")
    for impl in section.impls:
        marker = "*" if impl is ours else " "
        print(f"  {marker} {impl.label:<42} {_fmt_ns(impl.median):>12} {_fmt_ns(impl.best):>12} "
              f"{1e9 / impl.median:>14,.0f}   {_ratio_text(impl, ours)}")
    if section.note:
        print(f"    note: {section.note}")


def environment() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    get_version = opuslib.api.libopus.opus_get_version_string
    get_version.restype = ctypes.c_char_p
    opus_version = get_version()
    if isinstance(opus_version, bytes):
        opus_version = opus_version.decode()
    return (f"Python {platform.python_version()} | numpy {np.__version__} | aiortc "
            f"{aiortc.__version__} | pylibsrtp {pylibsrtp.__version__} | {opus_version} | "
            f"{cpu}, {os.cpu_count()} CPUs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (< 30 s), noisier numbers")
    args = parser.parse_args(argv)
    target_ns, repeats = (3_000_000, 7) if args.quick else (50_000_000, 31)

    print(f"voicemix core vs baselines — {'quick' if args.quick else 'full'} run")
    print(environment())
    print(f"each sample ~{target_ns / 1e6:g} ms of work; {repeats} samples per contender, "
          "round-robin; statistic: MEDIAN of samples (best shown for reference); GC off while timing")
    load_before = os.getloadavg()

    builders = [section_rtp_parse, section_parse_jitter, section_jitter_only, section_srtp,
                lambda: section_opus_encode(5), lambda: section_opus_encode(0),
                section_opus_decode, section_opus_plc, section_g711,
                lambda: section_mix(10), lambda: section_mix(100), lambda: section_mix(1000)]
    started = time.perf_counter()
    print(f"\n  {'':1} {'implementation (* = ours)':<42} {'ns/op med':>12} {'ns/op best':>12} "
          f"{'ops/s (med)':>14}   ratio (ops/s ours/this, or time ours/bound)")
    sections = []
    for build in builders:
        section = build()
        measure(section, target_ns, repeats)
        print_section(section)
        sys.stdout.flush()
        sections.append(section)
    load_after = os.getloadavg()

    print(f"\nwall time {time.perf_counter() - started:.1f} s; 1-min load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after"
          + (" (other processes were busy: expect noise)" if max(load_before[0], load_after[0])
             > 0.5 else ""))

    jitter = sections[1]
    ratio = jitter.impl("aiortc").median / jitter.ours.median
    print("\nverdicts:")
    print(f"  parse + jitter buffer >= 20x aiortc: {'MET' if ratio >= 20 else 'NOT MET'} "
          f"({ratio:.1f}x)")
    mixes = [s for s in sections if s.title.startswith("mix_minus")]
    parts = []
    met = True
    for s in mixes:
        r = s.ours.median / s.impl("bound").median
        met &= r <= 3
        parts.append(f"{s.title.split()[1]}: {r:.2f}x{'' if r <= 3 else ' (over)'}")
    print(f"  mix_minus within 3x of the copy bound: {'MET' if met else 'NOT MET'} "
          f"({', '.join(parts)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
