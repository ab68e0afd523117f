"""Legs the engine offers (calls it places through a SIP trunk), re-offers (hold/resume), keys
sent to a leg (RFC 4733 and in-band), keys heard in-band, DTMF bridging between two legs, and
moving a leg between conferences. The far end is a raw RTP socket playing a G.711 phone, so
every check is what went over the wire."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
import uvloop

from mixer.engine.client import HttpEngine
from mixer import _g711, _rtp
from mixer._dtmf_detect import DtmfDetector, dtmf_tone
from mixer.analysis import tone_levels_db
from mixer.engine.control import start_control_api
from mixer.engine.engine import Engine, EngineError
from mixer.rtp.dtmf import TelephoneEvent
from mixer.sdp import parse
from mixer.sim.call import join
from mixer.sim.participant import SimulatedParticipant


def run(coro):
    return uvloop.run(coro)


class Phone(asyncio.DatagramProtocol):
    """A G.711 phone's RTP side: sends a tone (or DTMF tones) in `ptime` packets, keeps what comes."""

    def __init__(self, codec: str = "PCMU", ptime: int = 20) -> None:
        self.codec, self.ptime = codec, ptime
        self.packets: list[_rtp.RtpPacket] = []
        self.transport = None
        self.port = 0
        self.remote = None

    @classmethod
    async def open(cls, **kw) -> Phone:
        phone = cls(**kw)
        loop = asyncio.get_running_loop()
        phone.transport, _ = await loop.create_datagram_endpoint(lambda: phone, local_addr=("127.0.0.1", 0))
        phone.port = phone.transport.get_extra_info("sockname")[1]
        return phone

    def datagram_received(self, data, addr):
        if len(data) >= 12 and not (200 <= data[1] <= 206):   # RTP, not RTCP
            try:
                self.packets.append(_rtp.RtpPacket.parse(data))
            except _rtp.RtpError:
                pass

    def greet(self, engine_sdp: str) -> None:
        """Send one packet of silence to the engine's leg, as a phone's media starts: the engine
        sends media only where media came from (docs/security.md)."""
        pt = 0 if self.codec == "PCMU" else 8
        silence = bytes([0xFF if pt == 0 else 0xD5]) * (8 * self.ptime)
        self.transport.sendto(_rtp.build_rtp(pt, 60000, 0, 0x9407E, silence, True),
                              engine_address(engine_sdp))

    def sdp(self, direction: str = "sendrecv", telephone_event: bool = True, version: int = 1) -> str:
        pt = 0 if self.codec == "PCMU" else 8
        formats = f"{pt} 101" if telephone_event else f"{pt}"
        te = "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n" if telephone_event else ""
        return (f"v=0\r\no=phone 7 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {self.port} RTP/AVP {formats}\r\na=rtpmap:{pt} {self.codec}/8000\r\n{te}"
                f"a=ptime:{self.ptime}\r\na={direction}\r\n")

    async def play(self, samples8k: np.ndarray, start_seq: int = 0) -> None:
        """Send 8 kHz samples in real time as ptime packets."""
        encode = _g711.ulaw_encode if self.codec == "PCMU" else _g711.alaw_encode
        pt = 0 if self.codec == "PCMU" else 8
        n = 8 * self.ptime
        loop = asyncio.get_running_loop()
        start = loop.time()
        for k in range(len(samples8k) // n):
            await asyncio.sleep(max(0.0, start + k * self.ptime / 1000 - loop.time()))
            payload = encode(np.ascontiguousarray(samples8k[k * n:(k + 1) * n]))
            self.transport.sendto(_rtp.build_rtp(pt, start_seq + k, k * n, 0xABCD, payload), self.remote)

    def audio(self, payload_type: int | None = None) -> np.ndarray:
        pt = payload_type if payload_type is not None else (0 if self.codec == "PCMU" else 8)
        decode = _g711.ulaw_decode_into if self.codec == "PCMU" else _g711.alaw_decode_into
        chunks = []
        for packet in sorted((p for p in self.packets if p.payload_type == pt), key=lambda p: p.timestamp):
            out = np.zeros(len(packet.payload), dtype=np.int16)
            decode(packet.payload, out)
            chunks.append(out)
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def close(self):
        self.transport.close()


def engine_address(sdp: str) -> tuple[str, int]:
    description = parse(sdp)
    media = next(m for m in description.media if m.media == "audio")
    return description.connection_of(media).address, media.port


def tone8k(freq: float, seconds: float, amplitude: float = 8000.0) -> np.ndarray:
    n = np.arange(int(8000 * seconds))
    return (np.sin(2 * np.pi * freq * n / 8000) * amplitude).astype(np.int16)


def test_offered_pcma_leg_with_ptime_30_talks_both_ways_with_an_opus_participant():
    async def main():
        engine = Engine()
        engine.start()
        conf = engine.create_conference("mcu")["id"]
        opus = SimulatedParticipant("opus", 520.0,
                                    (np.sin(2 * np.pi * 520 * np.arange(48000 * 4) / 48000) * 8000).astype(np.int16))
        await join(engine, conf, opus)
        phone = await Phone.open(codec="PCMA", ptime=30)
        offer = await engine.offer_leg(conf, ["PCMU", "PCMA"], label="trunk")
        assert "RTP/AVP 0 8 101" in offer["sdp"] and "rtcp-mux" not in offer["sdp"]
        leg = await engine.answer_leg(conf, offer["id"], phone.sdp())
        assert (leg["codec"], leg["ptime_ms"], leg["send_ptime_ms"]) == ("PCMA", 30, 30)
        phone.remote = engine_address(offer["sdp"])
        opus.start(asyncio.get_running_loop().time() + 0.05)
        await phone.play(tone8k(1170, 3.0))
        await asyncio.sleep(0.3)
        heard_by_opus, _ = opus.heard_audio()
        stats = engine.get_leg(conf, offer["id"])
        engine.stop()
        opus.close()
        phone.close()
        sizes = {len(p.payload) for p in phone.packets if p.payload_type == 8}
        steps = {(b.timestamp - a.timestamp) & 0xFFFFFFFF
                 for a, b in zip(phone.packets, phone.packets[1:]) if a.payload_type == b.payload_type == 8}
        return heard_by_opus, phone.audio(), sizes, steps, stats

    heard_by_opus, heard_by_phone, sizes, steps, stats = run(main())
    assert sizes == {240} and steps == {240}   # 30 ms PCMA packets, timestamps 240 apart
    assert stats["packets_in"] >= 90 and sum(stats["drops"].values()) == 0
    assert tone_levels_db(heard_by_opus[24000:120000], [1170.0])[1170.0] > -30
    assert tone_levels_db(heard_by_phone[4000:20000], [520.0], rate=8000)[520.0] > -30


def test_answer_errors_and_unanswered_offers_are_released():
    async def main():
        engine = Engine()
        engine.start()
        conf = engine.create_conference("mcu")["id"]
        offer = await engine.offer_leg(conf, ["PCMU"])
        with pytest.raises(EngineError) as caught:
            await engine.answer_leg(conf, offer["id"], "v=0\r\nnot sdp")
        assert caught.value.status == 400
        phone = await Phone.open(codec="PCMA")
        with pytest.raises(EngineError) as caught:   # PCMA was not offered
            await engine.answer_leg(conf, offer["id"], phone.sdp())
        assert (caught.value.status, caught.value.code) == (488, "no_common_codec")
        in_use = engine.ports.in_use
        engine.remove_leg(conf, offer["id"])   # hung up before the answer
        assert engine.ports.in_use == in_use - 1 and engine.stats()["legs_offered_pending"] == 0
        sfu = engine.create_conference("sfu")["id"]
        assert "PCMU" in (await engine.offer_leg(sfu, ["PCMU"]))["sdp"]   # a phone: transcoded there
        with pytest.raises(EngineError) as caught:
            await engine.offer_leg(sfu, ["G729"])
        assert caught.value.status == 488
        await engine.offer_leg(conf, ["PCMU"])
        engine.delete_conference(conf)
        engine.delete_conference(sfu)   # their offered legs' ports go with them
        assert engine.ports.in_use == 0
        engine.stop()
        phone.close()
    run(main())


def test_reoffer_hold_and_resume_on_the_same_port():
    async def main():
        engine = Engine()
        engine.start()
        conf = engine.create_conference("mcu")["id"]
        talker = SimulatedParticipant("t", 710.0, (np.sin(2 * np.pi * 710 * np.arange(48000 * 4) / 48000) * 8000).astype(np.int16))
        await join(engine, conf, talker)
        phone = await Phone.open()
        answer = await engine.add_leg(conf, phone.sdp(), "phone")
        leg = answer["id"]
        phone.greet(answer["sdp"])
        talker.start(asyncio.get_running_loop().time())
        await asyncio.sleep(0.5)
        before_hold = len(phone.packets)
        held = await engine.reoffer_leg(conf, leg, phone.sdp("sendonly", version=2))
        assert held["direction"] == "recvonly"
        assert parse(held["sdp"]).origin.session_version == 2
        assert engine_address(held["sdp"]) == engine_address(answer["sdp"])
        await asyncio.sleep(0.2)
        during = len(phone.packets)
        await asyncio.sleep(0.5)
        assert len(phone.packets) - during <= 2   # nothing sent while held (an RTCP race aside)
        resumed = await engine.reoffer_leg(conf, leg, phone.sdp("sendrecv", version=3))
        assert resumed["direction"] == "sendrecv" and parse(resumed["sdp"]).origin.session_version == 3
        await asyncio.sleep(0.5)
        assert len(phone.packets) - during > 15
        assert before_hold > 15
        other_codec = phone.sdp().replace("RTP/AVP 0 101", "RTP/AVP 8 101").replace("0 PCMU", "8 PCMA")
        with pytest.raises(EngineError) as caught:
            await engine.reoffer_leg(conf, leg, other_codec)
        assert caught.value.status == 488
        engine.stop()
        talker.close()
        phone.close()
    run(main())


def test_rfc4733_keys_sent_to_a_leg():
    async def main():
        engine = Engine()
        engine.start()
        conf = engine.create_conference("mcu")["id"]
        phone = await Phone.open()
        answer = await engine.add_leg(conf, phone.sdp(), "phone")
        phone.greet(answer["sdp"])
        await asyncio.sleep(0.05)
        result = engine.send_dtmf(conf, answer["id"], "1#")
        assert result == {"id": answer["id"], "mode": "rfc4733", "queued": 2}
        await asyncio.sleep(0.6)
        with pytest.raises(EngineError) as caught:
            engine.send_dtmf(conf, answer["id"], "1x")
        assert caught.value.status == 422
        engine.stop()
        phone.close()
        return phone.packets

    packets = run(main())
    events = [p for p in packets if p.payload_type == 101]
    presses: dict[int, list] = {}
    for p in events:
        presses.setdefault(p.timestamp, []).append((p, TelephoneEvent.parse(p.payload)))
    assert [evs[0][1].event for evs in presses.values()] == [1, 11]
    for evs in presses.values():
        assert evs[0][0].marker and not any(p.marker for p, _ in evs[1:])
        durations = [e.duration for _, e in evs]
        assert durations == sorted(durations) and durations[-1] == 800
        assert [e.end for _, e in evs][-3:] == [True, True, True] and not evs[0][1].end
    seqs = [p.sequence_number for p in packets if p.payload_type in (0, 101)]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))   # one stream, no gaps


