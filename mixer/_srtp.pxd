ctypedef int (*srtp_call)(void *ctx, void *buffer, int *length) noexcept nogil

cdef class SessionCalls:
    cdef object _session
    cdef void *_ctx
    cdef srtp_call _protect, _unprotect, _protect_rtcp, _unprotect_rtcp
    cdef unsigned char _buffer[1500]

    cdef object _call(self, srtp_call function, bytes data, int trailer)
    cpdef object protect(self, bytes rtp)
    cpdef object unprotect(self, bytes srtp)
    cpdef object protect_rtcp(self, bytes rtcp)
    cpdef object unprotect_rtcp(self, bytes srtcp)
