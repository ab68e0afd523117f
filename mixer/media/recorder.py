"""Recordings made in the engine: the conference's mix and, on request, one track per participant.

Everything is placed on one clock, the recording's: sample 0 is the first tick after the recording
started, and a sample's place is the time it belongs to, not a count of what came before.

- **The mix** (`MixTrack`) is what listeners heard, one 20 ms frame per tick, placed by the tick's
  time (`now_ms`, the tick's deadline). After a stall (the process paused, ticks skipped) the next
  tick's time has jumped: the time in between is written as silence, so a recording lasts as
  long as the call did, within a frame.
- **Participant tracks** (`ParticipantTrack`) come from the packets a leg received, placed by
  their RTP timestamps from an anchor set by arrival: a short reorder window puts late packets
  back in order, a lost packet leaves a gap that decoders conceal, a new SSRC (or a timestamp
  jump) starts a new anchor, and a sender whose clock drifts from ours is re-anchored a frame at a
  time. Tracks are placed `TRACK_DELAY` later than arrival: about the jitter buffer's wait before a
  frame reaches the mix, so a track lines up with the mix (within a frame). Opus packets are muxed
  into Ogg as they came, without re-encoding (RFC 7845); in WAV, and for G.711 senders in Ogg,
  they are decoded (G.711 then encoded to Opus).
- **Player tracks** (`PlayerTrack`): a player's frames, placed by tick like the mix.

A write that fails (disk full, directory gone) ends the recording as "failed"; it never raises
into the conference's tick. Files are closed cleanly when the recording stops, the leg leaves, or
the conference ends; a process killed mid-recording leaves files that `repair_recording` makes
whole at the next start.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mixer import _rtp
from mixer._opus import OpusEncoder, OpusError, packet_duration
from mixer.codec import CODECS, FRAME_MS, FRAME_SAMPLES, MIX_RATE, FrameDecoder
from mixer.media.ogg import OggError, OggOpusWriter, read_packets, read_pages
from mixer.media.wav import WavError, WavWriter, repair_wav

log = logging.getLogger("voicemix.engine")

FORMATS = ("ogg", "wav")
TRACKS = ("mix", "mix+participants")
RECORDING, STOPPED, FAILED, INTERRUPTED = "recording", "stopped", "failed", "interrupted"
METADATA_FILE = "recording.json"
SAMPLES_PER_MS = MIX_RATE // 1000
FILE_BUFFER = 64 * 1024
REORDER_MS = 100.0            # a packet waits this long for an earlier one that is still on its way
REORDER_PACKETS = 64          # and no more than this many wait (a flood cannot grow the buffer)
MAX_SKEW_MS = 1000.0          # a packet this far from where its timestamp puts it: the sender restarted
DRIFT_WINDOW_PACKETS = 25     # the earliest arrival over this many packets (0.5 s) is the baseline
DRIFT_LIMIT_SAMPLES = 3 * FRAME_SAMPLES // 2   # re-anchor when the baseline is this far off
WAV_CONCEAL_FRAMES = 3        # a WAV track conceals gaps up to 60 ms; longer ones are silence
OPUS_GAP_GRANULE = 120        # Ogg gaps are written in 2.5 ms steps (RFC 7845 4.1)
PREROLL_SAMPLES = 3840        # 80 ms: the decoder pre-roll RFC 7845 4.3 asks for mid-stream starts


class RecordingError(ValueError):
    """A recording request that cannot be met: `code` is the control API's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# ----------------------------------------------------------------------------------- PCM sinks
