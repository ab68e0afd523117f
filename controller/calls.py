"""Calls: the state machine between the REST API, the call registry and the media engines.

A call is one engine conference (its id is the call id) on the engine chosen at creation. Media is
anchored on the engine from the first participant, so a 1:1 call becoming a group call (a third
participant or a bot) only adds a leg: the first two legs are not touched.

What lives only in this controller's process: bots and the recorder (real RTP clients on this
host), and the call monitor that polls the engine for speakers and jitter. With a shared Redis
registry any controller can serve any call's REST requests; those local parts stay with the
controller that created them.

Failures (docs/failover.md): an engine that fails ENGINE_FAILURE_POLLS monitor polls in a row (or
answers that it lost the conference) is dead for the call: its legs' and the call's CDRs are written
from what the monitor sampled, with end reason `engine_failed`, and the call ends. With Redis, each
controller holds a lease (a key refreshed every third of CONTROLLER_LEASE_S); a controller whose
lease ran out is taken for dead, and a live one claims each of its calls (compare-and-set on the
call's `controller` field), monitors it from then on, and removes the dead one's bots and
recorder, whose RTP clients died with it. Media never stops: it flows between the clients and
the engine.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from pathlib import Path

from controller import cdr, media
from controller.engine_client import EngineClient
from controller.errors import ApiError
from controller.events import EventHub
from controller.outbox import Outbox
from controller.registry import CallRegistry
from controller.salvage import SalvageError, salvage_wav
from controller.settings import ControllerSettings
from controller.store import Store, StoreUnavailable
from controller.tokens import Principal
from mixer.engine.engine import EngineError

log = logging.getLogger("voicemix.controller")

ONE_TO_ONE, GROUP = "one_to_one", "group"
LOCAL_KINDS = ("bot", "recorder")


ENGINE_FAILED = "engine_failed"
CONTROLLER_FAILED = "controller_failed"


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
        self.instance = secrets.token_hex(6)  # this controller, for calls' local parts
        # CDRs and finished recordings: committed before the API answers, or (store down)
        # queued on disk and retried
        self.outbox = Outbox(store, settings.data_dir / "outbox", self.instance,
                             settings.outbox_retry_s)
        self._local: dict[str, dict[str, media.SimulatedParticipant]] = {}  # call -> pid -> client
        self._samples: dict[str, dict[str, cdr.LegSamples]] = {}
        self._monitors: dict[str, asyncio.Task] = {}
        self._supervisor: asyncio.Task | None = None
        self._cleanups: set[asyncio.Task] = set()  # best-effort deletes on failed engines
        self.calls_created = 0
        self.calls_ended = 0
        self.calls_adopted = 0
        self.calls_engine_failed = 0

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
        """End every call this controller monitors (their bots and recorders die with it)."""
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

    async def _place(self) -> EngineClient:
        """The engine with the fewest legs (the only one, without asking, when there is one)."""
        if len(self.engines) == 1:
            return next(iter(self.engines.values()))

        async def load(engine: EngineClient) -> tuple[int, EngineClient] | None:
            try:
                return (await engine.stats())["legs"], engine
            except EngineError:
                return None
        loads = [x for x in await asyncio.gather(*map(load, self.engines.values())) if x]
        if not loads:
            raise ApiError(503, "engine_unavailable", "no engine answers")
        return min(loads, key=lambda x: x[0])[1]

    # ------------------------------------------------------------------------------------- calls
    async def create_call(self, principal: Principal, mode: str, expected: int | None,
                          invite: list[str]) -> dict:
        if principal.identity is None:
            raise ApiError(403, "identity_required", "calls are made by identities: use a user token")
        engine = await self._place()
        call_id = secrets.token_hex(8)
        chosen = mode
        if mode == "auto":
            chosen = "sfu" if (expected or 0) > self.settings.auto_sfu_threshold else "mcu"
        try:
            created = await engine.create_conference(chosen, call_id)
        except EngineError as exc:
            if mode != "auto" or exc.code != "unsupported_mode":
                raise _engine_error(exc) from None
            chosen = "mcu"  # this engine has no SFU: auto falls back to mixing
            try:
                created = await engine.create_conference(chosen, call_id)
            except EngineError as exc2:
                raise _engine_error(exc2) from None
        call = {"id": call_id, "owner": principal.identity, "mode": created["mode"],
                "requested_mode": mode, "engine": engine.name, "conference": created["id"],
                "created_at": time.time(), "type": ONE_TO_ONE, "controller": self.instance}
        invited = {i for i in invite if i != principal.identity}
        await self.registry.create(call, {principal.identity}, invited)
        self._local[call_id] = {}
        self._samples[call_id] = {}
        self._monitors[call_id] = asyncio.get_running_loop().create_task(self._monitor(call_id))
        self.calls_created += 1
        log.info("call %s created by %s (%s on %s)", call_id, principal.identity, call["mode"],
                 engine.name)
        return self.view(await self.registry.get(call_id))

    def view(self, call: dict, conference: dict | None = None) -> dict:
        legs = {leg["id"]: leg for leg in (conference or {}).get("legs", [])}
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
        }
        if conference is not None:
            speakers = conference.get("stats", {}).get("speakers", [])
            result["speakers"] = [s for s in speakers if s in call["participants"]]
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
        await self.registry.add_invited(call_id, set(identities) - call["members"])
        return self.view(await self.registry.get(call_id))

    async def end_call(self, principal: Principal | None, call_id: str, reason: str = "ended") -> None:
        """End the call: engine conference, local parts, CDRs. With reason `engine_failed` the
        engine is not asked (it is gone): the records come from what the monitor sampled."""
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
        legs = {leg["id"]: leg for leg in (conference or {}).get("legs", [])}
        records = []
        for participant in call["participants"].values():
            await self._close_local(call, participant["id"])
            records.append(self._leg_record(call, participant, legs.get(participant["id"], {}),
                                            ended_at, reason))
            if reason == ENGINE_FAILED:  # the leg failed, not left: say so to each listener
                self.events.publish(call_id, "participant_left",
                                    {"participant_id": participant["id"], "reason": reason})
        await self.outbox.call_ended(call, records, ended_at, reason)
        self._local.pop(call_id, None)
        self._samples.pop(call_id, None)
        self.events.publish(call_id, "call_ended", {"reason": reason})
        self.events.close(call_id)
        self.calls_ended += 1
        log.info("call %s ended (%s)", call_id, reason)

    # ------------------------------------------------------------------------------ participants
    async def add_participant(self, principal: Principal, call_id: str, body: dict) -> dict:
        kind = body.get("kind") or ("voip" if body.get("sdp") is not None else None)
        call = await self.access(principal, call_id, allow_invited=(kind == "voip"))
        if kind == "pstn":
            raise ApiError(501, "not_implemented", "PSTN participants are not built yet")
        if len(call["participants"]) >= self.settings.max_participants_per_call:
            raise ApiError(409, "call_full", "the call has its maximum of participants")
        if kind == "voip":
            if principal.identity is None:
                raise ApiError(403, "identity_required", "only identities join by SDP offer")
            return await self._join(call, principal.identity, body["sdp"], body.get("label"))
        if kind == "bot":
            return await self._add_bot(call, principal, body)
        raise ApiError(422, "bad_field", "a participant needs 'sdp', or 'kind' of bot or pstn")

    async def _join(self, call: dict, identity: str, sdp: str, label: str | None) -> dict:
        try:
            answer = await self._engine(call).add_leg(call["conference"], sdp, label or identity)
        except EngineError as exc:
            raise _engine_error(exc) from None
        participant = {"id": answer["id"], "kind": "voip", "identity": identity,
                       "label": label or identity, "muted": False, "joined_at": time.time(),
                       "codec": _codec_of(answer["sdp"])}
        await self.registry.add_member(call["id"], identity)
        await self._admit(call, participant)
        return {"id": answer["id"], "sdp": answer["sdp"]}

    async def _add_bot(self, call: dict, principal: Principal, body: dict) -> dict:
        play = body.get("play") or "tone:440"
        codec = body.get("codec") or "opus"
        try:
            freq = media.parse_tone(play)
            if freq is not None:
                signal = media.ToneSignal(freq, self.settings.bot_max_seconds)
            else:
                recording = await self.store.get_recording(play)
                if recording is None or not self._may_read(principal, recording):
                    raise ApiError(404, "no_such_recording", f"no recording {play}")
                if recording["ended_at"] is None:
                    raise ApiError(409, "recording_active", "that recording is still being made")
                signal = await asyncio.to_thread(media.read_recording, Path(recording["path"]))
                freq = 0.0
        except media.PlayError as exc:
            raise ApiError(422, "bad_play", str(exc)) from None
        label = body.get("label") or f"bot:{play}"
        bot = media.BotParticipant(label, freq, signal, codec=codec)
        participant = {"kind": "bot", "identity": None, "added_by": principal.identity,
                       "label": label, "play": play, "muted": False, "codec": codec}
        answer = await self._attach(call, bot, participant)
        bot.start()
        return {"id": answer}

    async def _attach(self, call: dict, client: media.SimulatedParticipant, participant: dict) -> str:
        """Join a local RTP client (bot or recorder) to the call's conference."""
        offer = await client.offer()
        try:
            answer = await self._engine(call).add_leg(call["conference"], offer, participant["label"])
        except EngineError as exc:
            client.close()
            raise _engine_error(exc) from None
        client.accept(answer["sdp"])
        participant = {"id": answer["id"], **participant, "joined_at": time.time(),
                       "controller": self.instance}
        await self._admit(call, participant)
        client.attached_at = time.monotonic()  # the monitor judges only clients older than its read
        self._local.setdefault(call["id"], {})[answer["id"]] = client
        return answer["id"]

    async def _admit(self, call: dict, participant: dict) -> None:
        await self.registry.put_participant(call["id"], participant)
        self.events.publish(call["id"], "participant_joined",
                            {"participant": {**participant, "joined_at": cdr.iso(participant["joined_at"])}})
        fresh = await self.registry.get(call["id"])
        if fresh is None:
            return
        talkers = [p for p in fresh["participants"].values() if p["kind"] != "recorder"]
        becomes_group = len(talkers) >= 3 or participant["kind"] == "bot"
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
            try:
                await self._engine(call).update_leg(call["conference"], participant_id, muted)
            except EngineError as exc:
                raise _engine_error(exc) from None
            participant["muted"] = muted
            await self.registry.put_participant(call_id, participant)
            self.events.publish(call_id, "participant_updated",
                                {"participant_id": participant_id, "muted": muted})
        return {**participant, "joined_at": cdr.iso(participant["joined_at"])}

    async def remove_participant(self, principal: Principal | None, call_id: str,
                                 participant_id: str, reason: str = "removed") -> None:
        call = await self.access(principal, call_id)
        participant = await self.registry.remove_participant(call_id, participant_id)
        if participant is None:
            raise ApiError(404, "no_such_participant", f"no participant {participant_id}")
        engine = self._engine(call)
        leg = {}
        with contextlib.suppress(EngineError):
            conference = await engine.get_conference(call["conference"])
            leg = next((x for x in conference["legs"] if x["id"] == participant_id), {})
        with contextlib.suppress(EngineError):
            await engine.remove_leg(call["conference"], participant_id)
        await self._close_local(call, participant_id)
        if participant["kind"] == "recorder":
            await self.registry.clear(call_id, "recording")
        record = self._leg_record(call, participant, leg, time.time(), reason)
        await self.outbox.cdrs([record])
        self.events.publish(call_id, "participant_left",
                            {"participant_id": participant_id, "reason": reason})

    def _leg_record(self, call: dict, participant: dict, leg: dict, ended_at: float,
                    reason: str) -> dict:
        samples = self._samples.get(call["id"], {}).pop(participant["id"], cdr.LegSamples())
        return cdr.leg_record(call, participant, leg, samples, ended_at, reason)

    async def _close_local(self, call: dict, participant_id: str) -> None:
        client = self._local.get(call["id"], {}).pop(participant_id, None)
        if client is None:
            return
        if isinstance(client, media.Recorder):
            duration = await client.finish()
            recording_id = client.name
            await self.outbox.recording_finished(recording_id, sorted(call["members"]),
                                                 time.time(), duration)
            self.events.publish(call["id"], "recording_stopped",
                                {"recording_id": recording_id, "duration_s": round(duration, 3)})
        else:
            client.close()

    # -------------------------------------------------------------------------------- recording
    async def recording(self, principal: Principal, call_id: str, action: str) -> dict:
        call = await self.access(principal, call_id)
        current = call.get("recording")
        if action == "start":
            if current:
                raise ApiError(409, "recording_active", f"call {call_id} is being recorded")
            recording_id = secrets.token_hex(8)
            path = self.settings.recordings_dir / f"{recording_id}.wav"
            recorder = media.Recorder(recording_id, path)
            if not await self.registry.set_if_absent(call_id, "recording", recording_id):
                raise ApiError(409, "recording_active", f"call {call_id} is being recorded")
            try:
                # indexed before any audio is written: a store that is down refuses the start
                # (503), instead of leaving a file nobody can find
                await self.store.add_recording(recording_id, call_id, str(path),
                                               sorted(call["members"]), time.time())
                recorder.begin()
                await self._attach(call, recorder, {"kind": "recorder", "identity": None,
                                                    "label": "recorder", "muted": True,
                                                    "recording_id": recording_id,
                                                    "codec": recorder.codec})
            except BaseException as exc:
                await self.registry.clear(call_id, "recording")
                duration = await recorder.finish()
                if not isinstance(exc, StoreUnavailable):
                    with contextlib.suppress(StoreUnavailable):  # indexed, never attached
                        await self.outbox.recording_finished(recording_id, None, time.time(),
                                                             duration)
                raise
            self.events.publish(call_id, "recording_started", {"recording_id": recording_id})
            return {"id": recording_id, "state": "recording"}
        if not current:
            raise ApiError(409, "not_recording", f"call {call_id} is not being recorded")
        recorder_pid = next((p["id"] for p in call["participants"].values()
                             if p.get("recording_id") == current), None)
        if recorder_pid is not None:
            with contextlib.suppress(ApiError):
                await self.remove_participant(None, call_id, recorder_pid, "recording_stopped")
        await self.registry.clear(call_id, "recording")
        try:
            recording = await self.store.get_recording(current)
        except StoreUnavailable:  # stopped all the same; its index row is queued
            recording = None
        return {"id": current, "state": "stopped",
                "duration_s": recording["duration_s"] if recording else None}

    @staticmethod
    def _may_read(principal: Principal, recording: dict) -> bool:
        return principal.is_admin or principal.identity in recording["members"]

    async def recording_file(self, principal: Principal, recording_id: str) -> Path:
        recording = await self.store.get_recording(recording_id)
        if recording is None:
            raise ApiError(404, "no_such_recording", f"no recording {recording_id}")
        if not self._may_read(principal, recording):
            raise ApiError(403, "not_a_member", "this recording is not yours")
        if recording["ended_at"] is None:
            raise ApiError(409, "recording_active", "the recording is still being made")
        path = Path(recording["path"])
        if not path.is_file():  # indexed in the shared store, written on another host
            raise ApiError(404, "recording_file_elsewhere",
                           "the recording's file is not on this controller's host: fetch it "
                           "through the controller that recorded it")
        return path

    # ---------------------------------------------------------------------------------- monitor
    async def _monitor(self, call_id: str) -> None:
        """Poll the engine: jitter samples for CDRs; speaker changes, dominant speaker and DTMF
        digits for events; and whether the engine is still there."""
        speakers: list[str] = []
        dominant: str | None = None
        digits_seen: dict[str, int] | None = None  # leg -> digits published (in the registry)
        failed_polls = 0
        while True:
            await asyncio.sleep(self.settings.monitor_interval_s)
            read_at = time.monotonic()
            try:
                call = await self.registry.get(call_id)
            except Exception as exc:  # the registry (Redis) unreachable: media goes on; retry
                log.warning("call %s: registry unreachable (%r)", call_id, exc)
                continue
            if call is None:  # ended through another controller: let go of our local parts
                await self._forget(call_id)
                return
            if call.get("controller") != self.instance:  # taken over: we were taken for dead
                await self._release(call_id)
                return
            if digits_seen is None:  # an adopted call: digits its last monitor published stay old
                digits_seen = {k: int(v) for k, v in (call.get("dtmf_seen") or {}).items()}
            # bots or a recorder of ours removed through another controller: stop them here
            for participant_id, client in list(self._local.get(call_id, {}).items()):
                if participant_id not in call["participants"] and client.attached_at < read_at:
                    await self._close_local(call, participant_id)
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
            samples = self._samples.setdefault(call_id, {})
            talking = []
            digits_before = dict(digits_seen)
            for leg in conference["legs"]:
                samples.setdefault(leg["id"], cdr.LegSamples()).add(leg)
                participant = call["participants"].get(leg["id"])
                # an MCU says who is mixed ("talking"), an SFU who is forwarded
                if participant and participant["kind"] != "recorder" and (
                        leg.get("talking") or leg.get("forwarded")):
                    talking.append((leg.get("level", 127), leg["id"]))
                self._publish_digits(call_id, leg, digits_seen)
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

    async def _engine_failed(self, call_id: str) -> None:
        """The engine stopped answering for this call: end it with what was sampled so far."""
        log.error("call %s: engine failed, ending the call", call_id)
        try:
            await self.end_call(None, call_id, ENGINE_FAILED)
        except ApiError:  # ended through another controller meanwhile
            await self._forget(call_id)
            return
        self.calls_engine_failed += 1

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

    async def _drop_local(self, call_id: str) -> None:
        """Stop monitoring the call and stop its bots and recorders on this host."""
        self._monitors.pop(call_id, None)
        clients = self._local.pop(call_id, {})
        for participant_id, client in clients.items():
            if isinstance(client, media.Recorder):
                duration = await client.finish()  # members as recorded at its start
                await self.outbox.recording_finished(client.name, None, time.time(), duration)
            else:
                client.close()
        self._samples.pop(call_id, None)

    async def _forget(self, call_id: str) -> None:
        """The call ended elsewhere: stop its bots, finish its recordings, end its streams."""
        await self._drop_local(call_id)
        self.events.publish(call_id, "call_ended", {"reason": "ended_elsewhere"})
        self.events.close(call_id)
        log.info("call %s ended through another controller", call_id)

    async def _release(self, call_id: str) -> None:
        """Another controller claimed the call (this one's lease ran out, e.g. its loop stalled
        or Redis was out of reach): it monitors the call now and removes our bots' legs."""
        await self._drop_local(call_id)
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
        """Monitor the call from now on; remove the local parts (bots, recorder) of controllers
        that are gone: their RTP clients died with them."""
        self._local.setdefault(call_id, {})
        self._samples.setdefault(call_id, {})
        self._monitors[call_id] = asyncio.get_running_loop().create_task(self._monitor(call_id))
        log.warning("call %s adopted from controller %s", call_id, previous)
        try:
            await self._remove_dead_local_parts(call_id)
        finally:
            # counted once the adoption is whole: a reader that sees the count also sees the
            # dead controller's legs gone and its recording finished
            self.calls_adopted += 1

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
                continue  # a bot added through a third controller, still running there
            # as with a live recorder, the recording is finished before its leg leaves
            if participant["kind"] == "recorder" and participant.get("recording_id"):
                await self._salvage_recording(call, participant["recording_id"])
            with contextlib.suppress(ApiError):
                await self.remove_participant(None, call_id, participant["id"], CONTROLLER_FAILED)

    async def _salvage_recording(self, call: dict, recording_id: str) -> None:
        """Finish the index row of a recording whose recorder died, with the file made whole."""
        recording = await self.store.get_recording(recording_id)
        if recording is None or recording["ended_at"] is not None:
            return
        try:
            duration = await asyncio.to_thread(salvage_wav, Path(recording["path"]))
        except (OSError, SalvageError) as exc:
            log.warning("recording %s: could not salvage %s (%s)", recording_id,
                        recording["path"], exc)
            duration = 0.0
        await self.outbox.recording_finished(recording_id, sorted(call["members"]), time.time(),
                                             duration)
        self.events.publish(call["id"], "recording_stopped",
                            {"recording_id": recording_id, "duration_s": round(duration, 3),
                             "reason": CONTROLLER_FAILED})

    def stats(self) -> dict:
        return {"calls_created": self.calls_created, "calls_ended": self.calls_ended,
                "calls_local": len(self._monitors), "calls_adopted": self.calls_adopted,
                "calls_engine_failed": self.calls_engine_failed,
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


def _leg_summary(leg: dict | None) -> dict | None:
    """The engine's per-leg stats a client wants to see."""
    if leg is None:
        return None
    receive = leg.get("receive") or {}
    rtcp = leg.get("rtcp") or {}
    return {
        "codec": leg.get("codec"), "srtp": leg.get("srtp"), "muted": leg.get("muted"),
        "talking": leg.get("talking"), "level": leg.get("level"),
        "packets_in": leg.get("packets_in"), "packets_out": leg.get("packets_out"),
        "bytes_in": leg.get("bytes_in"), "bytes_out": leg.get("bytes_out"),
        "jitter_ms": receive.get("jitter_ms"), "loss_percent": receive.get("loss_percent"),
        "rtt_ms": rtcp.get("rtt_ms"), "drops": leg.get("drops"),
        "jitter_buffer_ms": (leg.get("jitter_buffer") or {}).get("target_delay_ms"),
    }
