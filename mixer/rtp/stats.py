"""Receive and send statistics of one RTP leg (RFC 3550 section 6.4 and appendix A).

The per-packet arithmetic (A.1 sequence validity, A.8 jitter) runs in the compiled `RtpSource`; this
module turns it into report blocks, remembers what it needs for LSR/DLSR, and derives RTT.
"""
from __future__ import annotations

from dataclasses import dataclass

from mixer._rtp_source import RtpSource
from mixer.rtp.ntp import ntp_middle32, rtt_from_report, seconds_to_ntp
from mixer.rtp.rtcp import ReportBlock, RtcpReceiverReport, RtcpSenderReport

# 1/65536 s units of DLSR (RFC 3550 section 6.4.1)
_DLSR_UNITS_PER_SECOND = 65536


class ReceiveStatistics:
    """Reception state for one remote SSRC: loss, jitter, and the LSR/DLSR echo for its RTT."""

    def __init__(self, ssrc: int, clock_rate: int, first_seq: int, probation: int = 0) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.source = RtpSource(first_seq, clock_rate, probation)
        self.packets = 0
        self.octets = 0
        self._last_sr_middle = 0
        self._last_sr_arrival = 0.0
        self._last_fraction = 0

    def on_rtp(self, sequence_number: int, rtp_timestamp: int, payload_size: int,
               arrival_s: float) -> bool:
        """Account one packet; False when RFC 3550 A.1 judges it invalid (probation, big jump)."""
        self.packets += 1
        self.octets += payload_size
        valid = self.source.update_seq(sequence_number)
        if valid:
            arrival = int(arrival_s * self.clock_rate) & 0xFFFFFFFF
            self.source.update_jitter(rtp_timestamp, arrival)
        return valid

    def on_sender_report(self, report: RtcpSenderReport, arrival_s: float) -> None:
        """Remember the SR so that our next report block echoes it as LSR with DLSR."""
        self._last_sr_middle = ntp_middle32(report.ntp_timestamp)
        self._last_sr_arrival = arrival_s

    def report_block(self, now_s: float) -> ReportBlock:
        """A report block for our next SR/RR; starts a new loss-fraction interval (A.3)."""
        self._last_fraction = self.source.fraction_lost()
        dlsr = 0
        if self._last_sr_middle:
            dlsr = int((now_s - self._last_sr_arrival) * _DLSR_UNITS_PER_SECOND) & 0xFFFFFFFF
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=self._last_fraction,
            packets_lost=self.source.cumulative_lost,
            highest_sequence=self.source.extended_max & 0xFFFFFFFF,
            jitter=self.source.jitter,
            lsr=self._last_sr_middle,
            dlsr=dlsr,
        )

    def stats(self) -> dict:
        expected = max(self.source.expected, 0)
        lost = max(self.source.cumulative_lost, 0)
        return {
            "ssrc": self.ssrc,
            "packets": self.packets,
            "octets": self.octets,
            "expected": expected,
            "lost": lost,
            "loss_percent": round(100.0 * lost / expected, 2) if expected else 0.0,
            "fraction_lost": self._last_fraction,
            "jitter_ms": round(self.source.jitter_ms, 3),
        }


@dataclass
class RoundTrip:
    """RTT samples from the report blocks a peer sends about our stream (RFC 3550 6.4.1)."""

    last_s: float | None = None
    samples: int = 0
    total_s: float = 0.0
    max_s: float = 0.0
    # what the peer says about our stream
    remote_fraction_lost: int = 0
    remote_cumulative_lost: int = 0
    remote_jitter: int = 0
    reports: int = 0          # report blocks received about our stream (each a new loss fraction)

    def on_report_block(self, block: ReportBlock, arrival_s: float) -> float | None:
        self.reports += 1
        self.remote_fraction_lost = block.fraction_lost
        self.remote_cumulative_lost = block.packets_lost
        self.remote_jitter = block.jitter
        rtt = rtt_from_report(seconds_to_ntp(arrival_s), block.lsr, block.dlsr)
        if rtt is not None:
            self.last_s = rtt
            self.samples += 1
            self.total_s += rtt
            self.max_s = max(self.max_s, rtt)
        return rtt

    def stats(self) -> dict:
        return {
            "rtt_ms": round(self.last_s * 1000, 3) if self.last_s is not None else None,
            "rtt_mean_ms": round(self.total_s / self.samples * 1000, 3) if self.samples else None,
            "rtt_max_ms": round(self.max_s * 1000, 3) if self.samples else None,
            "remote_fraction_lost": self.remote_fraction_lost,
            "remote_cumulative_lost": self.remote_cumulative_lost,
            "remote_jitter": self.remote_jitter,
        }


@dataclass
class SendStatistics:
    """What an SR reports about our own stream (RFC 3550 section 6.4.1 sender info)."""

    packets: int = 0
    octets: int = 0
    last_rtp_timestamp: int = 0
    last_send_s: float = 0.0

    def on_sent(self, payload_size: int, rtp_timestamp: int, now_s: float) -> None:
        self.packets += 1
        self.octets += payload_size
        self.last_rtp_timestamp = rtp_timestamp
        self.last_send_s = now_s

    def sender_report(self, ssrc: int, clock_rate: int, now_s: float,
                      reports: list[ReportBlock]) -> RtcpSenderReport:
        return sender_report(self, ssrc, clock_rate, now_s, reports)

    def stats(self) -> dict:
        return {"packets": self.packets, "octets": self.octets}


def sender_report(stream, ssrc: int, clock_rate: int, now_s: float,
                  reports: list[ReportBlock]) -> RtcpSenderReport:
    """An SR for `stream` (anything with packets, octets, last_rtp_timestamp, last_send_s: a
    SendStatistics or an SFU slot) whose RTP timestamp is the same instant as its NTP timestamp."""
    rtp_now = stream.last_rtp_timestamp + int((now_s - stream.last_send_s) * clock_rate)
    return RtcpSenderReport(
        ssrc=ssrc,
        ntp_timestamp=seconds_to_ntp(now_s),
        rtp_timestamp=rtp_now & 0xFFFFFFFF,
        packet_count=stream.packets & 0xFFFFFFFF,
        octet_count=stream.octets & 0xFFFFFFFF,
        reports=reports,
    )


def learn_from_reports(packets: list, own_ssrc: int, receive: ReceiveStatistics | None,
                       round_trip: RoundTrip, now_s: float) -> None:
    """What one side of a leg learns from the RTCP it receives: the peer's SR (echoed later as
    LSR/DLSR) and the report blocks about our own stream (RTT, the peer's view of loss)."""
    for packet in packets:
        if (isinstance(packet, RtcpSenderReport) and receive is not None
                and packet.ssrc == receive.ssrc):
            receive.on_sender_report(packet, now_s)
        if isinstance(packet, (RtcpSenderReport, RtcpReceiverReport)):
            for block in packet.reports:
                if block.ssrc == own_ssrc:
                    round_trip.on_report_block(block, now_s)