class OpusOggSink:
    """48 kHz mono PCM in, Ogg Opus out: 20 ms frames encoded by one libopus encoder.

    `samples` counts the PCM written. The encoder delays its output by its lookahead (the
    pre-skip, RFC 7845 4.2), so `close()` encodes what is still inside it and sets the last
    granule position to exactly the samples written plus the pre-skip (end trimming, 4.4): a
    decoder gives back as many samples as went in."""

    def __init__(self, out: BinaryIO, bitrate: int, comments: tuple[str, ...] = ()) -> None:
        self.encoder = OpusEncoder(MIX_RATE, 1, "voip", FRAME_MS, bitrate, 5, False, 0, False)
        self.ogg = OggOpusWriter(out, pre_skip=self.encoder.lookahead, comments=comments)
        self._partial = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self._count = 0
        self.samples = 0
        self.encodes = 0

    def write(self, pcm: np.ndarray) -> None:
        self.samples += len(pcm)
        offset = 0
        while offset < len(pcm):
            take = min(FRAME_SAMPLES - self._count, len(pcm) - offset)
            self._partial[self._count:self._count + take] = pcm[offset:offset + take]
            self._count += take
            offset += take
            if self._count == FRAME_SAMPLES:
                self._encode()

    def _encode(self) -> None:
        packet = self.encoder.encode(self._partial)
        self.encodes += 1
        self.ogg.write(packet, FRAME_SAMPLES)
        self._count = 0

    def write_silence(self, count: int) -> None:
        """Short silences are encoded (the encoder state flows on); long ones (a stall, an empty
        stretch) are written as concealment packets, which cost nothing to make."""
        if count <= 0:
            return
        if self._count:
            take = min(FRAME_SAMPLES - self._count, count)
            self.write(np.zeros(take, dtype=np.int16))
            count -= take
        if count >= 5 * FRAME_SAMPLES:
            whole = count - count % OPUS_GAP_GRANULE
            self.ogg.write_gap(whole)
            self.samples += whole
            count -= whole
        if count:
            self.write(np.zeros(count, dtype=np.int16))

    def close(self) -> None:
        end = self.samples + self.ogg.pre_skip
        while self.ogg.granule < end:  # what the encoder still holds comes out with zeros
            self._partial[self._count:] = 0
            self._encode()
        self.ogg.close(end_granule=end)


def _open(path: Path) -> BinaryIO:
    return open(path, "wb", buffering=FILE_BUFFER)


def _pcm_sink(path: Path, fmt: str, bitrate: int, comments: tuple[str, ...]):
    handle = _open(path)
    if fmt == "wav":
        return handle, WavWriter(handle, MIX_RATE, 1)
    return handle, OpusOggSink(handle, bitrate, comments)


# ------------------------------------------------------------------------------------- tracks
class MixTrack:
    """The conference's mix (or a player's frames), one frame per tick, placed by the tick's time."""

    def __init__(self, path: Path, fmt: str, bitrate: int, origin_ms: float,
                 comments: tuple[str, ...] = ()) -> None:
        self.path = path
        self.origin_ms = origin_ms  # the recording's sample 0 on the engine clock
        self.handle, self.sink = _pcm_sink(path, fmt, bitrate, comments)
        self.start_position: int | None = None   # on the recording's clock
        self.frames = 0
        self.silence_samples = 0

    def write(self, now_ms: float, frame: np.ndarray | None) -> None:
        position = round((now_ms - self.origin_ms) * SAMPLES_PER_MS)
        if self.start_position is None:
            self.start_position = max(position, 0)
        written = self.start_position + self.sink.samples
        if position > written:  # ticks were skipped (a stall): their time is silence
            self.sink.write_silence(position - written)
            self.silence_samples += position - written
        if frame is None:
            self.sink.write_silence(FRAME_SAMPLES)
        else:
            self.sink.write(frame)
        self.frames += 1

    def finish(self, end_ms: float) -> None:
        """Silence up to `end_ms` (a stall just before the end), then close the file."""
        if self.start_position is not None:
            end = round((end_ms - self.origin_ms) * SAMPLES_PER_MS)
            written = self.start_position + self.sink.samples
            if end > written:
                self.sink.write_silence(end - written)
        else:
            self.start_position = max(round((end_ms - self.origin_ms) * SAMPLES_PER_MS), 0)
        self.sink.close()
        self.handle.close()

    @property
    def duration_s(self) -> float:
        return self.sink.samples / MIX_RATE


class _Held:
    __slots__ = ("ext_seq", "ssrc", "timestamp", "payload", "arrival_position", "arrival_ms")

    def __init__(self, ext_seq, ssrc, timestamp, payload, arrival_position, arrival_ms) -> None:
        self.ext_seq = ext_seq
        self.ssrc = ssrc
        self.timestamp = timestamp
        self.payload = payload
        self.arrival_position = arrival_position
        self.arrival_ms = arrival_ms


