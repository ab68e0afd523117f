"""A loopback UDP impairment proxy: the bad network between a client and the engine.

`ImpairedLink` stands between one client socket and one engine leg. The client's offer names the
link's engine-facing address, so the engine's media goes through the link too, and the client sends
to the link's client-facing address. Each direction (`up`: client -> engine, `down`: engine ->
client) is an `ImpairedPath` with its own `Impairment`: random or bursty (Gilbert-Elliott) loss,
duplication, reordering and delay jitter from a chosen distribution, all drawn from a seeded
generator so that a run can be repeated exactly (the decisions, not the kernel's timing).

`mixer.sim.participant.Impairment` only touches what a simulated client sends; this proxy also
impairs what the engine sends, and works with any client, including ones we did not write.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mixer.sdp import parse
from mixer.sim.call import WARMUP_S, CallConfig, CallResult

if TYPE_CHECKING:
    from mixer.engine.engine import Engine
    from mixer.sim.participant import SimulatedParticipant

log = logging.getLogger("voicemix.impair")

JITTER_DISTRIBUTIONS = ("uniform", "normal", "exponential", "pareto")


@dataclass
class GilbertElliott:
    """Two-state burst loss (Gilbert 1960, Elliott 1963): in the good state packets are lost with
    `loss_good`, in the bad state with `loss_bad`; each packet moves good -> bad with `p` and
    bad -> good with `r`. Mean burst length is 1/r packets when `loss_bad` is 1."""

    p: float
    r: float
    loss_good: float = 0.0
    loss_bad: float = 1.0

    @classmethod
    def for_loss(cls, mean_loss: float, mean_burst: float) -> GilbertElliott:
        """The simple Gilbert model with this long-run loss rate and mean burst length (packets)."""
        if not 0.0 <= mean_loss < 1.0 or mean_burst < 1.0:
            raise ValueError("need 0 <= mean_loss < 1 and mean_burst >= 1")
        r = 1.0 / mean_burst
        return cls(p=mean_loss * r / (1.0 - mean_loss), r=r)

    @property
    def mean_loss(self) -> float:
        if self.p + self.r == 0:
            return self.loss_good
        bad = self.p / (self.p + self.r)
        return bad * self.loss_bad + (1 - bad) * self.loss_good


@dataclass
class Impairment:
    """What one direction of the link does to each datagram."""

    loss: float = 0.0                      # independent loss probability (0..1)
    burst: GilbertElliott | None = None    # bursty loss instead (or on top) of `loss`
    duplicate: float = 0.0                 # probability a datagram is sent twice
    reorder: float = 0.0                   # probability a datagram is held back `reorder_ms`
    reorder_ms: float = 45.0
    delay_ms: float = 0.0                  # fixed one-way delay
    jitter_ms: float = 0.0                 # scale of the random extra delay
    jitter: str = "uniform"                # distribution of that extra delay (JITTER_DISTRIBUTIONS)

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability (0..1)")
        if self.jitter not in JITTER_DISTRIBUTIONS:
            raise ValueError(f"jitter distribution must be one of {JITTER_DISTRIBUTIONS}")
        if self.delay_ms < 0 or self.jitter_ms < 0 or self.reorder_ms < 0:
            raise ValueError("delays are >= 0")


@dataclass
class PathStats:
    received: int = 0
    forwarded: int = 0     # datagrams sent on (duplicates included)
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0     # held back on purpose
    delays_ms: deque = field(default_factory=lambda: deque(maxlen=10_000), repr=False)  # the latest
    loss_runs: list[int] = field(default_factory=list, repr=False)  # lengths of consecutive losses

    def as_dict(self) -> dict:
        runs = self.loss_runs
        return {"received": self.received, "forwarded": self.forwarded, "lost": self.lost,
                "duplicated": self.duplicated, "reordered": self.reordered,
                "loss_percent": round(100.0 * self.lost / self.received, 2) if self.received else 0.0,
                "mean_loss_burst": round(sum(runs) / len(runs), 2) if runs else 0.0}


class ImpairedPath:
    """One direction: decides each datagram's fate with a seeded generator, then sends it late."""

    def __init__(self, impairment: Impairment, seed: int,
                 send: Callable[[bytes], None]) -> None:
        self.impairment = impairment
        self.rng = random.Random(seed)
        self._send = send
        self._bad = False   # Gilbert-Elliott state
        self._run = 0       # current run of consecutive losses
        self.stats = PathStats()
        self._handles: set[asyncio.TimerHandle] = set()

    def fate(self) -> list[float] | None:
        """None to drop the datagram, else the delays (ms) of each copy to send. Pure in the
        generator's state: the same seed gives the same fates for the same sequence of datagrams."""
        imp, rng = self.impairment, self.rng
        lost = rng.random() < imp.loss
        if imp.burst is not None:
            ge = imp.burst
            # the state for this packet, then its loss in that state
            self._bad = (rng.random() >= ge.r) if self._bad else (rng.random() < ge.p)
            lost = lost or rng.random() < (ge.loss_bad if self._bad else ge.loss_good)
        if lost:
            return None
        copies = 2 if rng.random() < imp.duplicate else 1
        delays = []
        for _ in range(copies):
            delay = imp.delay_ms + self._jitter()
            if rng.random() < imp.reorder:
                delay += imp.reorder_ms
                self.stats.reordered += 1
            delays.append(delay)
        return delays

    def _jitter(self) -> float:
        scale, rng = self.impairment.jitter_ms, self.rng
        if scale <= 0:
            return 0.0
        kind = self.impairment.jitter
        if kind == "uniform":
            return rng.uniform(0.0, scale)
        if kind == "normal":  # |N(0, scale/2)|: mostly small, sometimes ~scale
            return abs(rng.gauss(0.0, scale / 2))
        if kind == "exponential":
            return rng.expovariate(1.0 / scale)
        return min(scale * (rng.paretovariate(2.5) - 1.0), 20 * scale)  # heavy tail, capped

    def push(self, data: bytes) -> None:
        self.stats.received += 1
        delays = self.fate()
        if delays is None:
            self.stats.lost += 1
            self._run += 1
            return
        if self._run:
            self.stats.loss_runs.append(self._run)
            self._run = 0
        if len(delays) > 1:
            self.stats.duplicated += 1
        loop = asyncio.get_running_loop()
        for delay in delays:
            self.stats.delays_ms.append(delay)
            if delay <= 0:
                self._forward(data)
            else:
                self._later(loop, delay, data)

    def _later(self, loop: asyncio.AbstractEventLoop, delay_ms: float, data: bytes) -> None:
        def fire() -> None:
            self._handles.discard(handle)
            self._forward(data)
        handle = loop.call_later(delay_ms / 1000.0, fire)
        self._handles.add(handle)

    def _forward(self, data: bytes) -> None:
        self.stats.forwarded += 1
        self._send(data)

    def close(self) -> None:
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc) -> None:
        pass  # ICMP unreachable from a peer that left: a network drops it too


