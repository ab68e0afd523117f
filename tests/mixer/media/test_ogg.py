"""The Ogg muxer and demuxer (RFC 3533, RFC 7845): pages and CRCs against the RFC's definition,
packets that span pages, concealment packets for gaps, files checked by ffprobe/ffmpeg and
opusinfo (independent readers), and a reader that fails only with OggError on any bytes."""
from __future__ import annotations

import io
import shutil
import struct
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mixer._opus import OpusDecoder, OpusEncoder, packet_duration
from mixer.analysis import tone, tone_levels_db
from mixer.media.ogg import (
    FLAG_BOS, FLAG_CONTINUED, FLAG_EOS, GRANULE_NONE, OggError, OggOpusReader, OggOpusWriter,
    OggStreamWriter, ogg_crc, ogg_crc_reference, plc_packets, read_packets, read_pages,
    toc_frame_samples,
)


def encoded(seconds: float, hz: float = 700.0) -> list[bytes]:
    encoder = OpusEncoder(48000, 1, "voip", 20, 32000, 5, False, 0, False)
    pcm = tone(hz, seconds, amplitude=0.3)
    return [encoder.encode(np.ascontiguousarray(pcm[i:i + 960])) for i in range(0, len(pcm) - 959, 960)]


def ffprobe_duration(path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True)
    return float(out.stdout)


def ffmpeg_decode(path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1",
                          "-ar", "48000", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype="<i2")


@given(st.binary(max_size=600))
def test_crc_is_the_rfc_3533_crc(data):
    assert ogg_crc(data) == ogg_crc_reference(data)


def test_pages_lace_packets_and_continue_them_across_pages():
    out = io.BytesIO()
    writer = OggStreamWriter(out, serial=0x1234)
    sizes = [0, 1, 254, 255, 256, 510, 70000, 3]  # 70000 bytes need 275 segments: two pages
    packets = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    for i, packet in enumerate(packets):
        writer.add(packet, 960 * (i + 1))
    writer.flush(eos=True)
    pages = list(read_pages(io.BytesIO(out.getvalue())))
    assert pages[0].flags & FLAG_BOS and pages[-1].flags & FLAG_EOS
    assert [p.sequence for p in pages] == list(range(len(pages)))
    assert any(p.flags & FLAG_CONTINUED for p in pages[1:])
    assert all(len(p.lacing) <= 255 for p in pages)
    # a page on which no packet ends has no granule position (RFC 3533 section 6)
    assert all(p.granule == GRANULE_NONE for p in pages if all(v == 255 for v in p.lacing))
    got = list(read_packets(iter(pages)))
    assert [p for p, _, _ in got] == packets
    assert got[-1][2] is True  # the last packet is on the last page


def test_plc_packets_cover_gaps_exactly_and_libopus_takes_them():
    decoder = OpusDecoder(48000, 1)
    out = np.zeros(5760, dtype=np.int16)
    for toc in (None, 0x78, 0x08, 0xF8, 0xFC):  # default, SILK WB 20 ms, SILK NB 20 ms, CELT FB
        for samples in (120, 960, 1080, 2880, 5760, 9600, 48000):
            packets = plc_packets(samples, toc)
            assert sum(n for _, n in packets) == samples
            for packet, n in packets:
                assert packet_duration(packet) == n
                assert decoder.decode_into(packet, out) == n
    with pytest.raises(ValueError):
        plc_packets(100, None)
    assert toc_frame_samples(0x08) == 960 and toc_frame_samples(0xE0) == 120


def test_a_written_file_is_what_ffmpeg_and_opusinfo_read(tmp_path):
    packets = encoded(2.0)
    path = tmp_path / "a.ogg"
    with open(path, "wb") as out:
        writer = OggOpusWriter(out, pre_skip=312, comments=("TITLE=test",))
        for packet in packets[:50]:
            writer.write(packet, packet_duration(packet))
        writer.write_gap(48000 + 360)  # a second and a bit of nothing
        for packet in packets[50:]:
            writer.write(packet, packet_duration(packet))
        writer.close()
    expected_s = (len(packets) * 960 + 48000 + 360) / 48000
    assert ffprobe_duration(path) == pytest.approx(expected_s, abs=0.011)
    pcm = ffmpeg_decode(path)
    assert len(pcm) == pytest.approx(expected_s * 48000 - 312, abs=2)
    assert tone_levels_db(pcm[:48000 - 2000], [700.0])[700.0] > -15
    assert np.abs(pcm[52000:90000]).max() < 1000  # the gap: concealment fades to silence
    assert tone_levels_db(pcm[-40000:], [700.0])[700.0] > -15
    if not shutil.which("opusinfo"):
        pytest.skip("opusinfo (Debian package opus-tools, installed by scripts/setup.sh) is missing")
    info = subprocess.run(["opusinfo", str(path)], capture_output=True, text=True)
    assert info.returncode == 0 and "WARNING" not in info.stdout, info.stdout
    reader = OggOpusReader(open(path, "rb"))
    assert reader.head.pre_skip == 312 and reader.head.channels == 1
    assert sum(1 for _ in reader.packets(packet_duration)) > len(packets)


def test_a_file_cut_anywhere_reads_up_to_its_last_whole_page(tmp_path):
    out = io.BytesIO()
    writer = OggOpusWriter(out)
    for packet in encoded(3.0):
        writer.write(packet, packet_duration(packet))
    writer.close()
    data = out.getvalue()
    whole = sum(1 for _ in read_packets(read_pages(io.BytesIO(data))))
    for cut in range(30, len(data), 997):
        got = sum(1 for _ in read_packets(read_pages(io.BytesIO(data[:cut]))))
        assert got <= whole
    corrupt = bytearray(data)
    corrupt[len(data) // 2] ^= 0xFF
    with pytest.raises(OggError):
        list(read_packets(read_pages(io.BytesIO(bytes(corrupt)))))


def test_reader_refuses_what_is_not_ogg_opus():
    out = io.BytesIO()
    writer = OggStreamWriter(out)
    writer.add(b"OpusHead" + struct.pack("<BBHIhB", 1, 6, 0, 48000, 0, 1), 0)  # family 1: 6 channels
    writer.flush()
    writer.add(b"OpusTags", 0)
    writer.flush(eos=True)
    with pytest.raises(OggError, match="family"):
        OggOpusReader(io.BytesIO(out.getvalue()))
    with pytest.raises(OggError):
        OggOpusReader(io.BytesIO(b"OggS" + bytes(100)))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 3))
def test_reader_on_any_bytes_fails_only_with_ogg_error(data, splice):
    valid = io.BytesIO()
    writer = OggOpusWriter(valid)
    writer.write(bytes([0xF8, 0x00, 0x01]), 960)
    writer.close()
    blob = [data, valid.getvalue()[:60] + data, valid.getvalue() + data,
            valid.getvalue()[:-10] + data][splice]
    try:
        reader = OggOpusReader(io.BytesIO(blob))
        for _ in reader.packets(lambda p: 960):
            pass
    except OggError:
        pass
