"""Fuzzing a live server: random datagrams and random TCP streams (raw, and shaped like STUN or
ChannelData) never crash it, leave no allocation or relay port behind, and it still answers."""
import asyncio
import os
import struct

import uvloop
from hypothesis import HealthCheck, given, settings, strategies as st

from mixer.turn import stun
from mixer.turn.client import TurnClient
from mixer.turn.testing import USERS, UdpPeer, running_server

METHODS = st.sampled_from([stun.BINDING, stun.ALLOCATE, stun.REFRESH, stun.SEND, stun.CREATE_PERMISSION,
                           stun.CHANNEL_BIND, 0x00F, 0xFFF])
CLASSES = st.sampled_from([stun.REQUEST, stun.INDICATION, stun.SUCCESS, stun.ERROR])
ATTRIBUTES = st.lists(st.tuples(st.sampled_from([
    stun.USERNAME, stun.REALM, stun.NONCE, stun.MESSAGE_INTEGRITY, stun.MESSAGE_INTEGRITY_SHA256,
    stun.LIFETIME, stun.REQUESTED_TRANSPORT, stun.XOR_PEER_ADDRESS, stun.DATA_ATTR, stun.CHANNEL_NUMBER,
    stun.EVEN_PORT, stun.REQUESTED_ADDRESS_FAMILY, 0x0003, 0x8123]), st.binary(max_size=24)), max_size=6)


@st.composite
def stun_shaped(draw):
    """Well-framed STUN with random method, class and attribute values (FINGERPRINT sometimes)."""
    return stun.build(draw(METHODS), draw(CLASSES), os.urandom(12), draw(ATTRIBUTES),
                      fingerprint=draw(st.booleans()))


@st.composite
def channel_shaped(draw):
    payload = draw(st.binary(max_size=40))
    return stun.channel_data(draw(st.integers(0x4000, 0x7FFF)), payload, pad=draw(st.booleans()))


PACKETS = st.one_of(st.binary(min_size=1, max_size=120), stun_shaped(), channel_shaped())


async def still_answers(server) -> None:
    txid = os.urandom(12)
    peer = await UdpPeer.open()
    peer.sendto(stun.build(stun.BINDING, stun.REQUEST, txid, []), server.udp_address)
    assert stun.parse((await peer.next())[0]).transaction_id == txid
    peer.close()
    client = await TurnClient(server.tcp_address, "alice", USERS["alice"]).connect()
    await client.allocate()
    client.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datagrams=st.lists(PACKETS, max_size=30), streams=st.lists(st.lists(PACKETS, max_size=8), max_size=3))
def test_random_datagrams_and_streams_leave_nothing_behind(datagrams, streams):
    async def scenario():
        async with running_server() as server:
            peer = await UdpPeer.open()
            for datagram in datagrams:
                peer.sendto(datagram, server.udp_address)
            connections = []
            for chunks in streams:
                reader, writer = await asyncio.open_connection(*server.tcp_address)
                for chunk in chunks:
                    writer.write(chunk)
                connections.append((reader, writer))
            await asyncio.sleep(0.05)
            for _, writer in connections:
                writer.close()
            await asyncio.sleep(0.05)
            peer.close()
            stats = server.stats()
            assert stats["allocations"] == 0 and stats["relay_ports_in_use"] == 0
            assert stats["counters"].get("allocations_created", 0) == 0
            await still_answers(server)
            await asyncio.sleep(0.05)
            assert server.stats()["allocations"] == 0
    uvloop.run(asyncio.wait_for(scenario(), 10))


def test_oversized_and_truncated_stream_frames_are_contained():
    """A stream announcing a 64 KiB ChannelData and never finishing it, and one whose first bits say
    neither STUN nor ChannelData: both are contained to their connection."""
    async def scenario():
        async with running_server() as server:
            r1, w1 = await asyncio.open_connection(*server.tcp_address)
            w1.write(struct.pack("!HH", 0x4000, 0xFFFF) + b"x" * 1000)
            r2, w2 = await asyncio.open_connection(*server.tcp_address)
            w2.write(b"\xc0" * 64)
            assert await asyncio.wait_for(r2.read(), 1.0) == b"", "a broken stream is closed"
            assert server.stats()["counters"]["stream_broken"] == 1
            await still_answers(server)
            w1.close()
    uvloop.run(asyncio.wait_for(scenario(), 10))