class ImpairedLink:
    """A pair of impaired paths between one client address and one engine address, on loopback.

    Usage: `link = await ImpairedLink.open(client_addr, up, down)`; put `link.engine_facing` in
    the client's offer (`link.rewrite_offer(sdp)`), then `link.connect(engine_addr)` with the
    address from the answer, and let the client send to `link.client_facing`.
    """

    def __init__(self, client: tuple[str, int], up: Impairment, down: Impairment, seed: int) -> None:
        self.client = client
        self.engine: tuple[str, int] | None = None
        self._client_side: asyncio.DatagramTransport | None = None
        self._engine_side: asyncio.DatagramTransport | None = None
        self.up = ImpairedPath(up, seed, self._to_engine)
        self.down = ImpairedPath(down, seed + 1_000_003, self._to_client)

    @classmethod
    async def open(cls, client: tuple[str, int], up: Impairment | None = None,
                   down: Impairment | None = None, seed: int = 0, host: str = "127.0.0.1") -> ImpairedLink:
        if not _is_loopback(host) or not _is_loopback(client[0]):
            raise ValueError("the impairment proxy runs on loopback only")
        link = cls(client, up or Impairment(), down or Impairment(), seed)
        loop = asyncio.get_running_loop()
        link._client_side, _ = await loop.create_datagram_endpoint(
            lambda: _Socket(link._from_client), local_addr=(host, 0))
        link._engine_side, _ = await loop.create_datagram_endpoint(
            lambda: _Socket(link._from_engine), local_addr=(host, 0))
        log.info("impair link started: client %s:%d <-> %s:%d | %s:%d <-> engine", *client,
                 *link.client_facing, *link.engine_facing)
        return link

    @property
    def client_facing(self) -> tuple[str, int]:
        return self._client_side.get_extra_info("sockname")[:2]

    @property
    def engine_facing(self) -> tuple[str, int]:
        return self._engine_side.get_extra_info("sockname")[:2]

    def rewrite_offer(self, offer_sdp: str) -> str:
        """The client's offer with its audio port replaced by the link's engine-facing port (the
        c= address stays: both are loopback)."""
        description = parse(offer_sdp)
        for media in description.media:
            if media.media == "audio":
                media.port = self.engine_facing[1]
        return description.serialize()

    def connect(self, engine: tuple[str, int]) -> None:
        self.engine = engine

    def _from_client(self, data: bytes, addr) -> None:
        if addr[:2] == tuple(self.client) and self.engine is not None:
            self.up.push(data)

    def _from_engine(self, data: bytes, addr) -> None:
        if self.engine is not None and addr[:2] == tuple(self.engine):
            self.down.push(data)

    def _to_engine(self, data: bytes) -> None:
        if self._engine_side is not None:
            self._engine_side.sendto(data, self.engine)

    def _to_client(self, data: bytes) -> None:
        if self._client_side is not None:
            self._client_side.sendto(data, self.client)

    def stats(self) -> dict:
        return {"up": self.up.stats.as_dict(), "down": self.down.stats.as_dict()}

    def close(self) -> None:
        self.up.close()
        self.down.close()
        for transport in (self._client_side, self._engine_side):
            if transport is not None:
                transport.close()
        if self._client_side is not None:
            log.info("impair link stopped: client %s:%d", *self.client)
        self._client_side = self._engine_side = None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def expected_loss(impairment: Impairment) -> float:
    """Long-run loss probability of a path with this impairment."""
    burst = impairment.burst.mean_loss if impairment.burst is not None else 0.0
    return 1.0 - (1.0 - impairment.loss) * (1.0 - burst)


