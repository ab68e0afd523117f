"""The STUN/TURN server over real loopback sockets: every method, every error path, permissions,
lifetimes and expiry (short lifetimes from settings), quotas, bandwidth, TLS."""
import asyncio
import os
import ssl
import struct
import subprocess

import pytest
import uvloop

from mixer.turn import stun
from mixer.turn.auth import rest_credentials
from mixer.turn.client import TurnClient, TurnRequestError
from mixer.turn.peers import PeerFilter
from mixer.turn.testing import SECRET, USERS, UdpPeer, running_server


def run(coro, timeout=10.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return uvloop.run(bounded())


async def client(server, user="alice", password=None, **kwargs) -> TurnClient:
    return await TurnClient(server.tcp_address, user, USERS.get(user) if password is None else password,
                            **kwargs).connect()


async def udp_request(address, raw, timeout=1.0):
    """One datagram out, the first datagram back (or None)."""
    peer = await UdpPeer.open()
    try:
        peer.sendto(raw, address)
        return stun.parse((await peer.next(timeout))[0])
    except asyncio.TimeoutError:
        return None
    finally:
        peer.close()


def error_of(message):
    assert message.cls == stun.ERROR, f"expected an error response, got class {message.cls:#x}"
    return message.error_code()[0]


REQUESTED_UDP = stun.uint32_attribute(stun.REQUESTED_TRANSPORT, stun.TRANSPORT_UDP << 24)


# ------------------------------------------------------------------------------------ STUN binding
def test_binding_over_udp_and_tcp_reports_the_source_address():
    async def scenario():
        async with running_server() as server:
            peer = await UdpPeer.open()
            txid = os.urandom(12)
            peer.sendto(stun.build(stun.BINDING, stun.REQUEST, txid, []), server.udp_address)
            response = stun.parse((await peer.next())[0])
            assert response.cls == stun.SUCCESS and response.transaction_id == txid
            assert response.xor_address(stun.XOR_MAPPED_ADDRESS) == peer.address
            assert response.get(stun.FINGERPRINT) is not None
            peer.close()
            tcp = await client(server)
            txid = os.urandom(12)
            response = await tcp.transact(stun.build(stun.BINDING, stun.REQUEST, txid, []), txid)
            local = tcp.transport.get_extra_info("sockname")[:2]
            assert response.xor_address(stun.XOR_MAPPED_ADDRESS) == local
            tcp.close()
    run(scenario())


def test_binding_with_unknown_required_attribute_gets_420_listing_it():
    async def scenario():
        async with running_server() as server:
            raw = stun.build(stun.BINDING, stun.REQUEST, os.urandom(12),
                             [(0x0003, b"\0\0\0\x06"), (0x8123, b"optional is fine")])
            response = await udp_request(server.udp_address, raw)
            assert error_of(response) == stun.UNKNOWN_ATTRIBUTE
            assert response.get(stun.UNKNOWN_ATTRIBUTES) == b"\x00\x03"
            optional_only = stun.build(stun.BINDING, stun.REQUEST, os.urandom(12), [(0x8123, b"x")])
            assert (await udp_request(server.udp_address, optional_only)).cls == stun.SUCCESS
    run(scenario())


def test_malformed_datagrams_are_dropped_and_counted_and_the_server_still_answers():
    async def scenario():
        async with running_server() as server:
            good = stun.build(stun.BINDING, stun.REQUEST, os.urandom(12), [])
            bad_fingerprint = bytearray(good)
            bad_fingerprint[-1] ^= 0xFF
            for junk in (b"\x01", b"\x00", b"\xffnot stun", bytes(bad_fingerprint), good[:-4]):
                assert await udp_request(server.udp_address, junk, timeout=0.2) is None
            # "hello": its first bits (0b01) say ChannelData, and there is no allocation for it
            assert await udp_request(server.udp_address, b"hello", timeout=0.2) is None
            counters = server.stats()["counters"]
            assert counters["malformed"] == 5 and counters["channel_data_without_allocation"] == 1
            assert (await udp_request(server.udp_address, good)).cls == stun.SUCCESS
    run(scenario())


# ----------------------------------------------------------------------------------- authentication
def test_allocate_without_credentials_is_challenged_with_401_realm_and_nonce():
    async def scenario():
        async with running_server() as server:
            c = await TurnClient(server.tcp_address).connect()  # no username: no retry
            response = await c.request(stun.ALLOCATE, [REQUESTED_UDP], check=False)
            assert error_of(response) == stun.UNAUTHORIZED
            assert response.text(stun.REALM) == server.settings.realm
            # the nonce is the server's own and valid
            assert server.credentials.nonce_valid(response.text(stun.NONCE))
            assert response.get(stun.MESSAGE_INTEGRITY) is None
            c.close()
    run(scenario())


@pytest.mark.parametrize("user, password", [("alice", "wrong"), ("mallory", "anything")])
def test_wrong_password_or_unknown_user_gets_401(user, password):
    async def scenario():
        async with running_server() as server:
            c = await client(server, user, password)
            with pytest.raises(TurnRequestError) as failure:
                await c.allocate()
            assert failure.value.code == stun.UNAUTHORIZED
            assert server.stats()["counters"]["auth_failures"] >= 1
            assert server.stats()["allocations"] == 0
            c.close()
    run(scenario())


def test_rest_api_credentials_valid_expired_and_forged():
    async def scenario():
        async with running_server() as server:
            username, password = rest_credentials(SECRET, "identity-7", ttl_s=600)
            c = await client(server, username, password)
            assert (await c.allocate())[0] == "127.0.0.1"
            assert server.stats()["allocation_list"][0]["user"] == "identity-7"
            c.close()
            expired_user, expired_pw = rest_credentials(SECRET, "identity-7", ttl_s=-5)
            forged_user, forged_pw = rest_credentials("not-the-secret", "identity-7")
            for user, password in ((expired_user, expired_pw), (forged_user, forged_pw)):
                c = await client(server, user, password)
                with pytest.raises(TurnRequestError) as failure:
                    await c.allocate()
                assert failure.value.code == stun.UNAUTHORIZED
                c.close()
    run(scenario())


def test_stale_nonce_gets_438_with_a_fresh_nonce_and_the_retry_succeeds():
    async def scenario():
        async with running_server(nonce_lifetime_s=0.3) as server:
            c = await client(server)
            await c.allocate()
            old_nonce = c.nonce
            await asyncio.sleep(0.4)
            # by hand: the old nonce is refused with 438 and a new one
            txid = os.urandom(12)
            raw = stun.build(stun.REFRESH, stun.REQUEST, txid,
                             [(stun.USERNAME, b"alice"), (stun.REALM, c.realm.encode()),
                              (stun.NONCE, old_nonce.encode())], key=c.key)
            response = await c.transact(raw, txid)
            assert error_of(response) == stun.STALE_NONCE
            assert response.text(stun.NONCE) != old_nonce
            # the client follows RFC 8489 9.2.3: takes the new nonce and retries
            assert await c.refresh(100) == 100
            assert c.nonce != old_nonce
            c.close()
    run(scenario())


def test_request_with_integrity_but_without_username_is_400():
    async def scenario():
        async with running_server() as server:
            c = await client(server)
            await c.allocate()
            txid = os.urandom(12)
            raw = stun.build(stun.REFRESH, stun.REQUEST, txid, [(stun.REALM, c.realm.encode()),
                                                               (stun.NONCE, c.nonce.encode())], key=c.key)
            assert error_of(await c.transact(raw, txid)) == stun.BAD_REQUEST
            c.close()
    run(scenario())


def test_message_integrity_sha256_is_accepted_and_answered_in_kind():
    async def scenario():
        async with running_server() as server:
            c = await client(server, integrity="sha256")
            await c.allocate()
            txid = os.urandom(12)
            raw = stun.build(stun.REFRESH, stun.REQUEST, txid,
                             [(stun.USERNAME, b"alice"), (stun.REALM, c.realm.encode()),
                              (stun.NONCE, c.nonce.encode())], key=c.key, integrity="sha256")
            response = await c.transact(raw, txid)
            assert response.cls == stun.SUCCESS
            assert response.get(stun.MESSAGE_INTEGRITY_SHA256) is not None
            assert response.get(stun.MESSAGE_INTEGRITY) is None
            assert stun.check_integrity(response, c.key)
            c.close()
    run(scenario())


def test_other_credentials_on_an_existing_allocation_get_441():
    async def scenario():
        async with running_server() as server:
            c = await client(server)
            await c.allocate()
            # bob authenticates correctly on alice's connection
            c.username, c.password, c.key = "bob", USERS["bob"], stun.long_term_key("bob", c.realm, USERS["bob"])
            with pytest.raises(TurnRequestError) as failure:
                await c.refresh()
            assert failure.value.code == stun.WRONG_CREDENTIALS
            c.close()
    run(scenario())


# ---------------------------------------------------------------------------------------- Allocate
@pytest.mark.parametrize("attributes, code", [
    ([], stun.BAD_REQUEST),                                                   # no REQUESTED-TRANSPORT
    ([stun.uint32_attribute(stun.REQUESTED_TRANSPORT, 6 << 24)], stun.UNSUPPORTED_TRANSPORT_PROTOCOL),
    ([REQUESTED_UDP, (stun.REQUESTED_ADDRESS_FAMILY, b"\x02\0\0\0")], stun.ADDRESS_FAMILY_NOT_SUPPORTED),
    ([REQUESTED_UDP, (stun.DONT_FRAGMENT, b"")], stun.UNKNOWN_ATTRIBUTE),
    ([REQUESTED_UDP, (stun.RESERVATION_TOKEN, b"12345678")], stun.UNKNOWN_ATTRIBUTE),
], ids=["no-transport", "tcp-transport", "ipv6", "dont-fragment", "reservation-token"])
def test_allocate_refusals(attributes, code):
    async def scenario():
        async with running_server() as server:
            c = await client(server)
            response = await c.request(stun.ALLOCATE, attributes, check=False)
            assert error_of(response) == code
            assert stun.check_integrity(response, c.key), "errors to authenticated requests are signed"
            if code == stun.UNKNOWN_ATTRIBUTE:
                listed = struct.unpack(f"!{len(response.get(stun.UNKNOWN_ATTRIBUTES)) // 2}H",
                                       response.get(stun.UNKNOWN_ATTRIBUTES))
                assert listed == (attributes[1][0],)
            assert server.stats()["allocations"] == 0
            c.close()
    run(scenario())


def test_allocate_success_retransmission_and_437_mismatch():
    async def scenario():
        async with running_server(allocation_lifetime_s=120, max_allocation_lifetime_s=300) as server:
            c = await client(server)
            await c.allocate()  # learns the nonce
            c.close()
            c = await client(server)
            c.realm, c.nonce, c.key = server.settings.realm, server.credentials.new_nonce(), \
                stun.long_term_key("alice", server.settings.realm, USERS["alice"])
            txid = os.urandom(12)
            raw = stun.build(stun.ALLOCATE, stun.REQUEST, txid,
                             [REQUESTED_UDP, stun.uint32_attribute(stun.LIFETIME, 100000),
                              (stun.USERNAME, b"alice"), (stun.REALM, c.realm.encode()),
                              (stun.NONCE, c.nonce.encode())], key=c.key)
            first = await c.transact(raw, txid)
            assert first.cls == stun.SUCCESS
            assert first.uint32(stun.LIFETIME) == 300, "lifetime is capped at the maximum"
            relayed = first.xor_address(stun.XOR_RELAYED_ADDRESS)
            assert first.xor_address(stun.XOR_MAPPED_ADDRESS) == c.transport.get_extra_info("sockname")[:2]
            again = await c.transact(raw, txid)
            assert again.raw == first.raw, "a retransmitted Allocate gets the same answer"
            with pytest.raises(TurnRequestError) as failure:
                await c.allocate()
            assert failure.value.code == stun.ALLOCATION_MISMATCH
            low, high = server.settings.port_range
            assert low <= relayed[1] <= high
            c.close()
    run(scenario())


def test_even_port_is_honoured():
    async def scenario():
        async with running_server() as server:
            clients = []
            for _ in range(3):
                c = await client(server)
                relayed = await c.allocate(extra=[(stun.EVEN_PORT, b"\x00")])
                assert relayed[1] % 2 == 0
                clients.append(c)
            for c in clients:
                c.close()
    run(scenario())


@pytest.mark.parametrize("method", [stun.REFRESH, stun.CREATE_PERMISSION, stun.CHANNEL_BIND])
def test_requests_without_an_allocation_get_437(method):
    async def scenario():
        async with running_server() as server:
            c = await client(server)
            peer = (stun.XOR_PEER_ADDRESS, stun.encode_xor_address(("127.0.0.1", 9), b"\0" * 12))
            response = await c.request(method, [peer, stun.channel_number_attribute(0x4000)], check=False)
            assert error_of(response) == stun.ALLOCATION_MISMATCH
            c.close()
    run(scenario())


def test_user_quota_486_and_total_capacity_508():
    async def scenario():
        async with running_server(user_quota=1, max_allocations=2) as server:
            a1, a2, b1 = [await client(server, user) for user in ("alice", "alice", "bob")]
            await a1.allocate()
            with pytest.raises(TurnRequestError) as failure:
                await a2.allocate()
            assert failure.value.code == stun.ALLOCATION_QUOTA_REACHED
            await b1.allocate()
            carol = await client(server, *rest_credentials(SECRET, "carol"))
            with pytest.raises(TurnRequestError) as failure:
                await carol.allocate()
            assert failure.value.code == stun.INSUFFICIENT_CAPACITY
            a1.close()  # closing the connection frees alice's quota
            await asyncio.sleep(0.1)
            await a2.allocate()
            for c in (a2, b1, carol):
                c.close()
    run(scenario())


def test_relay_port_range_exhausted_is_508():
    async def scenario():
        async with running_server(relay_ports="29990-29991") as server:
            clients = [await client(server, *rest_credentials(SECRET, f"u{i}")) for i in range(3)]
            results = []
            for c in clients:
                try:
                    await c.allocate()
                    results.append("ok")
                except TurnRequestError as error:
                    results.append(error.code)
            assert results.count(stun.INSUFFICIENT_CAPACITY) >= 1
            for c in clients:
                c.close()
    run(scenario())


# --------------------------------------------------------------------------- permissions and relay
def test_peer_filter_ranges():
    strict = PeerFilter(allow_loopback=False)
    for ip in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.0.1", "224.0.0.1",
               "0.0.0.0", "::1", "fe80::1", "::ffff:127.0.0.1", "not an ip"):
        assert not strict.permits(ip), ip
    assert strict.permits("8.8.8.8") and strict.permits("2001:4860:4860::8888")
    assert PeerFilter(allow_loopback=True).permits("127.0.0.5")
    assert not PeerFilter(allow_loopback=True).permits("10.0.0.1")
    assert PeerFilter(False, ["10.0.0.0/8"]).permits("10.1.2.3")


