"""`voicemix demo`: a real group call on loopback, and what every participant heard.

The engine runs on embedded defaults (uvloop, MCU mode); N simulated participants join by SDP
offer/answer and talk in turns as tone bursts through real Opus/G.711 RTP over UDP (SRTP optional,
loss and jitter optional). At the end each participant's received audio is measured.
"""
from __future__ import annotations

import argparse
import sys

import uvloop

from mixer.engine.engine import Engine
from mixer.settings import EngineSettings
from mixer.sim.call import HEARD_THRESHOLD_DB, CallConfig, CallResult, make_participants, run_call


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--participants", type=int, default=4, help="participants (default 4)")
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="seconds (default 5)")
    parser.add_argument("--codec", choices=["opus", "PCMU", "PCMA", "mixed"], default="opus",
                        help="what the participants offer; mixed rotates opus/PCMU/PCMA")
    parser.add_argument("--srtp", action="store_true", help="SRTP (SDES, AES_CM_128_HMAC_SHA1_80)")
    parser.add_argument("--loss", type=float, default=0.0, help="packet loss on each sender, percent")
    parser.add_argument("--jitter", type=float, default=0.0,
                        help="extra delay per packet, uniform 0..ms (reorders above 20)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mode", choices=["mcu", "sfu"], default="mcu",
                        help="mcu: mix (each hears one mix-minus); sfu: forward the loudest 3 (Opus only)")


def run(args: argparse.Namespace) -> int:
    if not 2 <= args.participants <= 12:
        print("demo: --participants must be 2..12", file=sys.stderr)
        return 2
    if args.mode == "sfu" and args.codec != "opus":
        print("demo: an SFU forwards without transcoding, so every participant must send Opus",
              file=sys.stderr)
        return 2
    config = CallConfig(args.participants, args.duration, args.codec, args.srtp, args.loss,
                        args.jitter, args.seed, args.mode)
    result = uvloop.run(_run(config))
    _print_report(config, result)
    return 0 if result.ok else 1


async def _run(config: CallConfig) -> CallResult:
    participants = make_participants(config)  # before the engine's clock runs (same event loop)
    engine = Engine(EngineSettings(rtcp_interval_s=1.0))
    engine.start()
    print(f"engine: {config.mode.upper()} on {engine.settings.media_ip}, ports {engine.settings.media_ports}; "
          f"{config.participants} participants, {config.codec}, SRTP {'on' if config.srtp else 'off'}, "
          f"loss {config.loss_percent}%, jitter 0..{config.jitter_ms} ms")
    try:
        return await run_call(config, engine, _progress(config.duration_s), participants)
    finally:
        engine.stop()


def _progress(total: float):
    def show(elapsed: float, engine: Engine) -> None:
        stats = engine.stats()
        width = 30
        done = int(width * elapsed / total)
        speakers = ",".join(
            conference.voices[leg_id].leg.label
            for conference in engine.conferences.values()
            for leg_id in conference.stats()["speakers"] if leg_id in conference.voices) or "-"
        sys.stdout.write(
            f"\r[{'#' * done}{'.' * (width - done)}] {elapsed:4.1f}/{total:.0f}s  "
            f"in {stats['packets_in']:>6} out {stats['packets_out']:>6}  "
            f"tick late p99 {stats['tick_lateness_p99_ms']:5.2f}ms  talking {speakers:<12}")
        sys.stdout.flush()
    return show


def _print_report(config: CallConfig, result: CallResult) -> None:
    print("\n")
    header = (f"{'who':<4} {'codec':<5} {'voice':>6}  {'heard (dBFS)':<34} {'own':>6} {'loss up/down':>13} "
              f"{'jitter':>7} {'latency p50/p99':>16} {'rtt':>7}  ok")
    print(header)
    print("-" * len(header))
    for r in result.listeners:
        heard = " ".join(f"{name}:{level:.0f}" for name, level in r.heard.items())
        if r.missing:
            heard += " MISSING " + ",".join(r.missing)
        p50, p99 = r.latency_percentile(50), r.latency_percentile(99)
        latency = f"{p50:.0f}/{p99:.0f} ms" if p50 is not None else "-"
        rtt = f"{r.rtt_ms:.1f}ms" if r.rtt_ms is not None else "-"
        uplink = (r.engine_leg.get("receive") or {}).get("loss_percent", 0.0)
        print(f"{r.name:<4} {r.codec:<5} {r.tone_hz:>5.0f}Hz  {heard:<34} "
              f"{('-' if r.own_level_db < HEARD_THRESHOLD_DB else f'{r.own_level_db:.0f}'):>6} "
              f"{uplink:>5.1f}%/{r.loss_percent:>5.1f}% {r.jitter_ms:>5.1f}ms {latency:>16} {rtt:>7}  "
              f"{'yes' if r.ok else 'NO'}")
    stats = result.engine_stats
    conf = result.conference_stats
    print()
    print(f"engine: {stats['ticks']} ticks, lateness p50 {stats['tick_lateness_p50_ms']} ms / "
          f"p99 {stats['tick_lateness_p99_ms']} ms, {stats['packets_in']} packets in, "
          f"{stats['packets_out']} out, drops {sum(stats['drops'].values())}")
    if config.mode == "sfu":
        print(f"sfu:    {conf['packets_forwarded']} packets forwarded, {conf['packets_not_forwarded']} "
              f"not (quiet senders), {conf['speaker_changes']} speaker changes, "
              f"{conf['tick_busy_ms_mean']} ms per tick")
    else:
        print(f"mixer:  {conf['decodes']} decodes, {conf['own_encodes']} talker encodes, "
              f"{conf['shared_encodes']} shared encodes, {conf['tick_busy_ms_mean']} ms per tick")
    everyone = result.latencies()
    if everyone:
        import numpy as np

        print(f"added latency send->hear over all onsets: p50 {np.percentile(everyone, 50):.1f} ms, "
              f"p99 {np.percentile(everyone, 99):.1f} ms (n={len(everyone)})")
    print("own voice: '-' means not heard (mix-minus / not forwarded back); every other voice must be heard.")
    print("loss up: participant -> engine (as the engine counted it); down: engine -> participant.")
    print("demo", "passed" if result.ok else "FAILED")
