"""The engine's Prometheus endpoint, scraped over HTTP during real calls (real UDP, Opus, SRTP)."""
import asyncio
import socket

import numpy as np
import uvloop
from aiohttp import ClientSession
from prometheus_client.parser import text_string_to_metric_families

from mixer.engine.control import start_control_api
from mixer.engine.engine import Engine
from mixer.metrics import FixedHistogram
from mixer.settings import EngineSettings
from mixer.sim.participant import SimulatedParticipant, talk_signal


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a Prometheus text exposition (parsed by
    prometheus_client's own parser, which rejects a malformed one)."""
    result = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            result[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return result


def value(scraped: dict, name: str, **labels) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def total(scraped: dict, name: str, **labels) -> float:
    """Sum over every series of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in scraped.items()
               if n == name and set(labels.items()) <= set(ls))


async def join(http, conference: str, name: str, freq: float, srtp: bool = False, seconds: float = 3.0):
    signal = talk_signal(freq, np.ones(int(seconds * 50), dtype=bool))
    participant = SimulatedParticipant(name, freq, signal, srtp=srtp)
    response = await http.post(f"/conferences/{conference}/legs",
                               json={"sdp": await participant.offer(), "label": name})
    assert response.status == 201, await response.text()
    answer = await response.json()
    participant.accept(answer["sdp"])
    participant.start()
    return participant, answer["id"]


async def scrape(http) -> dict:
    response = await http.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(await response.text())


def test_a_scrape_during_a_call_shows_its_media():
    async def scenario():
        engine = Engine(EngineSettings(fork_allow_loopback=True))
        engine.start()
        runner, port = await start_control_api(engine)
        people = []
        fork_sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        fork_sink.bind(("127.0.0.1", 0))
        try:
            async with ClientSession(f"http://127.0.0.1:{port}") as http:
                assert (await http.post("/conferences", json={"id": "room", "mode": "mcu"})).status == 201
                assert (await http.post("/conferences", json={"id": "fwd", "mode": "sfu"})).status == 201
                alice, alice_leg = await join(http, "room", "alice", 440)
                bob, _ = await join(http, "room", "bob", 660)
                carol, _ = await join(http, "room", "carol", 880, srtp=True)
                dave, _ = await join(http, "fwd", "dave", 500)
                erin, _ = await join(http, "fwd", "erin", 700)
                people = [alice, bob, carol, dave, erin]
                # media services: a tone player and a fork of the mix to a UDP sink
                assert (await http.post("/conferences/room/players", json={"tone": 300})).status == 201
                fork = await http.post("/conferences/room/forks", json={
                    "source": "mix", "destination": f"127.0.0.1:{fork_sink.getsockname()[1]}"})
                assert fork.status == 201, await fork.text()
                # a stranger's garbage at one leg's port: dropped and counted by reason
                leg_port = engine.conferences["room"].legs[alice_leg].local_port
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
                    for _ in range(5):
                        stranger.sendto(b"\x80garbage", ("127.0.0.1", leg_port))
                await asyncio.sleep(1.5)
                during = await scrape(http)

                assert value(during, "voicemix_engine_conferences", mode="mcu") == 1
                assert value(during, "voicemix_engine_conferences", mode="sfu") == 1
                assert value(during, "voicemix_engine_legs", mode="mcu", transport="rtp") == 2
                assert value(during, "voicemix_engine_legs", mode="mcu", transport="sdes") == 1
                assert value(during, "voicemix_engine_legs", mode="sfu", transport="rtp") == 2
                for mode, transport in (("mcu", "rtp"), ("mcu", "sdes"), ("sfu", "rtp")):
                    # about 50 packets per second per leg, in and out
                    assert value(during, "voicemix_engine_packets_received_total",
                                 mode=mode, transport=transport) > 40
                    assert value(during, "voicemix_engine_received_bytes_total",
                                 mode=mode, transport=transport) > 40 * 12
                    assert value(during, "voicemix_engine_packets_sent_total",
                                 mode=mode, transport=transport) > 40
                assert total(during, "voicemix_engine_packets_dropped_total", reason="malformed") \
                    + total(during, "voicemix_engine_packets_dropped_total", reason="stranger") >= 5
                assert value(during, "voicemix_engine_ports_in_use") == 6  # 5 legs and the fork
                assert value(during, "voicemix_engine_media_services", mode="mcu", service="player") == 1
                assert value(during, "voicemix_engine_media_services", mode="mcu", service="fork") == 1
                assert value(during, "voicemix_engine_legs", mode="mcu", transport="fork") == 1
                assert value(during, "voicemix_engine_packets_sent_total", mode="mcu", transport="fork") > 40
                assert value(during, "voicemix_engine_draining") == 0
                ticks = value(during, "voicemix_engine_ticks_total")
                assert ticks > 50
                assert value(during, "voicemix_engine_tick_lateness_seconds_count") == ticks
                assert value(during, "voicemix_engine_tick_lateness_seconds_bucket", le="+Inf") == ticks
                assert value(during, "voicemix_engine_tick_duration_seconds_count") == ticks
                assert value(during, "voicemix_engine_encode_seconds_count", mode="mcu", codec="opus") > 50
                assert value(during, "voicemix_engine_decode_seconds_count", mode="mcu", codec="opus") > 50
                assert value(during, "voicemix_engine_jitter_buffer_delay_seconds_count", mode="mcu") >= 3
                assert value(during, "voicemix_engine_speaker_switches_total", mode="mcu") >= 3
                assert value(during, "voicemix_engine_speaker_switches_total", mode="sfu") >= 2
                assert value(during, "voicemix_engine_sfu_packets_forwarded_total", mode="sfu") > 40
                assert value(during, "voicemix_engine_legs_joined_total", mode="mcu", transport="sdes") == 1
                assert value(during, "process_open_fds") > 0

                # a leg leaves and a conference ends: their counts stay in the totals
                assert (await http.delete(f"/conferences/room/legs/{alice_leg}")).status == 204
                after_leave = await scrape(http)
                assert (await http.delete("/conferences/fwd")).status == 204
                after_end = await scrape(http)
                for name, labels in during:
                    if name.endswith("_total") or name.endswith("_count") or name.endswith("_bucket"):
                        assert after_leave.get((name, labels), 0) >= during[(name, labels)], name
                        assert after_end.get((name, labels), 0) >= after_leave[(name, labels)], name
                assert value(after_end, "voicemix_engine_legs", mode="mcu", transport="rtp") == 1
                assert value(after_end, "voicemix_engine_legs", mode="sfu", transport="rtp") == 0
                assert value(after_end, "voicemix_engine_conferences", mode="sfu") == 0
        finally:
            for person in people:
                person.close()
            fork_sink.close()
            engine.stop()
            await runner.cleanup()

    uvloop.run(scenario())


def test_fixed_histogram_matches_prometheus_buckets():
    histogram = FixedHistogram((0.01, 0.02, 0.05))
    for observed in (0.005, 0.01, 0.015, 0.05, 0.2):
        histogram.observe(observed)
    # `le` is inclusive, as in Prometheus
    assert histogram.cumulative() == [("0.01", 2), ("0.02", 3), ("0.05", 4), ("+Inf", 5)]
    assert histogram.count == 5 and abs(histogram.total - 0.28) < 1e-9
    other = FixedHistogram((0.01, 0.02, 0.05))
    other.observe(0.03)
    histogram.merge(other)
    assert histogram.cumulative()[-2:] == [("0.05", 5), ("+Inf", 6)]
