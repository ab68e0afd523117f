# cython: language_level=3
"""Direct calls into the libsrtp that pylibsrtp carries, for the per-packet path.

pylibsrtp is the well-kept libsrtp binding this project uses to create sessions from policies and
keys. Its `protect`/`unprotect` go through Python and cffi on every packet (allocate a length
cell, copy into its buffer, check, slice out), which costs about three times libsrtp's own work on
a voice packet. `SessionCalls` takes a pylibsrtp `Session` and calls the same libsrtp functions on
the same `srtp_t` directly through the function addresses cffi exposes, with one reusable buffer.
Failures come back as libsrtp's status code (an int) rather than an exception: on a public port a
packet that fails authentication is routine traffic, and the caller counts it by reason.

The libsrtp in question is 2.x (`srtp_err_status_t f(srtp_t, void *, int *)`); `available()` says
False for a pylibsrtp whose binding does not have that shape, and the caller keeps pylibsrtp's own
methods.
"""
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE


# The same limits as pylibsrtp's own methods (a 1500-byte buffer that must also hold the trailer),
# so both paths accept exactly the same packets.
DEF BUFFER_SIZE = 1500
DEF RTP_TRAILER = 144            # SRTP_MAX_TRAILER_LEN: tag + MKI room
DEF RTCP_TRAILER = 148           # SRTP_MAX_SRTCP_TRAILER_LEN: index + tag + MKI room

#: returned instead of a libsrtp status when the packet does not fit the buffer
STATUS_TOO_LONG = -1

_EXPECTED_SIGNATURE = "srtp_err_status_t(*)(struct srtp_ctx_t_ *, void *, int *)"
_addresses = None


def _function_addresses():
    global _addresses
    if _addresses is None:
        try:
            from pylibsrtp._binding import ffi, lib
            found = {}
            for name in ("srtp_protect", "srtp_unprotect", "srtp_protect_rtcp", "srtp_unprotect_rtcp"):
                pointer = ffi.addressof(lib, name)
                if str(ffi.typeof(pointer).cname) != _EXPECTED_SIGNATURE:
                    found = {}
                    break
                found[name] = int(ffi.cast("uintptr_t", pointer))
            _addresses = (ffi, found)
        except (ImportError, AttributeError, TypeError):
            _addresses = (None, {})
    return _addresses


def available() -> bool:
    """True when pylibsrtp's libsrtp functions can be called directly."""
    return bool(_function_addresses()[1])


cdef class SessionCalls:
    """protect/unprotect (RTP and RTCP) on one pylibsrtp Session: bytes out, or an int status.

    (Attributes are declared in `_srtp.pxd`, so that `_forward` can protect in place.)"""

    def __init__(self, session):
        ffi, found = _function_addresses()
        if not found:
            raise RuntimeError("pylibsrtp's libsrtp functions are not reachable; use Session methods")
        self._session = session
        self._ctx = <void *><size_t>int(ffi.cast("uintptr_t", session._srtp[0]))
        self._protect = <srtp_call><size_t>found["srtp_protect"]
        self._unprotect = <srtp_call><size_t>found["srtp_unprotect"]
        self._protect_rtcp = <srtp_call><size_t>found["srtp_protect_rtcp"]
        self._unprotect_rtcp = <srtp_call><size_t>found["srtp_unprotect_rtcp"]

    cdef object _call(self, srtp_call function, bytes data, int trailer):
        cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
        cdef int length = <int>size
        cdef int status
        if size > BUFFER_SIZE - trailer:
            return STATUS_TOO_LONG
        memcpy(self._buffer, PyBytes_AS_STRING(data), length)
        status = function(self._ctx, self._buffer, &length)
        if status != 0:
            return status
        return PyBytes_FromStringAndSize(<char *>self._buffer, length)

    cpdef object protect(self, bytes rtp):
        return self._call(self._protect, rtp, RTP_TRAILER)

    cpdef object unprotect(self, bytes srtp):
        return self._call(self._unprotect, srtp, 0)

    cpdef object protect_rtcp(self, bytes rtcp):
        return self._call(self._protect_rtcp, rtcp, RTCP_TRAILER)

    cpdef object unprotect_rtcp(self, bytes srtcp):
        return self._call(self._unprotect_rtcp, srtcp, 0)
