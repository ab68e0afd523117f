# cython: language_level=3
"""Opus (RFC 6716) encode/decode through libopus, with the GIL released around every codec call.

Fixed to what a voice mixer needs: 48 kHz (or 8/12/16/24 kHz), mono, 20 ms frames by default. The
classes own their libopus state and output buffers, so the hot path allocates only the `bytes` it
returns (or nothing at all with the `*_into` variants).
"""
from libc.stdint cimport int16_t, int32_t
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.string cimport memcpy

import numpy as np
cimport numpy as cnp

cnp.import_array()

cdef extern from "opus.h" nogil:
    ctypedef struct OpusEncoderState "OpusEncoder":
        pass
    ctypedef struct OpusDecoderState "OpusDecoder":
        pass
    OpusEncoderState *opus_encoder_create(int32_t Fs, int channels, int application, int *error)
    void opus_encoder_destroy(OpusEncoderState *st)
    int32_t opus_encode(OpusEncoderState *st, const int16_t *pcm, int frame_size,
                        unsigned char *data, int32_t max_data_bytes)
    int opus_encoder_ctl(OpusEncoderState *st, int request, ...)
    int opus_encoder_get_size(int channels)
    OpusDecoderState *opus_decoder_create(int32_t Fs, int channels, int *error)
    void opus_decoder_destroy(OpusDecoderState *st)
    int opus_decode(OpusDecoderState *st, const unsigned char *data, int32_t len,
                    int16_t *pcm, int frame_size, int decode_fec)
    int opus_decoder_ctl(OpusDecoderState *st, int request, ...)
    int opus_packet_get_nb_samples(const unsigned char *packet, int32_t len, int32_t Fs)
    int opus_packet_parse(const unsigned char *data, int32_t len, unsigned char *out_toc,
                          const unsigned char **frames, int16_t *size, int *payload_offset)
    const char *opus_strerror(int error)
    const char *opus_get_version_string()
    int OPUS_OK
    int OPUS_APPLICATION_VOIP
    int OPUS_APPLICATION_AUDIO
    int OPUS_APPLICATION_RESTRICTED_LOWDELAY
    int OPUS_SIGNAL_VOICE
    int OPUS_SET_BITRATE_REQUEST
    int OPUS_SET_COMPLEXITY_REQUEST
    int OPUS_SET_INBAND_FEC_REQUEST
    int OPUS_SET_PACKET_LOSS_PERC_REQUEST
    int OPUS_SET_DTX_REQUEST
    int OPUS_SET_SIGNAL_REQUEST
    int OPUS_GET_LOOKAHEAD_REQUEST

# RFC 7587 section 4.2: a 120 ms frame at 48 kHz is the largest an Opus packet decodes to.
MAX_FRAME_SAMPLES = 5760
# Recommended ceiling for one encoded Opus frame (RFC 6716 section 3.4: at most 1275 bytes per frame).
MAX_PACKET_BYTES = 1275
APPLICATIONS = {
    "voip": OPUS_APPLICATION_VOIP,
    "audio": OPUS_APPLICATION_AUDIO,
    "lowdelay": OPUS_APPLICATION_RESTRICTED_LOWDELAY,
}


def libopus_version() -> str:
    """The linked libopus, e.g. "libopus 1.3.1"."""
    return opus_get_version_string().decode()


class OpusError(Exception):
    """libopus refused an operation (bad settings, corrupt packet)."""


cdef inline int _check(int code, str what) except -1:
    if code < 0:
        raise OpusError(f"{what}: {opus_strerror(code).decode()}")
    return code


