"""E-model (ITU-T G.107, simplified) against values computed by hand from the formulas."""
import pytest

from controller import emodel

pytestmark = pytest.mark.store_independent  # no store involved


def test_perfect_g711_is_the_g107_default_rating():
    assert emodel.r_factor("PCMU", 0.0, 0.0) == pytest.approx(93.2)
    # 1 + 0.035*93.2 + 93.2*(93.2-60)*(100-93.2)*7e-6 = 1 + 3.262 + 0.14728582
    assert emodel.mos_from_r(93.2) == pytest.approx(4.40928582)


def test_delay_impairment_below_and_above_the_knee():
    assert emodel.delay_impairment(100.0) == pytest.approx(2.4)          # 0.024 * 100
    assert emodel.delay_impairment(200.0) == pytest.approx(4.8 + 2.497)  # + 0.11 * 22.7
    assert emodel.delay_impairment(-5.0) == 0.0


def test_effective_equipment_impairment_per_codec():
    assert emodel.effective_equipment_impairment("PCMU", 2.0) == pytest.approx(190 / 27.1)
    assert emodel.effective_equipment_impairment("PCMA", 0.0) == 0.0
    assert emodel.effective_equipment_impairment("opus", 5.0) == pytest.approx(19.0)  # 95*5/25
    # unknown codec: G.711 without concealment (Bpl 4.3)
    assert emodel.effective_equipment_impairment("G729", 1.0) == pytest.approx(95 / 5.3)
    assert emodel.effective_equipment_impairment("opus", 100.0) == pytest.approx(95 * 100 / 120)


def test_r_and_mos_for_a_lossy_opus_leg():
    r = emodel.r_factor("opus", 5.0, 100.0)
    assert r == pytest.approx(93.2 - 2.4 - 19.0)  # 71.8
    # 1 + 0.035*71.8 + 71.8*11.8*28.2*7e-6
    assert emodel.mos_from_r(r) == pytest.approx(1 + 2.513 + 0.16724518)


def test_mos_is_clamped_and_monotonic():
    assert emodel.mos_from_r(-5) == 1.0
    assert emodel.mos_from_r(0) == 1.0
    assert emodel.mos_from_r(120) == 4.5
    assert emodel.mos_from_r(50) == pytest.approx(2.575)  # 1 + 1.75 - 0.175
    values = [emodel.mos_from_r(r) for r in range(0, 101)]
    assert all(b >= a for a, b in zip(values, values[1:]))


def test_quality_of_a_leg_uses_half_the_rtt_plus_buffer_plus_a_frame():
    q = emodel.quality("opus", 0.0, rtt_ms=40.0, jitter_buffer_ms=40.0)
    assert q["one_way_delay_ms"] == 80.0  # 20 + 40 + 20
    assert q["r_factor"] == pytest.approx(round(93.2 - 0.024 * 80, 1))
    assert 4.3 < q["mos"] < 4.41
