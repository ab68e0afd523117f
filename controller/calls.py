"""Calls: the state machine between the REST API, the call registry and the media engines.

A call is one engine conference (its id is the call id) on the engine chosen at creation. Media is
anchored on the engine from the first participant, so a 1:1 call becoming a group call (a third
participant or a bot) only adds a leg: the first two legs are not touched.

The controller does no media work: bots are engine players, recordings are made by the engine,
and media forks are sent by it; the controller asks through the engine client interface and keeps
the records. What lives only in this controller's process is the call monitor that polls the
engine for speakers, jitter, DTMF and the state of players and recordings. With a shared Redis
registry any controller can serve any call's REST requests.

Failures (docs/failover.md): an engine that fails ENGINE_FAILURE_POLLS monitor polls in a row (or
answers that it lost the conference) is dead for the call: its legs' and the call's CDRs are written
from what the monitor sampled, with end reason `engine_failed`, and the call ends. With Redis, each
controller holds a lease (a key refreshed every third of CONTROLLER_LEASE_S); a controller whose
lease ran out is taken for dead, and a live one claims each of its calls (compare-and-set on the
call's `controller` field) and monitors it from then on. Media never stops: it flows between the
clients and the engine, and the engine keeps playing bots and recording.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

from controller import cdr, emodel
from controller.bots import PlayError, parse_tone
from controller.direct import DIRECT, ENGINE, DirectPath, is_direct
from controller.errors import ApiError
from controller.limits import RateLimited
from controller.events import EventHub, user_stream
from controller.outbox import Outbox
from controller.registry import CallRegistry
from controller.settings import ControllerSettings
from controller.store import Store, StoreUnavailable
from controller.tokens import Principal
from mixer.engine.client import EngineClient, EngineError

log = logging.getLogger("voicemix.controller")

ONE_TO_ONE, GROUP = "one_to_one", "group"
RECORDING_FORMATS = {"ogg": "audio/ogg", "wav": "audio/wav"}
# participants whose client lives in one controller's process: a PSTN participant's SIP dialog is
# held by the user agent of the controller that placed or answered it
LOCAL_KINDS = ("pstn",)


ENGINE_FAILED = "engine_failed"
CONTROLLER_FAILED = "controller_failed"   # a PSTN participant whose controller died
ENGINE_DRAINED = "engine_drained"
# a call on a draining engine is ended by the controller this long before the engine's deadline
# (plus two monitor polls), so its records are complete and not salvaged from samples
DRAIN_MARGIN_S = 1.0
CALL_QUOTA_RETRY_AFTER_S = 30.0  # a call quota frees when a call ends: a guess for Retry-After


def _engine_error(exc: EngineError) -> ApiError:
    if exc.code == "engine_unavailable":  # the engine's address and the socket error stay in logs
        log.warning("engine unavailable: %s", exc)
        return ApiError(503, "engine_unavailable",
                        "the media engine does not answer; calls on it end if it stays silent")
    return ApiError(exc.status, exc.code, str(exc))


class CallService:
    def __init__(self, settings: ControllerSettings, store: Store, registry: CallRegistry,
                 engines: list[EngineClient], events: EventHub | None = None) -> None:
        if not engines:
            raise ValueError("at least one engine")
        self.settings = settings
        self.store = store
        self.registry = registry
        self.engines = {engine.name: engine for engine in engines}
        self.events = events or EventHub()
        self.instance = secrets.token_hex(6)  # this controller, in the calls it monitors
        # CDRs and finished recordings: committed before the API answers, or (store down)
        # queued on disk and retried
        self.outbox = Outbox(store, settings.data_dir / "outbox", self.instance,
                             settings.outbox_retry_s)
        self._samples: dict[str, dict[str, cdr.LegSamples]] = {}
        self._recording_seen: dict[str, dict] = {}  # call -> its recording as the monitor last saw it
        self._monitors: dict[str, asyncio.Task] = {}
        self._owners: dict[str, str] = {}  # call made here -> its owner (the per-identity quota)
        self.limits = None  # controller.limits.RestLimits, set by the app: quota hits counted
        self._supervisor: asyncio.Task | None = None
        self._cleanups: set[asyncio.Task] = set()  # best-effort deletes on failed engines
        self.pstn = None        # the PSTN side (controller.pstn.PstnService), when SIP runs
        # call -> participant -> its client in this process (a SIP dialog: `close()` hangs up)
        self._local: dict[str, dict[str, object]] = {}
        self.observers: list = []   # objects with async participant_joined / call_ended
        self._ending: set[tuple[str, str]] = set()  # (call, participant) being removed by the monitor
        self.direct = DirectPath(self)   # the seed's direct 1:1 path (controller/direct.py)
        self.calls_created = 0
        self.calls_ended = 0
        self.calls_adopted = 0
        self.calls_engine_failed = 0
        self.calls_by_mode: Counter[str] = Counter()          # calls set up, by mode
        self.calls_ended_by_reason: Counter[str] = Counter()
        self.call_failures: Counter[str] = Counter()          # set-ups refused, by engine code
        self.participants_added: Counter[str] = Counter()     # by kind
        self.participant_failures: Counter[str] = Counter()   # joins refused, by engine code

    # -------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start the outbox (records a stopped controller left queued are written); with a
        shared registry: take this controller's lease, adopt the calls of controllers whose
        lease ran out (now, then every third of the lease)."""
        await self.outbox.start()
        if not self.registry.shared:
            return  # in memory: one process holds every call, and a restart loses them all
        await self.registry.heartbeat(self.instance, self.settings.controller_lease_s)
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def close(self) -> None:
        """End every call this controller monitors (the engine finishes their recordings)."""
        if self._supervisor is not None:
            await cancel_and_wait(self._supervisor)
            self._supervisor = None
        for call_id in list(self._monitors):
            with contextlib.suppress(ApiError):
                await self.end_call(None, call_id, "controller_shutdown")
        for task in list(self._cleanups):
            task.cancel()
        with contextlib.suppress(Exception):  # Redis gone at shutdown: the lease just expires
            await self.registry.drop_heartbeat(self.instance)
        for engine in self.engines.values():
            await engine.close()
        await self.outbox.close()

    # ------------------------------------------------------------------------------------ access
    async def access(self, principal: Principal | None, call_id: str, *,
                     allow_invited: bool = False) -> dict:
        """The call, if `principal` may act on it (404 no_such_call, 403 not_a_member)."""
        call = await self.registry.get(call_id)
        if call is None:
            raise ApiError(404, "no_such_call", f"no call {call_id}")
        if principal is None or principal.is_admin:
            return call
        identity = principal.identity
        if identity in call["members"] or (allow_invited and identity in call["invited"]):
            return call
        raise ApiError(403, "not_a_member", "this call is not yours")

    def _engine(self, call: dict) -> EngineClient:
        engine = self.engines.get(call["engine"])
        if engine is None:
            raise ApiError(503, "engine_unknown",
                           f"call {call['id']} is on engine {call['engine']}, not configured here")
        return engine

    async def _place(self) -> list[EngineClient]:
        """Engines to try for a new call, fewest legs first; draining engines are left out (the
        only one is tried without asking: it answers 503 `draining` itself if it is)."""
        if len(self.engines) == 1:
            return list(self.engines.values())

        async def load(engine: EngineClient) -> tuple[int, str, EngineClient] | None:
            try:
                stats = await engine.stats()
            except EngineError:
                return None
            if stats.get("draining"):
                return None
            return stats["legs"], engine.name, engine
        loads = [x for x in await asyncio.gather(*map(load, self.engines.values())) if x]
        if not loads:
            raise ApiError(503, "engine_unavailable", "no engine answers or takes new calls "
                           "(draining)")
        return [engine for _, _, engine in sorted(loads, key=lambda x: x[:2])]

    # ------------------------------------------------------------------------------------- calls
    async def create_call(self, principal: Principal, mode: str, expected: int | None,
                          invite: list[str]) -> dict:
        if principal.identity is None:
            raise ApiError(403, "identity_required", "calls are made by identities: use a user token")
        self._check_call_quota(principal.identity)
        candidates = await self._place()
        call_id = secrets.token_hex(8)
        wanted = mode
        if mode == "auto":
            # relay: forwards while the call is 1:1 in one codec, mixes when it must (a third
            # participant, a codec mismatch, a bot, a recording), switching live (issue 17)
            wanted = "sfu" if (expected or 0) > self.settings.auto_sfu_threshold else "relay"
        for index, engine in enumerate(candidates):
            chosen = wanted
            try:
                try:
                    created = await engine.create_conference(chosen, call_id)
                except EngineError as exc:
                    if mode != "auto" or exc.code != "unsupported_mode":
                        raise
                    chosen = "mcu"  # this engine has no SFU (or relay): auto falls back to mixing
                    created = await engine.create_conference(chosen, call_id)
                break
            except EngineError as exc:
                # began draining since it was asked: the next engine, if any
                if exc.code == "draining" and index + 1 < len(candidates):
                    continue
                self.call_failures[exc.code] += 1
                raise _engine_error(exc) from None
        call = {"id": call_id, "owner": principal.identity, "mode": created["mode"],
                "requested_mode": mode, "engine": engine.name, "conference": created["id"],
                "created_at": time.time(), "type": ONE_TO_ONE, "controller": self.instance,
                # the direct path is for 1:1 calls: an explicit mcu/sfu call is a group call
                "media": DIRECT if self.settings.direct_one_to_one and mode == "auto" else ENGINE}
        invited = {i for i in invite if i != principal.identity}
        await self.registry.create(call, {principal.identity}, invited)
        self._tell_invited(call, principal.identity, invited)
        self._samples[call_id] = {}
        self._monitors[call_id] = asyncio.get_running_loop().create_task(self._monitor(call_id))
        self._owners[call_id] = principal.identity
        self.calls_created += 1
        self.calls_by_mode[call["mode"]] += 1
        log.info("call created", extra={"event": "call_created", "call_id": call_id,
                                        "identity": principal.identity, "mode": call["mode"],
                                        "engine": engine.name})
        return self.view(await self.registry.get(call_id))

    def _check_call_quota(self, identity: str) -> None:
        """429 call_quota when `identity` owns `max_calls_per_identity` live calls made by this
        controller (each controller counts its own: with N controllers the bound is N times)."""
        limit = self.settings.max_calls_per_identity
        if limit <= 0:
            return
        for call_id in [c for c in self._owners if c not in self._monitors]:
            del self._owners[call_id]  # ended (or handed over) since
        if sum(1 for owner in self._owners.values() if owner == identity) >= limit:
            if self.limits is not None:
                self.limits.quota_hit("calls_per_identity", identity)
            raise RateLimited("calls_per_identity", "call_quota",
                              f"this identity has {limit} calls going on, the most it may; end one "
                              "first", CALL_QUOTA_RETRY_AFTER_S)

    def _tell_invited(self, call: dict, inviter: str, identities: set[str]) -> None:
        """A `call_invited` event on each invited identity's own stream (GET /v1/events)."""
        for identity in sorted(identities):
            self.events.publish(user_stream(identity), "call_invited",
                                {"call": call["id"], "from": inviter, "mode": call["mode"]})

    def view(self, call: dict, conference: dict | None = None) -> dict:
        legs = _parts_of(conference)
        participants = []
        for p in sorted(call["participants"].values(), key=lambda p: p["joined_at"]):
            item = {**p, "joined_at": cdr.iso(p["joined_at"])}
            if conference is not None:
                item["stats"] = _leg_summary(legs.get(p["id"]))
            participants.append(item)
        result = {
            "id": call["id"], "mode": call["mode"], "requested_mode": call["requested_mode"],
            "type": call["type"], "owner": call["owner"], "members": sorted(call["members"]),
            "invited": sorted(call["invited"]), "created_at": cdr.iso(call["created_at"]),
            "participants": participants,
            "recording": call.get("recording") or None,
            "media": call.get("media", ENGINE),
        }
        if conference is not None:
            speakers = conference.get("stats", {}).get("speakers", [])
            result["speakers"] = [s for s in speakers if s in call["participants"]]
            result["forks"] = [{k: f.get(k) for k in ("id", "source", "destination", "state",
                                                       "srtp", "codec", "packets_out")}
                               for f in conference.get("forks", [])]
            result["engine"] = {k: v for k, v in conference.get("stats", {}).items()
                                if k != "speakers"}
        return result

    async def get_call(self, principal: Principal, call_id: str) -> dict:
        call = await self.access(principal, call_id, allow_invited=True)
        try:
            conference = await self._engine(call).get_conference(call["conference"])
        except EngineError as exc:
            raise _engine_error(exc) from None
        return self.view(call, conference)

    async def invite(self, principal: Principal, call_id: str, identities: list[str]) -> dict:
        call = await self.access(principal, call_id)
        new = set(identities) - call["members"] - call["invited"]
        await self.registry.add_invited(call_id, set(identities) - call["members"])
        self._tell_invited(call, principal.identity or "admin", new)
        return self.view(await self.registry.get(call_id))

    async def end_call(self, principal: Principal | None, call_id: str, reason: str = "ended") -> None:
        """End the call: its recording finished, the engine conference deleted, CDRs written.
        With reason `engine_failed` the engine is not asked (it is gone): the records come from
        what the monitor sampled."""
        await self.access(principal, call_id)
        call = await self.registry.delete(call_id)
        if call is None:
            raise ApiError(404, "no_such_call", f"no call {call_id}")
        monitor = self._monitors.pop(call_id, None)
        # before any await: it must not take the call for ended elsewhere (unless it is the
        # monitor itself ending the call, which must not cancel itself half-way)
        if monitor is not None and monitor is not asyncio.current_task():
            monitor.cancel()
        ended_at = time.time()
        engine = self.engines.get(call["engine"])
        conference = None
        if call.get("recording"):
            await self._finish_recording(call, engine if reason != ENGINE_FAILED else None, reason)
        if engine is not None and reason != ENGINE_FAILED:
            with contextlib.suppress(EngineError):
                conference = await engine.get_conference(call["conference"])
            with contextlib.suppress(EngineError):
                await engine.delete_conference(call["conference"])
        elif engine is not None:  # should a hung engine wake up, its conference must not linger
            task = asyncio.get_running_loop().create_task(
                self._delete_quietly(engine, call["conference"]))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)
        parts = _parts_of(conference)
        records = []
        for participant in call["participants"].values():
            self._close_local(call_id, participant["id"])
            records.append(self._leg_record(call, participant, parts.get(participant["id"], {}),
                                            ended_at, reason))
            if reason == ENGINE_FAILED:  # the leg failed, not left: say so to each listener
                self.events.publish(call_id, "participant_left",
                                    {"participant_id": participant["id"], "reason": reason})
        await self.outbox.call_ended(call, records, ended_at, reason)
        self._local.pop(call_id, None)
        self._samples.pop(call_id, None)
        self._recording_seen.pop(call_id, None)
        self.events.publish(call_id, "call_ended", {"reason": reason})
        self.events.close(call_id)
        self.calls_ended += 1
        self.calls_ended_by_reason[reason] += 1
        log.info("call ended", extra={"event": "call_ended", "call_id": call_id, "reason": reason,
                                      "duration_s": round(ended_at - call["created_at"], 3),
                                      "participants": len(call["participants"])})
        for observer in list(self.observers):
            await observer.call_ended(call_id, reason)

    # ------------------------------------------------------------------------------ participants
    async def add_participant(self, principal: Principal, call_id: str, body: dict) -> dict:
        kind = body.get("kind") or ("voip" if body.get("sdp") is not None else None)
        call = await self.access(principal, call_id, allow_invited=(kind == "voip"))
        if len(call["participants"]) >= self.settings.max_participants_per_call:
            raise ApiError(409, "call_full", "the call has its maximum of participants")
        if kind == "pstn":
            if self.pstn is None:
                raise ApiError(503, "pstn_unavailable", "this controller runs no SIP side "
                                                        "(VOICEMIX_SIP_LISTEN)")
            return await self.pstn.dial(call, principal, body)
        if kind == "voip":
            if principal.identity is None:
                raise ApiError(403, "identity_required", "only identities join by SDP offer")
            return await self._join(call, principal, body["sdp"], body.get("label"),
                                    body.get("replaces"))
        if kind == "bot":
            return await self._add_bot(call, principal, body)
        raise ApiError(422, "bad_field", "a participant needs 'sdp', or 'kind' of bot or pstn")

    async def _join(self, call: dict, principal: Principal, sdp: str, label: str | None,
                    replaces: str | None = None) -> dict:
        """An engine leg for the caller; `replaces`: the caller's direct participant, moving
        onto the engine (controller/direct.py)."""
        identity = principal.identity
        if replaces is None:
            await self.direct.move_to_engine(call, "engine_participant")
        elif call.get("media") == DIRECT:
            raise ApiError(409, "media_direct", "'replaces' is for moving onto the engine, after "
                                                "a media_moved event")
        try:
            answer = await self._engine(call).add_leg(call["conference"], sdp, label or identity)
        except EngineError as exc:
            self.participant_failures[exc.code] += 1
            raise _engine_error(exc) from None
        moved = None
        if replaces is not None:
            try:
                moved = await self.direct.replaced(call, replaces, principal)
            except ApiError:
                with contextlib.suppress(EngineError):
                    await self._engine(call).remove_leg(call["conference"], answer["id"])
                raise
        participant = {"id": answer["id"], "kind": "voip", "identity": identity,
                       "label": label or identity, "muted": False, "joined_at": time.time(),
                       "codec": _codec_of(answer["sdp"]), "media": ENGINE}
        if moved is not None:
            participant["replaces"] = moved["id"]
        await self.registry.add_member(call["id"], identity)
        await self._admit(call, participant)
        for observer in list(self.observers):
            await observer.participant_joined(call, participant)
        return {"id": answer["id"], "sdp": answer["sdp"]}

    async def admit_local(self, call: dict, participant: dict, client, announce: bool = True) -> None:
        """Admit a participant whose engine leg the caller made and whose client lives in this
        controller (a SIP dialog): it is closed when the participant is removed or the call
        ends here, and removed by an adopting controller if this one dies. With `announce`
        False it is only registered (an outbound call still ringing): no participant_joined."""
        await self.direct.move_to_engine(call, "pstn")  # a phone is heard through the engine only
        participant = {**participant, "controller": self.instance, "media": ENGINE}
        if announce:
            await self._admit(call, participant)
        else:
            await self.registry.put_participant(call["id"], participant)
        client.attached_at = time.monotonic()
        self._local.setdefault(call["id"], {})[participant["id"]] = client

    async def reoffer_participant(self, principal: Principal, call_id: str, participant_id: str,
                                  sdp: str) -> dict:
        """A new offer on an engine participant's leg (ICE restart, hold) -> {"id", "sdp"}."""
        call = await self.access(principal, call_id)
        participant = call["participants"].get(participant_id)
        if participant is None:
            raise ApiError(404, "no_such_participant", f"no participant {participant_id}")
        if not principal.is_admin and participant.get("identity") != principal.identity:
            raise ApiError(403, "not_your_participant", "re-offer only your own participant")
        if is_direct(participant):
            raise ApiError(409, "direct_participant", "a direct participant re-offers to its peer "
                                                      "through /signal")
        try:
            return await self._engine(call).reoffer_leg(call["conference"], participant_id, sdp)
        except EngineError as exc:
            raise _engine_error(exc) from None

    async def _add_bot(self, call: dict, principal: Principal, body: dict) -> dict:
        """A bot is an engine player: a tone, or a finished recording of this service that the
        caller may read (its mix file, which the engine reads from its recordings directory)."""
        await self.direct.move_to_engine(call, "bot")  # it plays into the engine's conference
        play = body.get("play") or "tone:440"
        try:
            freq = parse_tone(play)
        except PlayError as exc:
            raise ApiError(422, "bad_play", str(exc)) from None
        source: dict = {"tone": freq, "seconds": self.settings.bot_max_seconds}
        if freq is None:
            recording = await self.store.get_recording(play)
            if recording is None or not self._may_read(principal, recording):
                raise ApiError(404, "no_such_recording", f"no recording {play}")
            if recording["ended_at"] is None:
                raise ApiError(409, "recording_active", "that recording is still being made")
            source = {"file": recording["path"]}
        label = body.get("label") or f"bot:{play}"
        try:
            player = await self._engine(call).add_player(call["conference"], label=label,
                                                         loop=bool(body.get("loop")), **source)
        except EngineError as exc:
            self.participant_failures[exc.code] += 1
            raise _engine_error(exc) from None
        participant = {"id": player["id"], "kind": "bot", "identity": None,
                       "added_by": principal.identity, "label": label, "play": play,
                       "muted": False, "joined_at": time.time()}
        await self._admit(call, participant)
        return {"id": player["id"]}

    async def _admit(self, call: dict, participant: dict) -> None:
        await self.registry.put_participant(call["id"], participant)
        self.participants_added[participant["kind"]] += 1
        log.info("participant joined", extra={
            "event": "participant_joined", "call_id": call["id"], "participant_id": participant["id"],
            "leg_id": participant["id"], "kind": participant["kind"],
            "identity": participant.get("identity"), "codec": participant.get("codec")})
        self.events.publish(call["id"], "participant_joined",
                            {"participant": {**participant, "joined_at": cdr.iso(participant["joined_at"])}})
        fresh = await self.registry.get(call["id"])
        if fresh is None:
            return
        becomes_group = len(fresh["participants"]) >= 3 or participant["kind"] == "bot"
        if becomes_group and await self.registry.set_if_absent(call["id"], "converted_at",
                                                                 cdr.iso(time.time())):
            await self.registry.update(call["id"], type=GROUP)
            self.events.publish(call["id"], "call_converted", {"from": ONE_TO_ONE, "to": GROUP})
            log.info("call %s is now a group call", call["id"])

    async def update_participant(self, principal: Principal, call_id: str, participant_id: str,
                                 muted: bool | None) -> dict:
        call = await self.access(principal, call_id)
        participant = call["participants"].get(participant_id)
        if participant is None:
            raise ApiError(404, "no_such_participant", f"no participant {participant_id}")
        if muted is not None:
            engine = self._engine(call)
            try:
                if participant["kind"] == "bot":
                    await engine.update_player(call["conference"], participant_id, muted)
                else:
                    await engine.update_leg(call["conference"], participant_id, muted)
            except EngineError as exc:
                raise _engine_error(exc) from None
            participant["muted"] = muted
            await self.registry.put_participant(call_id, participant)
            self.events.publish(call_id, "participant_updated",
                                {"participant_id": participant_id, "muted": muted})
        return {**participant, "joined_at": cdr.iso(participant["joined_at"])}

    async def remove_participant(self, principal: Principal | None, call_id: str,
                                 participant_id: str, reason: str = "removed",
                                 details: dict | None = None) -> None:
        call = await self.access(principal, call_id)
        participant = await self.registry.remove_participant(call_id, participant_id)
        if participant is None:
            raise ApiError(404, "no_such_participant", f"no participant {participant_id}")
        engine = self._engine(call)
        final = {}
        with contextlib.suppress(EngineError):
            final = _parts_of(await engine.get_conference(call["conference"])).get(participant_id, {})
        with contextlib.suppress(EngineError):
            if participant["kind"] == "bot":
                await engine.remove_player(call["conference"], participant_id)
            else:
                await engine.remove_leg(call["conference"], participant_id)
        self._close_local(call_id, participant_id)
        record = self._leg_record(call, participant, final, time.time(), reason)
        await self.outbox.cdrs([record])
        self.events.publish(call_id, "participant_left",
                            {"participant_id": participant_id, "reason": reason, **(details or {})})
        log.info("participant left", extra={
            "event": "participant_left", "call_id": call_id, "participant_id": participant_id,
            "leg_id": participant_id, "kind": participant["kind"], "reason": reason})

    def _close_local(self, call_id: str, participant_id: str) -> None:
        client = self._local.get(call_id, {}).pop(participant_id, None)
        if client is not None:
            client.close()

    def _drop_local(self, call_id: str) -> None:
        """The call ended elsewhere or was taken over: hang up what this process holds of it."""
        for client in self._local.pop(call_id, {}).values():
            client.close()

    def _leg_record(self, call: dict, participant: dict, leg: dict, ended_at: float,
                    reason: str) -> dict:
        samples = self._samples.get(call["id"], {}).pop(participant["id"], cdr.LegSamples())
        return cdr.leg_record(call, participant, leg, samples, ended_at, reason)

    # ------------------------------------------------------------------------------------ forks
    async def add_fork(self, principal: Principal, call_id: str, source: str, destination: str,
                       srtp: bool = False, codec: str | None = None) -> dict:
        """Send the mix or a participant's audio to `destination` (the engine sends it and checks
        the destination against its peer filter: 403 destination_forbidden)."""
        call = await self.access(principal, call_id)
        if source != "mix":
            participant = call["participants"].get(source)
            if participant is None:
                raise ApiError(404, "no_such_participant", f"no participant {source}")
            if participant["kind"] != "voip":
                raise ApiError(422, "bad_source", "a fork's source is 'mix' or a participant who "
                                                  "sends audio (not a bot)")
        try:
            fork = await self._engine(call).add_fork(call["conference"], source, destination,
                                                     srtp=srtp, codec=codec)
        except EngineError as exc:
            raise _engine_error(exc) from None
        self.events.publish(call_id, "fork_started", {"fork_id": fork["id"], "source": source,
                                                      "destination": fork["destination"],
                                                      "srtp": fork["srtp"]})
        log.info("call %s: fork %s of %s to %s", call_id, fork["id"], source, fork["destination"])
        return {"id": fork["id"], "sdp": fork["sdp"], "source": source,
                "destination": fork["destination"], "srtp": fork["srtp"], "codec": fork["codec"]}

    async def remove_fork(self, principal: Principal, call_id: str, fork_id: str) -> None:
        call = await self.access(principal, call_id)
        try:
            await self._engine(call).remove_fork(call["conference"], fork_id)
        except EngineError as exc:
            raise _engine_error(exc) from None
        self.events.publish(call_id, "fork_stopped", {"fork_id": fork_id, "reason": "removed"})

    # -------------------------------------------------------------------------------- recording
    async def recording(self, principal: Principal, call_id: str, action: str,
                        fmt: str = "ogg", tracks: str = "mix") -> dict:
        """Start or stop the call's recording. The engine records (the mix, and with
        `tracks` "mix+participants" a track per participant); the controller keeps the index."""
        call = await self.access(principal, call_id)
        current = call.get("recording")
        if action == "start":
            if current:
                raise ApiError(409, "recording_active", f"call {call_id} is being recorded")
            recording_id = secrets.token_hex(8)
            if not await self.registry.set_if_absent(call_id, "recording", recording_id):
                raise ApiError(409, "recording_active", f"call {call_id} is being recorded")
            await self.direct.move_to_engine(call, "recording")  # the engine records what it mixes
            engine = self._engine(call)
            try:
                started = await engine.start_recording(call["conference"], format=fmt,
                                                       tracks=tracks, recording_id=recording_id)
            except BaseException as exc:
                await self.registry.clear(call_id, "recording")
                if isinstance(exc, EngineError):
                    raise _engine_error(exc) from None
                raise
            try:
                # indexed before anyone is told it records: a store that is down refuses the
                # start (503) and the engine stops what it began, instead of recording a file
                # nobody can find
                await self.store.add_recording(recording_id, call_id, started["path"],
                                               sorted(call["members"]), time.time(), fmt=fmt,
                                               tracks_mode=tracks, engine=engine.name)
            except BaseException:
                await self.registry.clear(call_id, "recording")
                with contextlib.suppress(EngineError):
                    await engine.stop_recording(call["conference"], recording_id)
                raise
            self.events.publish(call_id, "recording_started",
                                {"recording_id": recording_id, "format": fmt, "tracks": tracks})
            return {"id": recording_id, "state": "recording", "format": fmt, "tracks": tracks}
        if not current:
            raise ApiError(409, "not_recording", f"call {call_id} is not being recorded")
        recording = await self._finish_recording(call, self.engines.get(call["engine"]), "stopped")
        return {"id": current, "state": "stopped",
                "duration_s": recording["duration_s"] if recording else None,
                "format": recording.get("format") if recording else None}

    async def _finish_recording(self, call: dict, engine: EngineClient | None,
                                reason: str) -> dict | None:
        """The engine finishes the call's recording and says what it wrote (durations, tracks
        with their offsets); the index keeps it. Without an engine (it failed), the recording
        is marked interrupted with the duration the monitor last saw: the engine repairs the
        files when it starts again."""
        recording_id = call["recording"]
        metadata = None
        if engine is not None:
            try:
                metadata = await engine.stop_recording(call["conference"], recording_id)
            except EngineError as exc:
                if exc.code != "no_such_recording":  # else: stopped already, through another controller
                    log.warning("recording %s: the engine could not stop it: %s", recording_id, exc)
        with contextlib.suppress(Exception):  # the call may be gone from the registry already
            await self.registry.clear(call["id"], "recording")
        if metadata is None:
            with contextlib.suppress(StoreUnavailable):
                stored = await self.store.get_recording(recording_id)
                if stored is not None and stored["ended_at"] is not None:
                    return stored  # finished already, through another controller
            seen = self._recording_seen.get(call["id"], {})
            metadata = {"state": "interrupted", "duration_s": seen.get("duration_s", 0.0),
                        "tracks": []}
        participants = call["participants"]
        tracks = [_track_view(t, participants) for t in metadata.get("tracks", [])]
        duration = float(metadata.get("duration_s") or 0.0)
        state = metadata.get("state", "stopped")
        # through the outbox: with the store down, the index row waits on disk, not lost
        await self.outbox.recording_finished(recording_id, sorted(call["members"]), time.time(),
                                             duration, state=state, tracks=tracks)
        event = {"recording_id": recording_id, "duration_s": round(duration, 3)}
        if reason not in ("stopped",):
            event["reason"] = reason
        self.events.publish(call["id"], "recording_stopped", event)
        return {"id": recording_id, "duration_s": duration, "state": state,
                "format": metadata.get("format"), "tracks": tracks}

    @staticmethod
    def _may_read(principal: Principal, recording: dict) -> bool:
        return principal.is_admin or principal.identity in recording["members"]

    async def _readable_recording(self, principal: Principal, recording_id: str) -> dict:
        recording = await self.store.get_recording(recording_id)
        if recording is None:
            raise ApiError(404, "no_such_recording", f"no recording {recording_id}")
        if not self._may_read(principal, recording):
            raise ApiError(403, "not_a_member", "this recording is not yours")
        if recording["ended_at"] is None:
            raise ApiError(409, "recording_active", "the recording is still being made")
        return recording

    async def recording_tracks(self, principal: Principal, recording_id: str) -> dict:
        recording = await self._readable_recording(principal, recording_id)
        return {"recording_id": recording_id, "format": recording["format"],
                "duration_s": recording["duration_s"], "state": recording["state"],
                "tracks": [{k: v for k, v in t.items() if k != "file"}
                           for t in recording["tracks"]]}

    async def recording_download(self, principal: Principal, recording_id: str,
                                 participant_id: str | None = None
                                 ) -> tuple[Path | AsyncIterator[bytes], str]:
        """Where a finished recording's mix (or one participant's track) can be read, and its
        media type: the file itself when it is in this controller's recordings directory (an
        in-process engine, or a shared disk), else the engine's bytes, streamed through its
        client. A path outside that directory is never read, whatever an engine reported."""
        recording = await self._readable_recording(principal, recording_id)
        media_type = RECORDING_FORMATS.get(recording["format"], "application/octet-stream")
        path = Path(recording["path"])
        track_id = None
        if participant_id is not None:
            track = next((t for t in recording["tracks"] if t["participant_id"] == participant_id),
                         None)
            if track is None:
                raise ApiError(404, "no_such_track",
                               f"recording {recording_id} has no track of {participant_id}")
            track_id = track["track_id"]
            path = path.with_name(track["file"])
        local = self.settings.recordings_path.resolve()
        if path.resolve().is_relative_to(local) and path.is_file():
            return path, media_type
        engine = self.engines.get(recording.get("engine") or "")
        if engine is None:
            raise ApiError(404, "no_such_file", "the recording's file is not reachable from here")
        chunks = engine.recording_chunks(recording_id, track_id)
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            first = b""
        except EngineError as exc:
            raise _engine_error(exc) from None

        async def stream() -> AsyncIterator[bytes]:
            yield first
            async for chunk in chunks:
                yield chunk
        return stream(), media_type

    # ---------------------------------------------------------------------------------- monitor
    async def _monitor(self, call_id: str) -> None:
        """Poll the engine: jitter samples for CDRs; speaker changes, dominant speaker, DTMF
        digits, bots that finished playing and recordings that failed, for events; and whether
        the engine is still there."""
        speakers: list[str] = []
        dominant: str | None = None
        digits_seen: dict[str, int] | None = None  # leg -> digits published (in the registry)
        forks_ended: set[str] = set()
        failed_polls = 0
        draining_announced = False
        while True:
            await asyncio.sleep(self.settings.monitor_interval_s)
            read_at = time.monotonic()
            try:
                call = await self.registry.get(call_id)
            except Exception as exc:  # the registry (Redis) unreachable: media goes on; retry
                log.warning("call %s: registry unreachable (%r)", call_id, exc)
                continue
            if call is None:  # ended through another controller
                await self._forget(call_id)
                return
            if call.get("controller") != self.instance:  # taken over: we were taken for dead
                await self._release(call_id)
                return
            if digits_seen is None:  # an adopted call: digits its last monitor published stay old
                digits_seen = {k: int(v) for k, v in (call.get("dtmf_seen") or {}).items()}
            # local participants removed through another controller: hang them up here
            for participant_id, client in list(self._local.get(call_id, {}).items()):
                if participant_id not in call["participants"] and client.attached_at < read_at:
                    self._close_local(call_id, participant_id)
            engine = self.engines.get(call["engine"])
            if engine is None:  # cannot happen for calls made or adopted here; never loop on it
                log.warning("call %s is on engine %s, not configured here: not monitored",
                            call_id, call["engine"])
                self._monitors.pop(call_id, None)
                return
            try:
                conference = await asyncio.wait_for(engine.get_conference(call["conference"]),
                                                    self.settings.engine_poll_timeout_s)
            except (EngineError, asyncio.TimeoutError) as exc:
                if isinstance(exc, asyncio.TimeoutError):
                    exc = EngineError(504, "engine_timeout", f"no answer within "
                                      f"{self.settings.engine_poll_timeout_s} s")
                if exc.code == "conference_drained":  # the engine's drain deadline came first
                    await self._end_drained(call_id)
                    return
                if exc.status == 404:
                    if await self._conference_missing(call_id):
                        return
                    continue
                failed_polls += 1
                log.warning("call %s: engine %s failed poll %d of %d: %s", call_id, engine.name,
                            failed_polls, self.settings.engine_failure_polls, exc)
                if failed_polls == 1:
                    self.events.publish(call_id, "engine_unavailable", {"failed_polls": 1})
                if failed_polls >= self.settings.engine_failure_polls:
                    await self._engine_failed(call_id)
                    return
                continue
            if failed_polls:
                self.events.publish(call_id, "engine_recovered", {"failed_polls": failed_polls})
                log.info("call %s: engine %s answers again after %d failed polls", call_id,
                         engine.name, failed_polls)
                failed_polls = 0
            drain = conference.get("drain")
            if drain is not None:
                if not draining_announced:
                    draining_announced = True
                    self.events.publish(call_id, "engine_draining", {"ends_in_s": drain["ends_in_s"]})
                    log.info("call on a draining engine", extra={
                        "event": "call_draining", "call_id": call_id, "engine": engine.name,
                        "ends_in_s": drain["ends_in_s"]})
                if drain["ends_in_s"] is not None and drain["ends_in_s"] <= \
                        DRAIN_MARGIN_S + 2 * self.settings.monitor_interval_s:
                    await self._end_drained(call_id)
                    return
            self.direct.expire_unmoved(call, self._remove_quietly)
            samples = self._samples.setdefault(call_id, {})
            talking = []
            digits_before = dict(digits_seen)
            for leg in conference["legs"]:
                samples.setdefault(leg["id"], cdr.LegSamples()).add(leg)
                participant = call["participants"].get(leg["id"])
                if participant is not None and self._webrtc_ended(call_id, leg):
                    continue
                # an MCU says who is mixed ("talking"), an SFU who is forwarded
                if participant and (leg.get("talking") or leg.get("forwarded")):
                    talking.append((leg.get("level", 127), leg["id"]))
                self._publish_digits(call_id, leg, digits_seen)
            for player in conference.get("players", []):
                samples.setdefault(player["id"], cdr.LegSamples()).add(player)
                participant = call["participants"].get(player["id"])
                if participant and participant["kind"] == "bot" and player["state"] != "playing":
                    # a bot that played to its end leaves the call
                    self.events.publish(call_id, "player_finished",
                                        {"participant_id": player["id"], "state": player["state"],
                                         "seconds_played": player.get("seconds_played")})
                    # shielded: the call ending meanwhile cancels this monitor, and the bot's
                    # record must still be written
                    task = asyncio.get_running_loop().create_task(
                        self._remove_quietly(call_id, player["id"], "finished"))
                    self._cleanups.add(task)
                    task.add_done_callback(self._cleanups.discard)
                    await asyncio.shield(task)
            await self._watch_recording(call, engine, conference)
            for fork in conference.get("forks", []):
                if fork["state"] == "source_left" and fork["id"] not in forks_ended:
                    forks_ended.add(fork["id"])
                    self.events.publish(call_id, "fork_stopped",
                                        {"fork_id": fork["id"], "reason": "source_left"})
            if digits_seen != digits_before:  # rare (key presses): one write, for a successor
                with contextlib.suppress(Exception):
                    await self.registry.update(call_id, dtmf_seen=digits_seen)
            now_speakers = sorted(pid for _, pid in talking)
            if now_speakers != speakers:
                speakers = now_speakers
                self.events.publish(call_id, "speakers", {"participant_ids": speakers})
            # the SFU names its dominant speaker (with hysteresis); for an MCU, the loudest talker
            loudest = conference.get("stats", {}).get("dominant_speaker") or (
                min(talking)[1] if talking else None)  # RFC 6464 level: lower is louder
            if loudest is not None and loudest != dominant and loudest in call["participants"]:
                dominant = loudest
                self.events.publish(call_id, "dominant_speaker", {"participant_id": dominant})

    def _webrtc_ended(self, call_id: str, leg: dict) -> bool:
        """A WebRTC leg that failed (DTLS, ICE timeout) or whose peer closed DTLS is over: say so
        (`participant_failed` with the reason) and remove the participant (its CDR says why)."""
        webrtc = leg.get("webrtc") or {}
        state = webrtc.get("state")
        if state not in ("failed", "closed"):
            return False
        if (call_id, leg["id"]) in self._ending:
            return True  # being removed already
        self._ending.add((call_id, leg["id"]))
        reason = f"webrtc_{webrtc.get('failure') or state}"
        if state == "failed":
            self.events.publish(call_id, "participant_failed",
                                {"participant_id": leg["id"], "reason": reason})
        task = asyncio.get_running_loop().create_task(
            self._remove_quietly(call_id, leg["id"], reason))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        return True

    async def _remove_quietly(self, call_id: str, participant_id: str, reason: str) -> None:
        try:
            with contextlib.suppress(ApiError):
                await self.remove_participant(None, call_id, participant_id, reason)
        finally:
            self._ending.discard((call_id, participant_id))

    async def _watch_recording(self, call: dict, engine: EngineClient, conference: dict) -> None:
        """Keep what the engine says of the call's recording (its duration so far, for a record
        should the engine die); a recording the engine had to stop (a full disk) is finished."""
        recording_id = call.get("recording")
        if not recording_id:
            return
        seen = next((r for r in conference.get("recordings", []) if r["id"] == recording_id), None)
        if seen is None:
            return
        self._recording_seen[call["id"]] = seen
        if seen["state"] == "failed":
            await self._finish_recording(call, engine, "failed")

    async def _engine_failed(self, call_id: str) -> None:
        """The engine stopped answering for this call: end it with what was sampled so far."""
        log.error("call %s: engine failed, ending the call", call_id)
        try:
            await self.end_call(None, call_id, ENGINE_FAILED)
        except ApiError:  # ended through another controller meanwhile
            await self._forget(call_id)
            return
        self.calls_engine_failed += 1

    async def _end_drained(self, call_id: str) -> None:
        """The call's engine is draining and its deadline is here: end the call with records."""
        try:
            await self.end_call(None, call_id, ENGINE_DRAINED)
        except ApiError:  # ended through another controller meanwhile
            await self._forget(call_id)

    @staticmethod
    async def _delete_quietly(engine: EngineClient, conference_id: str) -> None:
        with contextlib.suppress(EngineError):
            await engine.delete_conference(conference_id)

    async def _conference_missing(self, call_id: str) -> bool:
        """The engine answers, but not for this call's conference: either the call was ended
        through another controller (the registry forgets it first), or the engine restarted and
        lost it. False when that cannot be told yet (the registry does not answer)."""
        try:
            still_there = await self.registry.get(call_id) is not None
        except Exception as exc:
            log.warning("call %s: registry unreachable (%r)", call_id, exc)
            return False
        if still_there:
            log.error("call %s: its engine no longer has the conference (restarted?)", call_id)
            await self._engine_failed(call_id)
        else:
            await self._forget(call_id)
        return True

    def _publish_digits(self, call_id: str, leg: dict, seen: dict[str, int]) -> None:
        """One `dtmf` event per new RFC 4733 digit the engine decoded on this leg."""
        dtmf = leg.get("dtmf") or {}
        total = dtmf.get("total", 0)
        new = total - seen.get(leg["id"], 0)
        seen[leg["id"]] = total
        if new > 0:
            for key in dtmf.get("digits", "")[-new:]:
                self.events.publish(call_id, "dtmf", {"participant_id": leg["id"], "digit": key})

    def _stop_monitoring(self, call_id: str) -> None:
        self._monitors.pop(call_id, None)
        self._drop_local(call_id)
        self._samples.pop(call_id, None)
        self._recording_seen.pop(call_id, None)

    async def _forget(self, call_id: str) -> None:
        """The call ended elsewhere: end its event streams here."""
        self._stop_monitoring(call_id)
        self.events.publish(call_id, "call_ended", {"reason": "ended_elsewhere"})
        self.events.close(call_id)
        log.info("call %s ended through another controller", call_id)

    async def _release(self, call_id: str) -> None:
        """Another controller claimed the call (this one's lease ran out, e.g. its loop stalled
        or Redis was out of reach): it monitors the call now."""
        self._stop_monitoring(call_id)
        log.warning("call %s: taken over by another controller; no longer monitored here", call_id)

    # --------------------------------------------------------------------------------- failover
    async def _supervise(self) -> None:
        """Keep this controller's lease; adopt calls whose controller's lease ran out."""
        period = self.settings.controller_lease_s / 3
        while True:
            try:
                await self.registry.heartbeat(self.instance, self.settings.controller_lease_s)
                await self.adopt_orphans()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis out of reach: media goes on; try again
                log.warning("failover: registry unreachable (%r)", exc)
            await asyncio.sleep(period)

    async def adopt_orphans(self) -> list[str]:
        """Claim and monitor every call on an engine known here whose controller is not alive
        (and any call of ours nobody monitors); returns the calls adopted."""
        unwatched = [i for i in await self.registry.call_ids() if i not in self._monitors]
        owners = await self.registry.owners(unwatched)
        candidates = {call_id: controller for call_id, (controller, engine) in owners.items()
                      if engine in self.engines}
        others = {c for c in candidates.values() if c and c != self.instance}
        alive = await self.registry.alive(others) if others else set()
        adopted = []
        for call_id, controller in candidates.items():
            if call_id in self._monitors or controller in alive:
                continue
            if controller == self.instance or await self.registry.claim(call_id, controller,
                                                                        self.instance):
                await self._adopt(call_id, controller)
                adopted.append(call_id)
        return adopted

    async def _adopt(self, call_id: str, previous: str | None) -> None:
        """Monitor the call from now on. The dead controller's bots play and its recording goes
        on in the engine; its PSTN participants are removed (their SIP dialogs died with it)."""
        self._samples.setdefault(call_id, {})
        self._monitors[call_id] = asyncio.get_running_loop().create_task(self._monitor(call_id))
        log.warning("call %s adopted from controller %s", call_id, previous)
        try:
            await self._remove_dead_local_parts(call_id)
        finally:
            self.calls_adopted += 1   # counted once whole: a reader of the count sees them gone

    async def _remove_dead_local_parts(self, call_id: str) -> None:
        call = await self.registry.get(call_id)
        if call is None:
            return  # ended meanwhile: the monitor forgets it
        orphans = [p for p in call["participants"].values() if p["kind"] in LOCAL_KINDS
                   and p.get("controller") != self.instance]
        owners = {p.get("controller") for p in orphans} - {None}
        alive = await self.registry.alive(owners) if owners else set()
        for participant in orphans:
            if participant.get("controller") in alive:
                continue  # held by a third controller, still running
            with contextlib.suppress(ApiError):
                await self.remove_participant(None, call_id, participant["id"], CONTROLLER_FAILED)

    def stats(self) -> dict:
        return {"calls_created": self.calls_created, "calls_ended": self.calls_ended,
                "calls_by_mode": dict(self.calls_by_mode),
                "calls_ended_by_reason": dict(self.calls_ended_by_reason),
                "call_failures": dict(self.call_failures),
                "participants_added": {f"{kind}": n for kind, n in self.participants_added.items()},
                "participant_failures": dict(self.participant_failures),
                "calls_local": len(self._monitors), "calls_adopted": self.calls_adopted,
                "calls_engine_failed": self.calls_engine_failed, **self.direct.stats(),
                "events_published": self.events.published, "events_dropped": self.events.dropped,
                "outbox": self.outbox.stats()}