class ParticipantTrack:
    """One leg's received audio, placed by RTP timestamps (see the module's docstring)."""

    def __init__(self, leg_id: str, label: str, codec: str, path: Path, fmt: str, bitrate: int,
                 origin_ms: float, start_ms: float, delay_ms: float) -> None:
        self.leg_id = leg_id
        self.label = label
        self.codec = codec
        self.path = path
        self.origin_ms = origin_ms
        self.delay_ms = delay_ms
        self.ratio = MIX_RATE // CODECS[codec].clock_rate
        self.start_position = max(round((start_ms - origin_ms) * SAMPLES_PER_MS), 0)
        self.handle = _open(path)
        self.passthrough = fmt == "ogg" and codec == "opus"
        comments = (f"TITLE={label}",)
        if self.passthrough:
            # packets muxed as they came. The stream starts in the middle of the sender's
            # encoder output, so a decoder needs a pre-roll to converge (RFC 7845 4.3 and 4.2,
            # "Pre-skip"): 80 ms of concealment packets lead in, and the pre-skip discards them,
            # so sample 0 of the decoded track is still the track's start
            self.ogg = OggOpusWriter(self.handle, pre_skip=PREROLL_SAMPLES, comments=comments)
            self.ogg.write_gap(PREROLL_SAMPLES)
            self.sink = None
        else:
            self.sink = WavWriter(self.handle, MIX_RATE, 1) if fmt == "wav" else \
                OpusOggSink(self.handle, bitrate, comments)
            self.decoder = FrameDecoder(codec)
        self._held: dict[int, _Held] = {}
        self._highest = 0
        self._ssrc: int | None = None
        self._released_ext: int | None = None
        self._anchor_ts = 0
        self._anchor_position: int | None = None
        self._skews: list[int] = []
        self.packets = 0
        self.late = 0
        self.overlaps = 0
        self.malformed = 0
        self.gaps = 0
        self.ssrc_changes = 0
        self.restarts = 0
        self.drift_corrections = 0
        self.closed = False

    @property
    def written(self) -> int:
        """Samples written so far, on the recording's clock (the track's end)."""
        samples = self.ogg.samples if self.passthrough else self.sink.samples
        return self.start_position + samples

    # ------------------------------------------------------------------------------- arrival
    def on_packet(self, packet: _rtp.RtpPacket, arrival_ms: float,
                  delay_ms: float | None = None) -> None:
        """One packet as it arrived; `delay_ms`, when known, is how long the conference holds
        this participant's audio before it reaches the mix now (its jitter buffer's delay and
        the wait for the tick), so the track follows the mix as that delay changes."""
        if self.closed:
            return
        seq = packet.sequence_number
        if packet.ssrc != self._ssrc:
            if self._ssrc is not None:
                self.ssrc_changes += 1
                self.release(float("inf"))  # what the old SSRC had waiting goes first
                self._anchor_position = None  # a new stream: its own timestamps, a new anchor
                if not self.passthrough:
                    self.decoder = FrameDecoder(self.codec)  # and a decoder from scratch
            self._ssrc = packet.ssrc
            self._highest = (1 << 16) + seq      # extended sequence numbers (RFC 3550 A.1)
            self._released_ext = None
        ext = self._highest + _rtp.seq_diff(seq, self._highest & 0xFFFF)
        if self._released_ext is not None and ext <= self._released_ext:
            self.late += 1  # its place is already written
            return
        if ext in self._held:
            return  # a duplicate
        if len(self._held) >= REORDER_PACKETS:
            self.release(float("inf"))
        self._highest = max(self._highest, ext)
        delay = self.delay_ms if delay_ms is None else delay_ms
        position = round((arrival_ms + delay - self.origin_ms) * SAMPLES_PER_MS)
        self._held[ext] = _Held(ext, packet.ssrc, packet.timestamp, packet.payload, position,
                                arrival_ms)

    def release(self, now_ms: float) -> None:
        """Write, in sequence order, what is next in sequence or has waited REORDER_MS for an
        earlier packet (everything, with `now_ms` = inf)."""
        if not self._held:
            return
        cutoff = now_ms - REORDER_MS
        for ext in sorted(self._held):
            held = self._held[ext]
            in_order = self._released_ext is not None and ext == self._released_ext + 1
            if not in_order and held.arrival_ms > cutoff:
                break  # an earlier packet may still come for the place before this one
            del self._held[ext]
            self._released_ext = ext
            self._place(held)

    # ------------------------------------------------------------------------------ placement
    def _place(self, held: _Held) -> None:
        if self.passthrough:
            try:
                samples = packet_duration(held.payload)
            except OpusError:
                self.malformed += 1
                return
        else:
            samples = None
        if self._anchor_position is None:
            self._new_anchor(held, self._earliest(held))
        offset = _rtp.timestamp_diff(held.timestamp, self._anchor_ts) * self.ratio
        position = self._anchor_position + offset
        skew = held.arrival_position - position
        if abs(skew) > MAX_SKEW_MS * SAMPLES_PER_MS:  # timestamps jumped: a restarted sender
            self.restarts += 1
            self._new_anchor(held)
            position, skew = self._anchor_position, 0
        self._follow_drift(skew)
        written = self.written
        if position - written >= (OPUS_GAP_GRANULE if self.passthrough else 1):
            self._gap(position - written)
        elif position < written:
            overlap = written - position
            if overlap >= FRAME_SAMPLES // 2:  # most of it is already written: drop, counted
                self.overlaps += 1
                return
        if self.passthrough:
            self.ogg.write(held.payload, samples)
        else:
            self.decoder.decode(held.payload)
            self.sink.write(self.decoder.take_samples())
        self.packets += 1

    def _earliest(self, held: _Held) -> int:
        """Where `held` belongs by the least delayed of the packets of its stream waiting now
        (those that arrived while it waited for the reorder window): a first packet that came
        late does not push the whole stream late."""
        best = held.arrival_position
        for other in self._held.values():
            if other.ssrc == held.ssrc:
                offset = _rtp.timestamp_diff(other.timestamp, held.timestamp) * self.ratio
                if abs(offset) < MAX_SKEW_MS * SAMPLES_PER_MS:
                    best = min(best, other.arrival_position - offset)
        return best

    def _new_anchor(self, held: _Held, arrival_position: int | None = None) -> None:
        self._anchor_ts = held.timestamp
        written = self.written
        # in Ogg only whole 2.5 ms steps of time can be left empty: the anchor sits on one
        if arrival_position is None:
            arrival_position = held.arrival_position
        ahead = max(arrival_position - written, 0)
        self._anchor_position = written + ahead - (ahead % OPUS_GAP_GRANULE if self.passthrough else 0)
        self._skews.clear()

    def _follow_drift(self, skew: int) -> None:
        """The earliest arrival over a window is the stream's baseline; when it has moved more
        than DRIFT_LIMIT from where the anchor puts packets (the mix's delay for this talker
        changed: its jitter buffer grew or shrank; or the sender's clock runs at another rate
        than ours; or the anchor was set by a late packet), move the anchor by whole frames to
        it: a gap in the track where the mix rebuffered, a frame dropped where it caught up."""
        self._skews.append(skew)
        if len(self._skews) < DRIFT_WINDOW_PACKETS:
            return
        baseline = min(self._skews)
        self._skews.clear()
        if abs(baseline) > DRIFT_LIMIT_SAMPLES:
            frames = max(1, round(abs(baseline) / FRAME_SAMPLES))
            self._anchor_position += frames * FRAME_SAMPLES * (1 if baseline > 0 else -1)
            self.drift_corrections += 1

    def _gap(self, samples: int) -> None:
        self.gaps += 1
        if self.passthrough:
            self.ogg.write_gap(samples)  # rounds down to 2.5 ms: the packet lands that much early
            return
        frames = samples // FRAME_SAMPLES
        conceal = min(frames, WAV_CONCEAL_FRAMES) if self.packets else 0
        for _ in range(conceal):
            self.decoder.conceal()
        if conceal:
            self.sink.write(self.decoder.take_samples())
        self.sink.write_silence(samples - conceal * FRAME_SAMPLES)

    def finish(self, end_ms: float) -> None:
        """Write what waits, then silence up to `end_ms`, and close the file."""
        if self.closed:
            return
        self.release(float("inf"))
        end = round((end_ms + self.delay_ms - self.origin_ms) * SAMPLES_PER_MS)
        if end > self.written:
            if self.passthrough:
                self.ogg.write_gap(end - self.written)
            else:
                self.sink.write_silence(end - self.written)
        if self.passthrough:
            self.ogg.close()
        else:
            self.sink.close()
        self.handle.close()
        self.closed = True

    def metadata(self) -> dict:
        return {
            "id": self.leg_id, "kind": "participant", "label": self.label, "codec": self.codec,
            "file": self.path.name,
            "offset_s": round(self.start_position / MIX_RATE, 3),
            "duration_s": round((self.written - self.start_position) / MIX_RATE, 3),
            "packets": self.packets, "late": self.late, "gaps": self.gaps,
            "overlaps": self.overlaps, "malformed": self.malformed,
            "ssrc_changes": self.ssrc_changes, "restarts": self.restarts,
            "drift_corrections": self.drift_corrections,
            "transcoded": not self.passthrough and self.path.suffix == ".ogg",
        }


