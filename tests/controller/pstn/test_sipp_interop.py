"""Interop with sipp (Debian's sip-tester), a SIP peer nobody here wrote: its built-in `uac`
calling into a group call, `uac_pcap` playing the RFC 4733 digit pcaps it ships, `uas` as the
carrier trunk for outbound calls, and scenarios of our own (tests/controller/pstn/sipp/):
CANCEL while ringing, re-INVITE hold and resume, bad requests, a trunk that challenges with
digest auth (sipp's verifyauth checks our MD5 answer)."""
from __future__ import annotations

import asyncio
import shutil
import socket
import sys
from pathlib import Path

import pytest
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from controller.testing import free_port  # noqa: E402
from tests.controller.pstn.test_pstn_service import (  # noqa: E402
    NUMBER, new_call, pstn_controller, wait_for,
)

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).with_name("sipp")
PCAPS = Path("/usr/share/sip-tester")
pytestmark = [pytest.mark.store_independent,   # SIP and media interop: no store involved
              pytest.mark.skipif(SIPP is None, reason="sipp (Debian package sip-tester) is not installed")]


def run(coro):
    return uvloop.run(coro)


MEDIA_BIND_FAILED = "errno = 98"   # sipp could not bind a media port (another process took it)


async def sipp(*args: str, cwd: Path, timeout: float = 30.0) -> tuple[int, str]:
    """Run sipp to completion (no stdin, errors traced); (exit code, its error log). sipp binds
    its media ports (-mp for audio, +2 for video) itself: on a machine shared with other test
    runs one may be taken between our check and its bind, so that failure is retried on new ports
    (before any SIP was sent: sipp binds first)."""
    args = list(args)
    for attempt in range(3):
        error_file = cwd / f"sipp-errors-{free_port()}.log"
        process = await asyncio.create_subprocess_exec(
            SIPP, *args, "-nostdin", "-trace_err", "-error_file", str(error_file),
            "-timeout", f"{int(timeout)}s", "-timeout_error",
            cwd=str(cwd), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout + 10)
        errors = error_file.read_text(errors="replace") if error_file.exists() else ""
        errors += stderr.decode(errors="replace")
        if process.returncode == 0 or MEDIA_BIND_FAILED not in errors or "-mp" not in args:
            break
        args[args.index("-mp") + 1] = str(free_media_port())
    return process.returncode, errors


def free_media_port() -> int:
    """An even port with the next three free too (sipp's audio RTP/RTCP and video RTP/RTCP)."""
    for _ in range(50):
        base = free_port() & ~1
        sockets = []
        try:
            for port in range(base, base + 4):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise OSError("no four free consecutive UDP ports")


def local(port: int | None = None) -> list[str]:
    return ["-i", "127.0.0.1", "-p", str(port or free_port()), "-mi", "127.0.0.1",
            "-mp", str(free_media_port())]


async def number_for_call(c, route: dict | None = None):
    call_id, alice = await new_call(c)
    response = await c.client.post("/v1/numbers", json={"number": NUMBER,
                                                        "route": route or {"call": call_id}},
                                   headers=c.admin)
    assert response.status_code == 201, response.text
    return call_id, alice


def test_sipp_uac_calls_into_a_group_call(tmp_path):
    async def main():
        async with pstn_controller(tmp_path) as c:
            call_id, _ = await number_for_call(c)
            code, errors = await sipp("-sn", "uac", f"127.0.0.1:{c.sip_port}", "-s", NUMBER,
                                      "-m", "5", "-r", "5", "-d", "500", *local(), cwd=tmp_path)
            assert code == 0, errors
            await asyncio.sleep(0.3)
            records = (await c.client.get("/v1/cdrs", headers=c.admin)).json()["records"]
            legs = [r for r in records if r.get("participant_kind") == "pstn"]
            assert len(legs) == 5 and {r["end_reason"] for r in legs} == {"remote_hangup"}
            assert all(r["pstn"]["number"] == NUMBER and r["codec"] == "PCMU" for r in legs)
            assert c.server.pstn.ua.stats()["sessions"] == 0
    run(main())


