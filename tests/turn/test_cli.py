"""`voicemix turn` as a process: one log line with its addresses at start and at stop, answers STUN
in between, and stops cleanly on SIGTERM and SIGINT."""
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from mixer.turn import stun
from mixer.turn.testing import relay_window

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_voicemix_turn_starts_answers_and_stops_on_signal(sig):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(
        [sys.executable, "-m", "mixer.cli", "turn", "--listen", "127.0.0.1:0", "--relay-ports", relay_window(),
         "--user", "alice:pw"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = process.stdout.readline()
        started = re.search(r"turn started: udp 127\.0\.0\.1:(\d+) tcp 127\.0\.0\.1:(\d+)", line)
        assert started, line
        udp_port, tcp_port = map(int, started.groups())
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=2) as tcp:
            txid = os.urandom(12)
            tcp.sendall(stun.build(stun.BINDING, stun.REQUEST, txid, []))
            response = stun.parse(_read_message(tcp))
            assert response.transaction_id == txid
            assert response.xor_address(stun.XOR_MAPPED_ADDRESS) == tcp.getsockname()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(2)
            txid = os.urandom(12)
            udp.sendto(stun.build(stun.BINDING, stun.REQUEST, txid, []), ("127.0.0.1", udp_port))
            assert stun.parse(udp.recv(2048)).transaction_id == txid
        process.send_signal(sig)
        output, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert re.search(rf"turn stopped: udp 127\.0\.0\.1:{udp_port} tcp 127\.0\.0\.1:{tcp_port}", output), output


def _read_message(sock: socket.socket) -> bytes:
    data = b""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        data += sock.recv(4096)
        if len(data) >= 20 and len(data) >= 20 + int.from_bytes(data[2:4], "big"):
            return data[:20 + int.from_bytes(data[2:4], "big")]
    raise AssertionError("no complete STUN response")


def test_voicemix_turn_serves_its_metrics_on_the_metrics_listener():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               VOICEMIX_TURN_METRICS_LISTEN=f"127.0.0.1:{metrics_port}")
    process = subprocess.Popen(
        [sys.executable, "-m", "mixer.cli", "turn", "--listen", "127.0.0.1:0", "--relay-ports",
         relay_window(), "--user", "alice:pw"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        started = re.search(r"turn started: udp 127\.0\.0\.1:(\d+)", "".join(lines))
        assert started and "metrics listener started" in "".join(lines), lines
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(2)
            for _ in range(3):
                udp.sendto(stun.build(stun.BINDING, stun.REQUEST, os.urandom(12), []),
                           ("127.0.0.1", int(started.group(1))))
                udp.recv(2048)
            udp.sendto(b"\x00\x01garbage", ("127.0.0.1", int(started.group(1))))
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert 'voicemix_turn_requests_total{method="binding"} 3.0' in text, text
        assert "voicemix_turn_allocations 0.0" in text and "process_open_fds" in text
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
