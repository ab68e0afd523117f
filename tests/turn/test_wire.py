"""The compiled wire: TCP stream framing (any split of the stream gives the same frames), padding,
broken streams, the token bucket."""
import os

import pytest
from hypothesis import given, settings, strategies as st

from mixer.turn import stun
from mixer.turn._wire import ChannelRelay, StreamFramer, TokenBucket, sockaddr_key


class Recorder:
    def __init__(self):
        self.stun, self.channel, self.broken = [], [], []
        self.framer = StreamFramer(self.stun.append, self.broken.append,
                                   lambda number, payload: self.channel.append((number, payload)))


def _stream():
    frames = [
        stun.build(stun.BINDING, stun.REQUEST, os.urandom(12), []),
        stun.channel_data(0x4000, b"abcde", pad=True),           # 5 bytes + 3 padding
        stun.channel_data(0x4FFF, b"", pad=True),
        stun.build(stun.ALLOCATE, stun.REQUEST, os.urandom(12), [(stun.USERNAME, b"x" * 33)]),
        stun.channel_data(0x7FFF, b"\x80" * 100, pad=True),
    ]
    return frames, b"".join(frames)


def test_frames_in_one_read():
    frames, data = _stream()
    rec = Recorder()
    rec.framer.data_received(data)
    assert rec.stun == [frames[0], frames[3]]
    assert rec.channel == [(0x4000, b"abcde"), (0x4FFF, b""), (0x7FFF, b"\x80" * 100)]
    assert rec.broken == [] and rec.framer.pending_bytes == 0
    assert (rec.framer.stun_frames, rec.framer.channel_frames) == (2, 3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 40), max_size=30))
def test_any_split_of_the_stream_gives_the_same_frames(cuts):
    frames, data = _stream()
    rec = Recorder()
    pos = 0
    for cut in cuts:
        rec.framer.data_received(data[pos:pos + cut])
        pos += cut
    rec.framer.data_received(data[pos:])
    assert rec.stun == [frames[0], frames[3]]
    assert [number for number, _ in rec.channel] == [0x4000, 0x4FFF, 0x7FFF]
    assert rec.framer.pending_bytes == 0


def test_a_frame_that_is_neither_stun_nor_channel_data_breaks_the_stream_once():
    rec = Recorder()
    rec.framer.data_received(stun.channel_data(0x4001, b"ok", pad=True) + b"\xc0\x00\x00\x00" + b"later")
    rec.framer.data_received(stun.channel_data(0x4001, b"ignored", pad=True))
    assert rec.channel == [(0x4001, b"ok")]
    assert len(rec.broken) == 1 and rec.framer.broken


def test_stun_header_without_cookie_breaks_the_stream():
    rec = Recorder()
    rec.framer.data_received(b"\x00\x01\x00\x00\x21\x12\xa4\x43" + b"\0" * 12)
    assert rec.stun == [] and len(rec.broken) == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=10))
def test_fuzz_stream_never_raises(chunks):
    rec = Recorder()
    for chunk in chunks:
        rec.framer.data_received(chunk)
    assert rec.framer.pending_bytes < 4 + 0xFFFF + 3 + 64
    for raw in rec.stun:  # the framer only hands over complete messages with a cookie
        assert raw[4:8] == b"\x21\x12\xa4\x42" and len(raw) == 20 + int.from_bytes(raw[2:4], "big")


def test_token_bucket_caps_bytes_and_zero_means_no_cap():
    bucket = TokenBucket(1000.0, 1000.0)
    taken = sum(bucket.take(100) for _ in range(50))
    assert 10 <= taken <= 11  # the one-second burst, plus what trickles in meanwhile
    unlimited = TokenBucket(0.0)
    assert all(unlimited.take(10_000) for _ in range(100))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_fuzz_channel_datagrams_never_raise(data):
    """UDP-client ChannelData of any shape: relayed, or dropped and counted (this relay has no
    socket and no channels, so everything well formed lands in no_channel)."""
    relay = ChannelRelay(lambda frame: None, False, lambda data, addr: None, TokenBucket(0.0))
    relay.channel_datagram(data)
    drops = relay.stats()["drops"]
    assert drops["malformed"] + drops["no_channel"] == 1
    well_formed = len(data) >= 4 and int.from_bytes(data[2:4], "big") <= len(data) - 4
    assert drops["malformed"] == (0 if well_formed else 1)


def test_relay_tables_take_only_ipv4_peers():
    relay = ChannelRelay(lambda frame: None, True, lambda data, addr: None, TokenBucket(0.0))
    relay.set_channels({0x4000: ("127.0.0.1", 5000)})
    assert relay.channel_peers == {0x4000: ("127.0.0.1", 5000)}
    assert sockaddr_key("127.0.0.1", 5000) == (0x7F000001 << 16) | 5000
    with pytest.raises(ValueError):
        relay.set_channels({0x4001: ("::1", 5000)})
