"""WAV: the streaming writer (sizes kept right on disk as it goes), the header parser players use,
and the repair of a file whose writer was killed (what the engine runs at start)."""
from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mixer.codec import MIX_RATE
from mixer.media.wav import WavError, WavWriter, parse_wav_header, read_wav_format, repair_wav


def _wav(path: Path, samples: int, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(MIX_RATE)
        writer.writeframes(np.arange(samples * channels, dtype="<i2").tobytes())


def test_writer_keeps_the_header_right_as_it_writes(tmp_path):
    path = tmp_path / "w.wav"
    with open(path, "wb") as handle:
        writer = WavWriter(handle)
        for _ in range(120):  # 2.4 s: the header is rewritten every second of audio
            writer.write(np.ones(960, dtype=np.int16))
            writer.write_silence(0)
        writer.write_silence(480)
        handle.flush()
        with wave.open(str(path), "rb") as reader:  # still open: the sizes on disk lag < 1 s
            assert 0 <= 120 * 960 + 480 - reader.getnframes() <= MIX_RATE
        writer.close()
    with wave.open(str(path), "rb") as reader:
        assert reader.getnframes() == 120 * 960 + 480 and reader.getframerate() == MIX_RATE


def test_repair_makes_a_cut_recording_whole(tmp_path):
    path = tmp_path / "cut.wav"
    _wav(path, 4800)
    with open(path, "ab") as handle:  # written after the last header update, then a crash
        handle.write(np.ones(2400, dtype="<i2").tobytes() + b"\x01")
    assert repair_wav(path) == pytest.approx(7200 / MIX_RATE)
    with wave.open(str(path), "rb") as reader:
        assert reader.getnframes() == 7200
        assert len(reader.readframes(10**6)) == 7200 * 2
    assert repair_wav(path) == pytest.approx(7200 / MIX_RATE)  # idempotent
    header_only = tmp_path / "empty.wav"
    _wav(header_only, 0)
    assert repair_wav(header_only) == 0.0
    stereo = tmp_path / "stereo.wav"
    _wav(stereo, 100, channels=2)
    assert repair_wav(stereo) == pytest.approx(100 / MIX_RATE)
    other = tmp_path / "float.wav"
    other.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x03\x00\x01\x00\x80\xbb\x00\x00"
                      b"\x00\xee\x02\x00\x04\x00\x20\x00data\x00\x00\x00\x00")
    before = other.read_bytes()
    with pytest.raises(WavError):
        repair_wav(other)
    assert other.read_bytes() == before  # left untouched


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200),
                 st.builds(lambda cut, tail: (cut, tail), st.integers(0, 60), st.binary(max_size=40))))
def test_repair_never_fails_but_with_its_own_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "x.wav"
    if isinstance(data, tuple):  # a real header cut anywhere, then arbitrary bytes
        _wav(path, 100)
        cut, tail = data
        path.write_bytes(path.read_bytes()[:cut] + tail)
    else:
        path.write_bytes(data)
    try:
        duration = repair_wav(path)
    except WavError:
        return
    assert duration >= 0
    with wave.open(str(path), "rb") as reader:  # whatever it accepted, it left readable
        assert reader.getnframes() / reader.getframerate() == pytest.approx(duration)


def test_repaired_header_fields_are_little_endian_sizes(tmp_path):
    path = tmp_path / "r.wav"
    _wav(path, 10)
    path.write_bytes(path.read_bytes() + b"\x00\x00" * 5)
    repair_wav(path)
    raw = path.read_bytes()
    assert struct.unpack_from("<I", raw, 4)[0] == len(raw) - 8
    assert struct.unpack_from("<I", raw, 40)[0] == 30


def test_headers_with_extra_chunks_and_extensible_format_parse(tmp_path):
    path = tmp_path / "x.wav"
    fmt = struct.pack("<HHIIHH", 0xFFFE, 1, 16000, 32000, 2, 16) + struct.pack("<HHI", 22, 16, 4) \
        + struct.pack("<H", 1) + bytes(14)
    body = b"WAVE" + b"LIST" + struct.pack("<I", 5) + b"abcde\x00" + b"fmt " + struct.pack("<I", len(fmt)) \
        + fmt + b"data" + struct.pack("<I", 8) + bytes(8)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    found = read_wav_format(path)
    assert (found.rate, found.channels, found.frames) == (16000, 1, 4)


@given(st.binary(max_size=300))
def test_header_parser_fails_only_with_wav_error(data):
    try:
        parse_wav_header(data, len(data))
    except WavError:
        pass