def test_inband_keys_sent_and_heard_on_a_leg_without_telephone_event():
    async def main():
        engine = Engine()
        engine.start()
        conf = engine.create_conference("mcu")["id"]
        phone = await Phone.open()
        answer = await engine.add_leg(conf, phone.sdp(telephone_event=False), "phone")
        phone.greet(answer["sdp"])
        assert engine.send_dtmf(conf, answer["id"], "5")["mode"] == "inband"
        phone.remote = engine_address(answer["sdp"])
        keys = np.concatenate([np.concatenate([dtmf_tone(k, 480), np.zeros(480, np.int16)]) for k in "159#"])
        await phone.play(np.concatenate([np.zeros(800, np.int16), keys, np.zeros(1600, np.int16)]))
        await asyncio.sleep(0.2)
        leg = engine.get_leg(conf, answer["id"])
        engine.stop()
        phone.close()
        return phone.audio(), leg

    audio, leg = run(main())
    assert DtmfDetector().feed(np.ascontiguousarray(audio)) == "5"
    levels = tone_levels_db(audio[:800], [770.0, 1336.0, 697.0, 1209.0], rate=8000)
    assert levels[770.0] > -30 and levels[1336.0] > -30 and levels[697.0] < levels[770.0] - 20
    assert leg["dtmf"]["digits"] == "159#" and leg["dtmf"]["inband"] == 4
    assert leg["dtmf_inband"]["digits"] == 4