def test_sipp_uac_pcap_sends_rfc4733_digits(tmp_path):
    async def main():
        (tmp_path / "pcap").symlink_to(PCAPS)
        async with pstn_controller(tmp_path) as c:
            call_id, alice = await number_for_call(c)
            events: list = []
            from controller.testing import collect_events
            reader = asyncio.ensure_future(collect_events(c.client, f"/v1/calls/{call_id}/events", alice, events))
            await asyncio.sleep(0.2)
            code, errors = await sipp("-sn", "uac_pcap", f"127.0.0.1:{c.sip_port}", "-s", NUMBER,
                                      "-m", "1", *local(), cwd=tmp_path, timeout=40)
            assert code == 0, errors
            await wait_for(lambda: asyncio.sleep(0, [e for e in events if e["type"] == "dtmf"]))
            reader.cancel()
            records = (await c.client.get("/v1/cdrs", headers=c.admin)).json()["records"]
        return events, records

    events, records = run(main())
    assert [e["digit"] for e in events if e["type"] == "dtmf"] == ["1"]
    leg = next(r for r in records if r.get("participant_kind") == "pstn")
    # every packet of the pcap's speech (236 of them) arrived as audio
    assert leg["codec"] == "PCMA" and leg["packets_in"] == 236


def test_sipp_cancel_while_ringing_gets_487(tmp_path):
    async def main():
        async with pstn_controller(tmp_path) as c:
            await c.user("bob")
            await number_for_call(c, {"user": "bob"})
            code, errors = await sipp("-sf", str(SCENARIOS / "cancel_uac.xml"),
                                      f"127.0.0.1:{c.sip_port}", "-s", NUMBER, "-m", "1",
                                      *local(), cwd=tmp_path)
            assert code == 0, errors
            await asyncio.sleep(0.3)
            assert c.server.pstn.stats()["ringing"] == 0
    run(main())


def test_sipp_hold_and_resume_by_reinvite(tmp_path):
    async def main():
        async with pstn_controller(tmp_path) as c:
            await number_for_call(c)
            code, errors = await sipp("-sf", str(SCENARIOS / "reinvite_hold.xml"),
                                      f"127.0.0.1:{c.sip_port}", "-s", NUMBER, "-m", "1",
                                      *local(), cwd=tmp_path)
            assert code == 0, errors
            assert c.server.pstn.stats()["held"] == 1
    run(main())


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_bad_requests_get_their_error_codes(tmp_path, transport):
    async def main():
        async with pstn_controller(tmp_path) as c:
            code, errors = await sipp("-sf", str(SCENARIOS / "bad_requests.xml"),
                                      f"127.0.0.1:{c.sip_port}", "-s", NUMBER, "-m", "1",
                                      "-t", transport, *local(), cwd=tmp_path)
            assert code == 0, errors
            stats = c.server.pstn.ua.stats()
            assert stats["malformed_answered"] == 1
    run(main())


def test_sipp_uas_as_the_trunk_for_an_outbound_call(tmp_path):
    async def main():
        trunk_port = free_port()
        async with pstn_controller(tmp_path, sip_trunk=f"127.0.0.1:{trunk_port}",
                                   sip_options_interval_s=0) as c:
            call_id, alice = await new_call(c)
            carrier = asyncio.ensure_future(sipp("-sn", "uas", "-m", "1", *local(trunk_port),
                                                 cwd=tmp_path))
            await asyncio.sleep(0.5)
            r = await c.client.post(f"/v1/calls/{call_id}/participants",
                                    json={"kind": "pstn", "number": "+15550100400"}, headers=alice)
            pid = r.json()["id"]

            async def joined():
                call = (await c.client.get(f"/v1/calls/{call_id}", headers=alice)).json()
                return any(p["id"] == pid and p["state"] == "answered" for p in call["participants"])
            await wait_for(joined)
            await asyncio.sleep(0.3)
            await c.client.delete(f"/v1/calls/{call_id}/participants/{pid}", headers=alice)
            code, errors = await carrier
            assert code == 0, errors
    run(main())


