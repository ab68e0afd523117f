"""Transaction timers on the wire (RFC 3261 section 17, RFC 6026): a raw UDP or TCP peer counts
what the stack sends and when, with T1 shrunk to 20 ms (T2 80 ms, T4 100 ms)."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import uvloop

from controller.sip.errors import SipStatusError, SipTimeout
from controller.sip.message import SipResponse

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.controller.sip.sippeer import FAST, SDP, RawPeer, ScriptedApp, request_text, start_ua  # noqa: E402


pytestmark = pytest.mark.store_independent   # the SIP stack and its peers: no store involved


def run(coro):
    return uvloop.run(coro)


def response_to(request, status: int, to_tag: str = "peer-tag") -> bytes:
    lines = [f"SIP/2.0 {status} {SipResponse(status).reason}"]
    for via in request.headers.values("Via"):
        lines.append(f"Via: {via}")
    to = request.headers.get("To") + (f";tag={to_tag}" if status > 100 else "")
    lines += [f"From: {request.headers.get('From')}", f"To: {to}",
              f"Call-ID: {request.call_id}", f"CSeq: {request.headers.get('CSeq')}",
              "Contact: <sip:peer@127.0.0.1>", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def test_timer_a_doubles_and_timer_b_gives_up():
    async def main():
        peer = await RawPeer.open()
        ua = await start_ua()
        loop = asyncio.get_running_loop()
        started = loop.time()
        session = ua.invite(f"sip:x@127.0.0.1:{peer.port}", from_="<sip:a@127.0.0.1>", sdp=SDP.encode())
        with pytest.raises(SipTimeout):
            await asyncio.wait_for(session.answered, 5)
        gave_up = loop.time() - started
        invites = peer.of(lambda m: getattr(m, "method", None) == "INVITE")
        # sent at 0, T1, 3T1, 7T1, 15T1, 31T1, 63T1; timer B fires at 64 T1. Each retransmission
        # is timed from the one before, so on a loaded machine their lateness adds up and the
        # last one may lose the race with timer B: 6 or 7, never more
        assert 6 <= len(invites) <= 7
        assert gave_up >= 64 * FAST.t1 - 0.005
        gaps = [b - a for a, b in zip(peer.times, peer.times[1:])]
        for gap, expected in zip(gaps, [1, 2, 4, 8, 16, 32]):
            # a timer fires late under load, never early: the interval doubles (17.1.1.2)
            assert expected * FAST.t1 - 0.005 <= gap <= expected * FAST.t1 + 0.3, gaps
        assert session.end_reason == "timeout" and session.end_status == 408
        await ua.stop()
        peer.close()
    run(main())


def test_provisional_stops_retransmission_and_final_error_is_acked_each_time():
    async def main():
        peer = await RawPeer.open()
        ua = await start_ua()
        session = ua.invite(f"sip:x@127.0.0.1:{peer.port}", from_="<sip:a@127.0.0.1>", sdp=SDP.encode())
        invite = await peer.wait_for(lambda m: getattr(m, "method", None) == "INVITE")
        peer.send(response_to(invite, 180), ua.port)
        await asyncio.sleep(10 * FAST.t1)
        assert len(peer.of(lambda m: getattr(m, "method", None) == "INVITE")) == 1
        peer.send(response_to(invite, 486), ua.port)
        with pytest.raises(SipStatusError) as caught:
            await asyncio.wait_for(session.answered, 2)
        assert caught.value.status == 486
        ack = await peer.wait_for(lambda m: getattr(m, "method", None) == "ACK")
        # 17.1.1.3: same branch as the INVITE, To with the response's tag
        assert ack.top_via.branch == invite.top_via.branch and ack.to.tag == "peer-tag"
        assert ack.cseq.number == invite.cseq.number
        peer.send(response_to(invite, 486), ua.port)   # our ACK "was lost": it comes again
        await asyncio.sleep(3 * FAST.t1)
        assert len(peer.of(lambda m: getattr(m, "method", None) == "ACK")) == 2
        assert session.end_reason == "rejected" and session.end_status == 486
        await ua.stop()
        peer.close()
    run(main())


def test_timer_e_caps_at_t2_and_timer_f_times_out():
    async def main():
        peer = await RawPeer.open()
        ua = await start_ua()
        with pytest.raises(SipTimeout):
            await ua.request("OPTIONS", f"sip:127.0.0.1:{peer.port}")
        gaps = [b - a for a, b in zip(peer.times, peer.times[1:])]
        assert gaps[0] == pytest.approx(FAST.t1, abs=0.015)
        assert gaps[1] == pytest.approx(2 * FAST.t1, abs=0.015)
        assert all(g == pytest.approx(FAST.t2, abs=0.02) for g in gaps[3:])
        # the last copy goes out within one T2 before timer F (64*T1) ends the transaction
        assert FAST.b - FAST.t2 - 0.03 < peer.times[-1] - peer.times[0] < FAST.b + 0.01
        await ua.stop()
        peer.close()
    run(main())


def test_server_invite_timer_g_retransmits_until_ack_or_timer_h():
    async def main():
        peer = await RawPeer.open()
        ua = await start_ua(ScriptedApp(lambda s: s.reject(486)))
        peer.send(request_text("INVITE", peer.port, body=SDP), ua.port)
        await asyncio.sleep(FAST.b + 0.1)
        finals = peer.of(lambda m: getattr(m, "status", 0) == 486)
        # G: T1, 2T1, then T2 (80 ms) until H at 64*T1 (1.28 s): about 17 copies
        assert 12 <= len(finals) <= 19
        assert ua.layer.stats()["server_live"] == 0        # H ended it
        # with the ACK, the retransmissions stop
        peer.received.clear()
        text = request_text("INVITE", peer.port, body=SDP, branch="z9hG4bKack1", call_id="ack1@peer")
        peer.send(text, ua.port)
        first = await peer.wait_for(lambda m: getattr(m, "status", 0) == 486)
        ack = request_text("ACK", peer.port, branch="z9hG4bKack1", call_id="ack1@peer",
                           to_tag=first.to.tag)
        peer.send(ack, ua.port)
        await asyncio.sleep(10 * FAST.t1)
        assert len(peer.of(lambda m: getattr(m, "status", 0) == 486)) <= 2
        await ua.stop()
        peer.close()
    run(main())


def test_retransmitted_requests_are_absorbed():
    async def main():
        peer = await RawPeer.open()
        app = ScriptedApp(lambda s: s.ring())
        ua = await start_ua(app)
        text = request_text("INVITE", peer.port, body=SDP, branch="z9hG4bKdup")
        peer.send(text, ua.port)
        await peer.wait_for(lambda m: getattr(m, "status", 0) == 180)
        peer.send(text, ua.port)   # the same INVITE again: the last provisional comes back
        await asyncio.sleep(5 * FAST.t1)
        assert len(app.sessions) == 1
        assert len(peer.of(lambda m: getattr(m, "status", 0) == 180)) == 2
        options = request_text("OPTIONS", peer.port, branch="z9hG4bKopt")
        peer.send(options, ua.port)
        peer.send(options, ua.port)
        await asyncio.sleep(5 * FAST.t1)
        assert len(peer.of(lambda m: getattr(m, "status", 0) == 200)) == 2   # same answer twice
        assert ua.layer.stats()["retransmitted_requests_absorbed"] == 2
        await ua.stop()
        peer.close()
    run(main())


def test_no_retransmissions_over_tcp():
    async def main():
        received = []
        arrived = asyncio.Event()

        async def serve(reader, writer):
            while data := await reader.read(65536):
                received.append(data)
                arrived.set()
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ua = await start_ua()
        session = ua.invite(f"sip:x@127.0.0.1:{port};transport=tcp", from_="<sip:a@127.0.0.1>",
                            sdp=SDP.encode())
        with pytest.raises(SipTimeout):
            await asyncio.wait_for(session.answered, 3)
        assert b"".join(received).count(b"INVITE sip:") == 1
        assert b"SIP/2.0/TCP" in received[0]
        await ua.stop()
        server.close()
    run(main())
