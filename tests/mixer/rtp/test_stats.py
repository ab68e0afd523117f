"""Receive/send statistics: report blocks (RFC 3550 6.4.1, A.3) and RTT from LSR/DLSR."""
from mixer.rtp.ntp import ntp_middle32, seconds_to_ntp
from mixer.rtp.rtcp import ReportBlock, RtcpSenderReport
from mixer.rtp.stats import ReceiveStatistics, RoundTrip, SendStatistics


def feed(stats: ReceiveStatistics, seqs, start_s=1000.0, clock=48000, frame=960):
    """Packets sent every `frame` samples and arriving exactly on time (missing ones lost)."""
    seqs = list(seqs)
    for seq in seqs:
        arrival = start_s + (seq - seqs[0]) * frame / clock
        stats.on_rtp(seq & 0xFFFF, (seq * frame) & 0xFFFFFFFF, 100, arrival)


def test_report_block_counts_loss_and_extended_sequence_across_wrap():
    stats = ReceiveStatistics(ssrc=0xABC, clock_rate=48000, first_seq=65500)
    seqs = [s for s in range(65500, 65500 + 200) if s % 10 != 3]  # every 10th lost, crosses 65535
    feed(stats, seqs)
    block = stats.report_block(now_s=2000.0)
    assert block.ssrc == 0xABC
    assert block.highest_sequence == 65500 + 199  # extended: one wrap counted in the cycles
    assert block.packets_lost == 20
    assert block.fraction_lost == (20 * 256) // 200
    assert block.jitter == 0  # perfectly paced
    assert block.lsr == 0 and block.dlsr == 0  # no SR seen yet
    # the next interval starts fresh (A.3)
    feed(stats, range(65700, 65750), start_s=1000.0 + 200 * 0.02)
    assert stats.report_block(now_s=2001.0).fraction_lost == 0
    summary = stats.stats()
    assert summary["lost"] == 20 and summary["expected"] == 250
    assert summary["loss_percent"] == 8.0


def test_lsr_and_dlsr_echo_the_last_sender_report():
    stats = ReceiveStatistics(ssrc=1, clock_rate=8000, first_seq=0)
    feed(stats, range(10), clock=8000, frame=160)
    sr_time = 1_700_000_000.25
    report = RtcpSenderReport(ssrc=1, ntp_timestamp=seconds_to_ntp(sr_time), rtp_timestamp=0,
                              packet_count=10, octet_count=1000)
    stats.on_sender_report(report, arrival_s=5000.0)
    block = stats.report_block(now_s=5001.5)
    assert block.lsr == ntp_middle32(seconds_to_ntp(sr_time))
    assert block.dlsr == int(1.5 * 65536)


def test_round_trip_from_a_report_block_about_our_stream():
    rtt = RoundTrip()
    sent_at = 1_700_000_000.0
    # the peer got our SR at sent_at + 0.010, held it 0.5 s, and its RR reaches us 0.010 later
    block = ReportBlock(ssrc=7, fraction_lost=12, packets_lost=3, highest_sequence=99, jitter=40,
                        lsr=ntp_middle32(seconds_to_ntp(sent_at)), dlsr=int(0.5 * 65536))
    measured = rtt.on_report_block(block, arrival_s=sent_at + 0.520)
    assert abs(measured - 0.020) < 0.0005
    summary = rtt.stats()
    assert abs(summary["rtt_ms"] - 20.0) < 0.5
    assert summary["remote_fraction_lost"] == 12 and summary["remote_cumulative_lost"] == 3
    # a block without LSR gives no sample
    assert rtt.on_report_block(ReportBlock(ssrc=7), arrival_s=sent_at + 1) is None
    assert rtt.stats()["rtt_ms"] is not None


def test_sender_report_timestamps_describe_the_same_instant():
    sent = SendStatistics()
    sent.on_sent(80, rtp_timestamp=48000, now_s=100.0)
    sent.on_sent(80, rtp_timestamp=48960, now_s=100.02)
    report = sent.sender_report(ssrc=5, clock_rate=48000, now_s=100.12, reports=[])
    assert report.packet_count == 2 and report.octet_count == 160
    assert report.rtp_timestamp == 48960 + int(0.1 * 48000)
    assert report.ntp_timestamp == seconds_to_ntp(100.12)