def test_sipp_trunk_challenges_and_checks_our_md5_digest(tmp_path):
    async def main():
        trunk_port = free_port()
        async with pstn_controller(tmp_path, sip_trunk=f"127.0.0.1:{trunk_port}",
                                   sip_trunk_username="voicemix", sip_trunk_password="s3cret",
                                   sip_options_interval_s=0) as c:
            call_id, alice = await new_call(c)
            carrier = asyncio.ensure_future(sipp("-sf", str(SCENARIOS / "trunk_md5_uas.xml"),
                                                 "-m", "1", *local(trunk_port), cwd=tmp_path))
            await asyncio.sleep(0.5)
            r = await c.client.post(f"/v1/calls/{call_id}/participants",
                                    json={"kind": "pstn", "number": "+15550100500"}, headers=alice)
            pid = r.json()["id"]

            async def joined():
                call = (await c.client.get(f"/v1/calls/{call_id}", headers=alice)).json()
                return any(p["id"] == pid and p["state"] == "answered" for p in call["participants"])
            await wait_for(joined)
            await c.client.delete(f"/v1/calls/{call_id}", headers=alice)
            code, errors = await carrier
            assert code == 0, errors
    run(main())


def test_options_keepalive_sees_the_trunk_up_then_down(tmp_path):
    async def main():
        trunk_port = free_port()
        carrier = asyncio.ensure_future(sipp("-sn", "uas", "-m", "1", "-aa", *local(trunk_port),
                                             cwd=tmp_path, timeout=6))
        await asyncio.sleep(0.5)
        async with pstn_controller(tmp_path, sip_trunk=f"127.0.0.1:{trunk_port}",
                                   sip_options_interval_s=0.5) as c:
            await wait_for(lambda: asyncio.sleep(0, c.server.pstn.monitor.state == "up"))
            await carrier   # sipp leaves after its timeout
            await wait_for(lambda: asyncio.sleep(0, c.server.pstn.monitor.state == "down"), timeout=10)
    run(main())


def test_voicemix_serve_takes_a_sipp_call_into_a_group_call(tmp_path):
    """What a fresh clone does: `voicemix serve`, an identity, a call and a number through the
    REST API with the admin key it printed, then sipp calls the number."""
    import os
    import re
    import signal
    import ssl
    import subprocess

    import httpx

    sip_port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
           "VOICEMIX_SIP_LISTEN": f"127.0.0.1:{sip_port}", "VOICEMIX_TURN_ENABLED": "false"}
    process = subprocess.Popen([sys.executable, "-u", "-m", "mixer.cli", "serve", "--listen", "127.0.0.1:0",
                                "--data-dir", str(tmp_path)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    lines = []
    try:
        url = admin = None
        while url is None:
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
            if match := re.search(r"generated admin key (\S+)", line):
                admin = match.group(1)
            if match := re.search(r"controller started: (https://127\.0\.0\.1:\d+)", line):
                url = match.group(1)
        assert f"SIP on udp:127.0.0.1:{sip_port}" in "".join(lines)
        context = ssl.create_default_context(cafile=str(tmp_path / "controller-cert.pem"))
        with httpx.Client(base_url=url, verify=context, timeout=10) as http:
            root = {"Authorization": f"Bearer {admin}"}
            http.post("/v1/identities", json={"id": "owner"}, headers=root)
            token = http.post("/v1/identities/owner/tokens", json={"scopes": ["voip"]}, headers=root).json()["token"]
            user = {"Authorization": f"Bearer {token}"}
            call = http.post("/v1/calls", json={"mode": "mcu"}, headers=user).json()
            assert http.post("/v1/numbers", json={"number": NUMBER, "route": {"call": call["id"]}},
                             headers=root).status_code == 201
            code, errors = uvloop.run(sipp("-sn", "uac", f"127.0.0.1:{sip_port}", "-s", NUMBER,
                                           "-m", "2", "-d", "1000", *local(), cwd=tmp_path))
            assert code == 0, errors
            records = http.get("/v1/cdrs", headers=root).json()["records"]
            assert len([r for r in records if r.get("participant_kind") == "pstn"]) == 2
    finally:
        process.send_signal(signal.SIGINT)   # SIGTERM would drain: wait for the call to end
        rest, _ = process.communicate(timeout=20)
    assert process.returncode == 0, "".join(lines) + rest