async def cancel_and_wait(task: asyncio.Task, timeout_s: float = 2.0) -> None:
    """Cancel `task` and wait for it to end, cancelling again should something below swallow the
    cancellation (redis-py's asyncio client can, when it lands mid-command), for at most
    `timeout_s`: a shutdown must not hang on a task that will not die."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not task.done() and loop.time() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if task.done() and not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved


def _codec_of(answer_sdp: str) -> str | None:
    """The codec an engine answer chose (its first rtpmap)."""
    for line in answer_sdp.splitlines():
        if line.startswith("a=rtpmap:"):
            _, _, encoding = line.partition(" ")
            name = encoding.split("/", 1)[0].strip()
            if not name:
                continue  # a malformed rtpmap names nothing
            return "opus" if name.lower() == "opus" else name.upper()
    return "PCMU" if " 0" in answer_sdp else None


def _parts_of(conference: dict | None) -> dict[str, dict]:
    """The engine's stats of each leg and player of a conference, by id (participant id)."""
    conference = conference or {}
    return {part["id"]: part for part in [*conference.get("legs", []),
                                          *conference.get("players", [])]}


def _track_view(track: dict, participants: dict) -> dict:
    """A track as the controller lists it: by participant id (a leg's or a bot's id is the
    participant's), with its file name for serving it."""
    participant = participants.get(track["id"], {})
    return {"participant_id": track["id"], "track_id": track["id"],
            "label": track.get("label") or participant.get("label"),
            "kind": participant.get("kind") or ("bot" if track.get("kind") == "player" else "voip"),
            "offset_s": track.get("offset_s"), "duration_s": track.get("duration_s"),
            "file": track.get("file")}


