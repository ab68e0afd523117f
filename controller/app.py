"""The REST API (FastAPI), versioned under /v1, as the shared API contract specifies.

Every error, FastAPI's own included (validation, unknown route, wrong method), answers in the
shared shape `{"error": {"code", "message"}}`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.middleware.cors import CORSMiddleware
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from controller import cdr
from controller.calls import CallService
from controller.errors import ApiError
from controller.events import user_stream
from controller.headers import SecurityHeaders
from controller.limits import RateLimited, RestLimits
from controller.metrics import CONTENT_TYPE, ControllerMetrics, ResponseCounter
from controller.settings import ControllerSettings
from controller.store import Store, StoreUnavailable
from controller.tokens import ADMIN_KEY_PRINCIPAL, Principal, TokenAuthority

log = logging.getLogger("voicemix.controller")

MAX_BODY_BYTES = 256 * 1024
IDENTITY_PATTERN = r"^[A-Za-z0-9_.@+-]{1,64}$"
WEB_DIR = Path(__file__).resolve().parent / "web"
# The web client's files (the only ones served): name -> media type. No inline script or style in
# any of them, so a strict Content-Security-Policy can be set in front of the page.
WEB_FILES = {"index.html": "text/html; charset=utf-8", "voicemix.js": "text/javascript; charset=utf-8",
             "app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8",
             "favicon.svg": "image/svg+xml"}
STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 406: "not_acceptable", 413: "too_large",
                415: "unsupported_media_type", 422: "validation_failed"}


# ----------------------------------------------------------------------------------------- models
class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: str


class IdentityCreate(BaseModel):
    id: str | None = Field(None, pattern=IDENTITY_PATTERN, description="unset = generated")


class IdentityCreated(BaseModel):
    id: str


class TokenRequest(BaseModel):
    scopes: list[Literal["voip", "pstn", "admin"]] = Field(["voip"], min_length=1, max_length=3)
    ttl_s: int | None = Field(None, ge=1, description="lifetime; unset = the configured default")


class TokenIssued(BaseModel):
    token: str
    expires_at: str
    id: str = Field(description="the token's jti, to revoke this one token")


class CallCreate(BaseModel):
    mode: Literal["auto", "mcu", "sfu", "relay"] = "auto"
    expected_participants: int | None = Field(None, ge=1, le=100000,
                                              description="auto mode: SFU above the threshold")
    invite: list[Annotated[str, Field(pattern=IDENTITY_PATTERN)]] = Field([], max_length=100)


class Invitation(BaseModel):
    identities: list[Annotated[str, Field(pattern=IDENTITY_PATTERN)]] = Field(min_length=1,
                                                                               max_length=100)


class ParticipantCreate(BaseModel):
    sdp: str | None = Field(None, min_length=1, max_length=64 * 1024, description="SDP offer")
    kind: Literal["voip", "bot", "pstn"] | None = None
    play: str | None = Field(None, max_length=128, description="bot: 'tone:<Hz>' or a recording id")
    loop: bool | None = Field(None, description="bot: play the recording over and over")
    codec: Literal["opus", "PCMU", "PCMA"] | None = Field(
        None, description="accepted for compatibility and ignored: a bot is an engine player, "
                          "mixed (MCU) or sent as Opus (SFU)")
    label: str | None = Field(None, max_length=64)
    number: str | None = Field(None, max_length=32, description="pstn: the E.164 number to call")
    caller_id: str | None = Field(None, max_length=32,
                                  description="pstn: which of the resource's numbers to present")
    replaces: str | None = Field(None, max_length=32, description="the caller's direct participant "
                                 "this engine leg replaces (moving a direct 1:1 call onto the engine)")


class Reoffer(BaseModel):
    sdp: str = Field(min_length=1, max_length=64 * 1024, description="a new SDP offer for the leg")


class DirectJoin(BaseModel):
    label: str | None = Field(None, max_length=64)


class DirectJoined(BaseModel):
    id: str
    role: Literal["offerer", "answerer"]
    peer: str | None = None
    media: str


class IceCandidateInit(BaseModel):
    candidate: str = Field(max_length=1024)
    sdpMid: str | None = Field(None, max_length=32)
    sdpMLineIndex: int | None = Field(None, ge=0, le=64)


class Signal(BaseModel):
    from_: str = Field(alias="from", max_length=32)
    to: str = Field(max_length=32)
    type: Literal["offer", "answer", "candidate", "bye"]
    sdp: str | None = Field(None, max_length=64 * 1024)
    candidate: IceCandidateInit | None = None


class DevIdentity(BaseModel):
    name: str | None = Field(None, pattern=IDENTITY_PATTERN)


class DevIdentityIssued(BaseModel):
    id: str
    token: str
    expires_at: str


class ServiceInfo(BaseModel):
    dev: bool
    direct_one_to_one: bool
    turn: bool


class ParticipantAdded(BaseModel):
    id: str
    sdp: str | None = None
    state: str | None = Field(None, description="pstn: 'dialing' (events follow: participant_"
                                                "ringing, participant_joined or participant_left)")


class ParticipantUpdate(BaseModel):
    muted: bool | None = None


class RecordingAction(BaseModel):
    action: Literal["start", "stop"]
    format: Literal["ogg", "wav"] = Field("ogg", description="start: Ogg Opus or 16-bit WAV")
    tracks: Literal["mix", "mix+participants"] = Field(
        "mix", description="start: the mix only, or also one track per participant")


class RecordingState(BaseModel):
    id: str
    state: str
    format: str | None = None
    tracks: str | None = None
    duration_s: float | None = None


class RecordingTrack(BaseModel):
    participant_id: str
    track_id: str
    label: str | None = None
    kind: str | None = None
    offset_s: float | None = Field(None, description="where the track starts in the mix, seconds")
    duration_s: float | None = None


class RecordingTracks(BaseModel):
    recording_id: str
    format: str
    state: str
    duration_s: float | None = None
    tracks: list[RecordingTrack]


class ForkCreate(BaseModel):
    source: str = Field(min_length=1, max_length=64, description="'mix' or a participant id")
    destination: str = Field(min_length=3, max_length=300, description="host:port (RTCP to port+1)")
    srtp: bool = Field(False, description="SDES-SRTP: the answer's SDP carries the key (a=crypto)")
    codec: Literal["opus", "PCMU", "PCMA"] | None = Field(
        None, description="the mix's codec (default opus); a participant's fork keeps its codec")


class ForkCreated(BaseModel):
    id: str
    sdp: str = Field(description="what a receiver needs: the stream's codec, destination and key")
    source: str
    destination: str
    srtp: bool
    codec: str


class TurnCredentials(BaseModel):
    username: str
    credential: str
    ttl: int
    urls: list[str]


class NumberCreate(BaseModel):
    number: str = Field(max_length=32, description="E.164, e.g. +15550100199")
    route: dict = Field(description="{'call': id} | {'user': identity} | {'ivr': tree} "
                                    "(the tree's format: docs/pstn.md)")


class ScreeningEntry(BaseModel):
    pattern: str = Field(max_length=32, description="E.164, a prefix ending in '*', or 'anonymous'")
    reason: str | None = Field(None, max_length=200)


ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 403, 404, 409, 422, 429, 501, 503)}
STORE_RETRY_AFTER_S = 1


# ------------------------------------------------------------------------------------------ auth
_bearer = HTTPBearer(auto_error=False, description="a user token, or the admin key")


async def authenticate(request: Request, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    """The caller: the admin key, or a valid token (401 with the reason otherwise). Each failure
    counts toward the address's cool-down (controller/limits.py); a user's requests toward its
    identity's rate (429)."""
    failures = request.app.state.metrics.auth_failures
    limits: RestLimits = request.app.state.limits
    address = request.client.host if request.client else ""
    if credentials is None or not credentials.credentials:
        failures["token_missing"] += 1
        limits.token_failed(address)
        raise ApiError(401, "token_missing", "send 'Authorization: Bearer <token>'")
    token = credentials.credentials
    # both sides hashed first: the compare takes the same time whatever the lengths
    if hmac.compare_digest(hashlib.sha256(token.encode()).digest(),
                           request.app.state.admin_key_digest):
        limits.token_succeeded(address)
        return ADMIN_KEY_PRINCIPAL
    try:
        principal = await request.app.state.tokens.verify(token)
    except ApiError as exc:
        failures[exc.code] += 1
        limits.token_failed(address)
        raise
    limits.token_succeeded(address)
    limits.identity_request(principal.identity)
    return principal


