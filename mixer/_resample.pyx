# cython: language_level=3
"""Resampling by an integer factor (8 kHz telephony <-> 48 kHz mix rate): a stateful polyphase FIR
whose output is exactly one frame per frame in.
"""
from libc.stdint cimport int16_t
from libc.stdlib cimport malloc, free
from libc.math cimport lround

import numpy as np
cimport numpy as cnp

cnp.import_array()

# --------------------------------------------------------------------------------------------------
# Resampling by an integer factor (8 kHz telephony <-> 48 kHz mix rate): stateful polyphase FIR
# --------------------------------------------------------------------------------------------------

cdef extern from "dsp_kernel.h" nogil:
    float vm_dot(const float *w, const float *x, int n)


def _design_lowpass(int factor, int taps_per_phase, double cutoff_hz, double high_rate,
                    double beta):
    """Kaiser-windowed sinc low-pass at the high rate, `factor * taps_per_phase` taps."""
    n = factor * taps_per_phase
    t = np.arange(n) - (n - 1) / 2.0
    fc = cutoff_hz / high_rate
    h = 2 * fc * np.sinc(2 * fc * t) * np.kaiser(n, beta)
    return h / h.sum()


cdef class Resampler:
    """Streams int16 audio between `in_rate` and `out_rate` whose ratio is an integer (e.g. 8000 and
    48000). Keeps filter history across calls, so consecutive 20 ms frames join without clicks.

    The low-pass (48 taps per phase, Kaiser beta 6) is centred at 0.4625 x the lower rate: for
    telephony the pass band is flat (within 0.5 dB) up to 3.4 kHz, the top of the telephone band,
    and everything from 4.4 kHz up is attenuated by more than 60 dB. Filter banks are stored
    reversed per phase, so every output sample is one contiguous dot product.
    """

    cdef readonly int in_rate
    cdef readonly int out_rate
    cdef readonly int factor
    cdef bint _up
    cdef float[::1] _bank     # up: per phase, reversed; down: the whole filter, reversed
    cdef int _tpp             # taps per phase
    cdef int _ntaps
    cdef float[::1] _hist     # previous input samples, newest last
    cdef int _hist_len

    def __cinit__(self, int in_rate, int out_rate, int taps_per_phase=48, double beta=6.0):
        cdef int low = min(in_rate, out_rate), high = max(in_rate, out_rate), p
        if low <= 0 or high % low:
            raise ValueError("rates must be positive with an integer ratio")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.factor = high // low
        self._up = out_rate > in_rate
        h = _design_lowpass(self.factor, taps_per_phase, 0.4625 * low, high, beta)
        self._tpp = taps_per_phase
        self._ntaps = len(h)
        if self._up:
            # phase p uses h[p], h[p + L], h[p + 2L], ... applied to x[i], x[i-1], ...: reversed
            bank = np.stack([h[p::self.factor][::-1] for p in range(self.factor)]) * self.factor
            self._bank = np.ascontiguousarray(bank.ravel(), dtype=np.float32)
            self._hist_len = taps_per_phase
        else:
            self._bank = np.ascontiguousarray(h[::-1], dtype=np.float32)
            self._hist_len = self._ntaps
        self._hist = np.zeros(self._hist_len, dtype=np.float32)

    def output_length(self, int n_in) -> int:
        return n_in * self.factor if self._up else n_in // self.factor

    @property
    def group_delay(self) -> float:
        """Delay of the linear-phase filter, in output samples (1.5 ms for telephony)."""
        delay = (self._ntaps - 1) / 2.0
        return delay if self._up else delay / self.factor

    def process_into(self, const int16_t[::1] pcm, int16_t[::1] out) -> int:
        """Resample `pcm` into `out`; returns samples written. Input length for downsampling must
        be a multiple of the factor (20 ms frames always are)."""
        cdef Py_ssize_t n_in = pcm.shape[0]
        cdef Py_ssize_t n_out = n_in * self.factor if self._up else n_in // self.factor
        cdef Py_ssize_t i, p, k, m, hl = self._hist_len, L = self.factor, taps = self._ntaps
        cdef Py_ssize_t tpp = self._tpp
        cdef float *buf
        cdef const float *x
        cdef const float *w
        cdef float acc
        cdef float[::1] bank = self._bank
        cdef float[::1] hist = self._hist
        cdef long v
        if out.shape[0] < n_out:
            raise ValueError("output buffer too small")
        if not self._up and n_in % L:
            raise ValueError("downsampling input must be a multiple of the factor")
        buf = <float *>malloc((hl + n_in) * sizeof(float))
        if buf == NULL:
            raise MemoryError()
        with nogil:
            for i in range(hl):
                buf[i] = hist[i]
            for i in range(n_in):
                buf[hl + i] = pcm[i]
            if self._up:
                for i in range(n_in):
                    x = buf + hl + i - (tpp - 1)
                    for p in range(L):
                        acc = vm_dot(&bank[p * tpp], x, <int>tpp)
                        v = lround(acc)
                        out[i * L + p] = <int16_t>(32767 if v > 32767 else (-32768 if v < -32768 else v))
            else:
                w = &bank[0]
                for m in range(n_out):
                    x = buf + hl + m * L + L - taps
                    acc = vm_dot(w, x, <int>taps)
                    v = lround(acc)
                    out[m] = <int16_t>(32767 if v > 32767 else (-32768 if v < -32768 else v))
            for i in range(hl):
                hist[i] = buf[n_in + i]
        free(buf)
        return n_out

    def process(self, const int16_t[::1] pcm) -> cnp.ndarray:
        out = np.empty(self.output_length(pcm.shape[0]), dtype=np.int16)
        self.process_into(pcm, out)
        return out

    def reset(self):
        self._hist[:] = 0