def _leg_summary(leg: dict | None) -> dict | None:
    """The engine's per-leg stats a client wants to see (for a bot: its player's)."""
    if leg is None:
        return None
    if "frames_played" in leg:
        return {"state": leg.get("state"), "muted": leg.get("muted"),
                "seconds_played": leg.get("seconds_played"), "source": leg.get("source")}
    receive = leg.get("receive") or {}
    rtcp = leg.get("rtcp") or {}
    jitter_buffer_ms = (leg.get("jitter_buffer") or {}).get("target_delay_ms")
    loss = max(cdr._loss_percent(leg))  # uplink (engine), downlink (the client's RTCP)
    quality = emodel.quality(leg.get("codec") or "unknown", loss, rtcp.get("rtt_ms"),
                             float(jitter_buffer_ms or 0.0))
    webrtc = leg.get("webrtc")
    return {
        "codec": leg.get("codec"), "srtp": leg.get("srtp"), "muted": leg.get("muted"),
        "talking": leg.get("talking"), "level": leg.get("level"),
        "packets_in": leg.get("packets_in"), "packets_out": leg.get("packets_out"),
        "bytes_in": leg.get("bytes_in"), "bytes_out": leg.get("bytes_out"),
        "jitter_ms": receive.get("jitter_ms"), "loss_percent": receive.get("loss_percent"),
        "rtt_ms": rtcp.get("rtt_ms"), "drops": leg.get("drops"),
        "jitter_buffer_ms": jitter_buffer_ms,
        "mos": quality.get("mos"), "r_factor": quality.get("r_factor"),
        "transport": leg.get("kind"),
        "webrtc_state": webrtc.get("state") if webrtc else None,
    }
