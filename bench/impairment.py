"""What network loss and jitter do to an MCU call, measured through the impairment proxy.

    python bench/impairment.py                 # the table, printed and written to docs/reliability.md
    python bench/impairment.py --seconds 4 --no-write

Every condition is a real call (4 participants, Opus, every participant behind its own
ImpairedLink, the same loss on the uplink and the downlink). Per condition: the loss the links
really applied, the share of 20 ms frames that dropped out in what listeners heard, the tone SNR
(power at the voices' tones over everything else), how many of the 12 listener/voice pairs were
heard, and the voices' mean level; each against the clean call of the same run. Then the jitter
buffer's target delay through a clean -> jittery -> clean call.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixer.sim.call import CallConfig  # noqa: E402
from mixer.sim.impair import (  # noqa: E402
    GilbertElliott, Impairment, describe, jitter_phases, run_impaired_call, sample_jitter_buffers,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
BEGIN, END = "<!-- impairment table: begin (bench/impairment.py) -->", "<!-- impairment table: end -->"

CONDITIONS = [
    ("clean", Impairment()),
    ("2% random", Impairment(loss=0.02)),
    ("5% random", Impairment(loss=0.05)),
    ("10% random", Impairment(loss=0.10)),
    ("20% random", Impairment(loss=0.20)),
    ("5% bursty (mean burst 3)", Impairment(burst=GilbertElliott.for_loss(0.05, 3.0))),
    ("10% bursty (mean burst 3)", Impairment(burst=GilbertElliott.for_loss(0.10, 3.0))),
    ("5% random + 40 ms jitter", Impairment(loss=0.05, jitter_ms=40.0)),
]


async def measure(seconds: float, seed: int) -> tuple[list[dict], dict]:
    rows = []
    for name, impairment in CONDITIONS:
        result = await run_impaired_call(CallConfig(participants=4, duration_s=seconds, seed=seed),
                                         impairment, impairment)
        links = list(result.links.values())
        heard = sum(len(l.heard) for l in result.call.listeners)
        levels = [v for l in result.call.listeners for v in l.heard.values()]
        rows.append({
            "condition": name,
            "applied": describe(impairment),
            "up_loss": np.mean([l["up"]["loss_percent"] for l in links]),
            "down_loss": np.mean([l["down"]["loss_percent"] for l in links]),
            "burst": np.mean([l[d]["mean_loss_burst"] for l in links for d in ("up", "down")]),
            "dropout": np.mean([q["dropout_percent"] for q in result.quality.values()]),
            "snr": np.mean([q["tone_snr_db"] for q in result.quality.values()]),
            "heard": heard,
            "level": float(np.mean(levels)) if levels else float("nan"),
            "fec": sum(l.engine_leg["decoder"]["fec_recovered"] for l in result.call.listeners),
            "plc": sum(l.engine_leg["decoder"]["concealed"] for l in result.call.listeners),
        })
        print(f"  {name:28} dropout {rows[-1]['dropout']:5.1f}%  SNR {rows[-1]['snr']:5.1f} dB  "
              f"heard {heard}/12", flush=True)
    clean_s, jitter_s, total = 3.0, 5.0, 14.0
    trace = await run_impaired_call(
        CallConfig(participants=3, duration_s=total, seed=seed), Impairment(), Impairment(),
        sample_every_s=0.5, sample=sample_jitter_buffers,
        during=jitter_phases(clean_s, jitter_s, Impairment(jitter_ms=80.0)))
    t = np.array([s["t"] for s in trace.samples])
    target = np.array([s["target_delay_ms"] for s in trace.samples]).mean(axis=1)
    jitter = np.array([s["jitter_ms"] for s in trace.samples]).mean(axis=1)
    adapt = {"t": t, "target": target, "jitter": jitter, "clean_s": clean_s, "jitter_s": jitter_s}
    return rows, adapt


def table(rows: list[dict], adapt: dict, seconds: float) -> str:
    clean = rows[0]
    lines = [
        f"Calls of {seconds:g} s, 4 participants (Opus), the same impairment on every uplink and "
        "downlink. *dropout*: share of 20 ms frames heard more than 12 dB under the median frame; "
        "*SNR*: tone power over all other power in what listeners heard; *heard*: listener/voice "
        "pairs above -40 dBFS (of 12); FEC/PLC: frames the engine rebuilt from in-band FEC or "
        "concealed, all legs.",
        "",
        "| condition | loss applied up / down | mean burst | dropout | SNR (vs clean) | heard | voice level | engine FEC / PLC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['condition']} | {r['up_loss']:.1f}% / {r['down_loss']:.1f}% | {r['burst']:.2f} | "
            f"{r['dropout']:.1f}% | {r['snr']:.1f} dB ({r['snr'] - clean['snr']:+.1f}) | {r['heard']}/12 | "
            f"{r['level']:.1f} dBFS | {r['fec']} / {r['plc']} |")
    t, target, jitter = adapt["t"], adapt["target"], adapt["jitter"]
    a, b = adapt["clean_s"], adapt["clean_s"] + adapt["jitter_s"]
    phases = [("clean", (t > 1) & (t < a)), ("uniform 0-80 ms jitter", (t >= a) & (t < b)),
              ("clean again, last 2 s", t > t.max() - 2)]
    lines += ["", "Jitter buffer target delay (mean of 3 legs, read from `Engine.get_conference`) "
              "through one call whose uplinks turn jittery and then clean again:", "",
              "| phase | target delay mean / max | RFC 3550 jitter max |", "|---|---|---|"]
    for name, mask in phases:
        lines.append(f"| {name} | {target[mask].mean():.0f} / {target[mask].max():.0f} ms | "
                     f"{jitter[mask].max():.1f} ms |")
    trace = ", ".join(f"{x:.0f}" for x in target)
    lines += ["", f"Trace every 0.5 s (ms): {trace}"]
    return "\n".join(lines)


def write(section: str) -> None:
    text = DOC.read_text() if DOC.exists() else ""
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _m: block, text, flags=re.S)
    else:
        text += f"\n{block}\n"
    DOC.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each call")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only, leave docs/reliability.md")
    args = parser.parse_args()
    print(f"impairment: start, {len(CONDITIONS)} conditions x {args.seconds:g} s on loopback", flush=True)
    rows, adapt = uvloop.run(measure(args.seconds, args.seed))
    section = table(rows, adapt, args.seconds)
    print(section)
    if not args.no_write:
        write(section)
        print(f"impairment: stop, table written to {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
