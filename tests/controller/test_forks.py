"""Media forks through the controller's REST API: the engine sends, the controller only asks.
A mix fork and an SRTP fork of one participant received over real UDP; who may fork; refused
destinations in the shared error shape; the events; a call's end ends its forks."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import uvloop

from controller.testing import (
    RestParticipant, collect_events, continuous_tone, running_controller,
)
from mixer import _rtp
from mixer.analysis import tone_levels_db
from mixer.codec import MIX_RATE, FrameDecoder
from mixer.rtp.rtcp import is_rtcp
from mixer.rtp.srtp import SrtpContext
from mixer.sdp import generate_crypto, parse, parse_crypto
from mixer.sim.participant import SimulatedParticipant
from tests.mixer.media.test_fork import free_port_pair

ALICE_HZ, BOB_HZ = 520.0, 710.0


class Receiver:
    def __init__(self) -> None:
        self.srtp: SrtpContext | None = None
        self.payloads: list[tuple[int, bytes]] = []
        self.last_at = 0.0

    def datagram_received(self, data: bytes, addr) -> None:
        if is_rtcp(data):
            return
        if self.srtp is not None:
            data = self.srtp.unprotect(data)
            if data is None:
                return
        packet = _rtp.RtpPacket.parse(data)
        self.payloads.append((packet.sequence_number, packet.payload))
        self.last_at = time.monotonic()

    def connection_made(self, transport) -> None:
        pass

    def error_received(self, exc) -> None:
        pass

    def connection_lost(self, exc) -> None:
        pass

    def audio(self) -> np.ndarray:
        decoder = FrameDecoder("opus")
        frames = []
        for _, payload in sorted(self.payloads):
            decoder.decode(payload)
            while (frame := decoder.take_frame()) is not None:
                frames.append(frame.copy())
        return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)


def test_forks_through_the_rest_api(tmp_path):
    async def scenario():
        loop = asyncio.get_running_loop()
        async with running_controller(tmp_path / "data",
                                      engine_settings={"fork_allow_loopback": True}) as c:
            http = c.client
            alice, bob, eve = await c.user("alice"), await c.user("bob"), await c.user("eve")
            call = (await http.post("/v1/calls", json={"invite": ["bob"]}, headers=alice)).json()
            path = f"/v1/calls/{call['id']}"
            events: list = []
            stream = asyncio.create_task(collect_events(http, f"{path}/events", alice, events))
            pa = RestParticipant(SimulatedParticipant("alice", ALICE_HZ, continuous_tone(ALICE_HZ, 5)), alice)
            pb = RestParticipant(SimulatedParticipant("bob", BOB_HZ, continuous_tone(BOB_HZ, 5)), bob)
            for p in (pa, pb):
                assert (await p.join(http, call["id"])).status_code == 201
                p.sim.start()
            mix_port, bob_port = free_port_pair(), free_port_pair()
            mix_receiver, bob_receiver = Receiver(), Receiver()
            transports = [(await loop.create_datagram_endpoint(lambda r=r: r, local_addr=("127.0.0.1", port)))[0]
                          for r, port in ((mix_receiver, mix_port), (bob_receiver, bob_port))]

            mix = await http.post(f"{path}/forks", headers=alice,
                                  json={"source": "mix", "destination": f"127.0.0.1:{mix_port}"})
            assert mix.status_code == 201, mix.text
            assert mix.json()["source"] == "mix" and mix.json()["srtp"] is False
            assert parse(mix.json()["sdp"]).media[0].port == mix_port
            own = await http.post(f"{path}/forks", headers=bob, json={
                "source": pb.id, "destination": f"127.0.0.1:{bob_port}", "srtp": True})
            assert own.status_code == 201, own.text
            key = parse_crypto(parse(own.json()["sdp"]).media[0].attribute("crypto"))
            bob_receiver.srtp = SrtpContext(key.suite, generate_crypto(1).key, key.key)

            # who may fork what, and the errors' shape
            cases = [
                (eve, {"source": "mix", "destination": "127.0.0.1:5004"}, 403, "not_a_member"),
                (alice, {"source": "nobody", "destination": "127.0.0.1:5004"}, 404, "no_such_participant"),
                (alice, {"source": "mix", "destination": "nowhere"}, 422, "bad_destination"),
                (alice, {"source": "mix"}, 422, "validation_failed"),
            ]
            for who, body, status, code in cases:
                answer = await http.post(f"{path}/forks", headers=who, json=body)
                assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), body
                assert set(answer.json()["error"]) == {"code", "message"}
            bot = await http.post(f"{path}/participants", headers=alice,
                                  json={"kind": "bot", "play": "tone:930"})
            not_a_voice = await http.post(f"{path}/forks", headers=alice, json={
                "source": bot.json()["id"], "destination": "127.0.0.1:5004"})
            assert not_a_voice.status_code == 422

            await asyncio.sleep(1.5)
            view = (await http.get(path, headers=alice)).json()
            assert {f["id"] for f in view["forks"]} == {mix.json()["id"], own.json()["id"]}
            assert all(f["packets_out"] > 40 for f in view["forks"])
            removed = await http.delete(f"{path}/forks/{own.json()['id']}", headers=bob)
            assert removed.status_code == 204
            again = await http.delete(f"{path}/forks/{own.json()['id']}", headers=bob)
            assert again.status_code == 404 and again.json()["error"]["code"] == "no_such_fork"
            await asyncio.sleep(0.3)
            assert (await http.delete(path, headers=alice)).status_code == 204
            ended_at = time.monotonic()
            await asyncio.sleep(0.3)
            await asyncio.wait_for(stream, 5)
            for t in transports:
                t.close()
            for p in (pa, pb):
                p.sim.close()
            return mix_receiver, bob_receiver, events, ended_at

    mix_receiver, bob_receiver, events, ended_at = uvloop.run(scenario())
    mixed = tone_levels_db(mix_receiver.audio()[MIX_RATE // 5:], [ALICE_HZ, BOB_HZ, 930.0])
    assert min(mixed.values()) > -30, mixed  # both voices and the bot
    bobs = tone_levels_db(bob_receiver.audio()[MIX_RATE // 5:], [ALICE_HZ, BOB_HZ])
    assert bobs[BOB_HZ] > -25 and bobs[ALICE_HZ] < -50, bobs
    assert mix_receiver.last_at <= ended_at + 0.1  # the call's end ended its fork
    kinds = [e["type"] for e in events]
    assert kinds.count("fork_started") == 2 and "fork_stopped" in kinds


def test_a_fork_to_a_forbidden_destination_is_refused(tmp_path):
    async def scenario():
        async with running_controller(tmp_path / "data") as c:  # the engine's defaults
            alice = await c.user("alice")
            call = (await c.client.post("/v1/calls", headers=alice)).json()
            answers = []
            for destination in ("127.0.0.1:5004", "10.0.0.7:5004", "192.168.0.3:40000",
                                "[::1]:5004", "169.254.169.254:80"):
                answers.append(await c.client.post(f"/v1/calls/{call['id']}/forks", headers=alice,
                                                   json={"source": "mix", "destination": destination}))
            return answers

    answers = uvloop.run(scenario())
    for answer in answers:
        body = answer.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert [(a.status_code, a.json()["error"]["code"]) for a in answers] == [
        (403, "destination_forbidden")] * 3 + [
        (422, "bad_destination"),  # IPv6 to an engine whose media address is IPv4
        (403, "destination_forbidden")]