class PlayerTrack(MixTrack):
    """A player's own track: its frames, placed by tick like the mix."""

    def __init__(self, player_id: str, label: str, path: Path, fmt: str, bitrate: int,
                 origin_ms: float) -> None:
        super().__init__(path, fmt, bitrate, origin_ms, (f"TITLE={label}",))
        self.player_id = player_id
        self.label = label
        self.closed = False

    def finish(self, end_ms: float) -> None:
        if not self.closed:
            super().finish(end_ms)
            self.closed = True

    def metadata(self) -> dict:
        start = self.start_position or 0
        return {"id": self.player_id, "kind": "player", "label": self.label, "codec": "pcm",
                "file": self.path.name, "offset_s": round(start / MIX_RATE, 3),
                "duration_s": round(self.duration_s, 3), "frames": self.frames}


# --------------------------------------------------------------------------------- recording
class Recording:
    """One recording of a conference, in `directory` (`mix.<format>`, `<participant>.<format>`,
    and `recording.json`, the metadata). Hooks (`ConferenceMedia` calls them): `on_mix` each
    tick, `on_packet` for each packet a leg receives, `leg_added`/`leg_removed`; `stop()` ends
    it."""

    needs_mix = True

    def __init__(self, recording_id: str, conference_id: str, directory: Path, fmt: str,
                 tracks: str, now_ms: float, *, bitrate: int = 32000,
                 track_delay_ms: float = 30.0) -> None:
        if fmt not in FORMATS:
            raise RecordingError("bad_format", f"format is one of {', '.join(FORMATS)}")
        if tracks not in TRACKS:
            raise RecordingError("bad_tracks", f"tracks is one of {', '.join(TRACKS)}")
        self.id = recording_id
        self.conference_id = conference_id
        self.directory = directory
        self.format = fmt
        self.tracks_mode = tracks
        self.bitrate = bitrate
        self.track_delay_ms = track_delay_ms
        self.state = RECORDING
        self.error: str | None = None
        self.started_at = time.time()
        self.started_ms = now_ms
        self.origin_ms: float | None = None  # the first tick after the start: sample 0
        self.stopped_at: float | None = None
        self._pending_legs: list = []
        self.tracks: dict[str, ParticipantTrack] = {}
        self.player_tracks: dict[str, PlayerTrack] = {}
        try:
            # call audio: only the engine's user reads it (new directories 0700; an existing,
            # configured recordings directory keeps the mode its operator gave it)
            directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.mkdir(mode=0o700, exist_ok=False)
        except FileExistsError:
            raise RecordingError("recording_exists", f"recording {recording_id} exists") from None
        except OSError as exc:
            raise RecordingError("storage_error", f"cannot create {directory}: {exc.strerror}") from None
        self.mix: MixTrack | None = None
        # how long the conference holds a leg's audio before the mix, now (set by the hub)
        self.playout_delay = lambda leg: None
        self._write_metadata()

    @property
    def with_tracks(self) -> bool:
        return self.tracks_mode == "mix+participants"

    @property
    def active(self) -> bool:
        return self.state == RECORDING

    def _file(self, name: str) -> Path:
        return self.directory / f"{name}.{self.format}"

    # ------------------------------------------------------------------------------- hooks
    def on_mix(self, now_ms: float, total: np.ndarray, players=None) -> None:
        if not self.active:
            return
        try:
            if self.origin_ms is None:
                self._begin(now_ms)
            self.mix.write(now_ms, total)
            if self.with_tracks and players:
                self._write_players(now_ms, players)
            for track in self.tracks.values():
                track.release(now_ms)
        except OSError as exc:
            self.fail(str(exc))

    def _begin(self, now_ms: float) -> None:
        self.origin_ms = now_ms
        self.mix = MixTrack(self._file("mix"), self.format, self.bitrate, now_ms,
                            (f"TITLE=conference {self.conference_id}",))
        for leg in self._pending_legs:
            self._add_track(leg, now_ms)
        self._pending_legs.clear()

    def _write_players(self, now_ms: float, players) -> None:
        for player in players.values():
            track = self.player_tracks.get(player.id)
            if track is None:
                if player.state != "playing":
                    continue
                track = self.player_tracks[player.id] = PlayerTrack(
                    player.id, player.label, self._file(f"player-{player.id}"), self.format,
                    self.bitrate, self.origin_ms)
            if track.closed:
                continue
            if player.state != "playing":
                track.finish(now_ms)
                continue
            track.write(now_ms, player.last_frame)

    def on_packet(self, leg, packet: _rtp.RtpPacket, arrival_ms: float) -> None:
        if not self.active or not self.with_tracks:
            return
        track = self.tracks.get(leg.id)
        if track is not None:
            track.on_packet(packet, arrival_ms, self.playout_delay(leg))

    def leg_added(self, leg, now_ms: float) -> None:
        if not self.active or not self.with_tracks:
            return
        if self.origin_ms is None:
            self._pending_legs.append(leg)
            return
        try:
            self._add_track(leg, now_ms)
        except OSError as exc:
            self.fail(str(exc))

    def _add_track(self, leg, now_ms: float) -> None:
        if leg.id in self.tracks:
            return
        self.tracks[leg.id] = ParticipantTrack(
            leg.id, leg.label, leg.codec, self._file(leg.id), self.format, self.bitrate,
            self.origin_ms, max(now_ms, self.origin_ms), self.track_delay_ms)

    def leg_removed(self, leg, now_ms: float) -> None:
        if leg in self._pending_legs:
            self._pending_legs.remove(leg)
        track = self.tracks.get(leg.id)
        if track is not None and self.active:
            try:
                track.finish(now_ms)
            except OSError as exc:
                self.fail(str(exc))

    # --------------------------------------------------------------------------------- end
    def stop(self, now_ms: float) -> dict:
        """Finish every file (what waits in reorder windows, silence up to now) and write the
        metadata; returns it."""
        if self.active:
            try:
                if self.origin_ms is None:
                    self._begin(now_ms)
                self.mix.finish(now_ms)
                for track in self.tracks.values():
                    track.finish(now_ms)
                for track in self.player_tracks.values():
                    track.finish(now_ms)
                self.state = STOPPED
            except OSError as exc:
                self.fail(str(exc))
            self.stopped_at = time.time()
            self._write_metadata()
            log.info("recording %s of %s stopped: %.2f s, %d tracks", self.id, self.conference_id,
                     self.mix.duration_s if self.mix else 0.0, len(self.tracks))
        return self.metadata()

    def fail(self, reason: str) -> None:
        """A write failed (disk full, directory removed): the recording ends here, files closed
        as far as they can be; the conference goes on."""
        if not self.active:
            return
        log.error("recording %s of %s failed: %s", self.id, self.conference_id, reason)
        self.state = FAILED
        self.error = reason
        self.stopped_at = time.time()
        for closer in [getattr(self.mix, "handle", None),
                       *(t.handle for t in self.tracks.values()),
                       *(t.handle for t in self.player_tracks.values())]:
            try:
                if closer is not None:
                    closer.close()
            except OSError:
                pass
        try:
            self._write_metadata()
        except OSError:
            pass

    def metadata(self) -> dict:
        mix_duration = self.mix.duration_s if self.mix is not None else 0.0
        return {
            "id": self.id,
            "conference": self.conference_id,
            "state": self.state,
            "format": self.format,
            "tracks_mode": self.tracks_mode,
            "directory": str(self.directory),
            "path": str(self._file("mix")),
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "duration_s": round(mix_duration, 3),
            "tracks": [t.metadata() for t in self.tracks.values()]
                      + [t.metadata() for t in self.player_tracks.values()],
            "error": self.error,
        }

    def stats(self) -> dict:
        return {"id": self.id, "state": self.state, "format": self.format,
                "tracks_mode": self.tracks_mode,
                "duration_s": round(self.mix.duration_s, 3) if self.mix else 0.0,
                "tracks": len(self.tracks) + len(self.player_tracks)}

    def _write_metadata(self) -> None:
        write_metadata(self.directory, self.metadata())