def describe(impairment: Impairment) -> str:
    parts = []
    if impairment.loss:
        parts.append(f"{impairment.loss * 100:g}% random loss")
    if impairment.burst is not None:
        ge = impairment.burst
        parts.append(f"{ge.mean_loss * 100:.3g}% bursty loss (mean burst {1 / ge.r:.3g})"
                     if ge.r > 0 else "bursty loss")
    if impairment.duplicate:
        parts.append(f"{impairment.duplicate * 100:g}% duplicated")
    if impairment.reorder:
        parts.append(f"{impairment.reorder * 100:g}% reordered")
    if impairment.jitter_ms:
        parts.append(f"{impairment.jitter} jitter {impairment.jitter_ms:g} ms")
    if impairment.delay_ms:
        parts.append(f"{impairment.delay_ms:g} ms delay")
    return ", ".join(parts) or "clean"



async def join_through(engine: Engine, conference_id: str, participant: SimulatedParticipant,
                       up: Impairment, down: Impairment, seed: int = 0) -> tuple[str, ImpairedLink]:
    """Offer/answer for `participant` with an ImpairedLink between it and its leg; returns the
    leg id and the link (close it after the participant)."""
    offer = await participant.offer()
    client = (participant.host, parse(offer).media[0].port)
    link = await ImpairedLink.open(client, up, down, seed)
    answer = await engine.add_leg(conference_id, link.rewrite_offer(offer), label=participant.name)
    participant.accept(answer["sdp"])
    # The participant would send straight to the leg's port: point it at the link instead (the
    # simulated client has no setting for an outbound proxy, so its destination is set here).
    link.connect(participant._remote)
    participant._remote = link.client_facing
    return answer["id"], link


@dataclass
class ImpairedCallResult:
    call: CallResult
    links: dict[str, dict]            # participant -> {"up": ..., "down": ...} path stats
    quality: dict[str, dict]          # participant -> {"dropout_percent", "tone_snr_db"}
    samples: list[dict] = field(default_factory=list)  # what `sample` returned, in order