@pytest.mark.parametrize("peer_ip", ["127.0.0.1", "10.0.0.1", "192.168.0.1", "169.254.1.1", "224.0.0.1"])
def test_relaying_to_private_and_special_ranges_is_403_by_default(peer_ip):
    async def scenario():
        async with running_server(allow_loopback_peers=False) as server:
            c = await client(server)
            await c.allocate()
            for attempt in (c.create_permission((peer_ip, 5000)), c.channel_bind((peer_ip, 5000))):
                with pytest.raises(TurnRequestError) as failure:
                    await attempt
                assert failure.value.code == stun.FORBIDDEN
            assert server.stats()["allocation_list"][0]["permissions"] == 0
            c.close()
    run(scenario())


def test_create_permission_needs_a_peer_and_refuses_other_family():
    async def scenario():
        async with running_server() as server:
            c = await client(server)
            await c.allocate()
            assert error_of(await c.request(stun.CREATE_PERMISSION, [], check=False)) == stun.BAD_REQUEST
            with pytest.raises(TurnRequestError) as failure:
                await c.create_permission(("::1", 5000))
            assert failure.value.code == stun.PEER_ADDRESS_FAMILY_MISMATCH
            c.close()
    run(scenario())


def test_permissions_are_enforced_both_ways():
    async def scenario():
        async with running_server() as server:
            c = await client(server)
            relayed = await c.allocate()
            received = asyncio.Queue()
            c.on_data = lambda data, peer: received.put_nowait((data, peer))
            friend = await UdpPeer.open("127.0.0.1")
            stranger = await UdpPeer.open("127.0.0.2")  # another loopback IP: no permission
            # no permission at all: nothing passes either way
            friend.sendto(b"too early", relayed)
            c.send_indication(friend.address, b"nobody listens")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(received.get(), 0.2)
            with pytest.raises(asyncio.TimeoutError):
                await friend.next(0.2)
            await c.create_permission(friend.address)
            # Send/Data indications with the permission
            c.send_indication(friend.address, b"hello friend")
            assert (await friend.next())[0] == b"hello friend"
            friend.sendto(b"hello client", relayed)
            assert await asyncio.wait_for(received.get(), 1) == (b"hello client", friend.address)
            # the stranger still cannot reach the client, nor be reached
            stranger.sendto(b"let me in", relayed)
            c.send_indication(stranger.address, b"no")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(received.get(), 0.2)
            with pytest.raises(asyncio.TimeoutError):
                await stranger.next(0.2)
            allocation = server.stats()["allocation_list"][0]
            assert allocation["drop_no_permission"] >= 3
            friend.close(), stranger.close(), c.close()
    run(scenario())


