"""Ogg pages (RFC 3533) carrying Opus (RFC 7845): a muxer for recordings, a demuxer for players.

An Ogg stream is a sequence of pages. Each page has a 27-byte header (capture pattern "OggS",
version 0, flags, granule position, serial number, page sequence number, CRC-32) followed by a
segment table of "lacing values" and the data: a packet is a run of 255-byte segments ended by
one shorter segment (0 when its length is a multiple of 255), and may continue on the next page.

Ogg Opus (RFC 7845 section 3): the first page holds only the identification header `OpusHead`
(beginning-of-stream flag), the next page(s) the comment header `OpusTags`, then audio pages whose
granule position is the number of 48 kHz samples decoded up to the end of the last packet that
completes on the page (section 4), pre-skip included. The last page carries the end-of-stream flag.

The writer makes one logical stream of mono or stereo Opus (channel mapping family 0). The reader
takes the first logical stream of a file, checks every page's CRC, and gives back its packets; it
stops with `OggError` on anything malformed, so a player fails cleanly on a bad file.
"""
from __future__ import annotations

import secrets
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

# RFC 3533 section 6: the page header
OGG_CAPTURE_PATTERN = b"OggS"
OGG_VERSION = 0
FLAG_CONTINUED = 0x01   # the page starts with the rest of a packet from the previous page
FLAG_BOS = 0x02         # first page of a logical bitstream
FLAG_EOS = 0x04         # last page of a logical bitstream
MAX_SEGMENTS = 255
SEGMENT_SIZE = 255
GRANULE_NONE = -1       # no packet completes on this page
PAGE_HEADER = struct.Struct("<4sBBqIIIB")  # pattern, version, flags, granule, serial, seq, crc, n

# RFC 7845 section 5
OPUS_HEAD_MAGIC = b"OpusHead"
OPUS_TAGS_MAGIC = b"OpusTags"
OPUS_HEAD = struct.Struct("<8sBBHIhB")  # magic, version, channels, pre-skip, rate, gain, family
OPUS_HEAD_VERSION = 1
OPUS_SAMPLE_RATE = 48000  # granule positions always count 48 kHz samples (section 4)
MAX_PACKET_SAMPLES = 5760  # 120 ms: the longest an Opus packet lasts (RFC 6716 section 3.2.5)
# A muxer should not hold a packet back for long: pages of about one second keep a cut file
# (a killed engine) playable to within a second of its end, and seeking precise.
PAGE_TARGET_SAMPLES = OPUS_SAMPLE_RATE
MAX_PAGE_BYTES = 65025 + 27 + 255  # the most a page can hold, header included


class OggError(ValueError):
    """A malformed Ogg page or Ogg Opus header."""


