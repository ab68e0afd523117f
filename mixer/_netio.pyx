# cython: language_level=3
"""Batched UDP I/O: recvmmsg(2) and sendmmsg(2) for the engine's sockets.

One Python call moves up to `max_packets` datagrams in one system call, so a busy socket costs one
callback and one syscall per batch instead of per packet (uvloop's datagram transport makes a callback
and two recvmsg calls per packet). Sockets must be non-blocking; both calls use MSG_DONTWAIT and
report what they did instead of raising on EAGAIN. Addresses are cached in their `sockaddr` form
(`pack_address`) so the send path does no address parsing. IPv4 and IPv6.
"""
from libc.string cimport memset, memcpy
from libc.errno cimport errno, EAGAIN, EINTR  # EWOULDBLOCK == EAGAIN on Linux
from libc.stdlib cimport malloc, free
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from posix.time cimport CLOCK_MONOTONIC, CLOCK_REALTIME, clock_gettime, timespec

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    struct iovec:
        void *iov_base
        size_t iov_len
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    cmsghdr *CMSG_FIRSTHDR(msghdr *msgh)
    cmsghdr *CMSG_NXTHDR(msghdr *msgh, cmsghdr *cmsg)
    unsigned char *CMSG_DATA(cmsghdr *cmsg)
    size_t CMSG_SPACE(size_t length)
    int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen)
    enum: SOL_SOCKET
    enum: SO_TIMESTAMPNS
    enum: SCM_TIMESTAMPNS
    int recvmmsg(int sockfd, mmsghdr *msgvec, unsigned int vlen, int flags, void *timeout)
    int sendmmsg(int sockfd, mmsghdr *msgvec, unsigned int vlen, int flags)
    enum: MSG_DONTWAIT
    enum: AF_INET
    enum: AF_INET6

cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        unsigned int s_addr
    struct sockaddr_in:
        sa_family_t sin_family
        unsigned short sin_port
        in_addr sin_addr
    struct in6_addr:
        unsigned char s6_addr[16]
    struct sockaddr_in6:
        sa_family_t sin6_family
        unsigned short sin6_port
        unsigned int sin6_flowinfo
        in6_addr sin6_addr
        unsigned int sin6_scope_id
    unsigned short htons(unsigned short)
    unsigned short ntohs(unsigned short)

cdef extern from "<arpa/inet.h>" nogil:
    int inet_pton(int af, const char *src, void *dst)
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)

DEF MAX_BATCH = 256
DEF MAX_DATAGRAM = 2048     # RTP/RTCP/STUN on the media ports; larger datagrams are truncated and dropped
DEF CONTROL_SPACE = 64      # room for one SCM_TIMESTAMPNS control message (CMSG_SPACE(16) == 32)


class NetIoError(OSError):
    """A batched socket call failed for a reason other than 'nothing to do now'."""


def pack_address(str host, int port) -> bytes:
    """The `sockaddr_in`/`sockaddr_in6` bytes for (host, port); host must be a numeric address."""
    cdef sockaddr_in v4
    cdef sockaddr_in6 v6
    cdef bytes encoded = host.encode("ascii")
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range")
    memset(&v4, 0, sizeof(v4))
    if inet_pton(AF_INET, encoded, &v4.sin_addr) == 1:
        v4.sin_family = AF_INET
        v4.sin_port = htons(port)
        return PyBytes_FromStringAndSize(<char *>&v4, sizeof(v4))
    memset(&v6, 0, sizeof(v6))
    if inet_pton(AF_INET6, encoded, &v6.sin6_addr) == 1:
        v6.sin6_family = AF_INET6
        v6.sin6_port = htons(port)
        return PyBytes_FromStringAndSize(<char *>&v6, sizeof(v6))
    raise ValueError(f"{host!r} is not a numeric IPv4 or IPv6 address")


cdef tuple _unpack(sockaddr_storage *storage):
    cdef char text[64]
    cdef sockaddr_in *v4
    cdef sockaddr_in6 *v6
    if storage.ss_family == AF_INET:
        v4 = <sockaddr_in *>storage
        inet_ntop(AF_INET, &v4.sin_addr, text, sizeof(text))
        return (text.decode("ascii"), ntohs(v4.sin_port))
    if storage.ss_family == AF_INET6:
        v6 = <sockaddr_in6 *>storage
        inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof(text))
        return (text.decode("ascii"), ntohs(v6.sin6_port))
    return ("", 0)