def test_channel_data_both_ways_over_tcp_with_padding():
    async def scenario():
        async with running_server() as server:
            c = await client(server)
            relayed = await c.allocate()
            peer = await UdpPeer.open()
            received = asyncio.Queue()
            c.on_data = lambda data, p: received.put_nowait((data, p))
            number = await c.channel_bind(peer.address)
            assert number == 0x4000
            for payload in (b"a", b"abcde", b"x" * 100, b"1234"):
                c.send_channel(number, payload)
                data, source = await peer.next()
                assert data == payload and source == relayed
                peer.sendto(payload[::-1], relayed)
                assert await asyncio.wait_for(received.get(), 1) == (payload[::-1], peer.address)
            stats = server.stats()["allocation_list"][0]
            assert stats["to_peer_packets"] == 4 and stats["to_client_packets"] == 4
            assert stats["data_indications_out"] == 0, "a bound peer's packets go as ChannelData"
            peer.close(), c.close()
    run(scenario())


def test_channel_data_over_the_udp_client_transport():
    async def scenario():
        async with running_server() as server:
            # a UDP TURN client written against the raw wire
            udp = await UdpPeer.open()
            key = stun.long_term_key("bob", server.settings.realm, USERS["bob"])
            nonce = server.credentials.new_nonce().encode()
            auth = [(stun.USERNAME, b"bob"), (stun.REALM, server.settings.realm.encode()), (stun.NONCE, nonce)]

            async def request(method, attrs):
                txid = os.urandom(12)
                udp.sendto(stun.build(method, stun.REQUEST, txid, attrs + auth, key=key), server.udp_address)
                return stun.parse((await udp.next())[0])

            allocated = await request(stun.ALLOCATE, [REQUESTED_UDP])
            relayed = allocated.xor_address(stun.XOR_RELAYED_ADDRESS)
            peer = await UdpPeer.open()
            bound = await request(stun.CHANNEL_BIND, [stun.channel_number_attribute(0x4001),
                                                      (stun.XOR_PEER_ADDRESS, stun.encode_xor_address(peer.address, b"\0" * 12))])
            assert bound.cls == stun.SUCCESS
            udp.sendto(stun.channel_data(0x4001, b"abcde", pad=False), server.udp_address)
            assert (await peer.next())[0] == b"abcde"
            peer.sendto(b"back", relayed)
            data, _ = await udp.next()
            assert data == stun.channel_data(0x4001, b"back", pad=False)  # no padding over UDP
            udp.sendto(b"\x40\x01\x00\x10abc", server.udp_address)  # length beyond the datagram: dropped
            await asyncio.sleep(0.1)
            assert server.stats()["allocation_list"][0]["drops"]["malformed"] == 1
            peer.close(), udp.close()
    run(scenario())