cdef class OpusEncoder:
    """A libopus encoder for one outgoing stream (or one shared mix)."""

    cdef OpusEncoderState *_st
    cdef readonly int sample_rate
    cdef readonly int channels
    cdef readonly int frame_samples
    cdef readonly int bitrate
    cdef readonly int complexity
    cdef readonly bint fec
    cdef readonly bint dtx
    cdef readonly int packet_loss_percent
    cdef unsigned char _out[1275]

    def __cinit__(self, int sample_rate=48000, int channels=1, str application="voip",
                  int frame_ms=20, int bitrate=32000, int complexity=5, bint fec=True,
                  int packet_loss_percent=10, bint dtx=False):
        cdef int err = 0
        if application not in APPLICATIONS:
            raise ValueError(f"unknown Opus application {application!r}")
        if frame_ms not in (10, 20, 40, 60):
            raise ValueError("frame_ms must be 10, 20, 40 or 60")
        self._st = opus_encoder_create(sample_rate, channels, APPLICATIONS[application], &err)
        if self._st == NULL or err != OPUS_OK:
            raise OpusError(f"opus_encoder_create: {opus_strerror(err).decode()}")
        self.sample_rate = sample_rate
        self.channels = channels
        self.frame_samples = sample_rate * frame_ms // 1000
        _check(opus_encoder_ctl(self._st, OPUS_SET_SIGNAL_REQUEST, <int>OPUS_SIGNAL_VOICE), "signal")
        self.set_bitrate(bitrate)
        self.set_complexity(complexity)
        self.set_fec(fec, packet_loss_percent)
        self.set_dtx(dtx)

    def __dealloc__(self):
        if self._st != NULL:
            opus_encoder_destroy(self._st)

    def set_bitrate(self, int bitrate):
        _check(opus_encoder_ctl(self._st, OPUS_SET_BITRATE_REQUEST, <int32_t>bitrate), "bitrate")
        self.bitrate = bitrate

    def set_complexity(self, int complexity):
        _check(opus_encoder_ctl(self._st, OPUS_SET_COMPLEXITY_REQUEST, <int>complexity), "complexity")
        self.complexity = complexity

    def set_fec(self, bint enabled, int packet_loss_percent=10):
        """In-band FEC (LBRR) only appears when the encoder expects loss: set both together."""
        if not 0 <= packet_loss_percent <= 100:
            raise ValueError("packet_loss_percent must be 0..100")
        _check(opus_encoder_ctl(self._st, OPUS_SET_INBAND_FEC_REQUEST, <int>enabled), "fec")
        _check(opus_encoder_ctl(self._st, OPUS_SET_PACKET_LOSS_PERC_REQUEST,
                                <int>packet_loss_percent), "packet loss")
        self.fec = enabled
        self.packet_loss_percent = packet_loss_percent

    def set_dtx(self, bint enabled):
        _check(opus_encoder_ctl(self._st, OPUS_SET_DTX_REQUEST, <int>enabled), "dtx")
        self.dtx = enabled

    def copy_state_from(self, OpusEncoder other) -> None:
        """Continue from where `other` is: its whole state (history, settings) copied into this
        encoder. libopus keeps an encoder in one flat block of opus_encoder_get_size() bytes with
        no pointers (opus.h: it may be copied with memcpy), so a decoder that was following
        `other`'s stream can follow this one's without a jump in state."""
        if other.channels != self.channels or other.sample_rate != self.sample_rate:
            raise ValueError("encoders differ in channels or sample rate")
        memcpy(<void *>self._st, <const void *>other._st, opus_encoder_get_size(self.channels))
        self.bitrate, self.complexity, self.fec = other.bitrate, other.complexity, other.fec
        self.dtx, self.packet_loss_percent = other.dtx, other.packet_loss_percent

    @property
    def lookahead(self) -> int:
        """Encoder delay in samples (adds to the mixer's end-to-end latency)."""
        cdef int32_t value = 0
        _check(opus_encoder_ctl(self._st, OPUS_GET_LOOKAHEAD_REQUEST, &value), "lookahead")
        return value

    def encode(self, const int16_t[::1] pcm) -> bytes:
        """Encode exactly one frame of int16 PCM; returns the Opus packet."""
        cdef int n
        if pcm.shape[0] != self.frame_samples * self.channels:
            raise ValueError(f"expected {self.frame_samples * self.channels} samples, got {pcm.shape[0]}")
        with nogil:
            n = opus_encode(self._st, &pcm[0], self.frame_samples, self._out, 1275)
        _check(n, "opus_encode")
        return PyBytes_FromStringAndSize(<char *>self._out, n)


