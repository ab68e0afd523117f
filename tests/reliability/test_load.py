"""`voicemix load`: real clients against an in-process engine and a remote one over HTTP; bounds
and address rules refused up front; SIGINT stops it cleanly with a summary."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import uvloop

from mixer.engine.control import start_control_api
from mixer.engine.engine import Engine
from mixer.load import LoadConfig, LoadError, LoadRun, allowed_address, format_summary

REPO = Path(__file__).resolve().parents[2]


def check_summary(summary: dict, clients: int, seconds: float) -> None:
    assert summary["clients"] == clients and summary["legs"] == clients
    assert summary["sent"] >= clients * 50 * seconds * 0.8
    assert summary["engine_packets_in"] >= summary["sent"] * 0.95
    assert summary["received"] > clients * 50 * (seconds - 1) * 0.8  # everyone hears the mix
    assert summary["loss_percent"] < 5.0
    assert summary["tick_lateness_p99_ms"] is not None and summary["engine_fds"] > clients
    assert "loss" in format_summary(summary)


def test_in_process_engine():
    summary = uvloop.run(LoadRun(LoadConfig(clients=20, duration_s=3.0, talkers=2, interval_s=1.0))
                         .run(progress=lambda line: None))
    check_summary(summary, 20, 3.0)
    assert summary["in_process"] and not summary["interrupted"]


def test_remote_engine_over_its_control_url():
    async def scenario():
        engine = Engine()
        engine.start()
        runner, port = await start_control_api(engine)
        try:
            config = LoadConfig(clients=12, duration_s=2.5, per_conference=6,
                                engine_url=f"http://127.0.0.1:{port}", engine_pid=os.getpid())
            summary = await LoadRun(config).run(progress=lambda line: None)
            return summary, engine.stats()
        finally:
            engine.stop()
            await runner.cleanup()

    summary, after = uvloop.run(scenario())
    check_summary(summary, 12, 2.5)
    assert summary["conferences"] == 2 and not summary["in_process"]
    assert after["conferences"] == 0 and after["legs"] == 0  # it cleaned up after itself


@pytest.mark.parametrize("config", [
    LoadConfig(clients=0), LoadConfig(clients=1001), LoadConfig(duration_s=0),
    LoadConfig(duration_s=5 * 3600), LoadConfig(host="8.8.8.8"), LoadConfig(codec="G722"),
    LoadConfig(engine_url="http://93.184.216.34:8790"), LoadConfig(engine_url="ftp://127.0.0.1/"),
    LoadConfig(engine_url="http://169.254.1.1:8790"),
])
def test_out_of_bounds_runs_are_refused(config):
    with pytest.raises(LoadError):
        LoadRun(config)


def test_allowed_addresses():
    assert all(map(allowed_address, ["127.0.0.1", "127.9.9.9", "::1", "10.1.2.3", "192.168.0.9",
                                     "172.16.5.5", "fd00::1", "localhost"]))
    assert not any(map(allowed_address, ["8.8.8.8", "0.0.0.0", "169.254.0.1", "224.0.0.1",
                                         "2001:4860::8888", "example.com"]))


def test_cli_stops_cleanly_on_sigint_with_a_summary():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-m", "mixer.cli", "load", "-n", "5", "--duration", "120"],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    lines = []
    while time.monotonic() < deadline:  # wait for the first progress line: clients are sending
        line = child.stdout.readline()
        lines.append(line)
        if "] legs 5" in line:
            break
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=30)
    output = "".join(lines) + out
    assert child.returncode == 0, output
    assert "load started: 5 clients on 127.0.0.1" in output
    assert "load stopped: 5 clients" in output
    assert "(interrupted)" in output and "load summary" in output