def write_metadata(directory: Path, metadata: dict) -> None:
    temporary = directory / (METADATA_FILE + ".tmp")
    temporary.write_text(json.dumps(metadata, indent=1))
    os.replace(temporary, directory / METADATA_FILE)


def read_metadata(directory: Path) -> dict:
    return json.loads((directory / METADATA_FILE).read_text())


# ----------------------------------------------------------------------------------- repair
def ogg_duration(path: Path) -> float:
    """Seconds of audio in an Ogg Opus file up to its last whole page (pre-skip excluded)."""
    with open(path, "rb") as handle:
        granule = 0
        pre_skip = 0
        first = True
        for packet, page_granule, _ in read_packets(read_pages(handle)):
            if first:
                pre_skip = int.from_bytes(packet[10:12], "little") if len(packet) >= 12 else 0
                first = False
            if page_granule > 0:
                granule = page_granule
        return max(granule - pre_skip, 0) / MIX_RATE


def repair_ogg(path: Path) -> float:
    """Cut a killed writer's Ogg file after its last whole page (a reader would stop there
    anyway); returns its duration. The end-of-stream flag stays missing: readers treat the end
    of the file as the end of the stream."""
    with open(path, "rb") as handle:
        end = 0
        for page in read_pages(handle):
            end += 27 + len(page.lacing) + len(page.data)
    with open(path, "r+b") as handle:
        handle.truncate(end)
    return ogg_duration(path)