def test_channel_bind_rules():
    async def scenario():
        async with running_server() as server:
            c = await client(server)
            await c.allocate()
            p1, p2 = ("127.0.0.1", 7001), ("127.0.0.1", 7002)
            for bad in (0x3FFF, 0x8000, 0xFFFF):
                with pytest.raises(TurnRequestError) as failure:
                    await c.channel_bind(p1, bad)
                assert failure.value.code == stun.BAD_REQUEST
            response = await c.request(stun.CHANNEL_BIND, [stun.channel_number_attribute(0x4000)], check=False)
            assert error_of(response) == stun.BAD_REQUEST  # no peer
            await c.channel_bind(p1, 0x4000)
            await c.channel_bind(p1, 0x4000)  # a refresh of the same binding is fine
            for peer, number in ((p2, 0x4000), (p1, 0x4001)):  # channel taken / peer taken
                with pytest.raises(TurnRequestError) as failure:
                    await c.channel_bind(peer, number)
                assert failure.value.code == stun.BAD_REQUEST
            await c.channel_bind(p2, 0x4001)
            assert server.stats()["allocation_list"][0]["channels"] == 2
            c.close()
    run(scenario())


def test_channel_data_on_an_unbound_channel_is_dropped():
    async def scenario():
        async with running_server() as server:
            c = await client(server)
            await c.allocate()
            peer = await UdpPeer.open()
            await c.create_permission(peer.address)
            c.send_channel(0x4abc, b"nowhere")
            with pytest.raises(asyncio.TimeoutError):
                await peer.next(0.2)
            assert server.stats()["allocation_list"][0]["drops"]["no_channel"] == 1
            peer.close(), c.close()
    run(scenario())


