"""CI budget for the atheris targets: every registered target for a few thousand inputs.

Each runs in a child process through the same runner as `make fuzz` (`python -m tests.fuzz.run`), so
what CI runs is what the long runs run. The long numbers are in docs/reliability.md.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fuzz import registry  # noqa: E402
from tests.fuzz.run import run_target  # noqa: E402

pytest.importorskip("atheris", reason="atheris (the dev extra) is not installed")

CI_RUNS = 2000


@pytest.mark.parametrize("name", sorted(registry.load_all()))
def test_target_survives_a_short_run(name, tmp_path):
    result = run_target(name, CI_RUNS, seed=7, artifacts=tmp_path)
    assert result["crashes"] == 0, result["output"][-4000:]
    assert result["runs"] == CI_RUNS
    assert not list(tmp_path.iterdir()), "a crash input was written"


def test_harness_reports_a_planted_defect(tmp_path, monkeypatch):
    monkeypatch.setenv("VOICEMIX_FUZZ_CANARY", "1")
    result = run_target("canary", 100_000, seed=7, artifacts=tmp_path)
    assert result["crashes"] == 1 and result["returncode"] != 0
    crashes = list(tmp_path.glob("crash-*"))
    assert len(crashes) == 1 and crashes[0].read_bytes()[:1] == b"F"
    assert "the planted defect was found" in result["output"]