def test_keys_are_bridged_between_the_two_legs_of_a_two_party_call():
    async def main():
        engine = Engine()
        engine.start()
        conf = engine.create_conference("mcu")["id"]
        caller = await Phone.open()
        callee = await Phone.open()
        a = await engine.add_leg(conf, caller.sdp(), "caller")
        b = await engine.add_leg(conf, callee.sdp(), "callee")
        callee.greet(b["sdp"])
        caller.remote = engine_address(a["sdp"])
        ts = 160 * 50
        for key in (9, 4):
            for i, (dur, end) in enumerate([(160, False), (320, False), (480, False), (640, True), (640, True)]):
                payload = TelephoneEvent(key, end, 10, dur).serialize()
                caller.transport.sendto(_rtp.build_rtp(101, 100 + i + key * 10, ts, 0x1234, payload, i == 0),
                                        caller.remote)
                await asyncio.sleep(0.02)
            ts += 160 * 20
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        stats = engine.stats()
        engine.stop()
        caller.close()
        callee.close()
        return callee.packets, stats

    packets, stats = run(main())
    keys = []
    for p in packets:
        if p.payload_type == 101:
            event = TelephoneEvent.parse(p.payload)
            if p.marker:
                keys.append(event.event)
    assert keys == [9, 4] and stats["dtmf_bridged"] == 2


