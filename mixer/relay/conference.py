"""A conference that relays when it can and mixes when it must (issue 17).

Most calls are 1:1. Mixing a 1:1 call decodes, jitter-buffers and re-encodes each direction: a
frame of delay, a second Opus encode (quality), and ~40 calls per core. When the two legs run the
same codec nothing needs to be decoded: each packet is relayed to the other leg with its payload
untouched (bit-exact), on the receiving leg's own stream. This conference does that, and switches
live to mixing (an `McuConference` it holds) when it must:

- forwarding: exactly two legs, the same codec and packet time, no player, no recording or fork
  (`media`: those need the mix). Per packet: the leg has unprotected and parsed it;
  `mixer._forward.fan_out` (the SFU's own fast path: `StreamRewriter` numbering, `SlotSender`
  build + SRTP protect + queue) sends it on the other leg;
- mixing: anything else (a third participant, a codec mismatch, a player, a recording). The legs
  are handed to the inner MCU (`McuConference.add_leg`), which runs its usual tick.

Each receiver's stream stays one RTP stream across switches (RFC 3550 section 5.1 / 8.2: same
SSRC, sequence numbers one apart, timestamps following wall time): the forwarding path sends under
the leg's own SSRC, `MediaLeg.stream_position` hands the mixer's numbering to the forwarder, and
`MediaLeg.continue_stream` hands it back. Going to mixing, the mixer's fresh jitter buffers get
each sender's last two packets (`Party.previous`, `Party.last`), so the first mixed tick already
has audio: the receiver hears at most that much again instead of a gap while the buffer fills. Going to
forwarding, the receiver's audio moves ahead by the mixer's playout delay (nothing is silent).

RTCP is terminated per leg as in both other modes: each leg reports on what it receives and sends
SRs for its own stream (forwarded packets are counted into the leg's `SendStatistics`). A NACK
from a receiver is mapped back to the sender's numbering and passed on to the sender (RFC 4585
6.2.1): the sender's retransmission is relayed like any late packet.
"""
from __future__ import annotations

import secrets
import time

from mixer import _rtp
from mixer._forward import SlotSender, StreamRewriter, fan_out
from mixer.legs.leg import MediaLeg
from mixer.mcu.conference import McuConference
from mixer.media.player import Player
from mixer.rtp.rtcp import RtcpNack
from mixer.settings import EngineSettings

FORWARD = "forward"
MIX = "mix"
RTCP_CHECK_TICKS = 25
# The source id a primed rewriter is first fed with (never a real source: those are >= 0).
_PRIMING_SOURCE = -2


class Party:
    """The relay's state for one leg: its own stream's forwarding sender and recent packets."""

    __slots__ = ("leg", "source_key", "sender", "stream_ms", "previous", "last", "relayed",
                 "handover", "peer", "targets")

    def __init__(self, leg: MediaLeg, number: int) -> None:
        self.leg = leg
        self.source_key = number << 32   # | the sender's SSRC: a new SSRC is a new stream
        self.sender: SlotSender | None = None   # made at the first switch to forwarding
        self.stream_ms: float | None = None     # engine time of the sender's last timestamp
        # the last two packets received, as (packet, arrival_ms): they pre-fill the mixer's
        # jitter buffer at a switch to mixing
        self.previous: tuple | None = None
        self.last: tuple | None = None
        self.peer: Party | None = None          # forwarding: the other leg
        self.targets: list[SlotSender] = []     # forwarding: [the other leg's sender]
        self.relayed = 0                        # packets sent on this leg by the forwarder
        # (next seq, last timestamp, its engine time) of the forwarder's stream, for the mixer's
        # first tick to continue from
        self.handover: tuple[int, int, float] | None = None

    def own_stream_sender(self) -> SlotSender:
        """The forwarding sender for this leg's own stream (made once: a WebRTC leg keeps its
        senders' keys and sending state up to date for their whole life)."""
        if self.sender is None:
            leg = self.leg
            self.sender = leg.slot_sender(StreamRewriter(leg.ssrc, secrets.randbits(16),
                                                         secrets.randbits(32), leg.clock_rate,
                                                         leg.samples_per_frame))
        return self.sender

    def fold_counters(self) -> None:
        """Move what the forwarding sender counted into the leg's own stream statistics, so the
        leg's RTCP sender report covers both paths under its one SSRC (and the sender, holding
        none, adds no second report for that SSRC)."""
        sender = self.sender
        if sender is None or not sender.packets:
            return
        sent = self.leg.sent
        sent.packets += sender.packets
        sent.octets += sender.octets
        sent.last_rtp_timestamp = sender.last_rtp_timestamp
        sent.last_send_s = sender.last_send_s
        self.relayed += sender.packets
        sender.packets = 0
        sender.octets = 0


