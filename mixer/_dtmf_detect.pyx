# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""In-band DTMF detection (ITU-T Q.23 tones, Q.24 reception checks) with Goertzel filters.

Works on 8 kHz linear samples in blocks of 102 (12.75 ms). For each block the eight Q.23
frequencies are measured with the Goertzel recurrence; a block is a *hit* for a key when:

- level: each of the two tones is at least `min_level_dbm0` (0 dBm0 is a sine of peak 22,600 in
  the 16-bit scale G.711 decodes to);
- twist: the high-group tone is at most `max_twist_db` above the low-group one, and at most
  `max_reverse_twist_db` below it;
- relative peak: each tone beats every other tone of its group by `relative_peak_db`;
- frequency: measured again, through a Hann window, at nominal and at +/-5 % off it, the nominal
  filter must win both. For a tone at offset d the filter nearer to it wins (all three lie within
  the window's main lobe), so this accepts |d| < 2.5 % and rejects beyond: Q.24 asks to accept
  +/-(1.5 % + 2 Hz) and to reject +/-3.5 %. (Without the window, leakage from the other tone and
  the block's phase move the boundary by more than those margins.)
- purity: the two tones hold at least half the block's energy. For a dual tone and silence the
  ratio 2(P_low + P_high)/(N E) is exactly the share of the block the tone fills, so it also
  measures how many samples of the block carried the tone.

Duration and pauses (Q.24): a key is reported once the hits of consecutive blocks add up to
`min_tone_ms` of tone (23 ms: a 40 ms tone always fills two whole blocks, 25.5 ms; a 20 ms tone
can never count more than 20 ms), and one missed block inside a tone is bridged (an interruption
of up to 10 ms never makes two digits). A key ends after two blocks without it (25.5 ms, so a
40 ms pause is always seen); only then can the next press be reported.
"""
from libc.math cimport cos, log10, sqrt, M_PI
from libc.stdint cimport int16_t, uint8_t

DEF BLOCK = 102
DEF RATE = 8000.0
DEF SIDE = 0.05

cdef double FREQS[8]
FREQS[:] = [697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0, 1633.0]
KEYS = "123A456B789C*0#D"
# 0 dBm0 as a peak amplitude in the 16-bit scale of mixer._g711's decoders (G.711: a full-scale
# sine is +3.17 dBm0 for mu-law, +3.14 dBm0 for A-law)
DBM0_PEAK = 22600.0

cdef int16_t ULAW[256]
cdef int16_t ALAW[256]


cdef int16_t _ulaw(uint8_t u) noexcept nogil:
    cdef int t
    u = ~u
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return (0x84 - t) if (u & 0x80) else (t - 0x84)


cdef int16_t _alaw(uint8_t a) noexcept nogil:
    cdef int t, seg
    a ^= 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t += 0x108
        t <<= seg - 1
    return t if (a & 0x80) else -t


cdef int _i
for _i in range(256):
    ULAW[_i] = _ulaw(_i)
    ALAW[_i] = _alaw(_i)


cdef inline double _goertzel(const double *x, int n, double coef) noexcept nogil:
    cdef double s0, s1 = 0.0, s2 = 0.0
    cdef int i
    for i in range(n):
        s0 = x[i] + coef * s1 - s2
        s2 = s1
        s1 = s0
    return s1 * s1 + s2 * s2 - coef * s1 * s2


cdef class DtmfDetector:
    """Feed 8 kHz samples (or G.711 payloads); each call returns the keys newly detected."""

    cdef double coef[8]
    cdef double side[8][2]
    cdef double block[BLOCK]
    cdef double windowed[BLOCK]
    cdef double window[BLOCK]
    cdef int filled
    cdef double min_power, twist, reverse_twist, peak_ratio, min_purity
    cdef int min_tone_samples
    cdef int candidate        # key index being accumulated, -1 none
    cdef double accumulated   # samples of tone counted for it
    cdef int misses           # consecutive blocks without it
    cdef int reported         # it has been reported (waiting for its end)
    cdef int pending          # another key heard while the reported one is being released
    cdef double pending_accumulated
    cdef public long blocks, hits, digits
    cdef public long rejected_level, rejected_twist, rejected_peak, rejected_frequency, rejected_purity
    cdef readonly double min_level_dbm0, max_twist_db, max_reverse_twist_db, relative_peak_db
    cdef readonly double min_tone_ms

    def __init__(self, double min_level_dbm0=-30.0, double max_twist_db=8.0,
                 double max_reverse_twist_db=4.0, double relative_peak_db=6.0,
                 double min_tone_ms=23.0, double min_purity=0.5):
        cdef int k
        for k in range(8):
            self.coef[k] = 2.0 * cos(2.0 * M_PI * FREQS[k] / RATE)
            self.side[k][0] = 2.0 * cos(2.0 * M_PI * FREQS[k] * (1.0 - SIDE) / RATE)
            self.side[k][1] = 2.0 * cos(2.0 * M_PI * FREQS[k] * (1.0 + SIDE) / RATE)
        for k in range(BLOCK):
            self.window[k] = 0.5 - 0.5 * cos(2.0 * M_PI * (k + 1) / (BLOCK + 1))
        self.min_level_dbm0 = min_level_dbm0
        self.max_twist_db = max_twist_db
        self.max_reverse_twist_db = max_reverse_twist_db
        self.relative_peak_db = relative_peak_db
        self.min_tone_ms = min_tone_ms
        # Goertzel power of a full-block sine of peak A at its bin: (N A / 2)^2
        cdef double amplitude = DBM0_PEAK * 10.0 ** (min_level_dbm0 / 20.0)
        self.min_power = (BLOCK * amplitude / 2.0) ** 2
        self.twist = 10.0 ** (max_twist_db / 10.0)
        self.reverse_twist = 10.0 ** (max_reverse_twist_db / 10.0)
        self.peak_ratio = 10.0 ** (relative_peak_db / 10.0)
        self.min_purity = min_purity
        self.min_tone_samples = <int>(min_tone_ms * RATE / 1000.0)
        self.reset()

    def reset(self):
        self.filled = 0
        self.candidate = -1
        self.accumulated = 0.0
        self.misses = 0
        self.reported = 0
        self.pending = -1
        self.pending_accumulated = 0.0

    cdef int _block_key(self, double *fill) noexcept:
        """The key this block carries (0..15) or -1; `fill` gets the tone's share of the block."""
        cdef double energy = 0.0
        cdef double power[8]
        cdef int k, row = 0, col = 4
        for k in range(BLOCK):
            energy += self.block[k] * self.block[k]
        if energy <= 0.0:
            return -1
        for k in range(8):
            power[k] = _goertzel(self.block, BLOCK, self.coef[k])
        for k in range(1, 4):
            if power[k] > power[row]:
                row = k
        for k in range(5, 8):
            if power[k] > power[col]:
                col = k
        if power[row] < self.min_power or power[col] < self.min_power:
            self.rejected_level += 1
            return -1
        if power[col] > power[row] * self.twist or power[row] > power[col] * self.reverse_twist:
            self.rejected_twist += 1
            return -1
        for k in range(4):
            if k != row and power[k] * self.peak_ratio > power[row]:
                self.rejected_peak += 1
                return -1
        for k in range(4, 8):
            if k != col and power[k] * self.peak_ratio > power[col]:
                self.rejected_peak += 1
                return -1
        fill[0] = 2.0 * (power[row] + power[col]) / (BLOCK * energy)
        if fill[0] < self.min_purity:
            self.rejected_purity += 1
            return -1
        for k in range(BLOCK):
            self.windowed[k] = self.block[k] * self.window[k]
        if not (self._nearest(row) and self._nearest(col)):
            self.rejected_frequency += 1
            return -1
        if fill[0] > 1.0:
            fill[0] = 1.0
        return row * 4 + (col - 4)

    cdef bint _nearest(self, int k) noexcept:
        """The windowed block's tone is nearer to FREQS[k] than to 5 % either side of it."""
        cdef double centre = _goertzel(self.windowed, BLOCK, self.coef[k])
        return (centre >= _goertzel(self.windowed, BLOCK, self.side[k][0])
                and centre >= _goertzel(self.windowed, BLOCK, self.side[k][1]))

    cdef str _report(self, int key):
        self.reported = 1
        self.digits += 1
        return KEYS[key]

    cdef str _process(self):
        cdef double fill = 0.0
        cdef int key
        self.blocks += 1
        key = self._block_key(&fill)
        if key >= 0:
            self.hits += 1
        if key >= 0 and key == self.candidate:
            self.misses = 0
            self.pending = -1
            if not self.reported:
                self.accumulated += fill * BLOCK
                if self.accumulated >= self.min_tone_samples:
                    return self._report(key)
            return ""
        if self.candidate < 0 or not self.reported:
            # nothing reported is sounding: a key starts (or restarts) here; one block without
            # it is bridged (an interruption of up to 10 ms touches at most one block)
            if key >= 0:
                self.candidate = key
                self.accumulated = fill * BLOCK
                self.misses = 0
            elif self.candidate >= 0:
                self.misses += 1
                if self.misses >= 2:
                    self.candidate = -1
                    self.accumulated = 0.0
            return ""
        # a reported key is being released: it needs two blocks without it (silence or another
        # key); another key heard meanwhile keeps what it accumulated
        self.misses += 1
        if key >= 0:
            if key == self.pending:
                self.pending_accumulated += fill * BLOCK
            else:
                self.pending = key
                self.pending_accumulated = fill * BLOCK
        else:
            self.pending = -1
            self.pending_accumulated = 0.0
        if self.misses >= 2:
            self.candidate = self.pending
            self.accumulated = self.pending_accumulated if self.pending >= 0 else 0.0
            self.pending = -1
            self.pending_accumulated = 0.0
            self.reported = 0
            self.misses = 0
            if self.candidate >= 0 and self.accumulated >= self.min_tone_samples:
                return self._report(self.candidate)
        return ""

    def feed(self, const int16_t[::1] samples):
        """Samples at 8 kHz; returns the keys whose presses completed detection ("" if none)."""
        cdef Py_ssize_t i, n = samples.shape[0]
        out = ""
        for i in range(n):
            self.block[self.filled] = samples[i]
            self.filled += 1
            if self.filled == BLOCK:
                self.filled = 0
                out += self._process()
        return out

    def feed_g711(self, const uint8_t[::1] payload, bint alaw=False):
        """A PCMU (or, with `alaw`, PCMA) payload; returns the keys newly detected."""
        cdef Py_ssize_t i, n = payload.shape[0]
        cdef int16_t *table = &ULAW[0]
        if alaw:
            table = &ALAW[0]
        out = ""
        for i in range(n):
            self.block[self.filled] = table[payload[i]]
            self.filled += 1
            if self.filled == BLOCK:
                self.filled = 0
                out += self._process()
        return out

    def stats(self):
        return {"blocks": self.blocks, "hits": self.hits, "digits": self.digits,
                "rejected": {"level": self.rejected_level, "twist": self.rejected_twist,
                             "relative_peak": self.rejected_peak,
                             "frequency": self.rejected_frequency,
                             "purity": self.rejected_purity}}


def dtmf_tone(str key, int samples, double level_dbm0=-7.0, double twist_db=2.0,
              double low_hz=0.0, double high_hz=0.0, int phase=0):
    """`samples` of the dual tone for `key` at 8 kHz (int16 list-like via numpy by the caller):
    the low tone at `level_dbm0`, the high tone `twist_db` above it (Q.23 senders lead with the
    high group). `low_hz`/`high_hz` override the nominal frequencies (tests of tolerance);
    `phase` is the sample index the tone starts at, so consecutive calls join without a click."""
    import numpy as np
    index = KEYS.index(key.upper())
    low = low_hz or FREQS[index // 4]
    high = high_hz or FREQS[4 + index % 4]
    amplitude_low = DBM0_PEAK * 10.0 ** (level_dbm0 / 20.0)
    amplitude_high = amplitude_low * 10.0 ** (twist_db / 20.0)
    n = np.arange(phase, phase + samples)
    wave = (amplitude_low * np.sin(2 * np.pi * low * n / RATE)
            + amplitude_high * np.sin(2 * np.pi * high * n / RATE))
    return np.clip(np.round(wave), -32768, 32767).astype(np.int16)
