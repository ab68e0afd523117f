"""The systemd unit examples in docs/deploy/ run real commands with real settings: each ExecStart
parses with `voicemix`'s own argument parser, each VOICEMIX_ variable is a setting on
docs/configuration.md, and systemd itself accepts the units."""
from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from controller import settings_doc
from mixer.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
UNITS = sorted((ROOT / "docs" / "deploy").glob("*.service"))


def directives(unit: Path) -> list[tuple[str, str]]:
    result = []
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            result.append((key.strip(), value.strip()))
    return result


def known_variables() -> set[str]:
    return {settings_doc.env_name(cls, name) for cls, _, _ in settings_doc.SECTIONS
            for name in cls.model_fields}


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_runs_a_real_command_with_real_settings(unit):
    found = dict(directives(unit))
    argv = shlex.split(found["ExecStart"].replace("%i", "0"))
    assert argv[0].endswith("/voicemix")
    args = build_parser().parse_args(argv[1:])  # exits (fails the test) on an unknown flag
    assert args.command in ("engine", "controller", "serve", "turn")
    variables = [value.split("=", 1)[0] for key, value in directives(unit) if key == "Environment"]
    assert variables and set(variables) <= known_variables(), set(variables) - known_variables()
    assert found["KillSignal"] == "SIGTERM"
    if args.command == "engine":  # systemd must wait for the drain
        drain = next(float(v.split("=")[1]) for k, v in directives(unit)
                     if k == "Environment" and v.startswith("VOICEMIX_DRAIN_TIMEOUT_S="))
        assert float(found["TimeoutStopSec"]) > drain


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_accepts_the_unit(unit, tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("environment: systemd-analyze is not on this machine")
    name = unit.name.replace("@.", "@0.")
    copy = tmp_path / name
    text = unit.read_text()
    command = shlex.split(dict(directives(unit))["ExecStart"])[0]
    copy.write_text(text.replace(command, "/bin/true"))  # the binary is not installed here
    checked = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "Unknown key" not in checked.stderr and "Unknown lvalue" not in checked.stderr, checked.stderr
