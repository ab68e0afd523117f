"""RFC 4733 telephone-event -> DTMF digits: each key press reported once, whatever the network does."""
from __future__ import annotations

import asyncio
import socket

import uvloop
from hypothesis import given, strategies as st

from mixer import _rtp
from mixer.engine.engine import Engine
from mixer.rtp.dtmf import DTMF_KEYS, DtmfError, DtmfReceiver, TelephoneEvent
from mixer.sdp import offer_audio, parse
from mixer.settings import EngineSettings


def press(key: str, timestamp: int, updates: int = 4, ends: int = 3, step: int = 400) -> list:
    """The packets of one key press as RFC 4733 section 2.5.1.1 describes: updates, then 3 ends."""
    event = DTMF_KEYS.index(key)
    packets = [(TelephoneEvent(event, False, 10, step * (k + 1)).serialize(), timestamp)
               for k in range(updates)]
    packets += [(TelephoneEvent(event, True, 10, step * (updates + 1)).serialize(), timestamp)] * ends
    return packets


def feed(receiver: DtmfReceiver, packets: list) -> str:
    return "".join(d.key for payload, ts in packets for d in receiver.on_packet(payload, ts))


def test_parse_and_serialize_round_trip() -> None:
    event = TelephoneEvent(11, True, 63, 1600)
    assert TelephoneEvent.parse(event.serialize()) == event
    assert event.serialize() == bytes([11, 0x80 | 63, 0x06, 0x40])


def test_each_press_is_one_digit_despite_three_end_packets() -> None:
    receiver = DtmfReceiver()
    packets = press("1", 1000) + press("#", 9000) + press("1", 17000)
    assert feed(receiver, packets) == "1#1"
    assert [d.duration_ms for d in receiver.digits] == [250, 250, 250]


def test_a_press_whose_ends_are_all_lost_is_reported_when_the_next_begins_or_goes_quiet() -> None:
    receiver = DtmfReceiver()
    assert feed(receiver, press("5", 1000, ends=0) + press("6", 5000)) == "56"
    feed(receiver, press("7", 9000, ends=0))
    assert receiver.flush(now_s=0.5) == []           # still held, maybe
    assert [d.key for d in receiver.flush(now_s=2.0)] == ["7"]
    assert receiver.total == 3


def test_reordered_and_late_packets_do_not_repeat_a_digit() -> None:
    receiver = DtmfReceiver()
    packets = press("9", 3000)
    reordered = [packets[-1]] + packets[:-1]
    assert feed(receiver, reordered) == "9"


def test_non_dtmf_events_and_garbage_are_counted() -> None:
    receiver = DtmfReceiver()
    assert receiver.on_packet(TelephoneEvent(70, True, 0, 100).serialize(), 1) == []  # flash hook etc.
    assert receiver.on_packet(b"\x01", 2) == []
    assert receiver.stats() == {"digits": "", "total": 0, "inband": 0, "other_events": 1, "malformed": 1}
    try:
        TelephoneEvent.parse(b"")
    except DtmfError:
        pass
    else:
        raise AssertionError("an empty payload parsed")


@given(st.lists(st.tuples(st.binary(max_size=8), st.integers(0, 5)), max_size=60))
def test_any_packets_never_raise_and_a_press_is_reported_at_most_once(packets) -> None:
    receiver = DtmfReceiver(keep=1000)
    for payload, ts in packets:
        receiver.on_packet(payload, ts)
    receiver.flush()
    stamps = [d.rtp_timestamp for d in receiver.digits]
    # six possible timestamps, fewer than the receiver remembers: none may be reported twice
    assert len(stamps) == len(set(stamps))
    assert receiver.total == len(stamps)
    assert all(d.key in DTMF_KEYS for d in receiver.digits)


def test_digits_through_a_live_engine_leg() -> None:
    """A softphone sends telephone-event packets (PT 101, 8 kHz) to a PCMU leg: the leg's stats
    name the digits, and the conference is not disturbed by them."""
    async def scenario():
        engine = Engine(EngineSettings(media_ports="43500-43999"))
        engine.start()
        conference = engine.create_conference("mcu")["id"]
        phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        phone.bind(("127.0.0.1", 0))
        offer, _ = offer_audio(local_ip="127.0.0.1", local_port=phone.getsockname()[1], codecs=("PCMU",))
        answer = await engine.add_leg(conference, offer)
        media = parse(answer["sdp"]).media[0]
        event_pt = next(int(a.split()[0]) for a in media.attributes("rtpmap") if "telephone-event" in a)
        seq = 0
        for key, ts in (("4", 8000), ("2", 16000)):
            for payload, timestamp in press(key, ts):
                phone.sendto(_rtp.build_rtp(event_pt, seq, timestamp, 0x77, payload), ("127.0.0.1", media.port))
                seq += 1
                await asyncio.sleep(0.005)
        await asyncio.sleep(0.1)
        leg = engine.get_conference(conference)["legs"][0]
        engine.stop()
        phone.close()
        return leg

    leg = uvloop.run(scenario())
    assert leg["dtmf"]["digits"] == "42"
    assert leg["dtmf_packets"] == 14
    assert leg["drops"]["payload_type"] == 0
