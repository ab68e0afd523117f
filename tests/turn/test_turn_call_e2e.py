"""A group call in which one participant reaches the engine only over TCP through our TURN.

Three simulated participants join an MCU conference on a real engine. The third one's RTP/RTCP goes
client -TCP-> TURN -UDP-> engine leg port and back (ChannelData), and its SDP offer carries the
relayed address, as a real TURN client's would. Whether everyone heard everyone is measured in the
decoded audio (mixer.analysis tone levels), as the MCU end-to-end tests do.
"""
import asyncio

import pytest
import uvloop

from mixer.analysis import TEST_TONES_HZ, tone_levels_db
from mixer.engine.engine import Engine
from mixer.sdp import parse
from mixer.sim.call import HEARD_THRESHOLD_DB, join
from mixer.sim.participant import SimulatedParticipant, talk_pattern, talk_signal
from mixer.turn.auth import rest_credentials
from mixer.turn.client import TurnDatagramTransport
from mixer.turn.testing import SECRET, running_server

SECONDS = 3.0
WARMUP_S = 0.5


@pytest.mark.parametrize("srtp", [False, True], ids=["rtp", "srtp"])
def test_participant_behind_tcp_only_firewall_hears_and_is_heard(srtp):
    async def scenario():
        async with running_server() as turn:
            username, password = rest_credentials(SECRET, "firewalled-user")

            async def over_turn(protocol_factory):
                return await TurnDatagramTransport.open(turn.tcp_address, username, password, protocol_factory)

            engine = Engine()
            engine.start()
            conference = engine.create_conference("mcu")["id"]
            people = []
            for i in range(3):
                freq = TEST_TONES_HZ[i]
                people.append(SimulatedParticipant(
                    f"p{i + 1}", freq, talk_signal(freq, talk_pattern(i, 3, SECONDS)), srtp=srtp,
                    transport_factory=over_turn if i == 2 else None))
            offers = {}
            for p in people:  # capture the TURN participant's offer as the engine sees it
                original = p.offer

                async def recording_offer(p=p, original=original):
                    offers[p.name] = await original()
                    return offers[p.name]
                p.offer = recording_offer
            legs = [await join(engine, conference, p) for p in people]
            start = asyncio.get_running_loop().time() + 0.05
            for p in people:
                p.start(start)
            await asyncio.sleep(SECONDS + 0.3)
            leg_stats = {leg["id"]: leg for leg in engine.get_conference(conference)["legs"]}
            turn_stats = turn.stats()
            engine.stop()
            await asyncio.sleep(0.05)
            for p in people:
                p.close()
            return people, offers, [leg_stats[leg] for leg in legs], turn_stats

    people, offers, legs, turn_stats = uvloop.run(asyncio.wait_for(scenario(), 30))
    p1, p2, p3 = people
    allocation = turn_stats["allocation_list"][0]

    # p3 offered its relayed address, and the engine sent to it
    relayed = allocation["relayed"]
    media = parse(offers["p3"]).media[0]
    assert f"{(media.connection or parse(offers['p3']).connection).address}:{media.port}" == relayed
    assert legs[2]["remote_rtp"] == relayed
    assert legs[2]["packets_in"] >= 100, "p3's RTP reached the engine through the relay"

    # every voice heard by every other participant, nobody hears themselves
    freqs = [p.freq_hz for p in people]
    for listener in people:
        pcm, _ = listener.heard_audio()
        levels = tone_levels_db(pcm[int(WARMUP_S * 48000):], freqs)
        for other in people:
            if other is listener:
                assert levels[other.freq_hz] < HEARD_THRESHOLD_DB, f"{listener.name} heard itself"
            else:
                assert levels[other.freq_hz] > -30, (
                    f"{listener.name} heard {other.name} at {levels[other.freq_hz]:.1f} dBFS")
    assert p3.receive.stats()["loss_percent"] == 0.0

    # both directions went as ChannelData over the one TCP connection
    assert allocation["transport"] == "tcp" and allocation["channels"] == 1
    assert allocation["to_peer_packets"] >= 140 and allocation["to_client_packets"] >= 140
    assert allocation["data_indications_out"] == 0
    drops = dict(allocation["drops"])
    assert drops.pop("no_permission") == allocation["drop_no_permission"]
    assert sum(drops.values()) == 0
    # The engine may send before p3's first packet installs the permission (ChannelBind on first
    # send): those few are refused, as a TURN server must; everything after passes.
    assert allocation["drop_no_permission"] <= 5
