"""Who is forwarded (last-N) and who is the dominant speaker, from audio levels, without flapping.

Input: per source and per 20 ms tick, the loudest RFC 6464 level heard (0 = loudest, 127 = silence;
`None` when no packet came: DTX or a stopped sender counts as silence).

Jitsi Videobridge's dominant speaker identification (after Volfin and Cohen) scores speech activity on
three time scales and lets a challenger replace the dominant speaker only when it wins on all three;
mediasoup's ActiveSpeakerObserver ports the same algorithm. Both judge only the single dominant
speaker, and the last-N set is then ordered by how recently each was dominant, so a second and third
voice talking over each other can be starved. Here:

- every source has a short (about 200 ms) and a long (about 2 s) speech-activity score: exponential
  averages of how far its level is above the noise floor, counted only when it is above the voice
  threshold (a steady hum or comfort noise scores nothing);
- the last-N set is chosen directly: a free place goes at once to anyone speaking; when all places
  are taken, the incumbent quiet the longest gives way. If it has been quiet for `idle_ticks`
  (100 ms) it yields to anyone who has been speaking for `idle_hold_ticks` (40 ms): turn-taking
  switches fast. If it is still talking, a challenger must lead it by a clear margin on the short
  score for `hold_ticks` (200 ms) in a row: a cough or a click in crosstalk switches nobody. (The
  SFU then sends the new speaker's last packets from its cache, so the switch delay does not clip
  the start of what they said.)
- the dominant speaker is the one with the best long score, and it changes only when a challenger's
  long score beats it by a margin *and* the challenger's short score has been ahead for
  `dominant_hold_ticks` (300 ms), with at least `dominant_min_ticks` (1 s) between changes.
- `contended` says whether more sources are talking (short score above the voice floor) than there
  are places: only then does a claimed level decide who is heard, so only then does the SFU spend a
  decode on checking claims (a free place, or one held by someone quiet, deprives nobody).
"""
from __future__ import annotations

from dataclasses import dataclass, field

SILENT_LEVEL = 127
# a short score above this is someone talking: it takes a free place at once
TALKING_SHORT = 0.5


@dataclass(slots=True)
class _Activity:
    short: float = 0.0
    long: float = 0.0
    ahead_ticks: int = 0       # ticks in a row this source has beaten the weakest incumbent
    dominant_ahead: int = 0    # ticks in a row it has beaten the dominant speaker's short score
    silent_ticks: int = 0
    heard: bool = False        # a level came this tick


