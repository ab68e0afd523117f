# cython: language_level=3
"""The STUN/TURN wire in Cython: message splitting, TCP stream framing, and the ChannelData relay.

Why compiled: the relay path (ChannelData <-> UDP) runs once per media packet, 50 packets/s per
participant. A ChannelData frame is recognised by its first two bits (RFC 8656 12: 0b01) and relayed
here without building any Python object but the payload; STUN messages (first two bits 0b00, RFC 8489
5) are split into raw attributes here and interpreted in Python (`stun.py`), where the protocol
logic stays readable. TCP framing follows RFC 8656 12.5 / RFC 4571 conventions: STUN messages are
self-delimiting and ChannelData is padded to a multiple of 4 bytes on stream transports.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.string cimport memcpy
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

import zlib

from mixer.turn.errors import StunError

cdef unsigned int STUN_MAGIC_COOKIE = 0x2112A442      # RFC 8489 5
cdef unsigned int FINGERPRINT_XOR = 0x5354554E        # RFC 8489 14.7
cdef unsigned int ATTR_FINGERPRINT = 0x8028
cdef Py_ssize_t STUN_HEADER = 20
cdef Py_ssize_t CHANNEL_HEADER = 4
CHANNEL_MIN = 0x4000            # RFC 8656 12 narrows channels to 0x4000..0x4FFF; RFC 5766's
CHANNEL_MAX = 0x7FFF            # 0x4000..0x7FFF is still accepted: coturn's clients use it


cdef inline double _monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


def parse_stun(data):
    """Split one STUN message: (message type, transaction id, [(attribute type, value, offset)]).

    Checks everything that does not need a key: the zero bits, the magic cookie, the length (a
    multiple of 4 that matches the datagram), attributes that fit exactly, and FINGERPRINT (last,
    CRC-32 correct). Raises StunError otherwise. `offset` is where the attribute's header starts,
    which MESSAGE-INTEGRITY checks need.
    """
    cdef const unsigned char[:] buf
    try:
        buf = data
    except (TypeError, ValueError, BufferError) as exc:
        raise StunError(f"not a byte buffer: {exc}") from None
    cdef Py_ssize_t n = buf.shape[0], pos, end, alen
    cdef unsigned int mtype, length, atype, cookie, crc
    cdef bint fingerprint_seen = False
    if n < STUN_HEADER:
        raise StunError("shorter than a STUN header")
    if buf[0] & 0xC0:
        raise StunError("the first two bits of a STUN message are zero")
    mtype = (buf[0] << 8) | buf[1]
    length = (buf[2] << 8) | buf[3]
    cookie = (<unsigned int>buf[4] << 24) | (buf[5] << 16) | (buf[6] << 8) | buf[7]
    if cookie != STUN_MAGIC_COOKIE:
        raise StunError("no magic cookie")
    if length & 3:
        raise StunError("length is not a multiple of 4")
    if STUN_HEADER + length != n:
        raise StunError("length does not match the message")
    txid = PyBytes_FromStringAndSize(<const char*>&buf[8], 12)
    attrs = []
    pos = STUN_HEADER
    while pos < n:
        if fingerprint_seen:
            raise StunError("attribute after FINGERPRINT")
        if n - pos < 4:
            raise StunError("truncated attribute header")
        atype = (buf[pos] << 8) | buf[pos + 1]
        alen = (buf[pos + 2] << 8) | buf[pos + 3]
        end = pos + 4 + alen
        if end > n:
            raise StunError("attribute runs past the message")
        value = PyBytes_FromStringAndSize(<const char*>&buf[pos + 4], alen) if alen else b""
        if atype == ATTR_FINGERPRINT:
            if alen != 4:
                raise StunError("FINGERPRINT is 4 bytes")
            crc = (<unsigned int>buf[pos + 4] << 24) | (buf[pos + 5] << 16) | (buf[pos + 6] << 8) | buf[pos + 7]
            if (zlib.crc32(PyBytes_FromStringAndSize(<const char*>&buf[0], pos)) ^ FINGERPRINT_XOR) != crc:
                raise StunError("FINGERPRINT does not match")
            fingerprint_seen = True
        attrs.append((atype, value, pos))
        pos = end + ((4 - (alen & 3)) & 3)
    if pos != n:
        raise StunError("padding runs past the message")
    return mtype, txid, attrs


cdef class TokenBucket:
    """Bytes per second with a one-second burst; shared by all allocations of one user.

    rate 0 means no cap. Drops, never queues: late media is worthless.
    """
    cdef public double rate
    cdef public double burst
    cdef public double tokens
    cdef double last

    def __init__(self, double rate_bytes_s=0.0, double burst_bytes=0.0):
        self.rate = rate_bytes_s
        self.burst = burst_bytes if burst_bytes > 0 else rate_bytes_s
        self.tokens = self.burst
        self.last = _monotonic()

    cpdef bint take(self, Py_ssize_t n):
        cdef double now
        if self.rate <= 0:
            return True
        now = _monotonic()
        self.tokens += (now - self.last) * self.rate
        self.last = now
        if self.tokens > self.burst:
            self.tokens = self.burst
        if self.tokens < n:
            return False
        self.tokens -= n
        return True


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        pass
    ssize_t c_sendto "sendto" (int fd, const void* buf, size_t n, int flags, const sockaddr* addr,
                                socklen_t addrlen)
    ssize_t c_recvfrom "recvfrom" (int fd, void* buf, size_t n, int flags, sockaddr* addr,
                                    socklen_t* addrlen)
    int MSG_DONTWAIT

cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        unsigned int s_addr
    struct sockaddr_in:
        unsigned short sin_family
        unsigned short sin_port
        in_addr sin_addr
    unsigned short ntohs(unsigned short)
    unsigned short htons(unsigned short)
    unsigned int ntohl(unsigned int)
    int AF_INET

cdef extern from "<arpa/inet.h>" nogil:
    int inet_pton(int af, const char* src, void* dst)

cdef extern from "<errno.h>" nogil:
    int errno
    int EAGAIN
    int EWOULDBLOCK
    int EINTR

from libc.string cimport memset

cdef enum:
    RECV_BUFFER = 65536
    OUT_BUFFER = 262144         # ChannelData frames gathered for one TCP write
    READS_PER_WAKEUP = 64       # datagrams read per readable event before yielding to the loop


# One receive buffer and one gathering buffer for the whole process instead of per allocation (that
# would be 320 KiB each): a relay fills and copies them out without running any Python code in
# between, so no other relay (not even one on another thread's loop) can see them half-written.
cdef unsigned char _INBUF[RECV_BUFFER]
cdef unsigned char _OUTBUF[OUT_BUFFER]


cdef inline long long _peer_key(unsigned int ip_host_order, unsigned int port) noexcept nogil:
    return (<long long>ip_host_order << 16) | port


def sockaddr_key(str ip, int port) -> int:
    """The relay's lookup key of an IPv4 peer (what a received datagram's source is matched with)."""
    cdef in_addr address
    if inet_pton(AF_INET, ip.encode("ascii"), &address) != 1:
        raise ValueError(f"{ip!r} is not an IPv4 address")
    return _peer_key(ntohl(address.s_addr), port)


cdef bytes _sockaddr(str ip, int port):
    cdef sockaddr_in address
    memset(&address, 0, sizeof(address))
    address.sin_family = AF_INET
    address.sin_port = htons(port)
    if inet_pton(AF_INET, ip.encode("ascii"), &address.sin_addr) != 1:
        raise ValueError(f"{ip!r} is not an IPv4 address")
    return PyBytes_FromStringAndSize(<const char*>&address, sizeof(address))


cdef class ChannelRelay:
    """The hot path of one allocation: owns its relayed IPv4 UDP socket's file descriptor.

    Peer -> client: on each readable event up to READS_PER_WAKEUP datagrams are read with
    recvfrom(2) into a C buffer; a datagram from a peer with a live channel becomes a ChannelData
    frame (RFC 8656 12.4; padded to 4 bytes on stream transports) without any Python object, and on
    a stream all frames of one wakeup leave in one write; one from an IP without a permission is
    dropped here, so a stranger's flood costs no Python. Client -> peer: sendto(2) on the fd with a
    prepared sockaddr. Permitted peers without a channel go to `on_peer_datagram` (Python: exact
    permission expiry check, Data indication). The allocation calls `set_channels` with only the channels
    whose binding *and* permission are live, so a lookup here is the whole permission check.
    """
    cdef int fd
    cdef object loop
    cdef public object sock
    cdef dict key_channel         # peer key -> channel number
    cdef set permitted            # peer IPs (host-order ints) with a live permission
    cdef dict channel_addr        # channel number -> packed sockaddr_in
    cdef public dict channel_peers  # channel number -> (ip, port), for Python callers and stats
    cdef public object client_send
    cdef public bint stream
    cdef public bint client_paused
    cdef public object on_peer_datagram
    cdef public TokenBucket bucket
    cdef unsigned char* out
    cdef unsigned char* inbuf
    cdef public unsigned long long to_peer_packets, to_peer_bytes, to_client_packets, to_client_bytes
    cdef public unsigned long long drop_no_channel, drop_bandwidth, drop_client_slow, drop_malformed
    cdef public unsigned long long drop_no_permission
    cdef public unsigned long long socket_errors, wakeups

    def __cinit__(self):
        self.out = _OUTBUF
        self.inbuf = _INBUF

    def __init__(self, client_send, bint stream, on_peer_datagram, TokenBucket bucket not None):
        self.fd = -1
        self.sock = None
        self.loop = None
        self.key_channel = {}
        self.permitted = set()
        self.channel_addr = {}
        self.channel_peers = {}
        self.client_send = client_send
        self.stream = stream
        self.on_peer_datagram = on_peer_datagram
        self.bucket = bucket

    # ------------------------------------------------------------------------------- lifecycle
    def open(self, sock, loop) -> None:
        """Start relaying on `sock` (a bound, non-blocking IPv4 UDP socket) in `loop`."""
        self.sock = sock
        self.fd = sock.fileno()
        self.loop = loop
        loop.add_reader(self.fd, self._readable)

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            self.sock.close()
            self.fd = -1
        self.set_channels({})

    @property
    def is_open(self) -> bool:
        return self.fd >= 0

    def set_channels(self, dict channels, permitted_ips=()) -> None:
        """The live channels, {number: (ip, port)}, and the IPs with a live permission. A datagram
        from any other IP is dropped here and counted (`no_permission`) without reaching Python."""
        self.permitted = {sockaddr_key(ip, 0) >> 16 for ip in permitted_ips}
        self.channel_peers = dict(channels)
        self.key_channel = {sockaddr_key(peer[0], peer[1]): number for number, peer in channels.items()}
        self.channel_addr = {number: _sockaddr(peer[0], peer[1]) for number, peer in channels.items()}

    # --------------------------------------------------------------------------- peer -> client
    def _readable(self):
        cdef sockaddr_in source
        cdef socklen_t source_len
        cdef ssize_t n
        cdef Py_ssize_t used = 0, frame, padded
        cdef unsigned int number
        cdef int i
        self.wakeups += 1
        for i in range(READS_PER_WAKEUP):
            source_len = sizeof(source)
            n = c_recvfrom(self.fd, self.inbuf, RECV_BUFFER, MSG_DONTWAIT, <sockaddr*>&source, &source_len)
            if n < 0:
                if errno == EAGAIN or errno == EWOULDBLOCK:
                    break
                if errno == EINTR:
                    continue
                self.socket_errors += 1  # e.g. ECONNREFUSED from an earlier send's ICMP
                continue
            if source.sin_family != AF_INET:
                continue
            channel = self.key_channel.get(_peer_key(ntohl(source.sin_addr.s_addr), ntohs(source.sin_port)))
            if channel is None:
                if ntohl(source.sin_addr.s_addr) not in self.permitted:
                    self.drop_no_permission += 1
                    continue
                if used:
                    self._flush(used)
                    used = 0
                self.on_peer_datagram(PyBytes_FromStringAndSize(<const char*>self.inbuf, n),
                                      (_ntop(&source), ntohs(source.sin_port)))
                continue
            if self.client_paused:
                self.drop_client_slow += 1
                continue
            if not self.bucket.take(n):
                self.drop_bandwidth += 1
                continue
            number = channel
            padded = (n + 3) & ~3 if self.stream else n
            frame = CHANNEL_HEADER + padded
            if not self.stream:
                self._frame_into(self.out, number, n, padded)
                self.client_send(PyBytes_FromStringAndSize(<const char*>self.out, frame))
            else:
                if used + frame > OUT_BUFFER:
                    self._flush(used)
                    used = 0
                self._frame_into(self.out + used, number, n, padded)
                used += frame
            self.to_client_packets += 1
            self.to_client_bytes += n
        if used:
            self._flush(used)

    cdef inline void _frame_into(self, unsigned char* p, unsigned int number, Py_ssize_t n, Py_ssize_t padded) noexcept:
        cdef Py_ssize_t i
        p[0] = number >> 8
        p[1] = number & 0xFF
        p[2] = n >> 8
        p[3] = n & 0xFF
        memcpy(p + 4, self.inbuf, n)
        for i in range(n, padded):
            p[4 + i] = 0

    cdef void _flush(self, Py_ssize_t used):
        self.client_send(PyBytes_FromStringAndSize(<const char*>self.out, used))

    # --------------------------------------------------------------------------- client -> peer
    cdef void _to_peer(self, unsigned int channel, const unsigned char* payload, Py_ssize_t n):
        address = self.channel_addr.get(channel)
        if address is None or self.fd < 0:
            self.drop_no_channel += 1
            return
        if not self.bucket.take(n):
            self.drop_bandwidth += 1
            return
        if c_sendto(self.fd, payload, n, MSG_DONTWAIT, <const sockaddr*>PyBytes_AS_STRING(address),
                    sizeof(sockaddr_in)) < 0:
            self.socket_errors += 1  # a full socket buffer drops, as a router would
            return
        self.to_peer_packets += 1
        self.to_peer_bytes += n

    def send_to(self, bytes data, str ip, int port) -> bool:
        """Slow path (Send indications): one datagram to a peer the caller has checked."""
        if self.fd < 0:
            return False
        if not self.bucket.take(len(data)):
            self.drop_bandwidth += 1
            return False
        address = _sockaddr(ip, port)
        if c_sendto(self.fd, PyBytes_AS_STRING(data), len(data), MSG_DONTWAIT,
                    <const sockaddr*>PyBytes_AS_STRING(address), sizeof(sockaddr_in)) < 0:
            self.socket_errors += 1
            return False
        self.to_peer_packets += 1
        self.to_peer_bytes += len(data)
        return True

    def channel_datagram(self, bytes data):
        """A ChannelData message that came as one datagram (UDP client transport, RFC 8656 12.5)."""
        cdef Py_ssize_t size = len(data), n
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
        if size < CHANNEL_HEADER:
            self.drop_malformed += 1
            return
        n = (p[2] << 8) | p[3]
        if n > size - CHANNEL_HEADER:
            self.drop_malformed += 1
            return
        self._to_peer((p[0] << 8) | p[1], p + CHANNEL_HEADER, n)

    def stats(self) -> dict:
        return {
            "to_peer_packets": self.to_peer_packets, "to_peer_bytes": self.to_peer_bytes,
            "to_client_packets": self.to_client_packets, "to_client_bytes": self.to_client_bytes,
            "drops": {"no_channel": self.drop_no_channel, "no_permission": self.drop_no_permission,
                      "bandwidth": self.drop_bandwidth,
                      "client_slow": self.drop_client_slow, "malformed": self.drop_malformed},
            "socket_errors": self.socket_errors,
        }


cdef str _ntop(sockaddr_in* address):
    cdef unsigned int ip = ntohl(address.sin_addr.s_addr)
    return f"{ip >> 24}.{(ip >> 16) & 0xFF}.{(ip >> 8) & 0xFF}.{ip & 0xFF}"


cdef class StreamFramer:
    """Splits a TCP byte stream into STUN messages and ChannelData frames (RFC 8656 12.5).

    STUN messages go to `on_stun(bytes)`. ChannelData goes straight to `relay` (a ChannelRelay, on
    the server) or to `on_channel(channel, payload)` (a client). A frame that is neither cannot be
    skipped in a stream, so `on_broken(reason)` is called once and everything after is ignored.
    """
    cdef bytearray pending
    cdef public ChannelRelay relay
    cdef public object on_stun
    cdef public object on_channel
    cdef public object on_broken
    cdef public bint broken
    cdef public unsigned long long stun_frames, channel_frames

    def __init__(self, on_stun, on_broken, on_channel=None):
        self.pending = bytearray()
        self.relay = None
        self.on_stun = on_stun
        self.on_broken = on_broken
        self.on_channel = on_channel
        self.broken = False

    @property
    def pending_bytes(self) -> int:
        return len(self.pending)

    def data_received(self, data):
        """asyncio Protocol.data_received: feed stream bytes, dispatch every complete frame."""
        cdef Py_ssize_t used
        if self.broken:
            return
        if not self.pending:
            used = self._split(data)
            if used < len(data) and not self.broken:
                self.pending += data[used:]
            return
        self.pending += data
        used = self._split(self.pending)
        if self.broken:
            self.pending = bytearray()
        elif used:
            del self.pending[:used]

    cdef Py_ssize_t _split(self, const unsigned char[:] buf) except -1:
        cdef Py_ssize_t n = buf.shape[0], pos = 0, length, total
        cdef unsigned int first, channel
        while n - pos >= CHANNEL_HEADER and not self.broken:
            first = buf[pos] >> 6
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            if first == 1:
                channel = (buf[pos] << 8) | buf[pos + 1]
                total = CHANNEL_HEADER + ((length + 3) & ~3)
                if n - pos < total:
                    break
                self.channel_frames += 1
                if self.relay is not None:
                    self.relay._to_peer(channel, &buf[pos + CHANNEL_HEADER], length)
                elif self.on_channel is not None:
                    self.on_channel(channel, PyBytes_FromStringAndSize(
                        <const char*>&buf[pos + CHANNEL_HEADER], length))
                pos += total
            elif first == 0:
                total = STUN_HEADER + length
                if n - pos < STUN_HEADER:
                    break
                if (length & 3) or (buf[pos + 4] != 0x21 or buf[pos + 5] != 0x12
                                    or buf[pos + 6] != 0xA4 or buf[pos + 7] != 0x42):
                    self._break("not a STUN message (cookie or length)")
                    return n
                if n - pos < total:
                    break
                self.stun_frames += 1
                self.on_stun(PyBytes_FromStringAndSize(<const char*>&buf[pos], total))
                pos += total
            else:
                self._break("neither STUN nor ChannelData")
                return n
        return pos

    cdef void _break(self, str reason):
        self.broken = True
        self.on_broken(reason)
