# cython: language_level=3
"""The mix kernel (total and every talker's mix-minus in one pass, SIMD where the CPU has it) and
RFC 6464 audio levels measured from PCM.
"""
from libc.stdint cimport int16_t, int32_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset
from libc.math cimport sqrt, log10, lround

import numpy as np
cimport numpy as cnp

cnp.import_array()

# RFC 6464 section 3: levels are 0..127 in -dBov, 127 meaning silence
AUDIO_LEVEL_SILENT = 127

# --------------------------------------------------------------------------------------------------
# Mixing kernel and audio level
# --------------------------------------------------------------------------------------------------

cdef extern from "mix_kernel.h" nogil:
    void vm_mix(const int16_t *frames, size_t n, size_t s, int32_t *acc, int16_t *total,
                int16_t *minus, size_t minus_stride)
    int vm_force_path(int path)
    const char *vm_mix_path_name()

MIX_PATHS = ("c", "sse2", "avx2")


def mix_kernel_path() -> str:
    """Which mix kernel this CPU runs: avx2, sse2 or c."""
    return vm_mix_path_name().decode()


def set_mix_kernel_path(str name) -> str:
    """Force a kernel path (tests compare them); a path the CPU lacks falls back. Returns the path."""
    return MIX_PATHS[vm_force_path(MIX_PATHS.index(name))]


cdef int32_t *_scratch = NULL
cdef Py_ssize_t _scratch_len = 0


cdef int32_t *_accumulator(Py_ssize_t s) except NULL:
    """One int32 scratch row, grown on demand (mixing runs on the engine's one thread)."""
    global _scratch, _scratch_len
    cdef int32_t *grown
    if s > _scratch_len:
        grown = <int32_t *>malloc(max(s, 1) * sizeof(int32_t))
        if grown == NULL:
            raise MemoryError()
        free(_scratch)
        _scratch = grown
        _scratch_len = s
    return _scratch


cdef int _mix(const int16_t[:, ::1] frames, int16_t[::1] total, int16_t *minus,
              Py_ssize_t minus_stride) except -1:
    """Shared body of mix_minus and mix_total (output sizes already checked)."""
    cdef Py_ssize_t n = frames.shape[0], s = frames.shape[1]
    cdef int32_t *acc
    if s == 0:
        return 0
    if n == 0:
        memset(&total[0], 0, s * sizeof(int16_t))
        return 0
    acc = _accumulator(s)
    with nogil:
        vm_mix(&frames[0, 0], n, s, acc, &total[0], minus, minus_stride)
    return 0


def mix_minus(const int16_t[:, ::1] frames, int16_t[::1] total, int16_t[:, ::1] minus) -> None:
    """Mix N frames: `total` = saturate(sum of all), `minus[i]` = saturate(sum - frames[i]).

    One int32 accumulation pass plus one narrowing pass per output: O(N * samples), not O(N^2).
    Each speaker hears everyone but themselves; listeners hear `total`. SIMD in mix_kernel.h.
    """
    cdef Py_ssize_t n = frames.shape[0], s = frames.shape[1]
    if total.shape[0] < s or minus.shape[0] < n or (n and minus.shape[1] < s):
        raise ValueError("output buffers too small")
    _mix(frames, total, &minus[0, 0] if n and s else NULL, minus.shape[1])


def mix_total(const int16_t[:, ::1] frames, int16_t[::1] total) -> None:
    """Only the saturated sum (when nobody in the mix needs a mix-minus)."""
    if total.shape[0] < frames.shape[1]:
        raise ValueError("output buffer too small")
    _mix(frames, total, NULL, 0)


def audio_level(const int16_t[::1] pcm) -> int:
    """RFC 6464 level of a frame: -dBov of its RMS, 0 (loudest) .. 127 (silence)."""
    cdef Py_ssize_t i, n = pcm.shape[0]
    cdef double energy = 0, rms, db
    if n == 0:
        return AUDIO_LEVEL_SILENT
    with nogil:
        for i in range(n):
            energy += <double>pcm[i] * pcm[i]
    rms = sqrt(energy / n)
    if rms < 1e-9:
        return AUDIO_LEVEL_SILENT
    db = -20.0 * log10(rms / 32768.0)
    if db < 0:
        return 0
    if db > AUDIO_LEVEL_SILENT:
        return AUDIO_LEVEL_SILENT
    return <int>lround(db)
