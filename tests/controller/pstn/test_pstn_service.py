"""The PSTN side end to end on loopback: the REST API for numbers and screening, inbound calls
into a call (audio both ways with an Opus VoIP participant), to a user, refused (403, 404,
screening), outbound calls through a trunk (digest auth, busy, no answer, rejected), hold and
resume by re-INVITE, BYE from either side, INFO digits. The carrier is a SIP UA on loopback; the
media are real RTP streams (G.711 on the carrier side, Opus on the VoIP side)."""
from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from controller.sip import SipStatusError  # noqa: E402
from controller.sip.auth import DigestVerifier  # noqa: E402
from controller.testing import (  # noqa: E402
    RestParticipant, collect_events, continuous_tone, redis_server, running_controller,
)
from mixer.engine.client import HttpEngine  # noqa: E402
from mixer.engine.control import start_control_api  # noqa: E402
from mixer.engine.engine import Engine  # noqa: E402
from mixer.settings import EngineSettings  # noqa: E402
from mixer.analysis import tone_levels_db  # noqa: E402
from mixer.sim.participant import SimulatedParticipant  # noqa: E402
from tests.controller.pstn.kit import Carrier, engine_address, tone8k  # noqa: E402
from tests.mixer.engine.test_metrics import samples, value  # noqa: E402

NUMBER = "+15550100100"


def run(coro):
    return uvloop.run(coro)


@contextlib.asynccontextmanager
async def pstn_controller(tmp_path, carrier: Carrier | None = None, **settings):
    settings.setdefault("sip_listen", "127.0.0.1:0")
    settings.setdefault("sip_t1_ms", 50)
    settings.setdefault("monitor_interval_s", 0.1)
    if carrier is not None:
        settings.setdefault("sip_trunk", f"127.0.0.1:{carrier.port}")
        settings.setdefault("sip_options_interval_s", 0)
    async with running_controller(tmp_path, **settings) as c:
        c.sip_port = c.server.pstn.ua.port
        yield c


