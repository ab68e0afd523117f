"""pytest-benchmark benchmarks of the per-packet and per-frame hot paths of the media tier.

Run with `python -m pytest bench -q --benchmark-only`. These assert correctness only (the right
lengths, the right values), never time: compare runs with pytest-benchmark's own tools
(--benchmark-autosave / --benchmark-compare), and baselines with `bench/compare_core.py`.
One call = one packet or one 20 ms frame, so the reported mean is the per-unit cost.
"""

import itertools

import numpy as np
import pytest

from mixer._jitter import FRAME, JitterBuffer
from mixer._resample import Resampler
from mixer._rtp import RtpPacket
from mixer._mix import audio_level, mix_minus
from mixer._g711 import ulaw_decode_into, ulaw_encode
from mixer._opus import OpusDecoder, OpusEncoder

import workloads as w


# ------------------------------------------------------------------------------------------------
# RTP (RFC 3550 section 5.1, RFC 8285, RFC 6464)
# ------------------------------------------------------------------------------------------------

@pytest.mark.benchmark(group="rtp")
def test_rtp_parse(benchmark):
    """12-byte header + one-byte-profile audio-level extension + 160-byte payload."""
    data = w.rtp_packet(1000, 960_000, level=33, voice=True)
    packet = benchmark(RtpPacket.parse, data)
    assert len(data) == 12 + 8 + 160
    assert len(packet.payload) == 160
    assert packet.sequence_number == 1000
    assert packet.audio_level(w.AUDIO_LEVEL_EXT_ID) == (True, 33)


@pytest.mark.benchmark(group="rtp")
def test_jitter_buffer_put_pop(benchmark):
    """One put() + one pop() per call: a steady stream, arrivals 20 ms apart, across wrap-around."""
    stream = w.SteadyStream(JitterBuffer(clock_rate=w.SAMPLE_RATE, frame_ms=w.FRAME_MS))
    for _ in range(10):  # past the start of the talk spurt: every tick now plays a frame
        stream()
    status, packet = benchmark(stream)
    assert status == FRAME
    assert packet is not None and len(packet.payload) == w.RTP_PAYLOAD_BYTES
    stats = stream.buffer.stats()
    assert stats["lost"] == stats["late"] == stats["resets"] == stats["underruns"] == 0


@pytest.mark.benchmark(group="rtp")
def test_srtp_protect_unprotect(benchmark):
    """AES_CM_128_HMAC_SHA1_80 (RFC 4568 section 6.2.1): protect on one leg, unprotect on its peer."""
    from mixer.rtp.srtp import SrtpContext

    sender = SrtpContext(w.SRTP_SUITE, w.SRTP_KEY_A, w.SRTP_KEY_B)
    receiver = SrtpContext(w.SRTP_SUITE, w.SRTP_KEY_B, w.SRTP_KEY_A)
    packets = itertools.cycle(w.srtp_stream())

    def protect_unprotect():
        rtp = next(packets)
        return rtp, receiver.unprotect(sender.protect(rtp))

    rtp, plain = benchmark(protect_unprotect)
    assert len(rtp) == 100
    assert plain == rtp
    assert receiver.stats()["auth_failures"] == receiver.stats()["replays"] == 0


# ------------------------------------------------------------------------------------------------
# Codecs
# ------------------------------------------------------------------------------------------------

@pytest.mark.benchmark(group="opus")
@pytest.mark.parametrize("complexity", [5, 0])
def test_opus_encode(benchmark, complexity):
    """One 20 ms 48 kHz mono frame of speech, 32 kbit/s VoIP, in-band FEC on."""
    encoder = OpusEncoder(complexity=complexity)
    pcm = itertools.cycle(w.speech_frames())
    packet = benchmark(lambda: encoder.encode(next(pcm)))
    assert 0 < len(packet) <= 1275


@pytest.fixture(scope="module")
def opus_packets():
    encoder = OpusEncoder()
    return [encoder.encode(frame) for frame in w.speech_frames()]


@pytest.mark.benchmark(group="opus")
def test_opus_decode(benchmark, opus_packets):
    decoder = OpusDecoder()
    out = np.empty(w.FRAME_SAMPLES, dtype=np.int16)
    packets = itertools.cycle(opus_packets)
    samples = benchmark(lambda: decoder.decode_into(next(packets), out))
    assert samples == w.FRAME_SAMPLES


@pytest.mark.benchmark(group="opus")
def test_opus_plc(benchmark, opus_packets):
    """Concealment of one lost frame (consecutive losses after a run of decoded speech)."""
    decoder = OpusDecoder()
    out = np.empty(w.FRAME_SAMPLES, dtype=np.int16)
    for packet in opus_packets:
        decoder.decode_into(packet, out)
    samples = benchmark(decoder.conceal_into, out)
    assert samples == w.FRAME_SAMPLES


@pytest.mark.benchmark(group="g711")
def test_ulaw_encode_decode(benchmark):
    """PCMU (RFC 3551 section 4.5.14) encode + decode of one 20 ms 8 kHz frame."""
    pcm = w.narrowband_frames()[10]
    out = np.empty(w.NARROWBAND_SAMPLES, dtype=np.int16)

    def roundtrip():
        payload = ulaw_encode(pcm)
        return payload, ulaw_decode_into(payload, out)

    payload, samples = benchmark(roundtrip)
    assert len(payload) == samples == w.NARROWBAND_SAMPLES
    # mu-law keeps ~14 bits of magnitude: the round trip is within one quantisation step
    error = np.abs(out.astype(np.int32) - pcm)
    assert np.all(error <= np.abs(pcm.astype(np.int32)) // 16 + 132)


@pytest.mark.benchmark(group="resample")
def test_resample_8k_to_48k(benchmark):
    resampler = Resampler(8000, 48000)
    pcm = w.narrowband_frames()[10]
    out = np.empty(w.FRAME_SAMPLES, dtype=np.int16)
    assert benchmark(resampler.process_into, pcm, out) == w.FRAME_SAMPLES


@pytest.mark.benchmark(group="resample")
def test_resample_48k_to_8k(benchmark):
    resampler = Resampler(48000, 8000)
    pcm = w.speech_frames()[10]
    out = np.empty(w.NARROWBAND_SAMPLES, dtype=np.int16)
    assert benchmark(resampler.process_into, pcm, out) == w.NARROWBAND_SAMPLES


# ------------------------------------------------------------------------------------------------
# Mixing
# ------------------------------------------------------------------------------------------------

@pytest.mark.benchmark(group="mix")
@pytest.mark.parametrize("participants", [10, 100, 1000])
def test_mix_minus(benchmark, participants):
    """One 20 ms tick: total and N mix-minus outputs of N frames of 960 samples."""
    mix, total, minus = w.conference(participants)
    benchmark(mix_minus, mix, total, minus)
    expected_total, expected_minus = w.mix_minus_reference(mix)
    assert total.shape == (w.FRAME_SAMPLES,) and minus.shape == (participants, w.FRAME_SAMPLES)
    np.testing.assert_array_equal(total, expected_total)
    np.testing.assert_array_equal(minus, expected_minus)


@pytest.mark.benchmark(group="mix")
def test_audio_level(benchmark):
    """RFC 6464 level of one 960-sample frame."""
    pcm = w.speech_frames()[10]
    level = benchmark(audio_level, pcm)
    assert 0 <= level <= 127
    rms = np.sqrt(np.mean(pcm.astype(np.float64) ** 2))
    assert level == round(-20 * np.log10(rms / 32768))
