"""Call quality from network measurements: the ITU-T G.107 E-model, simplified for VoIP records.

    R = Ro - Is - Id - Ie,eff + A

with G.107's default Ro - Is = 93.2 (all other parameters at their defaults), A = 0,

- Id, the delay impairment, from the one-way mouth-to-ear delay d (ms) by the usual closed-form
  fit of G.107's Idd/Idte with default echo loss (Cole and Rosenbluth, 2001):
  Id = 0.024 d + 0.11 (d - 177.3) H(d - 177.3);
- Ie,eff, the equipment impairment under random packet loss Ppl (%), G.107 equation (7-29) with
  BurstR = 1: Ie,eff = Ie + (95 - Ie) Ppl / (Ppl + Bpl), Ie and Bpl per codec from G.113 Appendix I;

and MOS from R by G.107 Annex B: 1 below R = 0, 4.5 above R = 100, else
MOS = 1 + 0.035 R + R (R - 60)(100 - R) 7e-6 (held at 1 where the cubic dips below it).
"""
from __future__ import annotations

from dataclasses import dataclass

R_DEFAULT = 93.2  # Ro - Is with every G.107 parameter at its default


@dataclass(frozen=True)
class CodecImpairment:
    ie: float   # equipment impairment without loss
    bpl: float  # packet-loss robustness


# G.113 Appendix I: G.711 with packet loss concealment (Appendix I of G.711) has Ie 0, Bpl 25.1
# (4.3 without concealment). The engine conceals G.711 by repeating the last frame, attenuated.
# G.113 has no entry for Opus: narrowband-equivalent Ie 0 at the engine's 32 kbit/s, and Bpl 20,
# between G.711 with concealment and the CELP codecs (G.729A: 19.0), is our assumption; Opus has
# PLC and in-band FEC, so this is conservative.
CODEC_IMPAIRMENTS = {
    "PCMU": CodecImpairment(ie=0.0, bpl=25.1),
    "PCMA": CodecImpairment(ie=0.0, bpl=25.1),
    "opus": CodecImpairment(ie=0.0, bpl=20.0),
}
DEFAULT_IMPAIRMENT = CodecImpairment(ie=0.0, bpl=4.3)  # unknown codec: G.711 without concealment


def delay_impairment(one_way_delay_ms: float) -> float:
    d = max(one_way_delay_ms, 0.0)
    return 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)


def effective_equipment_impairment(codec: str, loss_percent: float) -> float:
    impairment = CODEC_IMPAIRMENTS.get(codec, DEFAULT_IMPAIRMENT)
    ppl = min(max(loss_percent, 0.0), 100.0)
    return impairment.ie + (95.0 - impairment.ie) * ppl / (ppl + impairment.bpl)


def r_factor(codec: str, loss_percent: float, one_way_delay_ms: float) -> float:
    return (R_DEFAULT - delay_impairment(one_way_delay_ms)
            - effective_equipment_impairment(codec, loss_percent))


def mos_from_r(r: float) -> float:
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    # the cubic dips just below 1 for R under about 6.5: clamp, so that MOS never falls as R rises
    return max(1.0, 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6)


def one_way_delay_ms(rtt_ms: float | None, jitter_buffer_ms: float, codec_ms: float = 20.0) -> float:
    """Mouth-to-ear estimate: half the round trip, the jitter buffer's delay, one frame of
    packetization."""
    return (rtt_ms or 0.0) / 2.0 + jitter_buffer_ms + codec_ms


def quality(codec: str, loss_percent: float, rtt_ms: float | None, jitter_buffer_ms: float) -> dict:
    """{"one_way_delay_ms", "r_factor", "mos"} for a leg."""
    delay = one_way_delay_ms(rtt_ms, jitter_buffer_ms)
    r = r_factor(codec, loss_percent, delay)
    return {"one_way_delay_ms": round(delay, 1), "r_factor": round(r, 1), "mos": round(mos_from_r(r), 2)}