cdef class BatchReceiver:
    """Reusable receive buffers for one socket: `receive(fd)` returns [(data, (host, port)), ...],
    or with `timestamps=True` [(data, (host, port), arrival_s), ...].

    `arrival_s` is when the kernel received the datagram (SO_TIMESTAMPNS), on the `time.monotonic()`
    clock. A process that was stalled (paused, starved of CPU) finds its packets queued in the socket;
    the time it reads them says nothing about when they came, so jitter estimates and staleness
    decisions need the kernel's time. The receiver turns SO_TIMESTAMPNS on for the sockets it reads.

    The buffers live as long as the receiver, so a receive allocates only the returned bytes and
    tuples. Datagrams larger than MAX_DATAGRAM are truncated by the kernel (MSG_TRUNC): they are
    counted in `truncated` and not returned, since no media packet on these ports is that large.
    """

    cdef mmsghdr *_msgs
    cdef iovec *_iovs
    cdef sockaddr_storage *_names
    cdef char *_buffers
    cdef char *_controls
    cdef readonly int batch
    cdef readonly bint timestamps
    cdef readonly long long calls, packets, truncated
    cdef int _stamped_fd

    def __cinit__(self, int batch=64, bint timestamps=False):
        if not 1 <= batch <= MAX_BATCH:
            raise ValueError(f"batch must be 1..{MAX_BATCH}")
        self.batch = batch
        self.timestamps = timestamps
        self._stamped_fd = -1
        self._msgs = <mmsghdr *>malloc(batch * sizeof(mmsghdr))
        self._iovs = <iovec *>malloc(batch * sizeof(iovec))
        self._names = <sockaddr_storage *>malloc(batch * sizeof(sockaddr_storage))
        self._buffers = <char *>malloc(batch * MAX_DATAGRAM)
        self._controls = <char *>malloc(batch * CONTROL_SPACE)
        if not (self._msgs and self._iovs and self._names and self._buffers and self._controls):
            raise MemoryError()

    def __dealloc__(self):
        free(self._msgs)
        free(self._iovs)
        free(self._names)
        free(self._buffers)
        free(self._controls)

    def receive(self, int fd) -> list:
        """Every datagram waiting on `fd`, up to `batch`; [] when none (EAGAIN)."""
        cdef int i, n, one = 1
        cdef list out = []
        cdef timespec real_now, mono_now
        cdef double offset_s = 0.0, mono_s = 0.0
        cdef object arrival
        if self.timestamps and fd != self._stamped_fd:
            if setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)) == 0:
                self._stamped_fd = fd
        for i in range(self.batch):
            self._iovs[i].iov_base = self._buffers + i * MAX_DATAGRAM
            self._iovs[i].iov_len = MAX_DATAGRAM
            memset(&self._msgs[i], 0, sizeof(mmsghdr))
            self._msgs[i].msg_hdr.msg_name = &self._names[i]
            self._msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
            self._msgs[i].msg_hdr.msg_iov = &self._iovs[i]
            self._msgs[i].msg_hdr.msg_iovlen = 1
            if self.timestamps:
                self._msgs[i].msg_hdr.msg_control = self._controls + i * CONTROL_SPACE
                self._msgs[i].msg_hdr.msg_controllen = CONTROL_SPACE
        with nogil:
            n = recvmmsg(fd, self._msgs, self.batch, MSG_DONTWAIT, NULL)
        self.calls += 1
        if n < 0:
            if errno == EAGAIN or errno == EINTR:
                return out
            raise NetIoError(errno, "recvmmsg failed")
        if self.timestamps:
            # kernel stamps are CLOCK_REALTIME: map them onto the monotonic clock once per batch
            clock_gettime(CLOCK_REALTIME, &real_now)
            clock_gettime(CLOCK_MONOTONIC, &mono_now)
            mono_s = mono_now.tv_sec + mono_now.tv_nsec * 1e-9
            offset_s = mono_s - (real_now.tv_sec + real_now.tv_nsec * 1e-9)
        for i in range(n):
            if self._msgs[i].msg_hdr.msg_flags & 0x20:  # MSG_TRUNC
                self.truncated += 1
                continue
            data = PyBytes_FromStringAndSize(self._buffers + i * MAX_DATAGRAM, self._msgs[i].msg_len)
            if self.timestamps:
                arrival = min(mono_s, self._kernel_time(&self._msgs[i].msg_hdr, mono_s - offset_s) + offset_s)
                out.append((data, _unpack(&self._names[i]), arrival))
            else:
                out.append((data, _unpack(&self._names[i])))
        self.packets += len(out)
        return out

    cdef double _kernel_time(self, msghdr *header, double default_s) noexcept:
        """The SCM_TIMESTAMPNS stamp of one received message (realtime seconds), or `default_s`."""
        cdef cmsghdr *cmsg = CMSG_FIRSTHDR(header)
        cdef timespec *stamp
        while cmsg != NULL:
            if cmsg.cmsg_level == SOL_SOCKET and cmsg.cmsg_type == SCM_TIMESTAMPNS:
                stamp = <timespec *>CMSG_DATA(cmsg)
                return stamp.tv_sec + stamp.tv_nsec * 1e-9
            cmsg = CMSG_NXTHDR(header, cmsg)
        return default_s


def send_batch(int fd, list datagrams, list addresses) -> int:
    """Send datagrams[i] to addresses[i] (packed by `pack_address`) with as few sendmmsg calls as
    needed; returns how many the kernel took. Never raises for a send error: when the socket buffer
    is full (EAGAIN) it stops, and a datagram the kernel refuses (e.g. ECONNREFUSED left by an
    earlier ICMP error) is skipped; the caller counts what was not taken as dropped, as for any
    lost UDP datagram."""
    cdef Py_ssize_t total = len(datagrams), position = 0, sent = 0, chunk, i
    cdef int n, error
    cdef mmsghdr msgs[64]
    cdef iovec iovs[64]
    cdef bytes data, name
    if len(addresses) != total:
        raise ValueError("one address per datagram")
    while position < total:
        chunk = min(64, total - position)
        memset(msgs, 0, chunk * sizeof(mmsghdr))
        for i in range(chunk):
            data = <bytes?>datagrams[position + i]
            name = <bytes?>addresses[position + i]
            iovs[i].iov_base = PyBytes_AS_STRING(data)
            iovs[i].iov_len = PyBytes_GET_SIZE(data)
            msgs[i].msg_hdr.msg_name = PyBytes_AS_STRING(name)
            msgs[i].msg_hdr.msg_namelen = PyBytes_GET_SIZE(name)
            msgs[i].msg_hdr.msg_iov = &iovs[i]
            msgs[i].msg_hdr.msg_iovlen = 1
        with nogil:
            n = sendmmsg(fd, msgs, chunk, MSG_DONTWAIT)
            error = errno
        if n < 0:
            if error == EINTR:
                continue
            if error == EAGAIN:
                break
            position += 1  # this datagram was refused: skip it, send the rest
            continue
        sent += n
        position += n
    return sent
