"""The PSTN side of the controller: a SIP user agent facing the carrier, and the B2BUA logic that
puts each SIP call into the engine as a leg of a call.

Inbound (an INVITE from the trunk): the source must be a trunk address (403); the called number
must be one of the resource's numbers (404); the caller is screened (spam/robocall rules and
STIR/SHAKEN, 603 or 503 when refused); then the number's route decides: join a call (the engine
answers the carrier's offer and the dialog is answered with it), ring a user (180, an
`incoming_call` event on the user's stream; answered when they join the call, 480 when they do
not within the ring timeout, 603 when they end it), or run a phone tree.

Outbound (`POST /v1/calls/{id}/participants {"kind": "pstn", "number"}`): the engine offers a
G.711 leg, the INVITE goes to the trunk with that offer (digest credentials when challenged),
`participant_ringing` on 180/183 (early media plays muted), `participant_joined` on answer; a call
that fails leaves with its reason (busy, no_answer, rejected, cancelled, failed) and SIP code.

Either side may hang up: a BYE from the carrier removes only that participant; removing the
participant (or ending the call) sends BYE, or CANCEL while it rings.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import time

from controller import cdr
from controller.calls import CallService, _codec_of, _engine_error
from controller.errors import ApiError
from controller.events import EventHub, user_stream
from controller.pstn.ivr import PhoneTree
from controller.pstn.numbers import NumberBook, RouteError, is_e164, normalize, validate_route
from controller.pstn.screening import CallScreen, Screening
from controller.pstn.sipleg import SipLeg
from controller.pstn.stir import StirVerifier
from controller.pstn.store import PstnStore
from controller.pstn.trunk import LOOPBACK, Trunk, TrunkAccess, TrunkMonitor
from controller.settings import ControllerSettings
from controller.sip import (
    InviteSession, SipApplication, SipError, SipStatusError, SipTimeout, SipTimers,
    SipTransportError, UaConfig, UserAgent,
)
from controller.sip.uri import SipUri, parse_name_address
from controller.store import Store
from controller.tokens import Principal
from mixer.engine.client import EngineError

log = logging.getLogger("voicemix.pstn")

BUSY = (486, 600)
NO_ANSWER = (408, 480)


def outbound_reason(status: int, cancelled_by_us: bool) -> str:
    if status in BUSY:
        return "busy"
    if status in NO_ANSWER or (status == 487 and cancelled_by_us):
        return "no_answer"
    return "rejected"


class PstnService(SipApplication):
    def __init__(self, settings: ControllerSettings, calls: CallService, store: Store,
                 events: EventHub, tls_context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.calls = calls
        self.store = store
        self.events = events
        self.pstn_store = PstnStore(store)
        self.numbers = NumberBook(self.pstn_store)
        self.screen = CallScreen(
            self.pstn_store, caller_per_minute=settings.pstn_caller_rate_per_minute,
            trunk_per_second=settings.pstn_trunk_rate_per_second,
            threshold=settings.pstn_reputation_threshold,
            window_h=settings.pstn_reputation_window_h, odd_hours=settings.pstn_odd_hours,
            utc_offset_h=settings.pstn_utc_offset_h)
        self.stir = StirVerifier(settings.stir_certs_dir, settings.stir_max_age_s)
        self.trunk = (Trunk.parse(settings.sip_trunk, settings.sip_trunk_username,
                                  settings.sip_trunk_password, settings.sip_domain)
                      if settings.sip_trunk else None)
        host, _, port = (settings.sip_listen or "127.0.0.1:5060").rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        transports = tuple(t.lower() for t in settings.sip_transports)
        self.ua = UserAgent(UaConfig(
            host=host, port=int(port), transports=transports,
            public_host=settings.sip_public_address, tls_context=tls_context,
            timers=SipTimers(t1=settings.sip_t1_ms / 1000.0),
            max_message_bytes=settings.sip_max_message_bytes,
            invite_rate=settings.sip_invite_rate, invite_burst=2 * settings.sip_invite_rate,
            source_rate=settings.sip_source_rate, source_burst=2 * settings.sip_source_rate), self)
        self.access = TrunkAccess([])
        self.monitor: TrunkMonitor | None = None
        self.legs: dict[str, SipLeg] = {}                        # leg id -> SIP leg
        self._ringing: dict[str, dict] = {}                      # call id -> ring state
        self.counters = {"inbound": 0, "forbidden": 0, "unknown_number": 0, "screened": 0,
                         "answered_inbound": 0, "outbound": 0, "answered_outbound": 0,
                         "failed_outbound": 0, "info_digits": 0, "held": 0}

    # ------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self.pstn_store.open()
        await self.numbers.load()
        await self.screen.reload_lists()
        await self.ua.start()
        networks = list(self.settings.sip_trunk_addresses)
        if not networks:
            networks = list(LOOPBACK)
            if self.trunk is not None:
                with contextlib.suppress(OSError, SipError):
                    address = await self.ua.resolve(self.trunk.uri.host)
                    networks.append(f"{address}/{32 if ipaddress.ip_address(address).version == 4 else 128}")
        self.access = TrunkAccess(networks)
        if self.trunk is not None:
            self.monitor = TrunkMonitor(self.ua, self.trunk, self.settings.sip_options_interval_s)
            self.monitor.start()
        self.calls.pstn = self
        self.calls.observers.append(self)
        log.info("PSTN: SIP on %s; trunk %s; inbound allowed from %s", self.listening,
                 self.trunk.uri if self.trunk else "none", ", ".join(networks))

    @property
    def listening(self) -> str:
        return ", ".join(f"{name.lower()}:{t.local[0]}:{t.local[1]}"
                         for name, t in self.ua.transports.items())

    async def stop(self) -> None:
        if self.monitor is not None:
            await self.monitor.stop()
        pending = [t for t in self.ua._tasks if not t.done()]
        if pending:   # BYEs of the calls just ended go out before the transports close
            await asyncio.wait(pending, timeout=1.0)
        for leg in list(self.legs.values()):
            leg.closing = True
            with contextlib.suppress(SipError, OSError):
                await asyncio.wait_for(leg.session.bye("shutdown"), 1.0)
        await self.ua.stop()
        await self.pstn_store.flush()
        if self in self.calls.observers:
            self.calls.observers.remove(self)
        self.calls.pstn = None

    # ================================================================================ inbound
    def on_invite(self, session: InviteSession) -> None:
        self.ua.spawn(self._inbound(session))

    async def _inbound(self, session: InviteSession) -> None:
        started = time.time()
        self.counters["inbound"] += 1
        source = session.source[0] if session.source else ""
        if not self.access.allows(source):
            self.counters["forbidden"] += 1
            log.info("PSTN: INVITE from %s refused: not a trunk address", source)
            session.reject(403)
            return
        callee = self._called_number(session)
        caller = self._calling_number(session)
        number = await self.numbers.lookup(callee) if callee else None
        if number is None:
            self.counters["unknown_number"] += 1
            session.reject(404)
            return
        stir = self.stir.verify(session.invite.headers.lines("Identity"), caller, callee)
        screening = await self.screen.screen(caller, callee, source, stir, started)
        info = {"direction": "inbound", "caller": caller or "anonymous", "number": callee,
                "sip_call_id": session.call_id, "trunk": source,
                "screening": screening.to_json()}
        if screening.decision == "reject":
            self.counters["screened"] += 1
            extra = [("Retry-After", "30")] if screening.status == 503 else None
            session.reject(screening.status or 603, extra=extra)
            await self._record(info, started, None, "screened", screening.status, screening)
            log.info("PSTN: call %s -> %s refused (%s, score %d)", caller, callee,
                     screening.reason, screening.score)
            return
        route = number.route
        if "call" in route:
            await self._to_call(session, route["call"], info, started, screening)
        elif "user" in route:
            await self._ring_user(session, route["user"], info, started, screening)
        else:
            await self._to_ivr(session, route["ivr"], info, started, screening)

    @staticmethod
    def _called_number(session: InviteSession) -> str | None:
        uri = session.request_uri
        user = uri.user_unescaped if isinstance(uri, SipUri) else getattr(uri, "opaque", None)
        found = normalize(user)
        if found is None and isinstance(session.callee.uri, SipUri):
            found = normalize(session.callee.uri.user_unescaped)
        return found

    @staticmethod
    def _calling_number(session: InviteSession) -> str | None:
        """P-Asserted-Identity from the trunk (RFC 3325), else From; None when anonymous."""
        for value in session.invite.headers.values("P-Asserted-Identity"):
            with contextlib.suppress(SipError):
                uri = parse_name_address(value).uri
                user = uri.user_unescaped if isinstance(uri, SipUri) else getattr(uri, "opaque", "")
                found = normalize(user)
                if found:
                    return found
        uri = session.caller.uri
        return normalize(uri.user_unescaped) if isinstance(uri, SipUri) else None

    async def _engine_leg(self, session: InviteSession, engine, conference: str,
                          label: str) -> tuple[str, bytes, bool]:
        """(leg id, our SDP, late offer?): the engine answers the carrier's offer, or, for an
        INVITE without one (RFC 3261 13.2.1), offers; the answer then comes in the ACK."""
        if session.remote_sdp:
            answer = await engine.add_leg(conference, session.remote_sdp.decode("utf-8", "replace"), label)
            return answer["id"], answer["sdp"].encode(), False
        offer = await engine.offer_leg(conference, list(self.settings.sip_codecs), label)
        return offer["id"], offer["sdp"].encode(), True

    async def _answer_into(self, session: InviteSession, call: dict, info: dict, started: float,
                           screening: Screening, engine=None, conference: str | None = None) -> SipLeg | None:
        """Answer the session with a new engine leg in `call`'s conference and admit it."""
        engine = engine or self.calls._engine(call)
        conference = conference or call["conference"]
        label = info["caller"]
        try:
            leg_id, local_sdp, late = await self._engine_leg(session, engine, conference, label)
        except EngineError as exc:
            status = {488: 488, 400: 488, 409: 486, 404: 480}.get(exc.status, 503)
            session.reject(status, extra=[("Warning", f'399 voicemix "{exc.code}"')])
            await self._record(info, started, None, "engine_refused", status, screening)
            return None
        if session.is_terminated:   # cancelled while the engine answered
            with contextlib.suppress(EngineError):
                await engine.remove_leg(conference, leg_id)
            await self._record(info, started, None, "cancelled", 487, screening)
            return None
        leg = SipLeg(self, session, call, leg_id, "inbound", engine, conference)
        leg.history = {"info": info, "started": started, "screening": screening}
        self.legs[leg_id] = leg
        session.accept(local_sdp)
        leg.answered_at = time.time()
        participant = {"id": leg_id, "kind": "pstn", "identity": None, "label": label,
                       "muted": False, "joined_at": leg.answered_at,
                       "codec": None if late else _codec_of(local_sdp.decode()), "state": "answered",
                       "held": False, "pstn": info}
        await self.calls.admit_local(call, participant, leg)
        self.counters["answered_inbound"] += 1
        if late:
            self.ua.spawn(self._late_answer(leg))
        return leg

    async def _late_answer(self, leg: SipLeg) -> None:
        with contextlib.suppress(SipError):
            await asyncio.wait_for(leg.session.answered, self.ua.config.timers.b)
        if leg.session.is_terminated or not leg.session.remote_sdp:
            return
        try:
            await leg.engine.answer_leg(leg.conference, leg.leg_id, leg.session.remote_sdp.decode())
        except EngineError as exc:
            log.info("PSTN: the answer in the ACK of %s is unusable (%s): hanging up",
                     leg.session.call_id, exc)
            await leg.session.bye()

    async def _to_call(self, session: InviteSession, call_id: str, info: dict, started: float,
                       screening: Screening) -> None:
        call = await self.calls.registry.get(call_id)
        if call is None:
            session.reject(480, "The call this number joins has ended")
            await self._record(info, started, None, "call_gone", 480, screening)
            return
        await self._answer_into(session, call, info, started, screening)

    # ------------------------------------------------------------------------------ ring a user
    async def _ring_user(self, session: InviteSession, identity: str, info: dict, started: float,
                         screening: Screening, transfer_from: SipLeg | None = None) -> bool:
        """True when the user joined (and the caller is in the call with them)."""
        if not await self.store.identity_exists(identity):
            if transfer_from is None:
                session.reject(480)
                await self._record(info, started, None, "no_such_user", 480, screening)
            return False
        principal = Principal(identity, frozenset({"voip"}))
        call = await self.calls.create_call(principal, "mcu", None, [])
        call_id = call["id"]
        loop = asyncio.get_running_loop()
        state = {"identity": identity, "joined": loop.create_future(), "ended": loop.create_future(),
                 "session": session}
        self._ringing[call_id] = state
        if transfer_from is None:
            session.ring()
        channel = user_stream(identity)
        self.events.publish(channel, "incoming_call", {"call": call_id, "from": info["caller"],
                                                       "to": info["number"]})
        waiters = {state["joined"], state["ended"], asyncio.ensure_future(session.ended)}
        try:
            done, _ = await asyncio.wait(waiters, timeout=self.settings.sip_user_ring_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._ringing.pop(call_id, None)
        call = await self.calls.registry.get(call_id)
        if state["joined"] in done and not session.is_terminated and call is not None:
            if transfer_from is not None:
                await self._transfer_into_call(transfer_from, call)
            else:
                await self._answer_into(session, call, info, started, screening)
            self.events.publish(channel, "incoming_call_answered", {"call": call_id})
            return True
        if state["ended"] in done:
            reason, status = "declined", 603
        elif session.is_terminated:
            reason, status = "cancelled", 487
        else:
            reason, status = "no_answer", 480
        if transfer_from is None:
            session.reject(status)
        self.events.publish(channel, "incoming_call_ended", {"call": call_id, "reason": reason})
        with contextlib.suppress(ApiError):
            await self.calls.end_call(None, call_id, reason)
        if transfer_from is None:
            await self._record(info, started, None, reason, status, screening)
        return False

    async def participant_joined(self, call: dict, participant: dict) -> None:
        state = self._ringing.get(call["id"])
        if state is not None and participant.get("identity") == state["identity"] \
                and not state["joined"].done():
            state["joined"].set_result(participant["id"])

    async def call_ended(self, call_id: str, reason: str) -> None:
        state = self._ringing.get(call_id)
        if state is not None and not state["ended"].done():
            state["ended"].set_result(reason)

    # ---------------------------------------------------------------------------------- IVR
    async def _ivr_conference(self) -> tuple:
        """A conference of its own for a caller in a phone tree, on the least loaded engine that
        is not draining (the next one if it began draining since it was asked)."""
        candidates = await self.calls._place()
        for index, engine in enumerate(candidates):
            try:
                return engine, (await engine.create_conference("mcu"))["id"]
            except EngineError as exc:
                if exc.code != "draining" or index + 1 == len(candidates):
                    raise
        raise AssertionError("unreachable: _place returns at least one engine")

    async def _to_ivr(self, session: InviteSession, tree_json: dict, info: dict, started: float,
                      screening: Screening) -> None:
        from controller.pstn.ivr_runner import IvrRunner   # noqa: PLC0415 (the runner needs players)
        engine, conference = await self._ivr_conference()
        try:
            leg = await self._ivr_leg(session, engine, conference, info, started, screening)
        except BaseException:
            with contextlib.suppress(EngineError):
                await engine.delete_conference(conference)
            raise
        if leg is None:
            with contextlib.suppress(EngineError):
                await engine.delete_conference(conference)
            return
        runner = IvrRunner(self, leg, PhoneTree.parse(tree_json), engine, conference)
        await runner.run()

    async def _ivr_leg(self, session, engine, conference, info, started, screening) -> SipLeg | None:
        try:
            leg_id, local_sdp, late = await self._engine_leg(session, engine, conference, info["caller"])
        except EngineError as exc:
            session.reject(488 if exc.status in (400, 488) else 503)
            await self._record(info, started, None, "engine_refused", exc.status, screening)
            return None
        if session.is_terminated:
            await self._record(info, started, None, "cancelled", 487, screening)
            return None
        leg = SipLeg(self, session, None, leg_id, "inbound", engine, conference)
        leg.history = {"info": info, "started": started, "screening": screening}
        self.legs[leg_id] = leg
        session.accept(local_sdp)
        leg.answered_at = time.time()
        self.counters["answered_inbound"] += 1
        if late:
            self.ua.spawn(self._late_answer(leg))
        return leg

    async def transfer_to_call(self, leg: SipLeg, call_id: str) -> bool:
        """Move an IVR caller into a call: the engine moves the leg when both conferences are on
        one engine; across engines a re-INVITE points the carrier at a new leg (B2BUA)."""
        call = await self.calls.registry.get(call_id)
        if call is None:
            return False
        await self._transfer_into_call(leg, call)
        return True

    async def _transfer_into_call(self, leg: SipLeg, call: dict) -> None:
        engine = self.calls._engine(call)
        info = leg.history["info"]
        if engine is leg.engine:
            await engine.move_leg(leg.conference, leg.leg_id, call["conference"])
        else:
            offer = await engine.offer_leg(call["conference"], list(self.settings.sip_codecs), info["caller"])
            answer = await leg.session.reinvite(offer["sdp"].encode())
            await engine.answer_leg(call["conference"], offer["id"], answer.decode())
            with contextlib.suppress(EngineError):
                await leg.engine.remove_leg(leg.conference, leg.leg_id)
            self.legs.pop(leg.leg_id, None)
            leg.leg_id = offer["id"]
            self.legs[leg.leg_id] = leg
        old_conference = leg.conference
        old_engine = leg.engine
        leg.engine, leg.conference, leg.call_id = engine, call["conference"], call["id"]
        with contextlib.suppress(EngineError):
            await old_engine.delete_conference(old_conference)
        participant = {"id": leg.leg_id, "kind": "pstn", "identity": None, "label": info["caller"],
                       "muted": False, "joined_at": time.time(), "codec": None, "state": "answered",
                       "held": False, "pstn": info}
        with contextlib.suppress(EngineError):
            participant["codec"] = (await engine.get_leg(call["conference"], leg.leg_id)).get("codec")
        await self.calls.admit_local(call, participant, leg)

    async def transfer_to_user(self, leg: SipLeg, identity: str) -> bool:
        """Ring `identity` for an IVR caller (who stays in the IVR, hearing its hold tone, until
        they join); False if they do not."""
        return await self._ring_user(leg.session, identity, leg.history["info"],
                                     leg.history["started"], leg.history["screening"],
                                     transfer_from=leg)

    # =============================================================================== outbound
    async def dial(self, call: dict, principal: Principal, body: dict) -> dict:
        number = body.get("number")
        if not isinstance(number, str) or not is_e164(number):
            raise ApiError(422, "bad_number", "'number' must be E.164, e.g. +15550100199")
        if self.trunk is None:
            raise ApiError(503, "no_trunk", "no SIP trunk is configured (VOICEMIX_SIP_TRUNK)")
        caller_id = body.get("caller_id") or self.settings.sip_caller_id
        if body.get("caller_id"):
            if not is_e164(caller_id) or await self.numbers.lookup(caller_id) is None:
                raise ApiError(422, "bad_caller_id", "'caller_id' must be one of this resource's numbers")
        engine = self.calls._engine(call)
        try:
            offer = await engine.offer_leg(call["conference"], list(self.settings.sip_codecs), number)
        except EngineError as exc:
            raise _engine_error(exc) from None
        trunk = self.trunk
        try:
            address = await trunk.address(self.ua)
        except (SipError, OSError) as exc:
            with contextlib.suppress(EngineError):
                await engine.remove_leg(call["conference"], offer["id"])
            raise ApiError(503, "trunk_unreachable", f"cannot resolve the trunk: {exc}") from None
        user = caller_id or "anonymous"
        extra = [("P-Asserted-Identity", f"<sip:{caller_id}@{trunk.domain};user=phone>")] if caller_id \
            else [("Privacy", "id")]
        session = self.ua.invite(trunk.request_uri(number),
                                 from_=f"<sip:{user}@{trunk.domain}>",
                                 to=f"<sip:{number}@{trunk.domain};user=phone>",
                                 sdp=offer["sdp"].encode(), address=address,
                                 transport=trunk.transport, credentials=trunk.credentials, extra=extra)
        info = {"direction": "outbound", "number": number, "caller_id": caller_id,
                "sip_call_id": session.call_id, "trunk": f"{address[0]}:{address[1]}"}
        leg = SipLeg(self, session, call, offer["id"], "outbound", engine, call["conference"])
        leg.history = {"info": info, "started": time.time(), "screening": None}
        self.legs[offer["id"]] = leg
        participant = {"id": offer["id"], "kind": "pstn", "identity": None,
                       "added_by": principal.identity, "label": number, "muted": False,
                       "joined_at": time.time(), "codec": None, "state": "dialing", "held": False,
                       "pstn": info}
        await self.calls.admit_local(call, participant, leg, announce=False)
        self.counters["outbound"] += 1
        self.events.publish(call["id"], "participant_dialing",
                            {"participant_id": offer["id"], "number": number})
        self.ua.spawn(self._outbound(leg, call, participant))
        return {"id": offer["id"], "state": "dialing"}

    async def _outbound(self, leg: SipLeg, call: dict, participant: dict) -> None:
        session = leg.session
        early = {"applied": False, "ringing": False}

        def provisional(s: InviteSession, response) -> None:
            if response.status in (180, 183) and not early["ringing"]:
                early["ringing"] = True
                self.events.publish(call["id"], "participant_ringing",
                                    {"participant_id": leg.leg_id, "status": response.status})
            if response.body and not early["applied"]:
                early["applied"] = True
                self.ua.spawn(self._early_media(leg, response.body))
        session.on_provisional = provisional
        cancelled_by_timeout = False
        try:
            sdp = await asyncio.wait_for(asyncio.shield(session.answered), self.settings.sip_ring_timeout_s)
        except asyncio.TimeoutError:
            cancelled_by_timeout = True
            session.cancel()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(session.ended), 64 * self.ua.config.timers.t1)
            if session.state == "confirmed":   # answered just as we cancelled: it is BYE'd
                await self._fail_outbound(leg, "no_answer", None)
                return
            await self._fail_outbound(leg, "no_answer", session.end_status or 487)
            return
        except SipStatusError as exc:
            if leg.closing:
                return
            await self._fail_outbound(leg, outbound_reason(exc.status, cancelled_by_timeout), exc.status)
            return
        except SipTimeout:
            await self._fail_outbound(leg, "no_answer" if early["ringing"] else "failed", 408)
            return
        except SipTransportError:
            await self._fail_outbound(leg, "failed", 503)
            return
        if leg.closing:
            return
        try:
            if not early["applied"]:
                await leg.engine.answer_leg(leg.conference, leg.leg_id, sdp.decode("utf-8", "replace"))
            else:
                await leg.engine.update_leg(leg.conference, leg.leg_id, muted=False)
        except EngineError as exc:
            log.info("PSTN: the trunk's answer for %s is unusable (%s)", session.call_id, exc)
            leg.closing = True
            await session.bye()
            await self._fail_outbound(leg, "failed", 488)
            return
        leg.answered_at = time.time()
        self.counters["answered_outbound"] += 1
        codec = None
        with contextlib.suppress(EngineError):
            codec = (await leg.engine.get_leg(leg.conference, leg.leg_id)).get("codec")
        fresh = await self.calls.registry.get(call["id"])
        if fresh is None or leg.leg_id not in fresh["participants"]:
            return   # removed meanwhile
        answered = {**fresh["participants"][leg.leg_id], "state": "answered", "codec": codec,
                    "joined_at": leg.answered_at}
        await self.calls.admit_local(fresh, answered, leg)

    async def _early_media(self, leg: SipLeg, sdp: bytes) -> None:
        """A 183 with SDP: the carrier's ringback or announcements reach the leg, muted in the
        call until the answer (nobody in a group call wants to hear the ringing)."""
        try:
            await leg.engine.answer_leg(leg.conference, leg.leg_id, sdp.decode("utf-8", "replace"))
            await leg.engine.update_leg(leg.conference, leg.leg_id, muted=True)
        except EngineError as exc:
            log.info("PSTN: early media of %s unusable: %s", leg.session.call_id, exc)

    async def _fail_outbound(self, leg: SipLeg, reason: str, status: int | None) -> None:
        self.counters["failed_outbound"] += 1
        leg.closing = True
        call = await self.calls.registry.get(leg.call_id)
        if call is not None and leg.leg_id in call["participants"]:
            participant = call["participants"][leg.leg_id]
            participant["pstn"] = {**participant.get("pstn", {}), "sip_code": status}
            await self.calls.registry.put_participant(leg.call_id, participant)
            with contextlib.suppress(ApiError):
                await self.calls.remove_participant(None, leg.call_id, leg.leg_id, reason,
                                                    details={"sip_code": status})
        await self._finish(leg, reason, status)

    # ====================================================================== dialog follow-ups
    async def leg_ended(self, leg: SipLeg, reason: str, status: int | None) -> None:
        """The SIP side ended (BYE from the carrier, no ACK, ...): only this participant leaves."""
        if leg.call_id is not None:
            with contextlib.suppress(ApiError):
                await self.calls.remove_participant(None, leg.call_id, leg.leg_id, reason)
        else:   # an IVR caller: its conference goes with it
            with contextlib.suppress(EngineError):
                await leg.engine.delete_conference(leg.conference)
        await self._finish(leg, reason, status)

    def closed(self, leg: SipLeg) -> None:
        """CallService closed the leg (removed through the API, or the call ended)."""
        self.ua.spawn(self._finish(leg, "hangup", None))

    async def _finish(self, leg: SipLeg, reason: str, status: int | None) -> None:
        if self.legs.pop(leg.leg_id, None) is None:
            return
        history = getattr(leg, "history", None)
        if history is None:
            return
        duration = time.time() - leg.answered_at if leg.answered_at else None
        # a caller who was never in a call (a phone tree that ended there) gets its own record
        await self._record(history["info"], history["started"], duration, reason, status,
                           history["screening"], own_record=leg.call_id is None)

    async def set_hold(self, leg: SipLeg, held: bool) -> None:
        """The carrier put the call on hold (sendonly/inactive) or resumed it."""
        self.counters["held"] += held
        call = await self.calls.registry.get(leg.call_id) if leg.call_id else None
        participant = call["participants"].get(leg.leg_id) if call else None
        muted_by_user = bool(participant and participant.get("muted"))
        with contextlib.suppress(EngineError):   # the carrier's music on hold stays out of the call
            await leg.engine.update_leg(leg.conference, leg.leg_id, muted=held or muted_by_user)
        if participant is None:
            return
        participant["held"] = held
        await self.calls.registry.put_participant(leg.call_id, participant)
        self.events.publish(leg.call_id, "participant_updated",
                            {"participant_id": leg.leg_id, "held": held})

    def digit(self, leg: SipLeg, key: str) -> None:
        self.counters["info_digits"] += 1
        if leg.call_id is not None:
            self.events.publish(leg.call_id, "dtmf", {"participant_id": leg.leg_id, "digit": key,
                                                      "source": "sip_info"})
        if leg.on_digit is not None:
            leg.on_digit(key)

    # ============================================================================== records
    async def _record(self, info: dict, started: float, duration: float | None, reason: str,
                      status: int | None, screening: Screening | None,
                      own_record: bool = False) -> None:
        """The call's line in the history reputation reads, and, for a call that never became a
        participant (refused, unanswered, cancelled), its CDR."""
        inbound = info["direction"] == "inbound"
        caller = info.get("caller") if inbound else info.get("caller_id")
        if caller == "anonymous":
            caller = None
        callee = info.get("number")
        ended = time.time()
        with contextlib.suppress(Exception):
            await self.pstn_store.record_call(
                info["direction"], caller, callee, info.get("trunk"), started, duration,
                self.screen.local_hour(started),
                screening.decision if screening else "accept", reason, status)
        if (duration is None or own_record) and inbound:
            # keyed by the SIP Call-ID: one record per inbound SIP call (the store's CDR key)
            record = {"kind": "pstn", "call_id": f"sip:{info.get('sip_call_id')}",
                      "participant_id": None, "identity": None,
                      "members": [], "direction": "inbound", "caller": info.get("caller"),
                      "number": callee, "sip_call_id": info.get("sip_call_id"),
                      "started_at": cdr.iso(started), "ended_at": cdr.iso(ended),
                      "duration_s": round(duration or 0.0, 3), "end_reason": reason,
                      "sip_code": status, "ivr": info.get("ivr"),
                      "screening": screening.to_json() if screening else None,
                      "_started": started, "_ended": ended}
            with contextlib.suppress(Exception):   # through the outbox: kept while the store is down
                await self.calls.outbox.cdrs([record])

    # ================================================================================ the API
    async def add_number(self, number: str, route: object) -> dict:
        if not isinstance(number, str) or not is_e164(number):
            raise ApiError(422, "bad_number", "'number' must be E.164, e.g. +15550100199")
        try:
            canonical = validate_route(route)
        except RouteError as exc:
            raise ApiError(422, "bad_route", f"{exc.field}: {exc}") from None
        await self._check_route_targets(canonical)
        record = await self.numbers.add(number, canonical)
        if record is None:
            raise ApiError(409, "number_exists", f"{number} has a route already; DELETE it first")
        return record.to_json()

    async def _check_route_targets(self, route: dict) -> None:
        if "call" in route and await self.calls.registry.get(route["call"]) is None:
            raise ApiError(422, "bad_route", f"route.call: no call {route['call']}")
        if "user" in route and not await self.store.identity_exists(route["user"]):
            raise ApiError(422, "bad_route", f"route.user: no identity {route['user']}")
        if "ivr" in route:
            tree = PhoneTree.parse(route["ivr"])
            for node in tree.nodes.values():
                prompts = [node.prompt] if node.prompt else []
                for prompt in prompts:
                    if prompt.recording and await self.store.get_recording(prompt.recording) is None:
                        raise ApiError(422, "bad_route", f"route.ivr.{node.id}: no recording "
                                                         f"{prompt.recording}")
                if node.action == "transfer":
                    target = node.target
                    if "call" in target and await self.calls.registry.get(target["call"]) is None:
                        raise ApiError(422, "bad_route", f"route.ivr.{node.id}: no call {target['call']}")
                    if "user" in target and not await self.store.identity_exists(target["user"]):
                        raise ApiError(422, "bad_route", f"route.ivr.{node.id}: no identity {target['user']}")

    async def list_numbers(self) -> list[dict]:
        return [n.to_json() for n in await self.numbers.all()]

    async def get_number(self, number: str) -> dict:
        found = await self.numbers.lookup(number)
        if found is None:
            raise ApiError(404, "no_such_number", f"no number {number}")
        return found.to_json()

    async def delete_number(self, number: str) -> None:
        if not await self.numbers.remove(number):
            raise ApiError(404, "no_such_number", f"no number {number}")

    async def add_screening(self, list_name: str, pattern: str, reason: str | None) -> dict:
        if not (pattern == "anonymous" or is_e164(pattern)
                or (pattern.endswith("*") and (pattern == "*" or pattern[:-1] == "+"
                                               or is_e164(pattern[:-1])))):
            raise ApiError(422, "bad_pattern", "a pattern is an E.164 number, a prefix ending in '*' "
                                               "(e.g. +1900*), or 'anonymous'")
        if not await self.pstn_store.add_pattern(list_name, pattern, reason):
            raise ApiError(409, "pattern_exists", f"{pattern} is on the {list_name} list already")
        await self.screen.reload_lists()
        return {"list": list_name, "pattern": pattern, "reason": reason}

    async def remove_screening(self, list_name: str, pattern: str) -> None:
        if not await self.pstn_store.remove_pattern(list_name, pattern):
            raise ApiError(404, "no_such_pattern", f"{pattern} is not on the {list_name} list")
        await self.screen.reload_lists()

    async def screening_lists(self) -> dict:
        rows = await self.pstn_store.patterns()
        return {name: [{k: r[k] for k in ("pattern", "reason")} | {"created_at": cdr.iso(r["created_at"])}
                       for r in rows if r["list"] == name] for name in ("block", "allow")}

    def stats(self) -> dict:
        return {**self.counters, "legs": len(self.legs), "ringing": len(self._ringing),
                "history_rows": self.pstn_store.history_rows,
                "history_dropped": self.pstn_store.history_dropped,
                "sip": self.ua.stats(), "trunk": self.monitor.stats() if self.monitor else None,
                "screening": self.screen.stats(), "stir": self.stir.stats()}
