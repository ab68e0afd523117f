"""A conference that forwards (SFU): no mixing, no transcoding; each subscriber gets the last-N loudest.

A packet is forwarded the moment it arrives (no jitter buffer here: each receiver has its own), so
the SFU adds no delay beyond its own processing. Per packet: the leg has already unprotected SRTP and
parsed it; its RFC 6464 level (or, for a sender without the extension, the level of a cheap decode)
feeds the speaker selector; if the sender is among the forwarded, the packet goes to every other
subscriber through that subscriber's slot for it: `StreamRewriter` gives it the slot's SSRC and the
next sequence number and timestamp, the subscriber's leg rebuilds it with its own payload type and
audio-level extension id, protects it with its own SRTP key, and queues it for the batched send.

Every 20 ms tick the selector updates the forwarded set; a subscriber's slots are reassigned so that
a speaker who stays keeps their slot and a new one takes the slot of the one who left: the receiver
sees at most N steady streams, each continuous across speaker changes.

RTCP is terminated per leg (the leg sends SR/RR for its own and its slots' streams). A NACK from a
subscriber is answered from the sender's small packet cache when the packet is there, and passed on
to the sender (renumbered into its stream) when it is not.
"""
from __future__ import annotations

import secrets
import time

from mixer import _mix, _rtp
from mixer._forward import SlotSender, StreamRewriter, fan_out, resend
from mixer.codec import FRAME_MS, FrameDecoder, OpusSettings
from mixer.legs.leg import MediaLeg
from mixer.media.player import Player
from mixer.rtp.rtcp import RtcpNack
from mixer.settings import EngineSettings
from mixer.sfu.sources import PlayerSender
from mixer.sfu.speakers import SpeakerSelector

RTCP_CHECK_TICKS = 25
# As in the MCU: claims this many dB louder than the decoded audio, this many checks in a row,
# and a sender's RFC 6464 levels are no longer believed. The SFU decodes only for the check, and
# checks only where a claim decides something: while more senders talk than there are slots
# (`SpeakerSelector.contended`), the claims of those forwarded and of those claiming voice, one
# packet in CLAIM_CHECK_EVERY (a forger is caught in 15 x 4 x 20 ms = 1.2 s of contention). With
# no contention nobody is deprived of a slot by a forged claim, and no packet is decoded: checking
# one packet in four of every forwarded sender was 37% of a saturated engine on 1:1 calls.
FORGED_LEVEL_MARGIN_DB = 20
FORGED_LEVEL_PACKETS = 15
CLAIM_CHECK_EVERY = 4

# Codecs an SFU conference accepts: every leg must be able to play every other leg's packets.
SFU_CODECS = ("opus",)


class Slot:
    """One of a subscriber's N outgoing streams: its sender (numbering, SRTP, queue) and who fills it."""

    __slots__ = ("sender", "source")

    def __init__(self, leg: MediaLeg) -> None:
        rewriter = StreamRewriter(leg.new_slot_ssrc(), secrets.randbits(16), secrets.randbits(32),
                                  leg.clock_rate, leg.samples_per_frame)
        self.sender: SlotSender = leg.slot_sender(rewriter)
        self.source: Participant | None = None

    @property
    def rewriter(self) -> StreamRewriter:
        return self.sender.rewriter