Caller = Annotated[Principal, Depends(authenticate)]


# ------------------------------------------------------------------------------------------- app
def create_app(settings: ControllerSettings, service: CallService, store: Store,
               tokens: TokenAuthority, metrics: ControllerMetrics | None = None) -> FastAPI:
    app = FastAPI(title="voicemix signaling controller", version="1",
                  description="Calls, participants, tokens, TURN credentials, CDRs, recordings.",
                  responses=ERRORS)
    app.state.settings = settings
    app.state.tokens = tokens
    app.state.metrics = metrics = metrics or ControllerMetrics(service)
    app.state.admin_key_digest = hashlib.sha256(settings.admin_key.encode()).digest()
    app.state.limits = limits = RestLimits(settings, metrics.limits_hit)
    service.limits = limits
    install_error_handlers(app)

    # added innermost first: a request meets the response counter, the security headers, CORS
    # if allowed (so an embedding page can read a 429's Retry-After), the rate limits (nothing
    # of a refused request is read), the body limit
    app.add_middleware(BodyLimit)
    app.add_middleware(limits.middleware)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["Retry-After"], allow_credentials=False, max_age=600)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(ResponseCounter, counts=metrics.responses)

    def need(caller: Principal, *scopes: str) -> None:
        if not any(scope in caller.scopes for scope in scopes):
            metrics.auth_failures["insufficient_scope"] += 1
            raise ApiError(403, "insufficient_scope", f"this needs the {' or '.join(scopes)} scope")

    # -------------------------------------------------------------------------------- health
    @app.get("/v1/health", response_model=Health, tags=["service"])
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/me", tags=["identities"])
    async def me(caller: Caller) -> dict:
        """Who the token is: identity, scopes, expiry (a client checks its token with this)."""
        return {"identity": caller.identity, "scopes": sorted(caller.scopes),
                "expires_at": cdr.iso(caller.expires_at) if caller.expires_at else None}

    @app.get("/v1/info", response_model=ServiceInfo, tags=["service"])
    async def info() -> dict:
        """What a client may use here (public: the web page reads it before sign-in)."""
        return {"dev": settings.dev, "direct_one_to_one": settings.direct_one_to_one,
                "turn": settings.turn_enabled}

    # ----------------------------------------------------------------------------- web client
    @app.get("/", include_in_schema=False)
    async def web_page() -> FileResponse:
        return _web_file("index.html")

    @app.get("/web/{name}", include_in_schema=False)
    async def web_file(name: str) -> FileResponse:
        if name not in WEB_FILES:
            raise ApiError(404, "not_found", f"no file {name}")
        return _web_file(name)

    if settings.dev:
        @app.post("/v1/dev/identities", status_code=201, response_model=DevIdentityIssued,
                  tags=["development"])
        async def dev_identity(body: DevIdentity | None = None) -> dict:
            """Development only (`VOICEMIX_DEV`): a new identity and a voip token, no admin key.
            Absent (404) in production settings."""
            identity = (body.name if body and body.name else None) or f"guest-{secrets.token_hex(4)}"
            if not await store.create_identity(identity):
                # new identities only: even in development, no token for someone else's identity
                raise ApiError(409, "identity_exists", f"identity {identity} exists")
            token, _jti, expires_at = tokens.issue(identity, ["voip"], settings.token_default_ttl_s)
            log.info("dev identity %s issued a token", identity)  # never the token itself
            return {"id": identity, "token": token, "expires_at": cdr.iso(expires_at)}

    @app.get("/v1/stats", tags=["service"])
    async def stats(caller: Caller) -> dict:
        need(caller, "admin")
        engines, calls = {}, []
        for name, engine in service.engines.items():
            try:
                engines[name] = await engine.stats()
                # every conference is a call (same id): the live view's list
                calls.extend({**c, "engine": name} for c in await engine.list_conferences())
            except Exception as exc:  # an engine down is a value here, not an error
                engines[name] = {"error": repr(exc)}
        result = {"controller": service.stats(), "store": store.stats(),
                  "tokens": tokens.cache.stats(), "engines": engines, "calls": calls}
        if app.state.pstn is not None:
            result["pstn"] = app.state.pstn.stats()
        return result

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse,
             responses={200: {"content": {"text/plain": {}}}})
    async def prometheus_metrics(caller: Caller) -> Response:
        """Prometheus text format: this controller's families (and, in `voicemix serve`, the
        in-process engine's and TURN's). Admin key; or VOICEMIX_METRICS_LISTEN without auth."""
        need(caller, "admin")
        return Response(await metrics.exposition(), media_type=CONTENT_TYPE)

    # ---------------------------------------------------------------------------- identities
    @app.post("/v1/identities", status_code=201, response_model=IdentityCreated, tags=["identities"])
    async def create_identity(caller: Caller, body: IdentityCreate | None = None) -> dict:
        need(caller, "admin")
        identity = (body.id if body else None) or secrets.token_hex(8)
        if not await store.create_identity(identity):
            raise ApiError(409, "identity_exists", f"identity {identity} exists")
        return {"id": identity}

    @app.post("/v1/identities/{identity}/tokens", status_code=201, response_model=TokenIssued,
              tags=["identities"])
    async def issue_token(identity: str, caller: Caller, body: TokenRequest | None = None) -> dict:
        need(caller, "admin")
        body = body or TokenRequest()
        ttl = body.ttl_s or settings.token_default_ttl_s
        if ttl > settings.token_max_ttl_s:
            raise ApiError(422, "bad_field", f"ttl_s is at most {settings.token_max_ttl_s}")
        if not await store.identity_exists(identity):
            raise ApiError(404, "no_such_identity", f"no identity {identity}")
        token, jti, expires_at = tokens.issue(identity, list(body.scopes), ttl)
        return {"token": token, "expires_at": cdr.iso(expires_at), "id": jti}

    @app.delete("/v1/identities/{identity}/tokens", status_code=204, tags=["identities"])
    async def revoke_tokens(identity: str, caller: Caller) -> Response:
        need(caller, "admin")
        if not await tokens.revoke_all(identity):
            raise ApiError(404, "no_such_identity", f"no identity {identity}")
        return Response(status_code=204)

    @app.delete("/v1/identities/{identity}/tokens/{token_id}", status_code=204, tags=["identities"])
    async def revoke_token(identity: str, token_id: str, caller: Caller) -> Response:
        need(caller, "admin")
        if not await store.identity_exists(identity):
            raise ApiError(404, "no_such_identity", f"no identity {identity}")
        await tokens.revoke(identity, token_id, time.time() + settings.token_max_ttl_s)
        return Response(status_code=204)

    # --------------------------------------------------------------------------------- calls
    @app.post("/v1/calls", status_code=201, tags=["calls"])
    async def create_call(caller: Caller, body: CallCreate | None = None) -> dict:
        need(caller, "voip")
        body = body or CallCreate()
        return await service.create_call(caller, body.mode, body.expected_participants, body.invite)

    @app.get("/v1/calls/{call_id}", tags=["calls"])
    async def get_call(call_id: str, caller: Caller) -> dict:
        need(caller, "voip", "admin")
        return await service.get_call(caller, call_id)

    @app.delete("/v1/calls/{call_id}", status_code=204, tags=["calls"])
    async def end_call(call_id: str, caller: Caller) -> Response:
        need(caller, "voip", "admin")
        await service.end_call(caller, call_id, "ended")
        return Response(status_code=204)

    @app.post("/v1/calls/{call_id}/invitations", tags=["calls"])
    async def invite(call_id: str, body: Invitation, caller: Caller) -> dict:
        need(caller, "voip", "admin")
        return await service.invite(caller, call_id, body.identities)

    @app.post("/v1/calls/{call_id}/participants", status_code=201, response_model=ParticipantAdded,
              response_model_exclude_none=True, tags=["calls"])
    async def add_participant(call_id: str, body: ParticipantCreate, caller: Caller) -> dict:
        if body.kind == "pstn":
            need(caller, "pstn")
        else:
            need(caller, "voip", "admin")
        return await service.add_participant(caller, call_id, body.model_dump(exclude_none=True))

    @app.put("/v1/calls/{call_id}/participants/{participant_id}", response_model=ParticipantAdded,
             tags=["calls"])
    async def reoffer_participant(call_id: str, participant_id: str, body: Reoffer,
                                  caller: Caller) -> dict:
        """A new offer on your engine leg (ICE restart, hold/resume) -> the engine's answer."""
        need(caller, "voip", "admin")
        return await service.reoffer_participant(caller, call_id, participant_id, body.sdp)

    @app.post("/v1/calls/{call_id}/direct", status_code=201, response_model=DirectJoined,
              response_model_exclude_none=True, tags=["calls"])
    async def direct_join(call_id: str, caller: Caller, body: DirectJoin | None = None) -> dict:
        """Join a 1:1 call on the direct path (media between the two clients); 409
        media_on_engine when the call's media is on the engine (then POST /participants)."""
        need(caller, "voip")
        return await service.direct.register(caller, call_id, body.label if body else None)

    @app.post("/v1/calls/{call_id}/signal", status_code=202, tags=["calls"])
    async def signal(call_id: str, body: Signal, caller: Caller) -> dict:
        """Relay an offer/answer/candidate/bye to the other direct participant (a `signal`
        event on the call's stream)."""
        need(caller, "voip", "admin")
        await service.direct.signal(caller, call_id, body.model_dump(by_alias=True, exclude_none=True))
        return {}

    @app.patch("/v1/calls/{call_id}/participants/{participant_id}", tags=["calls"])
    async def update_participant(call_id: str, participant_id: str, body: ParticipantUpdate,
                                 caller: Caller) -> dict:
        need(caller, "voip", "admin")
        return await service.update_participant(caller, call_id, participant_id, body.muted)

    @app.delete("/v1/calls/{call_id}/participants/{participant_id}", status_code=204, tags=["calls"])
    async def remove_participant(call_id: str, participant_id: str, caller: Caller) -> Response:
        need(caller, "voip", "admin")
        await service.remove_participant(caller, call_id, participant_id)
        return Response(status_code=204)

    @app.get("/v1/calls/{call_id}/events", tags=["calls"],
             responses={200: {"content": {"text/event-stream": {}}}})
    async def events(call_id: str, caller: Caller) -> StreamingResponse:
        need(caller, "voip", "admin")
        await service.access(caller, call_id, allow_invited=True)
        return StreamingResponse(service.events.stream(call_id), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/events", tags=["calls"], responses={200: {"content": {"text/event-stream": {}}}})
    async def user_events(caller: Caller) -> StreamingResponse:
        """Your own events (Server-Sent Events): `call_invited` when someone invites you;
        `incoming_call`, `incoming_call_answered`, `incoming_call_ended` when a phone rings you."""
        need(caller, "voip")
        if caller.identity is None:
            raise ApiError(403, "identity_required", "a user's stream: use a user token")
        return StreamingResponse(service.events.stream(user_stream(caller.identity)),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/calls/{call_id}/recording", response_model=RecordingState,
              response_model_exclude_none=True, tags=["recordings"])
    async def recording(call_id: str, body: RecordingAction, caller: Caller) -> dict:
        need(caller, "voip", "admin")
        return await service.recording(caller, call_id, body.action, body.format, body.tracks)

    def audio(found, media_type: str, name: str) -> Response:
        filename = f"{name}.{'ogg' if media_type == 'audio/ogg' else 'wav'}"
        if isinstance(found, Path):
            return FileResponse(found, media_type=media_type, filename=filename)
        return StreamingResponse(found, media_type=media_type, headers={
            "Content-Disposition": f'attachment; filename="{filename}"'})

    @app.get("/v1/recordings/{recording_id}", tags=["recordings"],
             responses={200: {"content": {"audio/ogg": {}, "audio/wav": {}}}})
    async def get_recording(recording_id: str, caller: Caller) -> Response:
        need(caller, "voip", "admin")
        found, media_type = await service.recording_download(caller, recording_id)
        return audio(found, media_type, recording_id)

    @app.get("/v1/recordings/{recording_id}/tracks", response_model=RecordingTracks,
             tags=["recordings"])
    async def recording_tracks(recording_id: str, caller: Caller) -> dict:
        need(caller, "voip", "admin")
        return await service.recording_tracks(caller, recording_id)

    @app.get("/v1/recordings/{recording_id}/tracks/{participant_id}", tags=["recordings"],
             responses={200: {"content": {"audio/ogg": {}, "audio/wav": {}}}})
    async def recording_track(recording_id: str, participant_id: str, caller: Caller) -> Response:
        need(caller, "voip", "admin")
        found, media_type = await service.recording_download(caller, recording_id, participant_id)
        return audio(found, media_type, f"{recording_id}-{participant_id}")

    # ----------------------------------------------------------------------------------- forks
    @app.post("/v1/calls/{call_id}/forks", status_code=201, response_model=ForkCreated,
              tags=["forks"])
    async def add_fork(call_id: str, body: ForkCreate, caller: Caller) -> dict:
        need(caller, "voip", "admin")
        return await service.add_fork(caller, call_id, body.source, body.destination, body.srtp,
                                      body.codec)

    @app.delete("/v1/calls/{call_id}/forks/{fork_id}", status_code=204, tags=["forks"])
    async def remove_fork(call_id: str, fork_id: str, caller: Caller) -> Response:
        need(caller, "voip", "admin")
        await service.remove_fork(caller, call_id, fork_id)
        return Response(status_code=204)

    # ------------------------------------------------------------------------------------ TURN
    @app.get("/v1/turn/credentials", response_model=TurnCredentials, tags=["turn"])
    async def turn_credentials(caller: Caller) -> dict:
        need(caller, "voip")
        if not settings.turn_enabled:
            raise ApiError(404, "turn_disabled", "TURN is disabled on this service")
        expiry = int(time.time()) + settings.turn_ttl_s
        username = f"{expiry}:{caller.identity}"
        digest = hmac.new(settings.turn_secret.encode(), username.encode(), hashlib.sha1).digest()
        return {"username": username, "credential": base64.b64encode(digest).decode(),
                "ttl": settings.turn_ttl_s, "urls": settings.derived_turn_urls()}

    # ------------------------------------------------------------------------------------ CDRs
    @app.get("/v1/cdrs", tags=["records"],
             responses={200: {"content": {"application/json": {}, "text/csv": {}}}})
    async def cdrs(caller: Caller,
                   start: Annotated[str | None, Query(alias="from", max_length=64)] = None,
                   end: Annotated[str | None, Query(alias="to", max_length=64)] = None,
                   user: Annotated[str | None, Query(max_length=64)] = None,
                   format: Annotated[Literal["json", "csv"], Query()] = "json") -> Response:
        need(caller, "voip", "admin")
        if not caller.is_admin:
            if user is not None and user != caller.identity:
                raise ApiError(403, "not_your_records", "users see only their own records")
            user = caller.identity
        try:
            start_s = cdr.parse_iso(start) if start else None
            end_s = cdr.parse_iso(end) if end else None
        except ValueError:
            raise ApiError(422, "bad_field", "'from' and 'to' are ISO 8601 times") from None
        records = await store.query_cdrs(start_s, end_s, user)
        if format == "csv":
            return PlainTextResponse(cdr.to_csv(records), media_type="text/csv")
        return JSONResponse({"records": records})

    # ------------------------------------------------------------------------------------ PSTN
    app.state.pstn = None   # set when the SIP side starts (ControllerServer)

    def pstn():
        if app.state.pstn is None:
            raise ApiError(503, "pstn_unavailable", "this controller runs no SIP side "
                                                    "(set VOICEMIX_SIP_LISTEN)")
        return app.state.pstn

    @app.post("/v1/numbers", status_code=201, tags=["pstn"])
    async def add_number(body: NumberCreate, caller: Caller) -> dict:
        need(caller, "admin")
        record = await pstn().add_number(body.number, body.route)
        return {**record, "created_at": cdr.iso(record["created_at"])}

    @app.get("/v1/numbers", tags=["pstn"])
    async def list_numbers(caller: Caller) -> dict:
        need(caller, "admin")
        return {"numbers": [{**n, "created_at": cdr.iso(n["created_at"])}
                            for n in await pstn().list_numbers()]}

    @app.get("/v1/numbers/{number}", tags=["pstn"])
    async def get_number(number: str, caller: Caller) -> dict:
        need(caller, "admin")
        record = await pstn().get_number(number)
        return {**record, "created_at": cdr.iso(record["created_at"])}

    @app.delete("/v1/numbers/{number}", status_code=204, tags=["pstn"])
    async def delete_number(number: str, caller: Caller) -> Response:
        need(caller, "admin")
        await pstn().delete_number(number)
        return Response(status_code=204)

    @app.get("/v1/numbers/{number}/events", tags=["pstn"],
             responses={200: {"content": {"text/event-stream": {}}}})
    async def number_events(number: str, caller: Caller) -> StreamingResponse:
        """A number's phone tree as it runs: ivr_started, ivr_node, dtmf, ivr_recorded,
        ivr_transferred, ivr_ended."""
        need(caller, "admin")
        await pstn().get_number(number)
        from controller.pstn.ivr_runner import number_channel   # noqa: PLC0415
        return StreamingResponse(service.events.stream(number_channel(number)),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/screening", tags=["pstn"])
    async def screening(caller: Caller) -> dict:
        need(caller, "admin")
        return await pstn().screening_lists()

    @app.post("/v1/screening/{list_name}", status_code=201, tags=["pstn"])
    async def add_screening(list_name: Literal["block", "allow"], body: ScreeningEntry,
                            caller: Caller) -> dict:
        need(caller, "admin")
        return await pstn().add_screening(list_name, body.pattern, body.reason)

    @app.delete("/v1/screening/{list_name}/{pattern}", status_code=204, tags=["pstn"])
    async def remove_screening(list_name: Literal["block", "allow"], pattern: str,
                               caller: Caller) -> Response:
        need(caller, "admin")
        await pstn().remove_screening(list_name, pattern)
        return Response(status_code=204)

    return app


def _web_file(name: str) -> FileResponse:
    return FileResponse(WEB_DIR / name, media_type=WEB_FILES[name],
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


class BodyLimit:
    """413 for a declared body over MAX_BODY_BYTES, before anything reads it (plain ASGI: the
    decorator-style middleware costs a task group per request)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY_BYTES):
                    response = _error(413, "too_large",
                                      f"request bodies are limited to {MAX_BODY_BYTES} bytes")
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(RateLimited)
    async def rate_limited(request: Request, exc: RateLimited) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        # what failed stays in the log (it may name hosts); calls keep their media meanwhile
        log.warning("store unavailable on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"error": {"code": "store_unavailable",
                                       "message": "the database does not answer; try again"}},
                            status_code=503, headers={"Retry-After": str(STORE_RETRY_AFTER_S)})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, "bad_json", "the body is not valid JSON")
        parts = []
        for e in errors[:5]:
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return _error(422, "validation_failed", "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else code
        return JSONResponse({"error": {"code": code, "message": message}},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", "the controller failed on this request")