async def run_impaired_call(config: CallConfig, up: Impairment, down: Impairment,
                            engine: Engine | None = None, sample_every_s: float = 0.0,
                            sample: Callable[[Engine, str, float], dict] | None = None,
                            during: Callable[[float, list[ImpairedLink]], None] | None = None,
                            ) -> ImpairedCallResult:
    """A call like `mixer.sim.call.run_call`, with every participant behind its own ImpairedLink
    (seeded from config.seed). `sample(engine, conference_id, elapsed_s)` is called every
    `sample_every_s`; `during(elapsed_s, links)` may change the links' impairments mid-call."""
    from mixer.engine.engine import Engine as _Engine
    from mixer.sim.call import _analyse, make_participants
    from mixer.sim.quality import dropout_percent, tone_snr_db

    own_engine = engine is None
    if own_engine:
        engine = _Engine()
        engine.start()
    conference_id = engine.create_conference("mcu")["id"]
    participants = make_participants(CallConfig(**{**config.__dict__, "loss_percent": 0.0, "jitter_ms": 0.0}))
    leg_ids, links = [], []
    for index, participant in enumerate(participants):
        leg_id, link = await join_through(engine, conference_id, participant, up, down,
                                          seed=config.seed * 7919 + index)
        leg_ids.append(leg_id)
        links.append(link)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    for participant in participants:
        participant.start(start)
    samples: list[dict] = []
    step = sample_every_s if sample is not None and sample_every_s > 0 else 0.25
    elapsed = 0.0
    while elapsed < config.duration_s:
        await asyncio.sleep(min(step, max(config.duration_s - elapsed, 0.001)))
        elapsed = loop.time() - start
        if during is not None:
            during(elapsed, links)
        if sample is not None:
            samples.append(sample(engine, conference_id, elapsed))
    await asyncio.sleep(0.3 + up.delay_ms / 1000 + down.delay_ms / 1000)
    conference = engine.get_conference(conference_id)
    legs = {leg["id"]: leg for leg in conference["legs"]}
    engine_stats = engine.stats()
    engine.delete_conference(conference_id)
    if own_engine:
        engine.stop()
    await asyncio.sleep(0.05)
    for participant, link in zip(participants, links):
        participant.close()
        link.close()
    listeners = [_analyse(p, participants, legs.get(leg_id, {})) for p, leg_id in zip(participants, leg_ids)]
    quality = {}
    skip = int(WARMUP_S * 48000)
    for participant in participants:
        pcm, _ = participant.heard_audio()
        pcm = pcm[skip:len(pcm) - 48000 // 5]
        others = [p.freq_hz for p in participants if p is not participant]
        quality[participant.name] = {"dropout_percent": round(dropout_percent(pcm), 2),
                                     "tone_snr_db": round(tone_snr_db(pcm, others), 2)}
    return ImpairedCallResult(CallResult(listeners, engine_stats, conference["stats"]),
                              {p.name: link.stats() for p, link in zip(participants, links)},
                              quality, samples)


def sample_jitter_buffers(engine: Engine, conference_id: str, elapsed_s: float) -> dict:
    """The engine's view of each leg's playout now: target delay, buffered audio, jitter (a
    `sample` hook for run_impaired_call)."""
    legs = engine.get_conference(conference_id)["legs"]
    return {"t": round(elapsed_s, 3),
            "target_delay_ms": [leg["jitter_buffer"]["target_delay_ms"] for leg in legs],
            "buffered_ms": [leg["jitter_buffer"]["buffered_ms"] for leg in legs],
            "jitter_ms": [leg["jitter_buffer"]["jitter_ms"] for leg in legs]}


def jitter_phases(clean_s: float, jitter_s: float, jitter: Impairment) -> Callable[[float, list[ImpairedLink]], None]:
    """A `during` hook: the uplinks are clean, then jittery for `jitter_s`, then clean again."""
    def during(elapsed_s: float, links: list[ImpairedLink]) -> None:
        rough = clean_s <= elapsed_s < clean_s + jitter_s
        for link in links:
            link.up.impairment = jitter if rough else Impairment()
    return during
