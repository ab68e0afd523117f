"""The media services attached to one conference, and the hooks its conference calls.

A conference (MCU or SFU) holds one `ConferenceMedia` while any recording or fork is attached
(`conference.media`; None otherwise, so a conference without services pays one attribute test per
packet). The conference calls:

- `on_packet(leg, packet, arrival_ms)` for every RTP packet a leg delivers (not while muted);
- `leg_added(leg)` / `leg_removed(leg)` as legs join and leave;
- each tick, an MCU `on_mix(now_ms, total)` with the total it mixed (players included), an SFU
  `on_forwarded(now_ms, senders)` with the senders it forwards: the mix is then decoded and summed
  here (`Mixdown`), only while a service needs it.

Every service offers the same hooks (`on_mix`, `on_packet`, `leg_added`, `leg_removed`) and
`needs_mix`. A service that raises is detached and logged: it never breaks the conference's tick.
"""
from __future__ import annotations

import logging

import numpy as np

from mixer import _rtp
from mixer.codec import FRAME_MS
from mixer.media.mixdown import Mixdown
from mixer.settings import EngineSettings

log = logging.getLogger("voicemix.engine")


class ConferenceMedia:
    """Recordings and forks of one conference (`players` is the conference's own dict)."""

    def __init__(self, conference, settings: EngineSettings) -> None:
        self.conference = conference
        self.settings = settings
        self.services: dict[str, object] = {}   # id -> Recording or Fork
        self.now_ms = 0.0                        # the last tick's time
        self._mixdown: Mixdown | None = None
        self.failures = 0

    # ---------------------------------------------------------------------------- services
    def attach(self, service_id: str, service) -> None:
        self.services[service_id] = service
        if hasattr(service, "playout_delay"):
            service.playout_delay = self.playout_delay_ms
        if getattr(service, "needs_mix", False) and self.conference.mode == "sfu" \
                and self._mixdown is None:
            self._mixdown = Mixdown(self.settings)
            for leg in self.conference.legs.values():
                self._mixdown.leg_added(leg)
        for leg in self.conference.legs.values():
            self._call(service_id, "leg_added", leg, self.now_ms)

    def detach(self, service_id: str):
        service = self.services.pop(service_id, None)
        if self._mixdown is not None and not any(getattr(s, "needs_mix", False)
                                                 for s in self.services.values()):
            self._mixdown = None
        return service

    @property
    def empty(self) -> bool:
        return not self.services

    def _call(self, service_id: str, hook: str, *args) -> None:
        service = self.services.get(service_id)
        if service is None:
            return
        try:
            getattr(service, hook)(*args)
        except Exception:  # a bug in one service must not stop the conference's tick
            self.failures += 1
            log.exception("media service %s failed in %s; detached", service_id, hook)
            self.services.pop(service_id, None)
            fail = getattr(service, "fail", None)
            if fail is not None:
                fail("internal error")

    # ------------------------------------------------------------------------------- hooks
    def leg_added(self, leg) -> None:
        if self._mixdown is not None:
            self._mixdown.leg_added(leg)
        for service_id in list(self.services):
            self._call(service_id, "leg_added", leg, self.now_ms)

    def leg_removed(self, leg) -> None:
        if self._mixdown is not None:
            self._mixdown.leg_removed(leg)
        for service_id in list(self.services):
            self._call(service_id, "leg_removed", leg, self.now_ms)

    def on_packet(self, leg, packet: _rtp.RtpPacket, arrival_ms: float) -> None:
        if self._mixdown is not None:
            self._mixdown.on_packet(leg, packet, arrival_ms)
        for service_id in list(self.services):
            self._call(service_id, "on_packet", leg, packet, arrival_ms)

    def on_mix(self, now_ms: float, total: np.ndarray) -> None:
        """MCU: the tick's total, players included."""
        self.now_ms = now_ms
        players = getattr(self.conference, "players", None)
        for service_id in list(self.services):
            self._call(service_id, "on_mix", now_ms, total, players)

    def on_forwarded(self, now_ms: float, senders: list) -> None:
        """SFU: the tick's forwarded senders; their mix is made here when a service needs it."""
        self.now_ms = now_ms
        total = self._mixdown.mix(now_ms, senders) if self._mixdown is not None else None
        players = getattr(self.conference, "players", None)
        for service_id in list(self.services):
            self._call(service_id, "on_mix", now_ms, total, players)

    def playout_delay_ms(self, leg) -> float | None:
        """How long this conference holds `leg`'s audio before it is in the mix, now: an MCU's
        jitter buffer for the leg (the conference says), an SFU's mixdown input; plus half a
        tick, the mean wait for the tick that takes the frame. None when unknown."""
        delay = None
        ask = getattr(self.conference, "playout_delay_ms", None)
        if ask is not None:
            delay = ask(leg.id)
        elif self._mixdown is not None:
            source = self._mixdown.inputs.get(leg.id)
            if source is not None:
                delay = source.jitter_buffer.target_delay_ms
        return None if delay is None else delay + FRAME_MS / 2

    def stats(self) -> dict:
        return {"services": len(self.services), "failures": self.failures,
                "mixdown_decodes": self._mixdown.decodes if self._mixdown is not None else 0}