class Participant:
    """The SFU's state for one leg: as a sender (level, packet cache) and as a subscriber (slots)."""

    def __init__(self, leg: MediaLeg | PlayerSender, number: int, settings: EngineSettings,
                 subscribes: bool = True) -> None:
        self.leg = leg
        self.number = number
        self.source_key = number << 32       # | the sender's SSRC: a new SSRC is a new stream
        # an engine-side sender (a player) subscribes to nothing: no slots; a WebRTC leg has
        # as many as its answer has slot m-lines
        self.slots = ([Slot(leg) for _ in range(leg.slot_capacity(settings.sfu_last_n))]
                      if subscribes else [])
        self.slot_of: dict[Participant, Slot] = {}   # source -> the slot it fills for this subscriber
        self.targets: list[SlotSender] = []          # as a source: the slots it is forwarded through
        self.cache: list[_rtp.RtpPacket | None] = [None] * settings.sfu_packet_cache
        self.newest_seq: int | None = None
        self.tick_level: int | None = None   # loudest level this tick (lower is louder)
        self.forwarded = False               # in the selector's last-N
        self.stale = False                   # its packets are arriving too old (after a stall)
        self.carries_level = False
        self.trusts_level = True
        self._forged_packets = 0
        self._claims = 0
        self._level_decoder: FrameDecoder | None = None
        self.level_decodes = 0

    def level_of(self, packet: _rtp.RtpPacket, contended: bool = True) -> tuple | None:
        """(voice, level) from the RFC 6464 extension, or from decoding when the sender has none.

        While `contended` (more talkers than slots), the claims of a forwarded sender and claims of
        voice are checked against the decoded audio on one packet in CLAIM_CHECK_EVERY: a sender
        whose claims stay far louder than its audio (forging 'loudest' on silence to hold or take
        a slot) is no longer believed, and is measured instead. The decoder then sees every 4th
        packet only, which is enough for a level (not for listening)."""
        ext_id = self.leg.audio_level_ext_id
        claimed = None
        if ext_id and self.trusts_level:
            claimed = packet.audio_level(ext_id)
            if claimed is not None:
                self.carries_level = True
                if not contended or not (self.forwarded or claimed[0]):
                    return claimed
                self._claims += 1
                if self._claims % CLAIM_CHECK_EVERY:
                    return claimed
            elif self.carries_level:
                return None
        measured = self._decoded_level(packet)
        if claimed is None:
            return measured
        if measured is not None and measured[1] - claimed[1] >= FORGED_LEVEL_MARGIN_DB:
            self._forged_packets += 1
            if self._forged_packets >= FORGED_LEVEL_PACKETS:
                self.trusts_level = False
                return measured
        else:
            self._forged_packets = 0
        return claimed

    def _decoded_level(self, packet: _rtp.RtpPacket) -> tuple | None:
        if self._level_decoder is None:
            self._level_decoder = FrameDecoder(self.leg.codec)
        self._level_decoder.decode(packet.payload)
        self.level_decodes += 1
        frame = self._level_decoder.take_frame()
        if frame is None:
            return None
        level = _mix.audio_level(frame)
        return (level < _rtp.AUDIO_LEVEL_SILENT, level)

    def assign(self, sources: list[Participant]) -> list[Slot]:
        """Fill this subscriber's slots with `sources` (minus itself), keeping those that stay;
        returns the slots that got a new source."""
        wanted = [s for s in sources if s is not self]
        filled = []
        for source in list(self.slot_of):
            if source not in wanted:
                slot = self.slot_of.pop(source)
                slot.source = None
                slot.rewriter.release()
        free = [slot for slot in self.slots if slot.source is None]
        for source in wanted:
            if source not in self.slot_of and free:
                slot = free.pop(0)
                slot.source = source
                self.slot_of[source] = slot
                filled.append(slot)
        return filled

    def recent_packets(self, count: int) -> list[_rtp.RtpPacket]:
        """The last `count` packets received, oldest first, as far as the cache still has them."""
        if self.newest_seq is None:
            return []
        size = len(self.cache)
        found = []
        for back in range(min(count, size) - 1, -1, -1):
            seq = (self.newest_seq - back) & 0xFFFF
            packet = self.cache[seq % size]
            if packet is not None and packet.sequence_number == seq:
                found.append(packet)
        return found


