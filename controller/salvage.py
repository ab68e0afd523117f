"""What a crashed controller leaves half-done on disk: a recording's WAV file.

The recorder (`controller.media.Recorder`) writes through `wave`, which rewrites the header's sizes
after every write, so a SIGKILL leaves at most the last partial write unaccounted for. The
controller that adopts the call makes the file whole from what is on disk (RIFF and data chunk
sizes, a trailing odd byte dropped) and records how long it is.
"""
from __future__ import annotations

import struct
from pathlib import Path

from mixer.codec import MIX_RATE

BYTES_PER_SAMPLE = 2  # 16-bit mono, as Recorder writes
WAVE_FORMAT_PCM = 1
HEADER = struct.Struct("<4sI4s")  # RIFF chunk: "RIFF", size, "WAVE" (RIFF spec, WAVE form)
CHUNK = struct.Struct("<4sI")


class SalvageError(ValueError):
    """A file that is not a WAV file as the recorder writes them."""


def salvage_wav(path: Path) -> float:
    """Fix the sizes in a 48 kHz mono 16-bit WAV file cut short; returns its duration in seconds.

    Raises SalvageError for a file that is not such a WAV file (left untouched), FileNotFoundError
    if there is no file.
    """
    with open(path, "r+b") as handle:
        head = handle.read(4096)
        if len(head) < HEADER.size or HEADER.unpack_from(head)[0::2] != (b"RIFF", b"WAVE"):
            raise SalvageError(f"{path}: not a RIFF/WAVE file")
        offset = HEADER.size
        fmt_seen = False
        while offset + CHUNK.size <= len(head):
            name, size = CHUNK.unpack_from(head, offset)
            if name == b"fmt ":
                if size < 16 or offset + CHUNK.size + 16 > len(head):
                    raise SalvageError(f"{path}: fmt chunk cut short")
                tag, channels, rate = struct.unpack_from("<HHI", head, offset + 8)
                bits = struct.unpack_from("<H", head, offset + 22)[0]
                if (tag, channels, rate, bits) != (WAVE_FORMAT_PCM, 1, MIX_RATE,
                                                   8 * BYTES_PER_SAMPLE):
                    raise SalvageError(f"{path}: not 48 kHz mono 16-bit")
                fmt_seen = True
            if name == b"data":
                if not fmt_seen:
                    raise SalvageError(f"{path}: data before fmt")
                data_start = offset + CHUNK.size
                handle.seek(0, 2)
                data_bytes = max(handle.tell() - data_start, 0)
                data_bytes -= data_bytes % BYTES_PER_SAMPLE
                handle.truncate(data_start + data_bytes)
                handle.seek(4)
                handle.write(struct.pack("<I", data_start - 8 + data_bytes))
                handle.seek(offset + 4)
                handle.write(struct.pack("<I", data_bytes))
                return data_bytes / BYTES_PER_SAMPLE / MIX_RATE
            offset += CHUNK.size + size + (size & 1)
        raise SalvageError(f"{path}: no data chunk in the header")
