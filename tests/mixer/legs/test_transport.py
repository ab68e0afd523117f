"""Batched UDP I/O (`mixer._netio`) and the engine's socket endpoints, on real loopback sockets."""
from __future__ import annotations

import asyncio
import socket
import time

import pytest

from mixer import _netio
from mixer.legs.transport import SendFlusher, UdpEndpoint, pack


def _udp(family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def test_pack_address_round_trips_through_the_kernel() -> None:
    receiver, sender = _udp(), _udp()
    address = _netio.pack_address(*receiver.getsockname())
    assert _netio.send_batch(sender.fileno(), [b"hello"], [address]) == 1
    got = _netio.BatchReceiver(8).receive(receiver.fileno())
    assert got == [(b"hello", sender.getsockname())]
    receiver.close()
    sender.close()


def test_pack_address_rejects_names_and_bad_ports() -> None:
    with pytest.raises(ValueError):
        _netio.pack_address("localhost", 5000)
    with pytest.raises(ValueError):
        _netio.pack_address("127.0.0.1", 70000)


def test_batches_keep_order_and_content_and_split_at_the_batch_size() -> None:
    receiver, sender = _udp(), _udp()
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    address = _netio.pack_address(*receiver.getsockname())
    datagrams = [bytes([i % 256]) * (1 + i) for i in range(150)]
    assert _netio.send_batch(sender.fileno(), datagrams, [address] * 150) == 150
    batch = _netio.BatchReceiver(64)
    got: list[bytes] = []
    sizes = []
    while True:
        part = batch.receive(receiver.fileno())
        if not part:
            break
        sizes.append(len(part))
        got.extend(data for data, _ in part)
    assert got == datagrams
    assert sizes == [64, 64, 22]
    assert batch.packets == 150 and batch.calls == 4
    receiver.close()
    sender.close()


def test_ipv6_addresses() -> None:
    if not socket.has_ipv6:
        pytest.skip("environment: no IPv6 on this machine")
    try:
        receiver, sender = _udp(socket.AF_INET6, "::1"), _udp(socket.AF_INET6, "::1")
    except OSError as exc:
        pytest.skip(f"environment: IPv6 loopback unavailable: {exc}")
    address = _netio.pack_address("::1", receiver.getsockname()[1])
    assert _netio.send_batch(sender.fileno(), [b"six"], [address]) == 1
    (data, source), = _netio.BatchReceiver(4).receive(receiver.fileno())
    assert data == b"six" and source == ("::1", sender.getsockname()[1])
    receiver.close()
    sender.close()


def test_oversized_datagrams_are_counted_not_returned() -> None:
    receiver, sender = _udp(), _udp()
    sender.sendto(b"x" * 4000, receiver.getsockname())
    sender.sendto(b"ok", receiver.getsockname())
    batch = _netio.BatchReceiver(8)
    got = batch.receive(receiver.fileno())
    assert [data for data, _ in got] == [b"ok"]
    assert batch.truncated == 1
    receiver.close()
    sender.close()


def test_a_full_socket_buffer_stops_the_send_without_raising() -> None:
    receiver, sender = _udp(), _udp()
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    address = _netio.pack_address(*receiver.getsockname())
    sent = _netio.send_batch(sender.fileno(), [b"y" * 1400] * 2000, [address] * 2000)
    assert 0 < sent <= 2000  # loopback may take them all; what matters is no exception
    receiver.close()
    sender.close()


def test_send_batch_checks_its_arguments() -> None:
    sender = _udp()
    with pytest.raises(ValueError):
        _netio.send_batch(sender.fileno(), [b"a", b"b"], [b""])
    with pytest.raises(TypeError):
        _netio.send_batch(sender.fileno(), ["text"], [pack(("127.0.0.1", 9))])
    sender.close()


def test_endpoint_receives_and_flushes_once_per_loop_turn() -> None:
    async def scenario() -> None:
        flusher = SendFlusher()
        a_got: list[tuple[bytes, tuple]] = []
        b_got: list[bytes] = []
        a = UdpEndpoint(_udp(), lambda data, addr, arrival: a_got.append((data, addr)), flusher)
        b = UdpEndpoint(_udp(), lambda data, addr, arrival: b_got.append(data), flusher)
        a.open()
        b.open()
        to_b = pack(b.sock.getsockname())
        for i in range(10):
            a.send(b"p%d" % i, to_b)
        assert b_got == [] and a.sent == 0  # queued until the loop turns
        for _ in range(50):
            await asyncio.sleep(0.005)
            if len(b_got) == 10:
                break
        assert b_got == [b"p%d" % i for i in range(10)]
        assert a.sent == 10 and flusher.flushes == 1
        b.send(b"back", pack(a.sock.getsockname()))
        for _ in range(50):
            await asyncio.sleep(0.005)
            if a_got:
                break
        assert a_got == [(b"back", b.sock.getsockname())]
        a.close()
        b.close()
        assert not a.is_open

    asyncio.run(scenario())


def test_flusher_without_a_loop_waits_for_an_explicit_flush() -> None:
    flusher = SendFlusher(automatic=False)
    receiver = _udp()
    endpoint = UdpEndpoint(_udp(), lambda data, addr, arrival: None, flusher)
    endpoint._loop = asyncio.new_event_loop()  # open without registering a reader
    endpoint.send(b"z", pack(receiver.getsockname()))
    assert endpoint.sent == 0
    flusher.flush()
    assert endpoint.sent == 1
    assert receiver.recv(16) == b"z"
    endpoint._loop.close()
    endpoint._loop = None
    endpoint.close()
    receiver.close()


def test_datagrams_read_late_carry_the_time_the_kernel_received_them() -> None:
    """A stalled engine reads its sockets late; what it decides (jitter, staleness) needs the time
    each datagram really came, on the monotonic clock."""
    receiver, sender = _udp(), _udp()
    batch = _netio.BatchReceiver(8, timestamps=True)
    assert batch.receive(receiver.fileno()) == []  # turns SO_TIMESTAMPNS on
    sent_at = time.monotonic()
    sender.sendto(b"early", receiver.getsockname())
    time.sleep(0.25)
    sender.sendto(b"late", receiver.getsockname())
    read_at = time.monotonic()
    (early, _, early_s), (late, _, late_s) = batch.receive(receiver.fileno())
    assert (early, late) == (b"early", b"late")
    assert sent_at - 0.01 <= early_s < sent_at + 0.1  # not when it was read
    assert late_s - early_s >= 0.24
    assert late_s <= read_at + 0.001
    receiver.close()
    sender.close()