async def new_call(c, owner: str = "alice"):
    headers = await c.user(owner, ("voip", "pstn"))
    response = await c.client.post("/v1/calls", json={"mode": "mcu"}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["id"], headers


async def wait_for(predicate, timeout: float = 5.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError("condition not met in time")


def test_numbers_api(tmp_path):
    async def main():
        async with pstn_controller(tmp_path) as c:
            call_id, user = await new_call(c)
            post = lambda body, h=c.admin: c.client.post("/v1/numbers", json=body, headers=h)  # noqa: E731
            r = await post({"number": NUMBER, "route": {"call": call_id}})
            assert r.status_code == 201 and r.json()["route"] == {"call": call_id}
            assert (await post({"number": NUMBER, "route": {"call": call_id}})).status_code == 409
            assert (await post({"number": NUMBER, "route": {"call": call_id}}, user)).status_code == 403
            bad = await post({"number": "555-0100", "route": {"call": call_id}})
            assert bad.status_code == 422 and bad.json()["error"]["code"] == "bad_number"
            bad = await post({"number": "+15550100101", "route": {"call": "nope"}})
            assert bad.status_code == 422 and "route.call" in bad.json()["error"]["message"]
            bad = await post({"number": "+15550100101", "route": {"user": "nobody"}})
            assert bad.status_code == 422
            tree = {"start": "menu", "nodes": {
                "menu": {"gather": {"digits": 1}, "branches": {"1": "bye"}, "default": "menu",
                         "no_input": "loop"},
                "loop": {"play": {"tone": 440, "ms": 200}, "next": "menu"},
                "bye": {"hangup": {}}}}
            bad = await post({"number": "+15550100102", "route": {"ivr": tree}})
            assert bad.status_code == 422
            assert bad.json()["error"]["message"].startswith("route.ivr.menu")   # loop without input
            tree["nodes"]["menu"].pop("no_input")
            ok = await post({"number": "+15550100102", "route": {"ivr": tree}})
            assert ok.status_code == 422 and "route.ivr.loop" in ok.json()["error"]["message"]  # unreachable
            tree["nodes"]["menu"]["branches"]["2"] = "loop"
            ok = await post({"number": "+15550100102", "route": {"ivr": tree}})
            assert ok.status_code == 201, ok.text
            listed = (await c.client.get("/v1/numbers", headers=c.admin)).json()["numbers"]
            assert [n["number"] for n in listed] == [NUMBER, "+15550100102"]
            got = await c.client.get(f"/v1/numbers/{NUMBER}", headers=c.admin)
            assert got.json()["route"] == {"call": call_id}
            assert (await c.client.delete(f"/v1/numbers/{NUMBER}", headers=c.admin)).status_code == 204
            assert (await c.client.delete(f"/v1/numbers/{NUMBER}", headers=c.admin)).status_code == 404
    run(main())


def test_inbound_call_joins_a_group_call_and_everyone_hears_everyone(tmp_path):
    async def main():
        carrier = await Carrier().start()
        async with pstn_controller(tmp_path) as c:
            call_id, alice = await new_call(c)
            events: list = []
            reader = asyncio.ensure_future(collect_events(c.client, f"/v1/calls/{call_id}/events", alice, events))
            await c.client.post("/v1/numbers", json={"number": NUMBER, "route": {"call": call_id}},
                                headers=c.admin)
            voip = RestParticipant(SimulatedParticipant("alice", 520.0, continuous_tone(520.0, 6.0)), alice)
            assert (await voip.join(c.client, call_id)).status_code == 201
            session, phone = await carrier.call(c.sip_port, NUMBER)
            answer = await asyncio.wait_for(session.answered, 5)
            phone.remote = engine_address(answer)
            voip.sim.start(asyncio.get_running_loop().time() + 0.05)
            phone.play(tone8k(1170, 3.0))
            await phone.played()
            await asyncio.sleep(0.3)
            call = (await c.client.get(f"/v1/calls/{call_id}", headers=alice)).json()
            pstn = next(p for p in call["participants"] if p["kind"] == "pstn")
            assert pstn["pstn"]["caller"] == "+15550100199" and pstn["pstn"]["number"] == NUMBER
            assert pstn["pstn"]["direction"] == "inbound" and pstn["codec"] == "PCMU"
            assert pstn["pstn"]["screening"]["decision"] == "accept"
            await session.bye()   # the carrier hangs up: only that leg ends
            await asyncio.sleep(0.5)
            call = (await c.client.get(f"/v1/calls/{call_id}", headers=alice)).json()
            assert [p["kind"] for p in call["participants"]] == ["voip"]
            heard, _ = voip.sim.heard_audio()
            voip.sim.close()
            cdrs = (await c.client.get("/v1/cdrs", headers=c.admin)).json()["records"]
            reader.cancel()
        await carrier.stop()
        return heard, phone.audio(), cdrs, events

    heard, phone_heard, cdrs, events = run(main())
    assert tone_levels_db(heard[24000:120000], [1170.0])[1170.0] > -30       # VoIP hears the phone
    assert tone_levels_db(phone_heard[4000:16000], [520.0], rate=8000)[520.0] > -30   # and back
    leg = next(r for r in cdrs if r.get("participant_kind") == "pstn")
    assert leg["end_reason"] == "remote_hangup" and leg["pstn"]["caller"] == "+15550100199"
    assert leg["packets_in"] > 100
    assert any(e["type"] == "participant_left" and e.get("reason") == "remote_hangup" for e in events)


def test_inbound_refusals(tmp_path):
    async def main():
        carrier = await Carrier().start()
        async with pstn_controller(tmp_path, sip_trunk_addresses=["10.9.9.9/32"]) as c:
            session, _ = await carrier.call(c.sip_port, NUMBER)
            with pytest.raises(SipStatusError) as caught:
                await asyncio.wait_for(session.answered, 5)
            assert caught.value.status == 403   # not a trunk address
        async with pstn_controller(tmp_path / "b") as c:
            session, _ = await carrier.call(c.sip_port, "+15559999999")
            with pytest.raises(SipStatusError) as caught:
                await asyncio.wait_for(session.answered, 5)
            assert caught.value.status == 404   # not one of our numbers
            assert c.server.pstn.stats()["unknown_number"] == 1
            scraped = samples((await c.client.get("/metrics", headers=c.admin)).text)
            responses = "voicemix_controller_sip_responses_total"
            assert value(scraped, responses, code="404", direction="sent") == 1
            assert value(scraped, responses, code="200", direction="sent") == 0
            assert value(scraped, "voicemix_controller_sip_requests_total",
                         method="INVITE", direction="received") == 1
            assert value(scraped, "voicemix_controller_pstn_calls_total", outcome="unknown_number") == 1
            assert value(scraped, "voicemix_controller_pstn_calls_total", outcome="inbound") == 1
        await carrier.stop()
    run(main())


def test_screening_block_list_caller_rate_and_reputation(tmp_path):
    async def main():
        carrier = await Carrier().start()
        async with pstn_controller(tmp_path, pstn_caller_rate_per_minute=2,
                                   pstn_reputation_threshold=40) as c:
            call_id, _ = await new_call(c)
            await c.client.post("/v1/numbers", json={"number": NUMBER, "route": {"call": call_id}},
                                headers=c.admin)
            r = await c.client.post("/v1/screening/block", json={"pattern": "+1900*", "reason": "premium"},
                                    headers=c.admin)
            assert r.status_code == 201
            bad = await c.client.post("/v1/screening/block", json={"pattern": "1900"}, headers=c.admin)
            assert bad.status_code == 422
            session, _ = await carrier.call(c.sip_port, NUMBER, caller="+19005550000")
            with pytest.raises(SipStatusError) as caught:
                await asyncio.wait_for(session.answered, 5)
            assert caught.value.status == 603
            # the caller rate: two calls a minute, the third is declined
            statuses = []
            for _ in range(3):
                session, _ = await carrier.call(c.sip_port, NUMBER, caller="+15550100777")
                try:
                    await asyncio.wait_for(session.answered, 5)
                    statuses.append(200)
                    await session.bye()
                except SipStatusError as exc:
                    statuses.append(exc.status)
            assert statuses == [200, 200, 603]
            # reputation: a caller who made many short calls to many numbers is declined
            store = c.server.pstn.pstn_store
            now = time.time()
            for k in range(8):
                await store.record_call("inbound", "+15550100888", f"+1555020{k:04d}", "127.0.0.1",
                                        now - 600 + k, 3.0, 12, "accept", "remote_hangup", None)
            session, _ = await carrier.call(c.sip_port, NUMBER, caller="+15550100888")
            with pytest.raises(SipStatusError) as caught:
                await asyncio.wait_for(session.answered, 5)
            assert caught.value.status == 603
            # unless they are on the allow list
            await c.client.post("/v1/screening/allow", json={"pattern": "+15550100888"}, headers=c.admin)
            session, _ = await carrier.call(c.sip_port, NUMBER, caller="+15550100888")
            await asyncio.wait_for(session.answered, 5)
            await session.bye()
            lists = (await c.client.get("/v1/screening", headers=c.admin)).json()
            assert [e["pattern"] for e in lists["block"]] == ["+1900*"]
            records = (await c.client.get("/v1/cdrs", headers=c.admin)).json()["records"]
            screened = [r for r in records if r["kind"] == "pstn"]
            reasons = sorted(r["screening"]["reason"] for r in screened)
            assert reasons == ["block_list", "caller_rate", "reputation"]
            reputation = next(r for r in screened if r["screening"]["reason"] == "reputation")
            assert reputation["screening"]["score"] >= 40 and reputation["sip_code"] == 603
            assert reputation["screening"]["history"]["short_calls"] == 8
        await carrier.stop()
    run(main())


def test_ring_a_user_who_joins_and_one_who_does_not(tmp_path):
    async def main():
        carrier = await Carrier().start()
        async with pstn_controller(tmp_path, sip_user_ring_timeout_s=1.0) as c:
            bob = await c.user("bob")
            await c.client.post("/v1/numbers", json={"number": NUMBER, "route": {"user": "bob"}},
                                headers=c.admin)
            events: list = []
            reader = asyncio.ensure_future(collect_events(c.client, "/v1/events", bob, events))
            await asyncio.sleep(0.2)
            session, phone = await carrier.call(c.sip_port, NUMBER)
            provisional = []
            session.on_provisional = lambda s, r: provisional.append(r.status)
            incoming = await wait_for(lambda: asyncio.sleep(0, [e for e in events if e["type"] == "incoming_call"]))
            call_id = incoming[0]["call"]
            assert incoming[0]["from"] == "+15550100199" and incoming[0]["to"] == NUMBER
            joiner = RestParticipant(SimulatedParticipant("bob", 350.0, continuous_tone(350.0, 3.0)), bob)
            assert (await joiner.join(c.client, call_id)).status_code == 201
            await asyncio.wait_for(session.answered, 5)
            assert provisional == [180]
            call = (await c.client.get(f"/v1/calls/{call_id}", headers=bob)).json()
            assert sorted(p["kind"] for p in call["participants"]) == ["pstn", "voip"]
            await session.bye()
            joiner.sim.close()
            # nobody joins: 480 after the ring timeout, and the call is gone
            session, _ = await carrier.call(c.sip_port, NUMBER)
            with pytest.raises(SipStatusError) as caught:
                await asyncio.wait_for(session.answered, 5)
            assert caught.value.status == 480
            await asyncio.sleep(0.2)
            ended = [e for e in events if e["type"] == "incoming_call_ended"]
            assert ended and ended[-1]["reason"] == "no_answer"
            # the user ends the ringing call: 603
            session, _ = await carrier.call(c.sip_port, NUMBER)
            incoming = await wait_for(lambda: asyncio.sleep(0, [e for e in events if e["type"] == "incoming_call"][2:]))
            await c.client.delete(f"/v1/calls/{incoming[0]['call']}", headers=bob)
            with pytest.raises(SipStatusError) as caught:
                await asyncio.wait_for(session.answered, 5)
            assert caught.value.status == 603
            reader.cancel()
        await carrier.stop()
    run(main())


def test_cancel_while_ringing_a_user(tmp_path):
    async def main():
        carrier = await Carrier().start()
        async with pstn_controller(tmp_path) as c:
            bob = await c.user("bob")
            await c.client.post("/v1/numbers", json={"number": NUMBER, "route": {"user": "bob"}},
                                headers=c.admin)
            events: list = []
            reader = asyncio.ensure_future(collect_events(c.client, "/v1/events", bob, events))
            await asyncio.sleep(0.2)
            session, _ = await carrier.call(c.sip_port, NUMBER)
            await wait_for(lambda: asyncio.sleep(0, [e for e in events if e["type"] == "incoming_call"]))
            session.cancel()
            with pytest.raises(SipStatusError) as caught:
                await asyncio.wait_for(session.answered, 5)
            assert caught.value.status == 487
            await wait_for(lambda: asyncio.sleep(0, [e for e in events if e["type"] == "incoming_call_ended"]))
            assert events[-1]["reason"] == "cancelled"
            reader.cancel()
        await carrier.stop()
    run(main())


def test_outbound_call_with_digest_auth_ringing_answer_and_hangup(tmp_path):
    async def main():
        carrier = await Carrier().start()
        verifier = DigestVerifier("carrier.test", {"voicemix": "s3cret"}, algorithm="SHA-256")
        answered_phone = {}

        def answer(session):
            header = session.invite.headers.get("Authorization")
            if header is None or verifier.verify(header, "INVITE") != "ok":
                session.reject(401, extra=[("WWW-Authenticate", verifier.challenge())])
                return

            async def later():
                phone = await carrier.phone()
                session.ring()
                await asyncio.sleep(0.2)
                session.accept(phone.answer_to(session.remote_sdp))
                answered_phone["phone"] = phone
                phone.play(tone8k(930, 2.0))
            asyncio.ensure_future(later())
        carrier.answer = answer
        async with pstn_controller(tmp_path, carrier, sip_trunk_username="voicemix",
                                   sip_trunk_password="s3cret", sip_caller_id=NUMBER) as c:
            call_id, alice = await new_call(c)
            events: list = []
            reader = asyncio.ensure_future(collect_events(c.client, f"/v1/calls/{call_id}/events", alice, events))
            await asyncio.sleep(0.2)
            voip = RestParticipant(SimulatedParticipant("alice", 350.0, continuous_tone(350.0, 4.0)), alice)
            await voip.join(c.client, call_id)
            bad = await c.client.post(f"/v1/calls/{call_id}/participants",
                                      json={"kind": "pstn", "number": "12345"}, headers=alice)
            assert bad.status_code == 422
            r = await c.client.post(f"/v1/calls/{call_id}/participants",
                                    json={"kind": "pstn", "number": "+15550100200"}, headers=alice)
            assert r.status_code == 201 and r.json()["state"] == "dialing"
            pid = r.json()["id"]
            await wait_for(lambda: asyncio.sleep(0, any(e["type"] == "participant_joined"
                                                        and e["participant"]["id"] == pid for e in events)))
            voip.sim.start(asyncio.get_running_loop().time())
            invite = carrier.incoming[-1].invite
            assert invite.uri.user == "+15550100200" and invite.uri.params.get("user") == "phone"
            assert invite.headers.get("P-Asserted-Identity").startswith(f"<sip:{NUMBER}@")
            assert "algorithm=SHA-256" in invite.headers.get("Authorization")
            await asyncio.sleep(1.5)
            heard, _ = voip.sim.heard_audio()
            assert (await c.client.delete(f"/v1/calls/{call_id}/participants/{pid}", headers=alice)).status_code == 204
            await asyncio.wait_for(carrier.incoming[-1].ended, 3)
            assert carrier.incoming[-1].end_reason == "remote_bye"
            types = [e["type"] for e in events if e.get("participant_id") == pid or
                     (e.get("participant") or {}).get("id") == pid]
            voip.sim.close()
            reader.cancel()
            cdrs = (await c.client.get("/v1/cdrs", headers=c.admin)).json()["records"]
            scraped = samples((await c.client.get("/metrics", headers=c.admin)).text)
        phone = answered_phone["phone"]
        await carrier.stop()
        return heard, phone.audio(), types, cdrs, pid, scraped

    heard, phone_heard, types, cdrs, pid, scraped = run(main())
    # the trunk's answers by code, as the controller's metrics count them (each once)
    responses = "voicemix_controller_sip_responses_total"
    assert value(scraped, responses, code="401", direction="received") == 1
    assert value(scraped, responses, code="180", direction="received") == 1
    assert value(scraped, responses, code="200", direction="received") == 2   # INVITE, BYE
    requests = "voicemix_controller_sip_requests_total"
    assert value(scraped, requests, method="INVITE", direction="sent") == 2   # then with credentials
    # the 200's ACK (a 401's ACK is part of its INVITE transaction, RFC 3261 17.1.1.3: not counted)
    assert value(scraped, requests, method="ACK", direction="sent") == 1
    assert value(scraped, requests, method="BYE", direction="sent") == 1
    assert value(scraped, "voicemix_controller_pstn_calls_total", outcome="answered_outbound") == 1
    assert types[:3] == ["participant_dialing", "participant_ringing", "participant_joined"]
    assert tone_levels_db(heard[-48000:], [930.0])[930.0] > -30
    assert tone_levels_db(phone_heard[-8000:], [350.0], rate=8000)[350.0] > -30
    leg = next(r for r in cdrs if r.get("participant_id") == pid)
    assert leg["pstn"]["direction"] == "outbound" and leg["end_reason"] == "removed"


@pytest.mark.parametrize("status, reason", [(486, "busy"), (603, "rejected"), (None, "no_answer")])
def test_outbound_failures_leave_with_their_reason(tmp_path, status, reason):
    async def main():
        carrier = await Carrier().start()
        carrier.answer = (lambda s: s.reject(status)) if status else (lambda s: s.ring())
        async with pstn_controller(tmp_path, carrier, sip_ring_timeout_s=1.0) as c:
            call_id, alice = await new_call(c)
            events: list = []
            reader = asyncio.ensure_future(collect_events(c.client, f"/v1/calls/{call_id}/events", alice, events))
            await asyncio.sleep(0.2)   # subscribed before anything happens
            r = await c.client.post(f"/v1/calls/{call_id}/participants",
                                    json={"kind": "pstn", "number": "+15550100300"}, headers=alice)
            pid = r.json()["id"]
            left = await wait_for(lambda: asyncio.sleep(0, [e for e in events if e["type"] == "participant_left"]))
            reader.cancel()
            cdrs = (await c.client.get("/v1/cdrs", headers=c.admin)).json()["records"]
            if status is None:
                assert carrier.incoming[-1].end_reason == "cancelled"   # we sent CANCEL
        await carrier.stop()
        return left[0], next(r for r in cdrs if r.get("participant_id") == pid)

    left, record = run(main())
    assert left["reason"] == reason and left["sip_code"] == (status or 487)
    assert record["end_reason"] == reason and record["pstn"]["sip_code"] == (status or 487)


def test_hold_and_resume_from_the_carrier_and_info_digits(tmp_path):
    async def main():
        carrier = await Carrier().start()
        async with pstn_controller(tmp_path) as c:
            call_id, alice = await new_call(c)
            await c.client.post("/v1/numbers", json={"number": NUMBER, "route": {"call": call_id}},
                                headers=c.admin)
            events: list = []
            reader = asyncio.ensure_future(collect_events(c.client, f"/v1/calls/{call_id}/events", alice, events))
            session, phone = await carrier.call(c.sip_port, NUMBER)
            await asyncio.wait_for(session.answered, 5)
            held = await session.reinvite(phone.sdp("sendonly", version=2))
            assert b"a=recvonly" in held
            call = (await c.client.get(f"/v1/calls/{call_id}", headers=alice)).json()
            pstn = call["participants"][0]
            assert pstn["held"] is True and pstn["stats"]["muted"] is True
            resumed = await session.reinvite(phone.sdp("sendrecv", version=3))
            assert b"a=sendrecv" in resumed
            call = (await c.client.get(f"/v1/calls/{call_id}", headers=alice)).json()
            assert call["participants"][0]["held"] is False and call["participants"][0]["stats"]["muted"] is False
            request = session.dialog.request("INFO", b"Signal=5\r\nDuration=160\r\n", "application/dtmf-relay")
            flow = await session._dialog_flow(session.dialog)
            response = await carrier.ua.send_request(request, flow).final
            assert response.status == 200
            await wait_for(lambda: asyncio.sleep(0, [e for e in events if e["type"] == "dtmf"]))
            await session.bye()
            reader.cancel()
        await carrier.stop()
        return events

    events = run(main())
    holds = [e["held"] for e in events if e["type"] == "participant_updated" and "held" in e]
    assert holds == [True, False]
    digit = next(e for e in events if e["type"] == "dtmf")
    assert digit["digit"] == "5" and digit["source"] == "sip_info"


def test_ending_the_call_hangs_up_the_phone(tmp_path):
    async def main():
        carrier = await Carrier().start()
        async with pstn_controller(tmp_path) as c:
            call_id, alice = await new_call(c)
            await c.client.post("/v1/numbers", json={"number": NUMBER, "route": {"call": call_id}},
                                headers=c.admin)
            session, _ = await carrier.call(c.sip_port, NUMBER, transport="tcp")
            await asyncio.wait_for(session.answered, 5)
            assert (await c.client.delete(f"/v1/calls/{call_id}", headers=alice)).status_code == 204
            await asyncio.wait_for(session.ended, 3)
            assert session.end_reason == "remote_bye"
        await carrier.stop()
    run(main())


def test_an_invite_flood_and_garbage_leave_a_call_in_progress_undisturbed(tmp_path):
    """While one address floods INVITEs (and garbage), an established phone call goes on: its
    audio keeps reaching the VoIP user without a gap, the flood gets 503s, nothing crashes."""
    async def main():
        carrier = await Carrier().start()
        async with pstn_controller(tmp_path, sip_invite_rate=5) as c:
            call_id, alice = await new_call(c)
            await c.client.post("/v1/numbers", json={"number": NUMBER, "route": {"call": call_id}},
                                headers=c.admin)
            voip = RestParticipant(SimulatedParticipant("alice", 520.0, continuous_tone(520.0, 6.0)), alice)
            await voip.join(c.client, call_id)
            session, phone = await carrier.call(c.sip_port, NUMBER)
            phone.remote = engine_address(await asyncio.wait_for(session.answered, 5))
            voip.sim.start(asyncio.get_running_loop().time())
            phone.play(tone8k(1170, 5.0))
            flooder = await Carrier().start()
            await asyncio.sleep(1.0)
            flood = [(await flooder.call(c.sip_port, NUMBER))[0] for _ in range(100)]
            for junk in (b"\x00" * 900, b"INVITE sip:x SIP/2.0\r\n\r\n", b"SIP/2.0 200 OK\r\n\r\n" * 3):
                flooder.ua.transports["UDP"].send(junk, ("127.0.0.1", c.sip_port))
            await asyncio.sleep(2.0)
            statuses = [s.end_status for s in flood]
            await phone.played()
            heard, _ = voip.sim.heard_audio()
            stats = c.server.pstn.stats()["sip"]
            voip.sim.close()
            await flooder.stop()
            await session.bye()
        await carrier.stop()
        return heard, statuses, stats

    heard, statuses, stats = run(main())
    assert statuses.count(503) >= 80   # the flood met its budget (a few got through, or still wait)
    assert stats["task_errors"] == 0 and stats["handler_errors"] == 0
    # the phone's tone reached the VoIP user in every 100 ms from before the flood to its end
    blocks = heard[48000 // 2: 48000 * 4].astype(np.float64).reshape(-1, 4800)
    levels = [tone_levels_db(block, [1170.0])[1170.0] for block in blocks]
    assert min(levels) > -40, levels


@pytest.fixture(scope="module")
def redis_url():
    with redis_server() as url:
        if url is None:
            pytest.skip("redis-server is not installed (Debian package redis-server)")
        yield url


def test_a_phone_held_by_one_controller_of_two(tmp_path, redis_url):
    """Two controllers share calls through Redis; a phone's SIP dialog lives in the one that
    answered it. Removed through the other, the holder hangs it up (its monitor sees it gone);
    the holder dead, the adopting controller removes the phone (`controller_failed`)."""
    async def main():
        engine = Engine(EngineSettings(data_dir=tmp_path / "engine"))
        engine.start()
        runner, port = await start_control_api(engine)
        url = f"http://127.0.0.1:{port}"
        carrier = await Carrier().start()
        shared = tmp_path / "shared"
        try:
            async with pstn_controller(shared, engines=[HttpEngine(url)], redis_url=redis_url) as a, \
                    pstn_controller(shared, engines=[HttpEngine(url)], redis_url=redis_url) as b:
                call_id, alice = await new_call(a)
                await a.client.post("/v1/numbers", json={"number": NUMBER, "route": {"call": call_id}},
                                    headers=a.admin)
                events: list = []
                reader = asyncio.ensure_future(collect_events(b.client, f"/v1/calls/{call_id}/events",
                                                              alice, events))
                path = f"/v1/calls/{call_id}/participants"
                first, _ = await carrier.call(a.sip_port, NUMBER)
                await asyncio.wait_for(first.answered, 5)
                pid = (await b.client.get(f"/v1/calls/{call_id}", headers=alice)).json()["participants"][0]["id"]
                assert (await b.client.delete(f"{path}/{pid}", headers=alice)).status_code == 204
                await asyncio.wait_for(first.ended, 3)   # A's monitor hung up the dialog it holds
                assert first.end_reason == "remote_bye"

                second, _ = await carrier.call(a.sip_port, NUMBER)
                await asyncio.wait_for(second.answered, 5)
                pid = await wait_for(lambda: _pstn_participant(b, call_id, alice))
                calls = a.server.calls   # A dies: no lease, no monitor (its SIP stack says nothing)
                calls._supervisor.cancel()
                for task in calls._monitors.values():
                    task.cancel()
                await calls.registry.drop_heartbeat(calls.instance)
                assert call_id in await b.server.calls.adopt_orphans()
                await wait_for(lambda: asyncio.sleep(0, any(
                    e["type"] == "participant_left" and e["participant_id"] == pid for e in events)))
                reader.cancel()
                cdrs = (await b.client.get("/v1/cdrs", headers=b.admin)).json()["records"]
                calls._local.clear()   # the dead controller's dialog is gone with it
        finally:
            await carrier.stop()
            await runner.cleanup()
            engine.stop()
        return events, cdrs, pid

    events, cdrs, pid = run(main())
    left = [e for e in events if e["type"] == "participant_left"]
    assert [e["reason"] for e in left] == ["removed", "controller_failed"]
    assert next(r for r in cdrs if r.get("participant_id") == pid)["end_reason"] == "controller_failed"


async def _pstn_participant(c, call_id: str, headers: dict) -> str | None:
    call = (await c.client.get(f"/v1/calls/{call_id}", headers=headers)).json()
    return next((p["id"] for p in call["participants"] if p["kind"] == "pstn"), None)