def repair_recording(directory: Path) -> dict | None:
    """A recording left "recording" by a process that died: its files made whole, its metadata
    rewritten as "interrupted" with the durations on disk. None if it needs nothing."""
    try:
        metadata = read_metadata(directory)
    except (OSError, ValueError):
        return None
    if metadata.get("state") != RECORDING:
        return None
    fixed = []
    for path in sorted(directory.glob("*.wav")) + sorted(directory.glob("*.ogg")):
        try:
            seconds = repair_wav(path) if path.suffix == ".wav" else repair_ogg(path)
        except (OSError, WavError, OggError) as exc:
            log.warning("recording %s: %s could not be repaired (%s)", metadata.get("id"), path.name, exc)
            continue
        fixed.append((path, seconds))
    durations = {path.name: round(seconds, 3) for path, seconds in fixed}
    metadata["state"] = INTERRUPTED
    metadata["duration_s"] = durations.get(Path(metadata.get("path", "")).name, 0.0)
    metadata["tracks"] = [{"id": path.stem, "kind": "participant", "file": path.name,
                           "duration_s": seconds, "offset_s": None}
                          for path, seconds in fixed if not path.stem == "mix"]
    metadata["error"] = "the engine stopped without finishing this recording"
    write_metadata(directory, metadata)
    return metadata