# ---------------------------------------------------------------------------------- lifetimes
def test_allocation_expires_unless_refreshed_and_refresh_zero_deletes():
    async def scenario():
        async with running_server(allocation_lifetime_s=0.4) as server:
            c = await client(server)
            await c.allocate()
            port = server.stats()["relay_ports_in_use"]
            assert port == 1
            await asyncio.sleep(0.25)
            await c.refresh()          # back to the full 0.4 s
            await asyncio.sleep(0.25)
            assert server.stats()["allocations"] == 1
            await asyncio.sleep(0.35)
            stats = server.stats()
            assert stats["allocations"] == 0 and stats["relay_ports_in_use"] == 0
            assert stats["counters"]["allocations_expired"] == 1
            response = await c.request(stun.REFRESH, [], check=False)
            assert error_of(response) == stun.ALLOCATION_MISMATCH
            await c.allocate()         # the same connection may allocate again
            assert await c.refresh(0) == 0
            assert server.stats()["allocations"] == 0
            assert server.stats()["counters"]["allocations_deleted_by_client"] == 1
            c.close()
    run(scenario())


def test_permission_and_channel_expire_and_then_nothing_is_relayed():
    async def scenario():
        async with running_server(permission_lifetime_s=0.3, channel_lifetime_s=0.6) as server:
            c = await client(server)
            relayed = await c.allocate()
            received = asyncio.Queue()
            c.on_data = lambda data, p: received.put_nowait(data)
            peer = await UdpPeer.open()
            number = await c.channel_bind(peer.address)
            c.send_channel(number, b"live")
            assert (await peer.next())[0] == b"live"
            await asyncio.sleep(0.4)  # the permission (0.3 s) is gone, the channel (0.6 s) is not
            c.send_channel(number, b"after permission expiry")
            peer.sendto(b"from peer", relayed)
            with pytest.raises(asyncio.TimeoutError):
                await peer.next(0.2)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(received.get(), 0.2)
            await c.channel_bind(peer.address, number)  # refreshes channel and permission
            c.send_channel(number, b"again")
            assert (await peer.next())[0] == b"again"
            await asyncio.sleep(0.7)
            assert server.stats()["allocation_list"][0]["channels"] == 0
            assert server.stats()["allocation_list"][0]["permissions"] == 0
            peer.close(), c.close()
    run(scenario())


