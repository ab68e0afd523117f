"""Codecs behind one 48 kHz / 20 ms frame interface: Opus and G.711, concealment, odd ptimes."""
import numpy as np
import pytest

from mixer.analysis import tone, tone_levels_db
from mixer.codec import FRAME_SAMPLES, FrameDecoder, FrameEncoder


@pytest.mark.parametrize("codec", ["opus", "PCMU", "PCMA"])
def test_round_trip_keeps_a_tone(codec):
    signal = tone(1000.0, 1.0, amplitude=0.3)
    encoder, decoder = FrameEncoder(codec), FrameDecoder(codec)
    out = []
    for k in range(len(signal) // FRAME_SAMPLES):
        decoder.decode(encoder.encode(signal[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES]))
        frame = decoder.take_frame()
        assert frame is not None and len(frame) == FRAME_SAMPLES
        out.append(frame.copy())
    heard = np.concatenate(out)[4800:]
    levels = tone_levels_db(heard, [1000.0, 2000.0])
    assert levels[1000.0] > -14  # a 0.3 full-scale sine is -10.5 dBFS
    assert levels[2000.0] < levels[1000.0] - 30
    assert decoder.stats()["decoded"] == 50


def test_g711_payload_sizes_and_40ms_packets_give_whole_frames():
    encoder = FrameEncoder("PCMU")
    frame = tone(440.0, 0.02)
    assert len(encoder.encode(frame)) == 160  # 20 ms at 8 kHz
    decoder = FrameDecoder("PCMU")
    decoder.decode(bytes(320))  # one 40 ms packet
    assert decoder.has_frame
    assert decoder.take_frame() is not None and decoder.take_frame() is not None
    assert decoder.take_frame() is None


def test_concealment_fades_for_g711_and_uses_plc_for_opus():
    decoder = FrameDecoder("PCMA")
    encoder = FrameEncoder("PCMA")
    decoder.decode(encoder.encode(tone(500.0, 0.02, amplitude=0.5)))
    last = decoder.take_frame().astype(np.float64).std()
    energies = []
    for _ in range(5):
        decoder.conceal()
        energies.append(decoder.take_frame().astype(np.float64).std())
    assert energies[0] < last and energies[1] < energies[0] and energies[2] < energies[1]
    assert energies[3] == 0 and energies[4] == 0
    opus = FrameDecoder("opus")
    opus.conceal()
    assert opus.take_frame() is not None and opus.stats()["concealed"] == 1


def test_corrupt_opus_payload_is_concealed_not_raised():
    decoder = FrameDecoder("opus")
    decoder.decode(b"\xff\xff\xff")  # code 3 TOC with an impossible frame count
    assert decoder.take_frame() is not None
    assert decoder.stats()["decode_errors"] == 1
