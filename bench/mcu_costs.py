"""Per-participant cost model of the MCU engine, in microseconds, measured in-process.

    python bench/mcu_costs.py [--n 300]

`mcu_scale.py` measures what the engine process costs as a whole; this splits that cost into the
pieces one participant adds per 20 ms tick, with the same conference, legs and packets, but without
the event loop: the leg's receive path called directly, the conference tick with real UDP sends and
with a no-op transport (the difference is the send syscall), and the single operations inside them.
What the engine process spends beyond these (uvloop/libuv, epoll, recvmsg) is the remainder when
compared with `mcu_scale.py`'s measured CPU per participant-second.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
for _p in (str(BENCH_DIR.parent), str(BENCH_DIR)):
    if _p not in sys.path:
        sys.path.insert(0, _p)


class _NullEndpoint:
    """An endpoint whose send does nothing: the tick without the send system call."""

    is_open = True

    def send(self, data, packed_address=None) -> None:
        pass


def _per_call_us(fn, repeat: int) -> float:
    began = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - began) * 1e6 / repeat


def cost_model(n: int = 300, rounds: int = 60) -> dict:
    """Microseconds per participant per tick for each piece, plus the fixed codec work per tick."""
    import numpy as np

    from mixer import _jitter, _rtp
    from mixer.codec import FrameDecoder, FrameEncoder, OpusSettings
    from mixer.mcu.conference import McuConference
    from mixer.rtp.stats import ReceiveStatistics, SendStatistics
    from mixer.settings import EngineSettings

    from mcu_tickbench import TickBench

    # Unlimited packet budget: the rounds run faster than real time.
    bench = TickBench(McuConference, n, settings=EngineSettings(max_packet_rate=1_000_000))
    result: dict = {"n": n}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(10):  # warm up: jitter buffers playing, talkers chosen, encoders made
            bench.receive(bench.wires())
            bench.tick(bench.now_ms)
            bench.drain()
        receive_s = tick_s = null_tick_s = 0.0
        endpoints = [leg._rtp for leg in bench.legs]
        null = _NullEndpoint()
        for r in range(rounds):
            wires = bench.wires()
            began = time.perf_counter()
            bench.receive(wires)
            received = time.perf_counter()
            if r % 2:
                for leg in bench.legs:
                    leg._rtp = null
            bench.conference.tick(bench.now_ms)
            bench.flusher.flush()
            ticked = time.perf_counter()
            if r % 2:
                for leg, endpoint in zip(bench.legs, endpoints):
                    leg._rtp = endpoint
                null_tick_s += ticked - received
            else:
                tick_s += ticked - received
            receive_s += received - began
            bench.now_ms += 20.0
            bench.drain()
        half = rounds // 2
        stats = bench.conference.stats()
        result["receive_path_us"] = receive_s * 1e6 / rounds / n
        result["tick_us"] = tick_s * 1e6 / half / n
        result["tick_null_send_us"] = null_tick_s * 1e6 / half / n
        result["send_syscall_us"] = result["tick_us"] - result["tick_null_send_us"]
        result["decodes_per_tick"] = stats["decodes"] / max(stats["ticks"], 1)

        # The single operations (one listener's share of a tick, one packet's receive path)
        leg = bench.legs[-1]
        voice = bench.conference.voices[leg.id]
        wire = bench.wires()[-1]
        packet = _rtp.RtpPacket.parse(wire)
        ext_id = leg.audio_level_ext_id
        receive = ReceiveStatistics(1234, 48000, 100)
        seq = [100]

        def stats_on_rtp():
            seq[0] = (seq[0] + 1) & 0xFFFF
            receive.on_rtp(seq[0], seq[0] * 960, 80, time.time())

        jb = _jitter.JitterBuffer(clock_rate=48000, frame_ms=20.0)
        clock = [0.0]
        packets = [_rtp.RtpPacket.parse(w) for w in
                   (_rtp.build_rtp(111, s, s * 960, 7, b"x" * 60) for s in range(64))]

        def jb_put_pop():
            i = int(clock[0] / 20.0)
            packet_i = packets[i % 64]
            packet_i.sequence_number = i & 0xFFFF
            packet_i.timestamp = (i * 960) & 0xFFFFFFFF
            jb.put(packet_i, clock[0])
            jb.pop(clock[0])
            clock[0] += 20.0

        sent = SendStatistics()
        bucket = leg._peer_budget
        silent = bench.silence[0]
        ops = {
            "time.time() / time.monotonic()": lambda: (time.time(), time.monotonic()),
            "TokenBucket.take (per packet)": lambda: bucket.take(time.monotonic()),
            "RtpPacket.parse (per packet)": lambda: _rtp.RtpPacket.parse(wire),
            "ReceiveStatistics.on_rtp (per packet)": stats_on_rtp,
            "JitterBuffer put + pop (per packet)": jb_put_pop,
            "packet.audio_level(ext) (per listener)": lambda: packet.audio_level(ext_id),
            "Voice.observe_level (per listener)": lambda: voice.observe_level(127),
            "Voice.discard (per listener)": voice.discard,
            "build_rtp (per listener)": lambda: _rtp.build_rtp(111, 1, 2, 3, silent),
            "SendStatistics.on_sent + time.time() (per listener)": lambda: sent.on_sent(60, 1, time.time()),
            "MediaLeg.maybe_send_rtcp, not due (per listener)": lambda: leg.maybe_send_rtcp(0.0),
        }
        result["ops_us"] = {name: _per_call_us(fn, 20000) for name, fn in ops.items()}

        # Fixed codec work per tick: 1 shared + 3 own encodes of a 3-tone mix, 3 decodes
        t = np.arange(960 * 50) / 48000
        mix = sum(np.sin(2 * np.pi * f * t) * 0.3 * 32767 for f in (350.0, 520.0, 710.0))
        mix = np.clip(mix, -32768, 32767).astype(np.int16)
        frames = [np.ascontiguousarray(mix[i * 960:(i + 1) * 960]) for i in range(50)]
        encoder = FrameEncoder("opus", OpusSettings(complexity=EngineSettings().opus_complexity))
        payloads = [encoder.encode(f) for f in frames]
        k = [0]

        def encode():
            k[0] += 1
            return encoder.encode(frames[k[0] % 50])

        decoder = FrameDecoder("opus")

        def decode():
            k[0] += 1
            decoder.decode(payloads[k[0] % 50])
            decoder.take_frame()

        result["opus_encode_us"] = _per_call_us(encode, 500)
        result["opus_decode_us"] = _per_call_us(decode, 1000)
        result["opus_plc_us"] = _per_call_us(lambda: (decoder.conceal(), decoder.take_frame()), 1000)
    finally:
        if gc_was:
            gc.enable()
        bench.close()
    return result


def format_cost_model(c: dict, measured_ms_per_participant_s: float | None = None,
                      measured_n: int | None = None) -> str:
    n = c["n"]
    per_participant = c["receive_path_us"] + c["tick_us"]
    fixed_us = 4 * c["opus_encode_us"] + 3 * c["opus_decode_us"]
    lines = [
        f"in-process, N={n} legs, 3 talkers, GC off, no event loop (per participant per 20 ms tick):",
        f"  receive path, MediaLeg._on_datagram -> jitter buffer (Python + Cython): "
        f"{c['receive_path_us']:6.1f} us",
        f"  conference tick per leg, incl. its UDP send:                           "
        f"{c['tick_us']:6.1f} us",
        f"    of which the send syscall (real sendto - no-op transport):           "
        f"{c['send_syscall_us']:6.1f} us",
        f"    (codec work inside: 1 shared + 3 own encodes, {c['decodes_per_tick']:.1f} decodes per tick,"
        f" ~{fixed_us:.0f} us/tick = {fixed_us / n:.1f} us per leg at N={n})",
        f"  = {per_participant:.1f} us per participant per tick without the event loop "
        f"= {per_participant * 50 / 1000:.2f} CPU ms per participant-second",
    ]
    if measured_ms_per_participant_s is not None:
        measured_us = measured_ms_per_participant_s * 1000 / 50
        rest = measured_us - per_participant
        lines.append(
            f"  engine process measured at N={measured_n}: {measured_us:.1f} us per participant per tick"
            f" -> {rest:.1f} us ({100 * rest / measured_us:.0f}%) is the event loop's share: uvloop/libuv"
            f" UDP receive (epoll + recvmsg until EAGAIN + Python callback), timers")
    lines.append("  single operations (us per call, Python call included):")
    for name, us in c["ops_us"].items():
        lines.append(f"    {us:6.2f}  {name}")
    lines.append(f"    {c['opus_encode_us']:6.1f}  Opus encode, 20 ms 3-tone mix, complexity "
                 f"{_complexity()}, FEC (x4 per tick)")
    lines.append(f"    {c['opus_decode_us']:6.1f}  Opus decode, 20 ms (x3 per tick)")
    lines.append(f"    {c['opus_plc_us']:6.1f}  Opus PLC, 20 ms (a silent leg that underruns is "
                 f"concealed, not skipped)")
    return "\n".join(lines)


def _complexity() -> int:
    from mixer.settings import EngineSettings

    return EngineSettings().opus_complexity


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    try:
        os.sched_setaffinity(0, {0})
    except OSError:
        pass
    print(format_cost_model(cost_model(args.n)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