@dataclass
class SpeakerSelector:
    """Chooses up to `last_n` forwarded sources and one dominant speaker, per 20 ms tick."""

    last_n: int = 3
    voice_level: int = 50            # levels louder (lower) than this count as voice (-50 dBov)
    short_weight: float = 0.1        # ~200 ms time constant at 20 ms ticks
    long_weight: float = 0.01        # ~2 s
    switch_margin: float = 4.0       # how far (in activity units, ~dB) a challenger must lead
    hold_ticks: int = 10             # 200 ms of leading before displacing someone still talking
    idle_ticks: int = 5              # an incumbent quiet this long (100 ms) may be displaced...
    idle_hold_ticks: int = 2         # ...by anyone who has been speaking for 40 ms
    dominant_hold_ticks: int = 15    # 300 ms before a dominant speaker change
    dominant_min_ticks: int = 50     # at most one dominant change per second
    _sources: dict = field(default_factory=dict)
    selected: list = field(default_factory=list)
    dominant: object | None = None
    _since_dominant_change: int = 0
    changes: int = 0
    dominant_changes: int = 0
    contended: bool = False          # more talkers than places (after the last tick)

    def add(self, source) -> None:
        self._sources.setdefault(source, _Activity())

    def remove(self, source) -> None:
        self._sources.pop(source, None)
        if source in self.selected:
            self.selected.remove(source)
            self.changes += 1
        if self.dominant == source:
            self.dominant = None

    def observe(self, source, level: int | None) -> None:
        """The loudest level of this tick's packets from `source` (call before `tick`)."""
        activity = self._sources.get(source)
        if activity is None or level is None:
            return
        loudness = max(0.0, float(self.voice_level - level))  # 0 unless voice, else dB above it
        activity.short += self.short_weight * (loudness - activity.short)
        activity.long += self.long_weight * (loudness - activity.long)
        activity.silent_ticks = 0 if loudness > 0 else activity.silent_ticks + 1
        activity.heard = True

    def tick(self) -> bool:
        """Update the choice after this tick's `observe` calls; True when `selected` changed."""
        for activity in self._sources.values():
            if not activity.heard:  # nothing arrived: silence (DTX, muted, or gone)
                activity.short -= self.short_weight * activity.short
                activity.long -= self.long_weight * activity.long
                activity.silent_ticks += 1
            activity.heard = False
        changed = self._update_selected()
        self._update_dominant()
        talking = 0
        for activity in self._sources.values():
            talking += activity.short > TALKING_SHORT
        self.contended = talking > self.last_n
        return changed

    def _update_selected(self) -> bool:
        changed = False
        ranked = self._ranked()
        # a free place goes at once to anyone speaking, loudest first
        for source in ranked:
            if len(self.selected) >= self.last_n:
                break
            if source not in self.selected and self._sources[source].short > TALKING_SHORT:
                self.selected.append(source)
                changed = True
        if len(self.selected) >= self.last_n:
            # the incumbent who gives way: the one quiet the longest, then the least active
            weakest = max(self.selected, key=lambda s: (self._sources[s].silent_ticks,
                                                         -self._sources[s].short))
            incumbent = self._sources[weakest]
            idle = incumbent.silent_ticks >= self.idle_ticks
            needed = self.idle_hold_ticks if idle else self.hold_ticks
            best = None
            for source in ranked:
                if source in self.selected:
                    continue
                activity = self._sources[source]
                if idle:   # a quiet incumbent yields to anyone speaking right now
                    ahead = activity.silent_ticks == 0 and activity.short > TALKING_SHORT
                else:      # a speaking one only to someone clearly and lastingly more active
                    ahead = activity.short > incumbent.short + self.switch_margin
                activity.ahead_ticks = activity.ahead_ticks + 1 if ahead else 0
                if best is None and activity.ahead_ticks >= needed:
                    best = source
            if best is not None:
                self.selected[self.selected.index(weakest)] = best
                self._sources[best].ahead_ticks = 0
                changed = True
        if changed:
            self.changes += 1
        return changed

    def _update_dominant(self) -> None:
        self._since_dominant_change += 1
        if self.dominant is None or self.dominant not in self._sources:
            ranked = self._ranked()
            if ranked and self._sources[ranked[0]].short > TALKING_SHORT:
                self._set_dominant(ranked[0])
            return
        current = self._sources[self.dominant]
        challenger = None
        for source, activity in self._sources.items():
            if source == self.dominant:
                continue
            if activity.short > current.short + self.switch_margin and activity.long > current.long:
                activity.dominant_ahead += 1
                if activity.dominant_ahead >= self.dominant_hold_ticks and (
                        challenger is None or activity.long > self._sources[challenger].long):
                    challenger = source
            else:
                activity.dominant_ahead = 0
        if challenger is not None and self._since_dominant_change >= self.dominant_min_ticks:
            self._set_dominant(challenger)

    def _set_dominant(self, source) -> None:
        self.dominant = source
        self._since_dominant_change = 0
        self.dominant_changes += 1
        for activity in self._sources.values():
            activity.dominant_ahead = 0

    def _ranked(self) -> list:
        return sorted(self._sources, key=lambda s: self._sources[s].short, reverse=True)

    def scores(self, source) -> tuple[float, float]:
        activity = self._sources[source]
        return activity.short, activity.long
