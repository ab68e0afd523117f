"""WAV files (RIFF WAVE, 16-bit PCM): a streaming writer for recordings, a reader for players, and
the repair of a file whose writer was killed.

The writer puts a header with zero sizes first and rewrites the RIFF and data chunk sizes every
`HEADER_UPDATE_BYTES` and at `close()`, so a killed process leaves at most the last second
unaccounted for, which `repair_wav` (run by the engine at start) puts right from the file's length.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

WAVE_FORMAT_PCM = 1
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
RIFF_HEADER = struct.Struct("<4sI4s")  # "RIFF", size, "WAVE"
CHUNK_HEADER = struct.Struct("<4sI")
FMT_PCM = struct.Struct("<HHIIHH")     # tag, channels, rate, byte rate, block align, bits
HEADER_BYTES = RIFF_HEADER.size + CHUNK_HEADER.size + FMT_PCM.size + CHUNK_HEADER.size  # 44
HEADER_UPDATE_BYTES = 96000  # a second of 48 kHz mono
MAX_HEADER_SCAN = 1 << 16    # chunks before "data" (LIST, fact, ...) are rarely more than this


class WavError(ValueError):
    """A file that is not a WAV file this module reads."""


def wav_header(rate: int, channels: int, data_bytes: int) -> bytes:
    block = 2 * channels
    return (RIFF_HEADER.pack(b"RIFF", 36 + data_bytes, b"WAVE")
            + CHUNK_HEADER.pack(b"fmt ", FMT_PCM.size)
            + FMT_PCM.pack(WAVE_FORMAT_PCM, channels, rate, rate * block, block, 16)
            + CHUNK_HEADER.pack(b"data", data_bytes))


class WavWriter:
    """16-bit PCM WAV written as audio comes: `write(samples)` (int16 array), `close()`."""

    def __init__(self, out: BinaryIO, rate: int = 48000, channels: int = 1) -> None:
        self.out = out
        self.rate = rate
        self.channels = channels
        self.data_bytes = 0
        self._since_update = 0
        self.out.write(wav_header(rate, channels, 0))
        self.closed = False

    @property
    def samples(self) -> int:
        return self.data_bytes // (2 * self.channels)

    def write(self, samples) -> None:
        data = samples.astype("<i2", copy=False).tobytes()
        self.out.write(data)
        self.data_bytes += len(data)
        self._since_update += len(data)
        if self._since_update >= HEADER_UPDATE_BYTES:
            self._update_header()

    def write_silence(self, count: int) -> None:
        if count > 0:
            data = bytes(2 * self.channels * count)
            self.out.write(data)
            self.data_bytes += len(data)
            self._since_update += len(data)
            if self._since_update >= HEADER_UPDATE_BYTES:
                self._update_header()

    def _update_header(self) -> None:
        self._since_update = 0
        position = self.out.tell()
        self.out.seek(0)
        self.out.write(wav_header(self.rate, self.channels, self.data_bytes))
        self.out.seek(position)
        self.out.flush()  # header and data on disk: a killed process leaves a playable file

    def close(self) -> None:
        if not self.closed:
            self._update_header()
            self.closed = True


class WavFormat:
    """Where a WAV file's samples are and how they are laid out."""

    def __init__(self, rate: int, channels: int, data_offset: int, data_bytes: int) -> None:
        self.rate = rate
        self.channels = channels
        self.data_offset = data_offset
        self.data_bytes = data_bytes

    @property
    def frames(self) -> int:
        return self.data_bytes // (2 * self.channels)


def parse_wav_header(head: bytes, file_size: int) -> WavFormat:
    """The format and data location of a 16-bit PCM WAV file from its first bytes (`head`, at
    least the header) and its size. WavError for anything else: another encoding, a missing or
    misplaced chunk. A data chunk whose size runs past the end of the file (a writer killed
    before it wrote the size) is taken to end with the file."""
    if len(head) < RIFF_HEADER.size or RIFF_HEADER.unpack_from(head)[0::2] != (b"RIFF", b"WAVE"):
        raise WavError("not a RIFF/WAVE file")
    offset = RIFF_HEADER.size
    fmt: tuple | None = None
    while offset + CHUNK_HEADER.size <= len(head):
        name, size = CHUNK_HEADER.unpack_from(head, offset)
        body = offset + CHUNK_HEADER.size
        if name == b"fmt ":
            if size < FMT_PCM.size or body + FMT_PCM.size > len(head):
                raise WavError("fmt chunk cut short")
            tag, channels, rate, _, block, bits = FMT_PCM.unpack_from(head, body)
            if tag == WAVE_FORMAT_EXTENSIBLE and size >= 40 and body + 40 <= len(head):
                tag = struct.unpack_from("<H", head, body + 24)[0]  # the sub-format's GUID starts with it
            if tag != WAVE_FORMAT_PCM or bits != 16:
                raise WavError(f"only 16-bit PCM WAV is played (format tag {tag}, {bits} bits)")
            if channels not in (1, 2) or block != 2 * channels:
                raise WavError(f"{channels} channels: only mono or stereo")
            if not 8000 <= rate <= 192000:
                raise WavError(f"sample rate {rate} Hz")
            fmt = (rate, channels)
        elif name == b"data":
            if fmt is None:
                raise WavError("data chunk before the fmt chunk")
            available = max(file_size - body, 0)
            data_bytes = min(size, available) if size else available
            data_bytes -= data_bytes % (2 * fmt[1])
            return WavFormat(fmt[0], fmt[1], body, data_bytes)
        offset = body + size + (size & 1)
    raise WavError("no data chunk in the first 64 KB")


def read_wav_format(path: Path) -> WavFormat:
    with open(path, "rb") as handle:
        head = handle.read(MAX_HEADER_SCAN)
        handle.seek(0, 2)
        return parse_wav_header(head, handle.tell())


def repair_wav(path: Path) -> float:
    """Make a cut WAV file whole (RIFF and data sizes from the bytes on disk, a trailing partial
    sample dropped); returns its duration in seconds. WavError (file untouched) if it is not a
    16-bit PCM WAV file."""
    with open(path, "r+b") as handle:
        head = handle.read(MAX_HEADER_SCAN)
        handle.seek(0, 2)
        size = handle.tell()
        fmt = parse_wav_header(head, size)
        available = size - fmt.data_offset
        data_bytes = available - available % (2 * fmt.channels)
        handle.truncate(fmt.data_offset + data_bytes)
        handle.seek(4)
        handle.write(struct.pack("<I", fmt.data_offset - 8 + data_bytes))
        handle.seek(fmt.data_offset - 4)
        handle.write(struct.pack("<I", data_bytes))
        return data_bytes / (2 * fmt.channels) / fmt.rate