def test_move_leg_keeps_the_stream():
    async def main():
        engine = Engine()
        engine.start()
        ivr = engine.create_conference("mcu")["id"]
        call = engine.create_conference("mcu")["id"]
        voice = SimulatedParticipant("v", 930.0, (np.sin(2 * np.pi * 930 * np.arange(48000 * 3) / 48000) * 8000).astype(np.int16))
        await join(engine, call, voice)
        phone = await Phone.open()
        answer = await engine.add_leg(ivr, phone.sdp(), "caller")
        phone.greet(answer["sdp"])
        voice.start(asyncio.get_running_loop().time())
        await asyncio.sleep(0.3)
        moved = engine.move_leg(ivr, answer["id"], call)
        assert moved["id"] == answer["id"]
        await asyncio.sleep(1.0)
        assert [leg["id"] for leg in engine.get_conference(ivr)["legs"]] == []
        engine.stop()
        voice.close()
        phone.close()
        return phone

    phone = run(main())
    assert len({p.ssrc for p in phone.packets if p.payload_type == 0}) == 1
    seqs = [p.sequence_number for p in phone.packets if p.payload_type == 0]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))
    assert tone_levels_db(phone.audio()[-6000:], [930.0], rate=8000)[930.0] > -30


def test_the_same_operations_over_the_http_control_api():
    async def main():
        engine = Engine()
        engine.start()
        runner, port = await start_control_api(engine)
        client = HttpEngine(f"http://127.0.0.1:{port}")
        conf = (await client.create_conference("mcu"))["id"]
        other = (await client.create_conference("mcu"))["id"]
        phone = await Phone.open()
        offer = await client.offer_leg(conf, ["PCMU"], "trunk")
        leg = await client.answer_leg(conf, offer["id"], phone.sdp())
        assert leg["codec"] == "PCMU"
        held = await client.reoffer_leg(conf, offer["id"], phone.sdp("inactive", version=2))
        assert held["direction"] == "inactive"
        assert (await client.send_dtmf(conf, offer["id"], "12"))["mode"] == "rfc4733"
        assert (await client.move_leg(conf, offer["id"], other))["id"] == offer["id"]
        assert (await client.get_leg(other, offer["id"]))["label"] == "trunk"
        with pytest.raises(EngineError) as caught:
            await client.get_leg(conf, offer["id"])
        assert caught.value.status == 404
        await client.close()
        await runner.cleanup()
        engine.stop()
        phone.close()
    run(main())
