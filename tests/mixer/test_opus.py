"""Opus through libopus, cross-checked against `opuslib` (an independent ctypes binding).

Signals are synthetic: tones with a slow amplitude envelope (so that cross-correlation has a single
best lag) and a "speech-like" signal of voiced syllables with changing pitch and onsets (what FEC is
for: concealment cannot predict an onset, the LBRR copy in the next packet carries it).
"""

import numpy as np
import opuslib
import pytest

from mixer._opus import (
    MAX_FRAME_SAMPLES,
    MAX_PACKET_BYTES,
    OpusDecoder,
    OpusEncoder,
    OpusError,
    packet_samples,
)

FS = 48000
N = 960  # 20 ms
SECONDS = 1


def _t(n: int) -> np.ndarray:
    return np.arange(n) / FS


def tone_440(n: int = FS * SECONDS) -> np.ndarray:
    t = _t(n)
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 7 * t)
    return np.round(10000 * envelope * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


def two_tone(n: int = FS * SECONDS) -> np.ndarray:
    t = _t(n)
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 7 * t)
    x = 6000 * np.sin(2 * np.pi * 440 * t) + 4000 * np.sin(2 * np.pi * 1000 * t)
    return np.round(envelope * x).astype(np.int16)


def speech_like(n: int, seed: int = 1) -> np.ndarray:
    """120 ms voiced syllables (harmonics of a random 100..250 Hz pitch), 10 ms on/off ramps."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n)
    syllable = 6 * N
    for start in range(0, n, syllable):
        m = min(syllable, n - start)
        t = _t(m)
        f0 = rng.uniform(100, 250)
        voiced = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k
                     for k in range(1, 12))
        ramp = np.minimum(1, np.minimum(t / 0.01, (m / FS - t) / 0.01))
        out[start:start + m] = rng.uniform(2000, 9000) * ramp * voiced / 2
    return np.round(out).astype(np.int16)


def frames_of(x: np.ndarray) -> list:
    return [np.ascontiguousarray(x[i:i + N]) for i in range(0, len(x) - N + 1, N)]


def best_lag(y: np.ndarray, x: np.ndarray, max_lag: int) -> tuple:
    """(lag, normalized correlation) maximizing corr(y[k + lag], x[k]) over the steady part."""
    a0, a1 = len(x) // 10, len(x) * 8 // 10
    ref = x[a0:a1].astype(np.float64)
    best = (0, -1.0)
    for lag in range(max_lag):
        seg = y[a0 + lag:a1 + lag].astype(np.float64)
        c = float(np.dot(seg, ref) / np.sqrt(np.dot(seg, seg) * np.dot(ref, ref) + 1e-12))
        if c > best[1]:
            best = (lag, c)
    return best


def spectral_peaks(y: np.ndarray, count: int) -> list:
    y = y.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / FS)
    peaks = []
    for k in np.argsort(spectrum)[::-1]:
        if all(abs(freqs[k] - f) > 50 for f in peaks):
            peaks.append(float(freqs[k]))
        if len(peaks) == count:
            break
    return peaks


# --------------------------------------------------------------------------------------------------
# Interoperability with an independent binding
# --------------------------------------------------------------------------------------------------

SIGNALS = {"440Hz": (tone_440, [440.0]), "two-tone": (two_tone, [440.0, 1000.0])}


@pytest.mark.parametrize("name", SIGNALS)
def test_core_encoder_to_opuslib_decoder(name):
    make, freqs = SIGNALS[name]
    x = make()
    enc = OpusEncoder()
    dec = opuslib.Decoder(FS, 1)
    y = np.concatenate([np.frombuffer(dec.decode(enc.encode(f), N), dtype=np.int16)
                        for f in frames_of(x)])
    assert len(y) == len(x)
    lag, corr = best_lag(y, x, 2 * enc.lookahead)
    assert corr > 0.9
    assert abs(lag - enc.lookahead) <= 24  # the codec's delay is the encoder lookahead (+-0.5 ms)
    assert spectral_peaks(y[FS // 10:], len(freqs)) == pytest.approx(freqs, abs=5)


@pytest.mark.parametrize("name", SIGNALS)
def test_opuslib_encoder_to_core_decoder(name):
    make, freqs = SIGNALS[name]
    x = make()
    enc = opuslib.Encoder(FS, 1, opuslib.APPLICATION_VOIP)
    dec = OpusDecoder()
    out = np.empty(N, dtype=np.int16)
    pieces = []
    for f in frames_of(x):
        assert dec.decode_into(enc.encode(f.tobytes(), N), out) == N
        pieces.append(out.copy())
    y = np.concatenate(pieces)
    lookahead = OpusEncoder().lookahead  # same libopus, same application
    lag, corr = best_lag(y, x, 2 * lookahead)
    assert corr > 0.9
    assert abs(lag - lookahead) <= 24
    assert spectral_peaks(y[FS // 10:], len(freqs)) == pytest.approx(freqs, abs=5)


def test_decode_convenience_equals_decode_into():
    x = two_tone(FS // 5)
    enc = OpusEncoder()
    packets = [enc.encode(f) for f in frames_of(x)]
    a, b = OpusDecoder(), OpusDecoder()
    out = np.empty(N, dtype=np.int16)
    for p in packets:
        y = a.decode(p)
        assert y.dtype == np.int16 and y.shape == (N,)
        b.decode_into(p, out)
        np.testing.assert_array_equal(y, out)


# --------------------------------------------------------------------------------------------------
# Loss: PLC and in-band FEC
# --------------------------------------------------------------------------------------------------

def test_plc_after_a_frame_gives_a_decaying_frame_each_time():
    enc, dec = OpusEncoder(), OpusDecoder()
    out = np.empty(N, dtype=np.int16)
    for f in frames_of(tone_440(25 * N)):
        dec.decode_into(enc.encode(f), out)
    last = float(np.mean(out.astype(np.float64) ** 2))
    energies = []
    for _ in range(10):
        out[:] = 12345
        assert dec.conceal_into(out) == N
        assert not np.all(out == 12345)
        energies.append(float(np.mean(out.astype(np.float64) ** 2)))
    assert energies[0] > 0.01 * last  # the first concealment continues the tone
    assert energies[0] < last
    assert all(b < a for a, b in zip(energies[:4], energies[1:5]))  # fades out frame by frame
    assert max(energies[5:]) < 1e-4 * last  # then stays (near) silent


def test_empty_packet_means_conceal():
    enc, dec = OpusEncoder(), OpusDecoder()
    dec.decode(enc.encode(tone_440(N)))
    assert dec.decode(b"").shape == (N,)
    out = np.empty(N, dtype=np.int16)
    assert dec.decode_into(b"", out) == N
    assert dec.decode_fec_into(b"", out) == N


def test_conceal_into_a_short_buffer_conceals_less():
    dec = OpusDecoder()
    out = np.full(N, 7, dtype=np.int16)
    assert dec.conceal_into(out[:480]) == 480
    assert np.all(out[480:] == 7)


def _decode_with_loss(packets, lost: int, mode: str) -> np.ndarray:
    """Decode packets[0..lost] with packet `lost` missing; returns the frame played in its place."""
    dec = OpusDecoder()
    out = np.empty(N, dtype=np.int16)
    for p in packets[:lost]:
        dec.decode_into(p, out)
    if mode == "plc":
        assert dec.conceal_into(out) == N
    else:
        assert dec.decode_fec_into(packets[lost + 1], out) == N
    return out.astype(np.float64)


def test_fec_recovers_a_lost_frame_better_than_plc():
    x = speech_like(4 * FS)
    enc = OpusEncoder(bitrate=24000, fec=True, packet_loss_percent=30)
    assert (enc.bitrate, enc.fec, enc.packet_loss_percent) == (24000, True, 30)
    packets = [enc.encode(f) for f in frames_of(x)]
    delay = enc.lookahead
    clean_dec = OpusDecoder()
    clean = np.concatenate([clean_dec.decode(p) for p in packets]).astype(np.float64)
    plc_err = fec_err = plc_vs_clean = fec_vs_clean = 0.0
    for lost in range(20, len(packets) - 2, 7):  # after warm-up, at every phase of the syllables
        original = x[lost * N - delay:(lost + 1) * N - delay].astype(np.float64)
        reference = clean[lost * N:(lost + 1) * N]
        plc = _decode_with_loss(packets, lost, "plc")
        fec = _decode_with_loss(packets, lost, "fec")
        plc_err += np.sum((plc - original) ** 2)
        fec_err += np.sum((fec - original) ** 2)
        plc_vs_clean += np.sum((plc - reference) ** 2)
        fec_vs_clean += np.sum((fec - reference) ** 2)
    assert fec_err < 0.85 * plc_err
    assert fec_vs_clean < 0.6 * plc_vs_clean


def test_decoding_continues_after_fec_recovery():
    x = speech_like(FS, seed=2)
    enc = OpusEncoder(bitrate=24000, fec=True, packet_loss_percent=30)
    packets = [enc.encode(f) for f in frames_of(x)]
    dec, ref = OpusDecoder(), OpusDecoder()
    out = np.empty(N, dtype=np.int16)
    for i, p in enumerate(packets):
        if i == 25:
            assert dec.decode_fec_into(packets[26], out) == N
        else:
            assert dec.decode_into(p, out) == N
        clean = ref.decode(p)
        if i >= 35:  # the decoders have reconverged a few frames later
            error = np.max(np.abs(out.astype(np.int64) - clean))
            assert error <= 0.05 * max(1, np.max(np.abs(clean)))


# --------------------------------------------------------------------------------------------------
# Errors and packet inspection
# --------------------------------------------------------------------------------------------------

CORRUPT = [b"\x03", b"\x03\x00", b"\x02\xff", b"\xfb\xff\xff\xff"]


@pytest.mark.parametrize("bad", CORRUPT)
def test_corrupt_packet_raises_and_the_decoder_survives(bad):
    x = tone_440(10 * N)
    enc = OpusEncoder()
    packets = [enc.encode(f) for f in frames_of(x)]
    dec, ref = OpusDecoder(), OpusDecoder()
    out = np.empty(N, dtype=np.int16)
    for p in packets[:5]:
        dec.decode_into(p, out)
        ref.decode_into(p, out)
    with pytest.raises(OpusError):
        dec.decode_into(bad, out)
    with pytest.raises(OpusError):
        dec.decode(bad)
    # the next good packet decodes to the same audio as for a decoder that never saw the garbage
    for p in packets[5:]:
        assert dec.decode_into(p, out) == N
        np.testing.assert_array_equal(out, ref.decode(p))


def test_output_buffer_too_small_raises_opus_error():
    p = OpusEncoder().encode(tone_440(N))
    with pytest.raises(OpusError):
        OpusDecoder().decode_into(p, np.empty(480, dtype=np.int16))


@pytest.mark.parametrize("frame_ms", [10, 20, 40, 60])
def test_packet_samples(frame_ms):
    enc = OpusEncoder(frame_ms=frame_ms)
    assert enc.frame_samples == FS * frame_ms // 1000
    p = enc.encode(np.zeros(enc.frame_samples, dtype=np.int16))
    assert packet_samples(p) == enc.frame_samples
    assert packet_samples(p, 8000) == 8 * frame_ms
    assert len(OpusDecoder(frame_ms=frame_ms).decode(p)) == enc.frame_samples


def test_packet_samples_20ms_and_errors():
    assert packet_samples(OpusEncoder().encode(tone_440(N))) == 960
    with pytest.raises(OpusError):
        packet_samples(b"")
    with pytest.raises(OpusError):
        packet_samples(b"\x03")  # code 3 without its frame-count byte


def test_constants():
    assert MAX_FRAME_SAMPLES == 5760  # 120 ms at 48 kHz
    assert MAX_PACKET_BYTES == 1275


# --------------------------------------------------------------------------------------------------
# Encoder settings
# --------------------------------------------------------------------------------------------------

def test_settings_apply():
    enc = OpusEncoder(bitrate=16000, complexity=3, fec=False, packet_loss_percent=0, dtx=True)
    assert (enc.sample_rate, enc.channels, enc.frame_samples) == (48000, 1, 960)
    assert (enc.bitrate, enc.complexity, enc.fec, enc.packet_loss_percent, enc.dtx) == \
        (16000, 3, False, 0, True)
    enc.set_bitrate(64000)
    enc.set_complexity(10)
    enc.set_fec(True, 20)
    enc.set_dtx(False)
    assert (enc.bitrate, enc.complexity, enc.fec, enc.packet_loss_percent, enc.dtx) == \
        (64000, 10, True, 20, False)
    assert enc.lookahead > 0
    for application in ("voip", "audio", "lowdelay"):
        e = OpusEncoder(application=application)
        assert len(e.encode(tone_440(N))) > 0


def test_bitrate_changes_the_packet_size():
    x = speech_like(FS)

    def mean_size(bitrate):
        enc = OpusEncoder(bitrate=bitrate, fec=False, packet_loss_percent=0)
        return np.mean([len(enc.encode(f)) for f in frames_of(x)])

    low, high = mean_size(12000), mean_size(64000)
    assert low < high
    assert low == pytest.approx(12000 / 8 / 50, rel=0.35)
    assert high == pytest.approx(64000 / 8 / 50, rel=0.35)


def test_dtx_shrinks_silence_to_tiny_packets():
    silence = np.zeros(N, dtype=np.int16)
    with_dtx = OpusEncoder(dtx=True)
    without = OpusEncoder(dtx=False)
    sizes_dtx = [len(with_dtx.encode(silence)) for _ in range(30)]
    sizes = [len(without.encode(silence)) for _ in range(30)]
    assert max(sizes_dtx[-10:]) <= 2
    assert min(sizes[-10:]) > 2


def test_invalid_settings_raise_opus_error():
    enc = OpusEncoder()
    with pytest.raises(OpusError):
        enc.set_bitrate(0)
    with pytest.raises(OpusError):
        enc.set_complexity(11)
    assert (enc.bitrate, enc.complexity) == (32000, 5)  # unchanged
    with pytest.raises(OpusError):
        OpusEncoder(sample_rate=44100)
    with pytest.raises(OpusError):
        OpusDecoder(sample_rate=44100)


def test_invalid_construction_raises_value_error():
    with pytest.raises(ValueError):
        OpusEncoder(application="music")
    with pytest.raises(ValueError):
        OpusEncoder(frame_ms=30)


@pytest.mark.parametrize("length", [0, 959, 961, 1920, 480])
def test_encode_with_wrong_frame_length_raises_value_error(length):
    with pytest.raises(ValueError):
        OpusEncoder().encode(np.zeros(length, dtype=np.int16))


def test_narrowband_rates():
    enc, dec = OpusEncoder(sample_rate=8000), OpusDecoder(sample_rate=8000)
    assert enc.frame_samples == 160 and dec.frame_samples == 160
    t = np.arange(8000) / 8000
    x = np.round(8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    y = np.concatenate([dec.decode(enc.encode(np.ascontiguousarray(x[i:i + 160])))
                        for i in range(0, 8000, 160)])
    assert len(y) == 8000
    spectrum = np.abs(np.fft.rfft(y[1600:].astype(np.float64)))
    peak = np.fft.rfftfreq(len(y) - 1600, 1 / 8000)[np.argmax(spectrum)]
    assert peak == pytest.approx(440, abs=5)


def test_an_encoder_continues_exactly_from_anothers_copied_state():
    """copy_state_from: after the copy both encoders are the same encoder (same packets for the
    same input), so a decoder following one can follow the other without a jump."""
    import numpy as np

    from mixer._opus import OpusEncoder

    t = np.arange(960 * 30) / 48000
    pcm = (np.sin(2 * np.pi * 220 * t) * 8000 + np.sin(2 * np.pi * 1330 * t) * 2000).astype(np.int16)
    frames = [np.ascontiguousarray(pcm[i * 960:(i + 1) * 960]) for i in range(30)]
    shared = OpusEncoder(48000, 1, "voip", 20, 48000, 7, False, 0, False)
    own = OpusEncoder(48000, 1, "voip", 20, 32000, 3, True, 10, False)
    for frame in frames[:10]:
        shared.encode(frame)
        own.encode(frames[-1])          # a different history
    own.copy_state_from(shared)
    assert (own.bitrate, own.complexity, own.fec) == (48000, 7, False)
    for frame in frames[10:]:
        assert own.encode(frame) == shared.encode(frame)
