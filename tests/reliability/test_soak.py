"""A CI-sized soak (bench/soak.py, ~30 s): a churning call against a real `voicemix engine` process.

After more than a hundred legs have come and gone, the engine holds exactly the descriptors it held
before the call, and its memory grew by far less per replaced leg than a leg costs: nothing is
leaked per leg. The 10- and 30-minute numbers are in docs/reliability.md.
"""
from __future__ import annotations

import sys
from pathlib import Path

import uvloop

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.soak import soak  # noqa: E402

PARTICIPANTS = 12


def test_churn_leaks_no_descriptors_and_no_memory_per_leg():
    result = uvloop.run(soak(minutes=0.45, participants=PARTICIPANTS, talkers=3, churn_s=0.15,
                             sample_s=1.0, ports="43000-43999", log=lambda line: None))
    assert result["churned"] >= 100
    # one socket per leg (rtcp-mux) while the call runs, plus the control connection
    assert PARTICIPANTS <= result["fds_during"] - result["fds_baseline"] <= PARTICIPANTS + 2
    assert result["fds_after"] <= result["fds_baseline"] + 1  # every leg's socket closed
    assert abs(result["fds_slope_per_min"]) < 1.0
    # A leg costs tens of KB (jitter buffer, stream state, encoders for talkers): measured here
    # as the growth while the call's legs joined. Replaced legs must cost far less each.
    per_leg = (result["rss_kb_join"] - result["rss_kb_baseline"]) / PARTICIPANTS
    growth_per_churn = (result["rss_kb_last"] - result["rss_kb_first"]) / result["churned"]
    assert growth_per_churn < max(per_leg / 4, 4.0), (per_leg, growth_per_churn)