def test_closing_the_tcp_connection_deletes_the_allocation():
    async def scenario():
        async with running_server() as server:
            c = await client(server)
            await c.allocate()
            c.close()
            await asyncio.sleep(0.1)
            stats = server.stats()
            assert stats["allocations"] == 0 and stats["relay_ports_in_use"] == 0
            assert stats["counters"]["allocations_connection_closed"] == 1
    run(scenario())


def test_idle_tcp_connection_without_allocation_is_closed():
    async def scenario():
        async with running_server(tcp_idle_s=0.2) as server:
            c = await client(server)
            await asyncio.wait_for(c.closed.wait(), 1.0)
            assert server.stats()["counters"]["tcp_idle_closed"] == 1
    run(scenario())


# -------------------------------------------------------------------------------- bandwidth, modes
def test_bandwidth_cap_drops_beyond_the_rate():
    async def scenario():
        async with running_server(bandwidth_bytes_s=2000) as server:
            c = await client(server)
            await c.allocate()
            peer = await UdpPeer.open()
            number = await c.channel_bind(peer.address)
            for _ in range(100):
                c.send_channel(number, b"x" * 100)
            await asyncio.sleep(0.2)
            passed = peer.received.qsize()
            assert 15 <= passed <= 30, passed  # 2000 bytes of burst, plus ~0.2 s of refill
            assert server.stats()["allocation_list"][0]["drops"]["bandwidth"] == 100 - passed
            peer.close(), c.close()
    run(scenario())