class SfuConference:
    """Selective forwarding over MediaLegs; `tick()` runs speaker selection every 20 ms."""

    mode = "sfu"
    codecs = SFU_CODECS
    retransmits = True

    def __init__(self, conference_id: str, settings: EngineSettings) -> None:
        self.id = conference_id
        self.settings = settings
        # forwarded streams each subscriber gets (a WebRTC leg's answer has a m-line per slot)
        self.slots_per_leg = settings.sfu_last_n
        self.voices: dict[str, Participant] = {}
        # engine-side media: players are senders without a leg (forwarded by level like anyone);
        # recordings and forks (the hub, set by the engine while any is attached) get packets
        self.sources: dict[str, Participant] = {}
        self.players: dict[str, Player] = {}
        self.media = None
        self.opus = OpusSettings(settings.opus_bitrate, settings.opus_complexity, settings.opus_fec,
                                 settings.opus_packet_loss_percent, settings.opus_dtx)
        self.selector = SpeakerSelector(last_n=settings.sfu_last_n)
        self.created_at = time.time()
        self._numbers = 0
        self.ticks = 0
        self.packets_in = 0
        self.packets_forwarded = 0
        self.packets_not_forwarded = 0
        self.nack_retransmits = 0
        self.nack_forwarded = 0
        self.preroll_packets = 0
        self.packets_stale = 0
        self.busy_ms = 0.0

    # --------------------------------------------------------------------------------------- legs
    @property
    def legs(self) -> dict[str, MediaLeg]:
        return {leg_id: p.leg for leg_id, p in self.voices.items()}

    def add_leg(self, leg: MediaLeg) -> None:
        self._numbers += 1
        participant = Participant(leg, self._numbers, self.settings)
        self.voices[leg.id] = participant
        self.selector.add(participant)
        self._reassign()
        leg.on_rtp = self._on_rtp
        leg.on_nack = self._on_nack
        leg.on_ssrc_change = self._on_ssrc_change
        if self.media is not None:
            self.media.leg_added(leg)

    def remove_leg(self, leg_id: str) -> MediaLeg:
        participant = self.voices.pop(leg_id)
        self._forget(participant)
        leg = participant.leg
        leg.on_rtp = leg.on_nack = leg.on_ssrc_change = None
        if self.media is not None:
            self.media.leg_removed(leg)
        return leg

    def _forget(self, participant: Participant) -> None:
        self.selector.remove(participant)
        for other in self.voices.values():
            slot = other.slot_of.pop(participant, None)
            if slot is not None:
                slot.source = None
                slot.rewriter.release()
        self._reassign()

    def add_player(self, player: Player) -> None:
        self._numbers += 1
        source = Participant(PlayerSender(player, self.opus), self._numbers, self.settings,
                             subscribes=False)
        self.sources[player.id] = source
        self.players[player.id] = player
        self.selector.add(source)
        self._reassign()

    def remove_player(self, player_id: str) -> Player:
        self._forget(self.sources.pop(player_id))
        return self.players.pop(player_id)

    def _senders(self):
        yield from self.voices.values()
        yield from self.sources.values()

    def _on_ssrc_change(self, leg: MediaLeg) -> None:
        participant = self.voices.get(leg.id)
        if participant is not None:
            participant.cache = [None] * len(participant.cache)
            participant.newest_seq = None

    # ------------------------------------------------------------------------------------- packets
    def _on_rtp(self, leg: MediaLeg, packet: _rtp.RtpPacket, arrival_ms: float) -> None:
        participant = self.voices.get(leg.id)
        if participant is None:
            return
        self.packets_in += 1
        seq = packet.sequence_number
        participant.cache[seq % len(participant.cache)] = packet
        if participant.newest_seq is None or _rtp.seq_newer(seq, participant.newest_seq):
            participant.newest_seq = seq
        if leg.muted:
            return
        if self.media is not None:
            self.media.on_packet(leg, packet, arrival_ms)
        if time.monotonic() * 1000.0 - arrival_ms > self.settings.sfu_max_packet_age_ms:
            self._drop_stale(participant)
            return
        participant.stale = False
        # every sender's level is needed to choose who is forwarded: a header read with RFC 6464,
        # a decode without it or for a sampled check of a claim that decides a slot (level_decodes)
        level = participant.level_of(packet, self.selector.contended)
        if level is not None and (participant.tick_level is None or level[1] < participant.tick_level):
            participant.tick_level = level[1]
        if not participant.forwarded:
            self.packets_not_forwarded += 1
            return
        self.packets_forwarded += fan_out(
            participant.targets, participant.source_key | packet.ssrc, packet.sequence_number,
            packet.timestamp, packet.marker, packet.payload, arrival_ms, time.time(),
            -1 if level is None else level[1], level is not None and level[0])

    def _drop_stale(self, participant: Participant) -> None:
        """A packet that sat in the socket longer than `sfu_max_packet_age_ms` (the engine was
        paused or starved of CPU) is not forwarded: each receiver would get a burst of old audio,
        its jitter estimate would jump and its playout delay grow. The slots carrying the sender
        start a new stretch with the next fresh packet: sequence numbers continue, the timestamp
        advances by the time that passed, the marker bit is set (see StreamRewriter)."""
        self.packets_stale += 1
        if not participant.stale:
            participant.stale = True
            for slot in participant.targets:
                slot.rewriter.release()

    def _on_nack(self, leg: MediaLeg, nack: RtcpNack) -> None:
        subscriber = self.voices.get(leg.id)
        if subscriber is None:
            return
        slot = next((s for s in subscriber.slots if s.rewriter.ssrc == nack.media_ssrc), None)
        if slot is None or slot.source is None:
            return
        source = slot.source
        missing: list[int] = []
        wall_s = time.time()
        for out_seq in nack.lost[:64]:
            seq = slot.rewriter.original_seq(out_seq)
            if seq is None:
                continue
            packet = source.cache[seq % len(source.cache)]
            if packet is not None and packet.sequence_number == seq:
                self.nack_retransmits += resend(slot.sender, out_seq,
                                                slot.rewriter.map_timestamp(packet.timestamp),
                                                packet.marker, packet.payload, wall_s)
            else:
                missing.append(seq)
        if missing and source.leg.remote_ssrc is not None:
            source.leg.send_nack(source.leg.remote_ssrc, missing)
            self.nack_forwarded += 1

    # ---------------------------------------------------------------------------------------- tick
    def tick(self, now_ms: float) -> None:
        began = time.perf_counter()
        self.ticks += 1
        if self.sources:
            self._play(now_ms)
        for participant in self._senders():
            self.selector.observe(participant, participant.tick_level)
            participant.tick_level = None
        if self.selector.tick():
            self._reassign(now_ms)
        if self.media is not None:
            self.media.on_forwarded(now_ms, [p.leg for p in self._senders() if p.forwarded])
        if self.ticks % RTCP_CHECK_TICKS == 0:
            now_s = time.monotonic()
            for participant in self.voices.values():
                participant.leg.maybe_send_rtcp(now_s)
        self.busy_ms += (time.perf_counter() - began) * 1000.0

    def _play(self, now_ms: float) -> None:
        """Each player's packet of this tick: cached, its level counted, forwarded if chosen."""
        wall_s = time.time()
        for source in self.sources.values():
            made = source.leg.next_packet(now_ms)
            if made is None:
                continue
            packet, level = made
            seq = packet.sequence_number
            source.cache[seq % len(source.cache)] = packet
            source.newest_seq = seq
            source.tick_level = level
            if source.forwarded:
                self.packets_forwarded += fan_out(
                    source.targets, source.source_key | packet.ssrc, seq, packet.timestamp,
                    packet.marker, packet.payload, now_ms, wall_s, level,
                    level < _rtp.AUDIO_LEVEL_SILENT)

    def _reassign(self, now_ms: float | None = None) -> None:
        """Slots follow the selector's choice; with `now_ms` (a speaker change on the clock), each
        slot that took a new speaker first gets that speaker's last `sfu_preroll_ms` of packets."""
        selected = [p for p in self.selector.selected
                    if p.leg.id in self.voices or p.leg.id in self.sources]
        chosen = set(selected)
        filled: list[Slot] = []
        for participant in self._senders():
            participant.forwarded = participant in chosen
            filled += participant.assign(selected)
        for participant in self._senders():
            participant.targets = [subscriber.slot_of[participant].sender
                                   for subscriber in self.voices.values()
                                   if participant in subscriber.slot_of]
        if now_ms is not None and self.settings.sfu_preroll_ms:
            count = max(1, self.settings.sfu_preroll_ms // FRAME_MS)
            wall_s = time.time()
            for slot in filled:
                source = slot.source
                for packet in source.recent_packets(count):
                    self.preroll_packets += fan_out(
                        [slot.sender], source.source_key | packet.ssrc, packet.sequence_number,
                        packet.timestamp, packet.marker, packet.payload, now_ms, wall_s)

    # -------------------------------------------------------------------------------------- stats
    def leg_stats(self, leg_id: str) -> dict:
        participant = self.voices[leg_id]
        result = participant.leg.stats()
        short, long = self.selector.scores(participant)
        result["forwarded"] = participant.forwarded
        result["dominant"] = self.selector.dominant is participant
        result["activity"] = {"short": round(short, 2), "long": round(long, 2)}
        result["level_decodes"] = participant.level_decodes
        result["levels_trusted"] = participant.trusts_level
        result["slots"] = [{**slot.rewriter.stats(), "source": slot.source.leg.id if slot.source else None,
                            "packets": slot.sender.packets,
                            "protect_failures": slot.sender.protect_failures}
                           for slot in participant.slots]
        return result

    def counters(self) -> list[tuple[str, tuple, int]]:
        """Monotonic counters for the engine's metrics (see MediaLeg.counters)."""
        return [("speaker_switches", (), self.selector.changes),
                ("dominant_speaker_switches", (), self.selector.dominant_changes),
                ("sfu_packets_forwarded", (), self.packets_forwarded),
                ("sfu_packets_not_forwarded", (), self.packets_not_forwarded),
                ("sfu_packets_stale", (), self.packets_stale),
                ("sfu_preroll_packets", (), self.preroll_packets),
                ("sfu_nack_retransmits", (), self.nack_retransmits),
                ("sfu_nacks_forwarded", (), self.nack_forwarded)]

    def stats(self) -> dict:
        dominant = self.selector.dominant
        return {
            "legs": len(self.voices),
            "speakers": [p.leg.id for p in self.selector.selected
                         if p.leg.id in self.voices or p.leg.id in self.sources],
            "players": len(self.players),
            "dominant_speaker": dominant.leg.id if dominant is not None else None,
            "speaker_changes": self.selector.changes,
            "contended": self.selector.contended,
            "dominant_changes": self.selector.dominant_changes,
            "ticks": self.ticks,
            "packets_in": self.packets_in,
            "packets_forwarded": self.packets_forwarded,
            "packets_not_forwarded": self.packets_not_forwarded,
            "nack_retransmits": self.nack_retransmits,
            "nack_forwarded": self.nack_forwarded,
            "preroll_packets": self.preroll_packets,
            "packets_stale": self.packets_stale,
            "tick_busy_ms_mean": round(self.busy_ms / self.ticks, 3) if self.ticks else 0.0,
        }

    def close(self) -> None:
        for participant in self.voices.values():
            participant.leg.close()
        self.voices.clear()