def _crc_table() -> list[int]:
    # RFC 3533 section 6: CRC-32 with polynomial 0x04c11db7, no reflection, initial value 0, no
    # final XOR, computed over the page with its CRC field zeroed.
    table = []
    for byte in range(256):
        value = byte << 24
        for _ in range(8):
            value = ((value << 1) ^ 0x04C11DB7) if value & 0x80000000 else value << 1
        table.append(value & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc_table()
_BIT_REVERSED = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def ogg_crc_reference(data: bytes | bytearray) -> int:
    """The page CRC computed bit-serially from the RFC's definition (the tests' reference)."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ byte]
    return crc


def ogg_crc(data: bytes | bytearray) -> int:
    """The page CRC through zlib: Ogg's CRC is zlib's CRC-32 (the same polynomial, reflected)
    on bit-reversed bytes, without zlib's initial and final inversion, bit-reversed. About 100x
    faster than a Python loop, which matters with dozens of tracks writing a page a second."""
    reflected = zlib.crc32(bytes(data).translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def build_page(segments: list[bytes], flags: int, granule: int, serial: int, sequence: int) -> bytes:
    """One page from whole lacing segments (each at most 255 bytes; a segment shorter than 255 ends
    a packet). The caller lays packets out as segments (`lace`)."""
    if len(segments) > MAX_SEGMENTS:
        raise ValueError("at most 255 segments per page")
    table = bytes(len(s) for s in segments)
    header = PAGE_HEADER.pack(OGG_CAPTURE_PATTERN, OGG_VERSION, flags, granule, serial, sequence,
                              0, len(segments))
    page = bytearray(header + table + b"".join(segments))
    struct.pack_into("<I", page, 22, ogg_crc(page))
    return bytes(page)


def lace(packet: bytes) -> list[bytes]:
    """A packet as lacing segments: 255-byte pieces, then the rest (an empty one if none is left)."""
    pieces = [packet[i:i + SEGMENT_SIZE] for i in range(0, len(packet), SEGMENT_SIZE)]
    if not pieces or len(pieces[-1]) == SEGMENT_SIZE:
        pieces.append(b"")
    return pieces


class OggStreamWriter:
    """One logical Ogg bitstream written to a binary file, page by page.

    `add(packet, granule)` queues a packet that ends at `granule`; `flush()` writes the queued
    packets as pages (a packet that does not fit continues on the next page); `close()` writes the
    last page with the end-of-stream flag. The first page written carries the beginning-of-stream
    flag.
    """

    def __init__(self, out: BinaryIO, serial: int | None = None) -> None:
        self.out = out
        self.serial = secrets.randbits(32) if serial is None else serial
        self.sequence = 0
        self._segments: list[bytes] = []
        self._ends: list[int] = []   # index in _segments after which a packet completes -> granule
        self._granules: list[int] = []
        self._continued = False
        self.bytes_written = 0
        self.pages_written = 0
        self.packets = 0
        self.closed = False

    def add(self, packet: bytes, granule: int) -> None:
        self._segments.extend(lace(packet))
        self._ends.append(len(self._segments))
        self._granules.append(granule)
        self.packets += 1
        while len(self._segments) >= MAX_SEGMENTS:
            self._write_page(MAX_SEGMENTS, 0)

    @property
    def pending_packets(self) -> int:
        return len(self._ends)

    def trim_last(self, granule: int) -> None:
        """Give the last queued packet a smaller granule position: end trimming (the last page
        of a stream may end before its last packet's samples do)."""
        if self._granules:
            self._granules[-1] = granule

    def flush(self, eos: bool = False, hold: int = 0) -> None:
        """Write the queued packets out (on as many pages as it takes) but the last `hold` ones,
        through to the file: a process killed later leaves every page written so far on disk."""
        end = self._ends[-1 - hold] if len(self._ends) > hold else 0
        if hold and not end:
            return
        if not hold:
            end = len(self._segments)
        while end > MAX_SEGMENTS:
            self._write_page(MAX_SEGMENTS, 0)
            end -= MAX_SEGMENTS
        if end or eos:
            self._write_page(end, FLAG_EOS if eos else 0)
        self.out.flush()

    def _write_page(self, count: int, flags: int) -> None:
        segments = self._segments[:count]
        granule = GRANULE_NONE
        completed = 0
        for end, value in zip(self._ends, self._granules):
            if end > count:
                break
            granule = value
            completed += 1
        if self.sequence == 0:
            flags |= FLAG_BOS
        if self._continued:
            flags |= FLAG_CONTINUED
        page = build_page(segments, flags, granule, self.serial, self.sequence)
        self.out.write(page)
        self.bytes_written += len(page)
        self.pages_written += 1
        self.sequence += 1
        # a page that ends inside a packet (its last segment is 255 bytes) continues on the next
        self._continued = bool(segments) and len(segments[-1]) == SEGMENT_SIZE
        self._segments = self._segments[count:]
        self._ends = [end - count for end in self._ends[completed:]]
        self._granules = self._granules[completed:]


def opus_head(channels: int = 1, pre_skip: int = 0, input_rate: int = OPUS_SAMPLE_RATE,
              output_gain_q8: int = 0) -> bytes:
    """The identification header (RFC 7845 section 5.1), channel mapping family 0."""
    if channels not in (1, 2):
        raise ValueError("channel mapping family 0 carries 1 or 2 channels")
    return OPUS_HEAD.pack(OPUS_HEAD_MAGIC, OPUS_HEAD_VERSION, channels, pre_skip, input_rate,
                          output_gain_q8, 0)


def opus_tags(vendor: str, comments: list[str] | tuple[str, ...] = ()) -> bytes:
    """The comment header (RFC 7845 section 5.2): vendor string and `TAG=value` comments."""
    parts = [OPUS_TAGS_MAGIC, struct.pack("<I", len(vendor.encode())), vendor.encode(),
             struct.pack("<I", len(comments))]
    for comment in comments:
        data = comment.encode()
        parts += [struct.pack("<I", len(data)), data]
    return b"".join(parts)


# RFC 6716 section 3.1: frame duration of each TOC configuration, in 48 kHz samples
_CONFIG_SAMPLES = ([480, 960, 1920, 2880] * 3          # SILK NB, MB, WB: 10, 20, 40, 60 ms
                   + [480, 960] * 2                     # hybrid SWB, FB: 10, 20 ms
                   + [120, 240, 480, 960] * 4)          # CELT NB, WB, SWB, FB: 2.5 .. 20 ms
CELT_FB_CONFIGS = {120: 28, 240: 29, 480: 30, 960: 31}


def toc_frame_samples(toc: int) -> int:
    """Samples (48 kHz) of one frame of a packet whose TOC byte is `toc`."""
    return _CONFIG_SAMPLES[toc >> 3]


def plc_packets(samples: int, last_toc: int | None) -> list[tuple[bytes, int]]:
    """Packets that stand for `samples` of missing audio (a multiple of 120, 2.5 ms): RFC 7845
    section 4.1 asks a muxer of a real-time stream with gaps (loss, DTX, a participant away) to
    write packets of zero-length frames, which request packet loss concealment. The previous
    packet's mode, bandwidth, channels and frame size are kept where the gap allows it (no
    configuration switch for the decoder); code 3 packets carry up to 120 ms each (RFC 6716 section
    3.2.5: two bytes, the frame count, CBR frames of zero bytes). Returns (packet, samples) pairs."""
    if samples <= 0:
        return []
    if samples % 120:
        raise ValueError("a gap is a multiple of 2.5 ms")
    toc = last_toc if last_toc is not None else (CELT_FB_CONFIGS[960] << 3)
    result: list[tuple[bytes, int]] = []
    left = samples
    frame = toc_frame_samples(toc)
    if left >= frame:
        per_packet = MAX_PACKET_SAMPLES // frame
        config_byte = (toc & 0xFC) | 3
        while left >= frame:
            count = min(per_packet, left // frame)
            result.append((bytes((config_byte, count)), count * frame))
            left -= count * frame
    stereo = toc & 0x04
    for size in (960, 480, 240, 120):  # the rest, in CELT fullband frames of decreasing length
        while left >= size:
            result.append((bytes(((CELT_FB_CONFIGS[size] << 3) | stereo,)), size))
            left -= size
    return result


class OggOpusWriter:
    """An Ogg Opus file (RFC 7845) written as packets come: `write(packet, samples)` for each
    Opus packet, `write_gap(samples)` for time with no packet, `close()` at the end.

    Pages are written about once a second of audio, so a process killed mid-recording leaves a
    file that plays up to its last whole page. `samples` is the packet's duration (48 kHz), known
    from its TOC byte (`mixer._opus.packet_samples`)."""

    def __init__(self, out: BinaryIO, channels: int = 1, pre_skip: int = 0,
                 vendor: str = "voicemix", comments: tuple[str, ...] = (),
                 serial: int | None = None) -> None:
        self.stream = OggStreamWriter(out, serial)
        self.channels = channels
        self.pre_skip = pre_skip
        self.stream.add(opus_head(channels, pre_skip), 0)
        self.stream.flush()  # section 3: the ID header alone on the first page
        self.stream.add(opus_tags(vendor, comments), 0)
        self.stream.flush()  # the comment header ends its page(s)
        self.granule = 0      # 48 kHz samples written so far (pre-skip included)
        self._page_start = 0
        self.last_toc: int | None = None
        self.gap_samples = 0

    @property
    def samples(self) -> int:
        """Audio written so far, pre-skip excluded."""
        return max(self.granule - self.pre_skip, 0)

    def write(self, packet: bytes, samples: int) -> None:
        self.granule += samples
        self.stream.add(packet, self.granule)
        if packet:
            self.last_toc = packet[0]
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        # a page about every second; the newest packet stays queued, so the last page (with the
        # end-of-stream flag) always has a packet on it and its granule position
        if self.granule - self._page_start >= PAGE_TARGET_SAMPLES and self.stream.pending_packets > 1:
            self.stream.flush(hold=1)
            self._page_start = self.granule

    def write_gap(self, samples: int) -> None:
        """`samples` (rounded down to 2.5 ms) of nothing: packet loss concealment packets."""
        samples -= samples % 120
        for packet, count in plc_packets(samples, self.last_toc):
            self.gap_samples += count
            self.granule += count
            self.stream.add(packet, self.granule)
            self._maybe_flush()

    def close(self, end_granule: int | None = None) -> None:
        """The last page, with the end-of-stream flag (an audio packet is always on it: a stream
        without any gets 20 ms of concealment, so every reader sees a well-formed end).
        `end_granule`, less than what the packets decode to, trims the end (section 4.4)."""
        if self.stream.closed:
            return
        if self.stream.pending_packets == 0:
            self.write_gap(960)
        if end_granule is not None and end_granule < self.granule:
            self.stream.trim_last(end_granule)
            self.granule = end_granule
        self.stream.flush(eos=True)
        self.stream.closed = True


# ------------------------------------------------------------------------------------- reading
@dataclass
class OggPage:
    flags: int
    granule: int
    serial: int
    sequence: int
    lacing: bytes
    data: bytes


def read_pages(source: BinaryIO) -> Iterator[OggPage]:
    """Every page of an Ogg file, read as needed (a player holds one page in memory), CRC checked;
    OggError on the first malformed one. A file cut inside its last page (a writer killed
    mid-page) ends cleanly before that page."""
    offset = 0
    while True:
        header = source.read(PAGE_HEADER.size)
        if len(header) < PAGE_HEADER.size:
            return  # the end, or a cut tail that is not a whole header
        pattern, version, flags, granule, serial, sequence, crc, count = PAGE_HEADER.unpack(header)
        if pattern != OGG_CAPTURE_PATTERN:
            raise OggError(f"no Ogg capture pattern at byte {offset}")
        if version != OGG_VERSION:
            raise OggError(f"Ogg version {version} at byte {offset}")
        lacing = source.read(count)
        if len(lacing) < count:
            return
        data = source.read(sum(lacing))
        if len(data) < sum(lacing):
            return
        page = bytearray(header + lacing + data)
        struct.pack_into("<I", page, 22, 0)
        if ogg_crc(page) != crc:
            raise OggError(f"page {sequence} at byte {offset}: CRC mismatch")
        yield OggPage(flags, granule, serial, sequence, lacing, data)
        offset += len(page)


def read_packets(pages: Iterator[OggPage]) -> Iterator[tuple[bytes, int, bool]]:
    """The packets of the first logical stream: (packet, granule of its page or GRANULE_NONE when
    it is not the page's last completed packet, whether it is the stream's last page)."""
    serial = None
    partial = bytearray()
    for page in pages:
        if serial is None:
            if not page.flags & FLAG_BOS:
                raise OggError("the first page does not begin a stream")
            serial = page.serial
        if page.serial != serial:
            continue  # another logical stream multiplexed in: not ours
        if not page.flags & FLAG_CONTINUED:
            partial.clear()  # a packet left unfinished before a page that does not continue it
        completed: list[bytes] = []
        position = 0
        for value in page.lacing:
            partial += page.data[position:position + value]
            position += value
            if value < SEGMENT_SIZE:
                completed.append(bytes(partial))
                partial.clear()
        for index, packet in enumerate(completed):
            last = index == len(completed) - 1
            yield packet, page.granule if last else GRANULE_NONE, last and bool(page.flags & FLAG_EOS)
        if page.flags & FLAG_EOS:
            return


@dataclass
class OpusHead:
    channels: int
    pre_skip: int
    input_rate: int
    output_gain_q8: int
    mapping_family: int


def parse_opus_head(packet: bytes) -> OpusHead:
    if len(packet) < OPUS_HEAD.size or not packet.startswith(OPUS_HEAD_MAGIC):
        raise OggError("the first packet is not an OpusHead")
    _, version, channels, pre_skip, rate, gain, family = OPUS_HEAD.unpack_from(packet)
    if version >> 4:  # section 5.1: major version 0 only; minor versions stay compatible
        raise OggError(f"OpusHead version {version} is not supported")
    if channels == 0:
        raise OggError("OpusHead with no channels")
    if family != 0:
        raise OggError(f"channel mapping family {family} is not supported (only 0: mono/stereo)")
    if channels > 2:
        raise OggError("family 0 carries at most 2 channels")
    return OpusHead(channels, pre_skip, rate, gain, family)


class OggOpusReader:
    """The Opus packets of an Ogg Opus file (RFC 7845) read from `source` as needed, for playback:
    `head`, then `packets()` yields (packet, samples to discard at the end of this packet or 0).

    The pre-skip is the caller's to drop from the decoded start; end trimming (the last page's
    granule position smaller than what its packets decode to) is reported per packet."""

    def __init__(self, source: BinaryIO) -> None:
        self._packets = read_packets(read_pages(source))
        try:
            first, granule, _ = next(self._packets)
            tags, _, _ = next(self._packets)
        except StopIteration:
            raise OggError("no Ogg Opus headers") from None
        self.head = parse_opus_head(first)
        if not tags.startswith(OPUS_TAGS_MAGIC):
            raise OggError("the second packet is not OpusTags")
        if granule not in (0, GRANULE_NONE):
            raise OggError("the OpusHead page has a granule position")

    def packets(self, packet_samples) -> Iterator[tuple[bytes, int]]:
        """(packet, end-trim samples); `packet_samples(packet)` gives a packet's duration and
        raises ValueError for a malformed one (that packet is then skipped)."""
        position = 0
        for packet, granule, last in self._packets:
            try:
                samples = packet_samples(packet)
            except ValueError:
                continue
            position += samples
            trim = 0
            if last and granule != GRANULE_NONE and granule < position:
                trim = min(position - granule, samples)  # section 4.4: end trimming
            yield packet, trim