def test_disabled_turn_answers_nothing_but_binding_still_works():
    async def scenario():
        async with running_server(enabled=False) as server:
            c = await client(server, timeout_s=0.3)
            with pytest.raises(asyncio.TimeoutError):
                await c.allocate()
            assert server.stats()["counters"]["turn_disabled"] >= 1
            binding = stun.build(stun.BINDING, stun.REQUEST, os.urandom(12), [])
            assert (await udp_request(server.udp_address, binding)).cls == stun.SUCCESS
            c.close()
    run(scenario())


def test_turn_over_tls(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)

    async def scenario():
        async with running_server(tls_listen="127.0.0.1:0", tls_cert=str(cert), tls_key=str(key)) as server:
            context = ssl.create_default_context(cafile=str(cert))
            context.check_hostname = False
            c = await TurnClient(server.tls_address, "alice", USERS["alice"], ssl=context).connect()
            relayed = await c.allocate()
            peer = await UdpPeer.open(echo=True)
            received = asyncio.Queue()
            c.on_data = lambda data, p: received.put_nowait(data)
            number = await c.channel_bind(peer.address)
            c.send_channel(number, b"secret audio")
            assert await asyncio.wait_for(received.get(), 1) == b"secret audio"
            assert server.stats()["allocation_list"][0]["transport"] == "tls"
            assert relayed[0] == "127.0.0.1"
            peer.close(), c.close()
    run(scenario())


def test_allocate_lifetime_is_at_least_the_default_and_refresh_may_shorten_it():
    async def scenario():
        async with running_server(allocation_lifetime_s=120, max_allocation_lifetime_s=300) as server:
            c = await client(server)
            await c.allocate(lifetime=5)
            assert c.lifetime == 120, "RFC 8656 7.2: a short request gets the default"
            assert await c.refresh(30) == 30
            assert 25 < server.stats()["allocation_list"][0]["expires_in_s"] <= 30
            c.close()
    run(scenario())


def test_tcp_connections_beyond_the_limit_are_refused():
    async def scenario():
        async with running_server(max_tcp_connections=2) as server:
            kept = [await client(server) for _ in range(2)]
            await asyncio.sleep(0.05)
            extra = await client(server)
            await asyncio.wait_for(extra.closed.wait(), 1.0)
            assert server.stats()["counters"]["tcp_refused_full"] == 1
            await kept[0].allocate()  # the ones inside the limit work
            for c in kept:
                c.close()
    run(scenario())
