"""The FEC policy's loss estimate: RTCP fraction lost in, a tier with hysteresis out."""
from __future__ import annotations

from mixer.mcu.encoding import FEC_TIERS, LossEstimate, tier_hint


def fraction(percent: float) -> int:
    """RFC 3550 6.4.1 fixed point: fraction lost * 256."""
    return int(percent * 256 / 100)


def test_no_reports_no_fec():
    loss = LossEstimate()
    assert loss.tier == 0 and tier_hint(loss.tier) == 0


def test_a_report_is_taken_once():
    loss = LossEstimate()
    assert loss.update(1, fraction(3))
    assert loss.tier == 1 and tier_hint(1) == FEC_TIERS[0][2]
    assert not loss.update(1, fraction(0))   # the same report again: nothing new
    assert loss.tier == 1


def test_rises_at_once_and_falls_slowly():
    loss = LossEstimate()
    loss.update(1, fraction(10))
    assert loss.tier == 2
    loss.update(2, 0)          # one clean report: 7 % left, still heavy
    assert loss.tier == 2
    reports = 2
    while loss.tier:
        reports += 1
        loss.update(reports, 0)
    assert 4 <= reports <= 20   # seconds of clean reports before FEC goes off again


def test_hysteresis_keeps_a_leg_near_a_threshold_from_flapping():
    loss = LossEstimate()
    loss.update(1, fraction(1.2))
    assert loss.tier == 1
    for n in range(2, 10):      # hovering between 0.6 and 1.2 %
        loss.update(n, fraction(0.6 if n % 2 else 1.2))
        assert loss.tier == 1


def test_hints_stay_small():
    """Measured: hints above 5 % cost more main-signal quality than the FEC gives back."""
    assert all(hint <= 5 for _, _, hint in FEC_TIERS)