class RelayConference:
    """Forwards a 1:1 call of one codec; mixes otherwise; switches live (see module docstring)."""

    mode = "relay"
    retransmits = False

    def __init__(self, conference_id: str, settings: EngineSettings) -> None:
        self.id = conference_id
        self.settings = settings
        self.mixer = McuConference(conference_id, settings)
        self.parties: dict[str, Party] = {}
        self.state = MIX   # with no legs there is nothing to forward
        self._media = None
        self.created_at = time.time()
        self._numbers = 0
        self._wall_offset_s = time.time() - time.monotonic()
        self.ticks = 0
        self.packets_relayed = 0
        self.packets_not_relayed = 0   # muted, or the rewriter's late/duplicate drops
        self.nacks_forwarded = 0
        self.switches = {MIX: 0, FORWARD: 0}   # switches *to* each state
        self.busy_ms = 0.0

    # ------------------------------------------------------------------ the engine's interface
    @property
    def voices(self) -> dict[str, Party]:
        return self.parties

    @property
    def legs(self) -> dict[str, MediaLeg]:
        return {leg_id: party.leg for leg_id, party in self.parties.items()}

    @property
    def players(self) -> dict[str, Player]:
        return self.mixer.players

    @property
    def speakers(self) -> list:
        return self.mixer.speakers if self.state == MIX else []

    @property
    def media(self):
        return self._media

    @media.setter
    def media(self, value) -> None:
        """Recordings and forks need the mix: attaching one switches to mixing right away."""
        self._media = value
        if self.state == MIX:
            self.mixer.media = value
        self._settle()

    def add_leg(self, leg: MediaLeg) -> None:
        self._numbers += 1
        party = Party(leg, self._numbers)
        self.parties[leg.id] = party
        if self.state == MIX:
            self.mixer.add_leg(leg)
            leg.on_nack = None
        else:
            self._listen(party)   # (forwarding: no services attached, see wanted_state)
        self._settle()

    def remove_leg(self, leg_id: str) -> MediaLeg:
        party = self.parties.pop(leg_id)
        leg = party.leg
        party.fold_counters()
        if self.state == MIX:
            self.mixer.remove_leg(leg_id)
        leg.on_rtp = leg.on_nack = leg.on_ssrc_change = None
        if party.sender is not None:
            party.sender.enabled = False
        self._settle()
        return leg

    def add_player(self, player: Player) -> None:
        self.mixer.add_player(player)
        self._settle()

    def remove_player(self, player_id: str) -> Player:
        player = self.mixer.remove_player(player_id)
        self._settle()
        return player

    def playout_delay_ms(self, leg_id: str) -> float | None:
        return self.mixer.playout_delay_ms(leg_id) if self.state == MIX else 0.0

    # ------------------------------------------------------------------------------ the choice
    def wanted_state(self) -> str:
        """FORWARD when the two legs can play each other's packets as they are and nothing needs
        the mix; MIX otherwise."""
        if len(self.parties) != 2 or self.mixer.players or self._media is not None:
            return MIX
        a, b = (party.leg for party in self.parties.values())
        if (a.codec, a.clock_rate, a.ptime_ms) != (b.codec, b.clock_rate, b.ptime_ms):
            return MIX
        return FORWARD

    def _settle(self) -> None:
        wanted = self.wanted_state()
        if wanted == self.state:
            return
        if wanted == MIX:
            self._to_mix()
        else:
            self._to_forward()

    def _to_forward(self) -> None:
        """Take the legs from the mixer; each forwarding sender continues its leg's stream."""
        now_ms = time.monotonic() * 1000.0
        self.mixer.media = None   # (None already: forwarding needs no services)
        for leg_id, party in self.parties.items():
            self.mixer.remove_leg(leg_id)
            sender = party.own_stream_sender()
            leg = party.leg
            # where the stream stands: a handover the mixer never took (it did not tick since),
            # or the mixer's own last packet
            position = party.handover or leg.stream_position()
            party.handover = None
            if position is None:
                next_seq, timestamp, at_ms = secrets.randbits(16), secrets.randbits(32), now_ms
            else:
                next_seq, timestamp, at_ms = position
            sender.rewriter = _continuing_rewriter(leg, next_seq, timestamp, at_ms)
            party.stream_ms = at_ms
            party.previous = party.last = None
            self._listen(party)
        first, second = self.parties.values()
        first.peer, second.peer = second, first
        first.targets, second.targets = [second.sender], [first.sender]
        self.state = FORWARD
        self.switches[FORWARD] += 1

    def _to_mix(self) -> None:
        """Hand the legs to the mixer: each leg's stream continues from the forwarder's last
        packet; the mixer's jitter buffers start with each sender's last packets."""
        for party in self.parties.values():
            party.fold_counters()
            sender = party.sender
            if sender is not None and party.stream_ms is not None:
                rewriter = sender.rewriter
                party.handover = ((rewriter.last_seq + 1) & 0xFFFF, rewriter.last_timestamp,
                                  party.stream_ms)
        for party in self.parties.values():
            leg = party.leg
            leg.on_nack = None
            self.mixer.add_leg(leg)    # sets leg.on_rtp to the mixer's
            for recent in (party.previous, party.last):
                if recent is not None:
                    leg.on_rtp(leg, *recent)
            party.previous = party.last = None
            party.peer = None
            party.targets = []
        self.mixer.media = self._media
        self.state = MIX
        self.switches[MIX] += 1

    @staticmethod
    def _take_over(party: Party, now_ms: float) -> None:
        """The mixer's first packet on a leg the forwarder sent on: the next sequence number, and
        a timestamp later by the time since the forwarder's last packet, at least one frame (a
        tick can come sooner than a frame after it: the stream must not overlap itself)."""
        next_seq, timestamp, at_ms = party.handover
        party.handover = None
        leg = party.leg
        step = max(leg.samples_per_frame, round((now_ms - at_ms) * leg.clock_rate / 1000.0))
        leg.continue_stream(next_seq, timestamp + step, now_ms)

    def _listen(self, party: Party) -> None:
        leg = party.leg
        leg.on_rtp = self._on_rtp
        leg.on_nack = self._on_nack
        leg.on_ssrc_change = None   # a new SSRC is a new source key: the rewriter switches

    # --------------------------------------------------------------------------------- packets
    def _on_rtp(self, leg: MediaLeg, packet: _rtp.RtpPacket, arrival_ms: float) -> None:
        """Forwarding: relay the packet to the other leg, payload untouched."""
        party = self.parties.get(leg.id)
        if party is None or self.state != FORWARD:
            return
        party.previous = party.last
        party.last = (packet, arrival_ms)
        if leg.muted:
            # what is not relayed is not loss: after the mute the stream goes on from the last
            # packet sent (next number, timestamp advanced by the time since), as in the SFU
            self.packets_not_relayed += 1
            party.peer.sender.rewriter.release()
            return
        level = -1
        voice = False
        ext_id = leg.audio_level_ext_id
        if ext_id:
            found = packet.audio_level(ext_id)
            if found is not None:
                voice, level = found
        if fan_out(party.targets, party.source_key | packet.ssrc, packet.sequence_number,
                   packet.timestamp, packet.marker, packet.payload, arrival_ms,
                   self._wall_offset_s + arrival_ms / 1000.0, level, voice):
            self.packets_relayed += 1
            party.peer.stream_ms = arrival_ms
        else:
            self.packets_not_relayed += 1

    def _on_nack(self, leg: MediaLeg, nack: RtcpNack) -> None:
        """A receiver asks for packets of its stream: ask the sender for the same packets in its
        own numbering (only while they belong to the sender's current stretch)."""
        receiver = self.parties.get(leg.id)
        if receiver is None or self.state != FORWARD or receiver.sender is None:
            return
        if nack.media_ssrc != leg.ssrc:
            return
        rewriter = receiver.sender.rewriter
        lost = [seq for seq in (rewriter.original_seq(s) for s in nack.lost[:64]) if seq is not None]
        source = receiver.peer
        if lost and source is not None and source.leg.remote_ssrc is not None:
            source.leg.send_nack(source.leg.remote_ssrc, lost)
            self.nacks_forwarded += 1

    # ------------------------------------------------------------------------------------ tick
    def tick(self, now_ms: float) -> None:
        began = time.perf_counter()
        self.ticks += 1
        if self.state == MIX:
            self._settle()   # e.g. a recording stopped: back to forwarding
        if self.state == MIX:
            for party in self.parties.values():
                if party.handover is not None:
                    self._take_over(party, now_ms)
            self.mixer.tick(now_ms)
        elif self.ticks % RTCP_CHECK_TICKS == 0:
            self._wall_offset_s = time.time() - time.monotonic()
            now_s = time.monotonic()
            for party in self.parties.values():
                party.fold_counters()
                party.leg.maybe_send_rtcp(now_s)
        self.busy_ms += (time.perf_counter() - began) * 1000.0

    # ----------------------------------------------------------------------------------- stats
    def leg_stats(self, leg_id: str) -> dict:
        party = self.parties[leg_id]
        party.fold_counters()
        if self.state == MIX:
            result = self.mixer.leg_stats(leg_id)
        else:
            result = party.leg.stats()
        result["relayed"] = party.relayed
        return result

    def counters(self) -> list[tuple[str, tuple, int]]:
        return [*self.mixer.counters(),
                ("relay_packets", (), self.packets_relayed),
                ("relay_packets_not_relayed", (), self.packets_not_relayed),
                ("relay_nacks_forwarded", (), self.nacks_forwarded),
                ("relay_switches", (("to", MIX),), self.switches[MIX]),
                ("relay_switches", (("to", FORWARD),), self.switches[FORWARD])]

    def histograms(self) -> list:
        return self.mixer.histograms()

    def stats(self) -> dict:
        mixed = self.mixer.stats()
        return {
            **mixed,
            "legs": len(self.parties),
            "speakers": [leg.leg.id for leg in self.speakers],
            "state": self.state,
            "switches_to_mix": self.switches[MIX],
            "switches_to_forward": self.switches[FORWARD],
            "packets_relayed": self.packets_relayed,
            "packets_not_relayed": self.packets_not_relayed,
            "nacks_forwarded": self.nacks_forwarded,
            "ticks": self.ticks,
            "tick_busy_ms_mean": round(self.busy_ms / self.ticks, 3) if self.ticks else 0.0,
        }

    def close(self) -> None:
        for party in self.parties.values():
            party.leg.close()
        self.parties.clear()


def _continuing_rewriter(leg: MediaLeg, next_seq: int, timestamp: int, at_ms: float) -> StreamRewriter:
    """A rewriter for `leg`'s own SSRC whose next packet follows sequence number `next_seq - 1`
    sent with `timestamp` at engine time `at_ms`: its timestamp is `timestamp` plus the time
    since (at least a frame). The rewriter's public API has no 'continue from here', so it is
    primed the way it would be by a stream that ended there: one packet of a source that never
    sends again, then released (the priming packet counts as one forwarded in its stats)."""
    rewriter = StreamRewriter(leg.ssrc, (next_seq - 1) & 0xFFFF, timestamp & 0xFFFFFFFF,
                              leg.clock_rate, leg.samples_per_frame)
    rewriter.rewrite(_PRIMING_SOURCE, 0, 0, at_ms)
    rewriter.release()
    return rewriter