cdef class OpusDecoder:
    """A libopus decoder for one incoming stream, with PLC and in-band FEC recovery."""

    cdef OpusDecoderState *_st
    cdef readonly int sample_rate
    cdef readonly int channels
    cdef readonly int frame_samples

    def __cinit__(self, int sample_rate=48000, int channels=1, int frame_ms=20):
        cdef int err = 0
        self._st = opus_decoder_create(sample_rate, channels, &err)
        if self._st == NULL or err != OPUS_OK:
            raise OpusError(f"opus_decoder_create: {opus_strerror(err).decode()}")
        self.sample_rate = sample_rate
        self.channels = channels
        self.frame_samples = sample_rate * frame_ms // 1000

    def __dealloc__(self):
        if self._st != NULL:
            opus_decoder_destroy(self._st)

    def decode_into(self, const unsigned char[::1] packet, int16_t[::1] out) -> int:
        """Decode one packet into `out`; returns samples per channel written.

        Corrupt packets raise OpusError; the decoder stays usable (callers conceal instead).
        """
        cdef int n
        cdef int cap = out.shape[0] // self.channels
        if packet.shape[0] == 0:
            return self.conceal_into(out)
        with nogil:
            n = opus_decode(self._st, &packet[0], packet.shape[0], &out[0], cap, 0)
        return _check(n, "opus_decode")

    def conceal_into(self, int16_t[::1] out) -> int:
        """Packet loss concealment for one frame (RFC 6716 section 4.4): decode with no data."""
        cdef int n
        cdef int frame = min(self.frame_samples, out.shape[0] // self.channels)
        with nogil:
            n = opus_decode(self._st, NULL, 0, &out[0], frame, 0)
        return _check(n, "opus_decode(plc)")

    def decode_fec_into(self, const unsigned char[::1] next_packet, int16_t[::1] out) -> int:
        """Recover the lost frame *before* `next_packet` from its in-band FEC (LBRR) data.

        When `next_packet` carries no LBRR the decoder falls back to PLC by itself.
        """
        cdef int n
        cdef int frame = min(self.frame_samples, out.shape[0] // self.channels)
        if next_packet.shape[0] == 0:
            return self.conceal_into(out)
        with nogil:
            n = opus_decode(self._st, &next_packet[0], next_packet.shape[0], &out[0], frame, 1)
        return _check(n, "opus_decode(fec)")

    def decode(self, const unsigned char[::1] packet) -> cnp.ndarray:
        """Decode one packet into a new int16 array (convenience; the engine uses decode_into)."""
        out = np.empty(MAX_FRAME_SAMPLES * self.channels, dtype=np.int16)
        n = self.decode_into(packet, out)
        return out[: n * self.channels]


def packet_samples(const unsigned char[::1] packet, int sample_rate=48000) -> int:
    """Samples per channel that an Opus packet decodes to (RFC 6716 section 3.1 TOC)."""
    if packet.shape[0] == 0:
        raise OpusError("empty packet")
    return _check(opus_packet_get_nb_samples(&packet[0], packet.shape[0], sample_rate), "packet")


def packet_duration(const unsigned char[::1] packet) -> int:
    """Samples (48 kHz) of a well-formed Opus packet, its framing checked whole by libopus' parser
    (RFC 6716 section 3.4: frame lengths, padding, at most 120 ms); OpusError if malformed. A
    muxer writes only such packets, so a hostile sender cannot make a recording undecodable."""
    cdef unsigned char toc
    cdef const unsigned char *frames[48]
    cdef int16_t sizes[48]
    cdef int offset = 0
    cdef int count
    if packet.shape[0] == 0:
        raise OpusError("empty packet")
    count = opus_packet_parse(&packet[0], packet.shape[0], &toc, frames, sizes, &offset)
    _check(count, "packet")
    return _check(opus_packet_get_nb_samples(&packet[0], packet.shape[0], 48000), "packet")
