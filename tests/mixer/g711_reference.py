"""G.711 (ITU-T G.711) mu-law and A-law, one sample at a time in plain Python: the classic
segment-search formulation (as in the ITU's reference and Sun's g711.c), written independently of
`mixer._g711`'s tables so the tests compare two implementations."""
from __future__ import annotations

MU_BIAS = 0x84
MU_CLIP = 8159
MU_SEGMENT_ENDS = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
A_SEGMENT_ENDS = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _segment(value: int, ends: tuple[int, ...]) -> int:
    for segment, end in enumerate(ends):
        if value <= end:
            return segment
    return len(ends)


def linear_to_ulaw(sample: int) -> int:
    """A 16-bit sample to its mu-law code (14-bit magnitude, bias 33, 8 segments)."""
    value = sample >> 2
    mask = 0xFF
    if value < 0:
        value, mask = -value, 0x7F
    value = min(value, MU_CLIP) + (MU_BIAS >> 2)
    segment = _segment(value, MU_SEGMENT_ENDS)
    if segment >= 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((value >> (segment + 1)) & 0xF)) ^ mask


def ulaw_to_linear(code: int) -> int:
    code = ~code & 0xFF
    magnitude = (((code & 0x0F) << 3) + MU_BIAS) << ((code & 0x70) >> 4)
    return MU_BIAS - magnitude if code & 0x80 else magnitude - MU_BIAS


def linear_to_alaw(sample: int) -> int:
    """A 16-bit sample to its A-law code (13-bit magnitude, even bits inverted: XOR 0x55)."""
    value = sample >> 3
    if value >= 0:
        mask = 0xD5
    else:
        mask, value = 0x55, -value - 1
    segment = _segment(value, A_SEGMENT_ENDS)
    if segment >= 8:
        return 0x7F ^ mask
    code = segment << 4
    code |= (value >> 1 if segment < 2 else value >> segment) & 0x0F
    return code ^ mask


def alaw_to_linear(code: int) -> int:
    code ^= 0x55
    magnitude = (code & 0x0F) << 4
    segment = (code & 0x70) >> 4
    if segment == 0:
        magnitude += 8
    else:
        magnitude = (magnitude + 0x108) << (segment - 1)
    return magnitude if code & 0x80 else -magnitude
