"""NTP timestamps as RTCP uses them (RFC 3550 section 4, section 6.4.1).

An RTCP sender report carries a 64-bit NTP timestamp: 32 bits of seconds since
1900-01-01 and 32 bits of fraction. Report blocks echo its middle 32 bits (16.16
fixed point) as LSR, which is how a sender measures round-trip time without
synchronised clocks.

Seconds here are Unix seconds (the scale of ``time.time()``), because that is what
the rest of the engine compares against.
"""

from __future__ import annotations

import time

#: Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01), RFC 868.
NTP_EPOCH_OFFSET = 2_208_988_800

#: 2**32: one second in the 32-bit NTP fraction, and the length of an NTP era.
NTP_FRACTION = 1 << 32

#: One second in the 16.16 fixed point of LSR/DLSR (RFC 3550 section 6.4.1).
NTP_SHORT_UNIT = 1 << 16

_MASK32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF


def seconds_to_ntp(seconds: float) -> int:
    """Unix seconds -> 64-bit NTP timestamp.

    Times from 2036-02-07 on wrap into NTP era 1, as RFC 4330 section 3 expects.
    """
    total = round((seconds + NTP_EPOCH_OFFSET) * NTP_FRACTION)
    return total & _MASK64


def ntp_to_seconds(ntp64: int) -> float:
    """64-bit NTP timestamp -> Unix seconds.

    RFC 4330 section 3: a seconds field with the top bit clear belongs to era 1
    (2036-2104), so timestamps keep working after the 2036 wrap.
    """
    ntp64 &= _MASK64
    if not ntp64 >> 63:
        ntp64 += 1 << 64
    return ntp64 / NTP_FRACTION - NTP_EPOCH_OFFSET


def ntp_now() -> int:
    """The current wall clock as a 64-bit NTP timestamp (for SR, RFC 3550 section 6.4.1)."""
    return seconds_to_ntp(time.time())


def ntp_middle32(ntp64: int) -> int:
    """Middle 32 bits of an NTP timestamp: the LSR value (RFC 3550 section 6.4.1)."""
    return (ntp64 >> 16) & _MASK32


def rtt_from_report(
    arrival_ntp64: int, lsr: int, dlsr: int, tolerance: float = 0.01
) -> float | None:
    """Round-trip time in seconds from a report block (RFC 3550 section 6.4.1).

    RTT = A - LSR - DLSR in 1/65536 s, where A is the middle 32 bits of the
    report's arrival time. Returns None when the peer has not seen an SR yet
    (LSR 0). Small negative results come from clock granularity and are clamped
    to 0.0; a result more negative than ``tolerance`` seconds means the block
    does not match our clock (stale or bogus LSR/DLSR), and gives None rather
    than a made-up RTT.
    """
    if lsr == 0:
        return None
    delta = (ntp_middle32(arrival_ntp64) - lsr - dlsr) & _MASK32
    if delta >= 1 << 31:  # modular arithmetic: the top half is negative
        delta -= 1 << 32
    rtt = delta / NTP_SHORT_UNIT
    if rtt < 0.0:
        return 0.0 if rtt >= -tolerance else None
    return rtt
