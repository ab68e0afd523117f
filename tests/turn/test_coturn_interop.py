"""Interop with coturn's client tools (Debian package `coturn`): turnutils_stunclient against our STUN,
turnutils_uclient over TCP (and TLS, and UDP) through our TURN to turnutils_peer, with long-term and
REST-API credentials. The counts and loss are what coturn's tool reports, not what we think."""
import asyncio
import re
import shutil
import socket
import subprocess

import pytest
import uvloop

from mixer.turn.testing import SECRET, USERS, running_server

TOOLS = ("turnutils_uclient", "turnutils_stunclient", "turnutils_peer")
pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in TOOLS),
    reason="coturn's client tools are not installed (Debian package `coturn`; scripts/setup.sh installs it)")

CLIENTS, MESSAGES = 2, 20


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def tool(*args: str, timeout: float = 25.0) -> str:
    process = await asyncio.create_subprocess_exec(*args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                   stdin=subprocess.DEVNULL)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        pytest.fail(f"{args[0]} did not finish in {timeout} s:\n{output.decode(errors='replace')[-2000:]}")
    return output.decode(errors="replace")


def parse_uclient(output: str) -> dict:
    totals = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", output, re.M)
    lost = re.search(r"Total lost packets (\d+) \(([\d.]+)%\)", output)
    assert totals and lost, f"uclient reported no totals:\n{output[-2000:]}"
    sent, received = map(int, totals[-1])
    return {"sent": sent, "received": received, "lost": int(lost.group(1)), "loss_percent": float(lost.group(2))}


def test_stunclient_learns_its_reflexive_address_from_our_stun():
    async def scenario():
        async with running_server() as server:
            output = await tool("turnutils_stunclient", "-p", str(server.udp_address[1]), "127.0.0.1",
                                timeout=10)
            assert re.search(r"UDP reflexive addr: 127\.0\.0\.1:\d+", output), output
            assert server.stats()["counters"]["responses_binding"] >= 1
    uvloop.run(scenario())


@pytest.mark.parametrize("mode", ["tcp-longterm", "tcp-rest", "tcp-send-indications", "udp-rest", "tls-longterm"])
def test_uclient_relays_through_our_turn_to_turnutils_peer(mode, tmp_path):
    tls = mode.startswith("tls")
    overrides = {}
    if tls:
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)
        overrides = dict(tls_listen="127.0.0.1:0", tls_cert=str(cert), tls_key=str(key))

    async def scenario():
        async with running_server(**overrides) as server:
            peer_port = free_udp_port()
            peer = await asyncio.create_subprocess_exec(
                "turnutils_peer", "-p", str(peer_port), "-L", "127.0.0.1",
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                await asyncio.sleep(0.3)
                port = (server.tls_address if tls else server.tcp_address)[1]
                args = ["turnutils_uclient", "-c", "-n", str(MESSAGES), "-m", str(CLIENTS), "-l", "100",
                        "-z", "5", "-e", "127.0.0.1", "-r", str(peer_port), "-p", str(port)]
                if not mode.startswith("udp"):
                    args.append("-t")
                if tls:
                    args.append("-S")
                if mode in ("tcp-send-indications", "udp-rest"):
                    args.append("-s")
                if mode.endswith("rest"):
                    args += ["-u", "identity-1", "-W", SECRET]
                else:
                    args += ["-u", "alice", "-w", USERS["alice"]]
                output = await tool(*args, "127.0.0.1")
            finally:
                peer.terminate()
                await peer.wait()
            result = parse_uclient(output)
            assert result["sent"] == CLIENTS * MESSAGES, output[-1500:]
            assert result["received"] == result["sent"] and result["lost"] == 0, output[-1500:]
            stats = server.stats()
            assert stats["counters"].get("allocations_created", 0) >= CLIENTS
            assert stats["relay"]["to_peer_packets"] >= CLIENTS * MESSAGES
            assert stats["relay"]["to_client_packets"] >= CLIENTS * MESSAGES
            if mode.endswith("rest"):
                assert stats["counters"].get("auth_failures", 0) == 0
            if not mode.startswith("udp"):  # over UDP an allocation lives until Refresh 0 or expiry
                await asyncio.sleep(0.2)
                assert server.stats()["allocations"] == 0, "uclient's closed connections leave no allocation"
    uvloop.run(scenario())
