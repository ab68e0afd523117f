"""The engine's control API over HTTP/JSON (for a controller in another process).

A thin shell over `Engine` methods; errors use the shared shape
`{"error": {"code": ..., "message": ...}}` with the HTTP status the engine chose. With a control
secret every request must carry it as a bearer token (`mixer/engine/control_auth.py`: 401, and
429 with `Retry-After` after repeated failures); off loopback the API is served over HTTPS.
"""
from __future__ import annotations

import json

from aiohttp import web

from mixer.engine.control_auth import ControlGuard
from mixer.engine.engine import Engine
from mixer.engine.errors import EngineError
from mixer.engine.metrics import engine_registry
from mixer.metrics import CONTENT_TYPE, exposition

MAX_BODY_BYTES = 64 * 1024  # an SDP offer is a few KB


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _guard(guard: ControlGuard):
    @web.middleware
    async def authenticate(request: web.Request, handler):
        refused = guard.check(request.remote or "", request.headers.get("Authorization"))
        if refused is None:
            return await handler(request)
        status, code, message, retry_after = refused
        response = _error(status, code, message)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="voicemix-engine"'
        else:
            response.headers["Retry-After"] = guard.retry_after_header(retry_after)
        return response
    return authenticate


@web.middleware
async def _errors(request: web.Request, handler):
    try:
        return await handler(request)
    except EngineError as exc:
        return _error(exc.status, exc.code, str(exc))
    except web.HTTPException as exc:
        if exc.status >= 400:
            return _error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        raise


async def _json_body(request: web.Request) -> dict:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise EngineError(413, "too_large", f"body over {MAX_BODY_BYTES} bytes")
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EngineError(400, "bad_json", f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise EngineError(400, "bad_json", "body must be a JSON object")
    return body


def _field(body: dict, name: str, kind: type | tuple, required: bool = False):
    value = body.get(name)
    if value is None:
        if required:
            raise EngineError(422, "missing_field", f"{name!r} is required")
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
        names = " or ".join(k.__name__ for k in kinds)
        raise EngineError(422, "bad_field", f"{name!r} must be {names}")
    return value


NUMBER = (int, float)


async def start_control_api(engine: Engine, host: str = "127.0.0.1", port: int = 0,
                            ssl_context=None) -> tuple[web.AppRunner, int]:
    """Serve `engine`'s control API on host:port (0: a free port), over TLS with `ssl_context`;
    the secret is `engine.settings.control_secret`. Returns the runner, whose `cleanup()` stops
    it, and the port it listens on."""
    runner = web.AppRunner(create_app(engine), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


AUDIO_TYPES = {".ogg": "audio/ogg", ".wav": "audio/wav"}


def _audio_file(path) -> web.FileResponse:
    return web.FileResponse(path, headers={"Content-Type": AUDIO_TYPES.get(path.suffix,
                                                                           "application/octet-stream")})


def create_app(engine: Engine) -> web.Application:
    settings = engine.settings
    guard = ControlGuard(settings.control_secret, settings.auth_failure_limit,
                         settings.auth_failure_window_s, settings.auth_cooldown_s,
                         engine.control_refusals)
    # the guard runs first: nothing of an unauthenticated request is read or acted on
    app = web.Application(middlewares=[_guard(guard), _errors], client_max_size=MAX_BODY_BYTES)
    routes = web.RouteTableDef()
    registry = engine_registry(engine)

    @routes.get("/conferences")
    async def list_conferences(request: web.Request) -> web.Response:
        return web.json_response({"conferences": engine.list_conferences()})

    @routes.post("/conferences")
    async def create_conference(request: web.Request) -> web.Response:
        body = await _json_body(request)
        mode = _field(body, "mode", str) or "mcu"
        result = engine.create_conference(mode, _field(body, "id", str))
        return web.json_response(result, status=201)

    @routes.get("/conferences/{conference}")
    async def get_conference(request: web.Request) -> web.Response:
        return web.json_response(engine.get_conference(request.match_info["conference"]))

    @routes.delete("/conferences/{conference}")
    async def delete_conference(request: web.Request) -> web.Response:
        engine.delete_conference(request.match_info["conference"])
        return web.Response(status=204)

    @routes.post("/conferences/{conference}/legs")
    async def add_leg(request: web.Request) -> web.Response:
        body = await _json_body(request)
        result = await engine.add_leg(request.match_info["conference"],
                                      _field(body, "sdp", str, required=True),
                                      _field(body, "label", str))
        return web.json_response(result, status=201)

    @routes.put("/conferences/{conference}/legs/{leg}")
    async def reoffer_leg(request: web.Request) -> web.Response:
        body = await _json_body(request)
        return web.json_response(await engine.reoffer_leg(
            request.match_info["conference"], request.match_info["leg"],
            _field(body, "sdp", str, required=True)))

    @routes.patch("/conferences/{conference}/legs/{leg}")
    async def update_leg(request: web.Request) -> web.Response:
        body = await _json_body(request)
        return web.json_response(engine.update_leg(
            request.match_info["conference"], request.match_info["leg"], _field(body, "muted", bool)))

    @routes.delete("/conferences/{conference}/legs/{leg}")
    async def remove_leg(request: web.Request) -> web.Response:
        engine.remove_leg(request.match_info["conference"], request.match_info["leg"])
        return web.Response(status=204)

    @routes.post("/conferences/{conference}/players")
    async def add_player(request: web.Request) -> web.Response:
        body = await _json_body(request)
        result = engine.add_player(
            request.match_info["conference"], tone=_field(body, "tone", NUMBER),
            file=_field(body, "file", str), loop=bool(_field(body, "loop", bool)),
            seconds=_field(body, "seconds", NUMBER), label=_field(body, "label", str),
            player_id=_field(body, "id", str))
        return web.json_response(result, status=201)

    @routes.get("/conferences/{conference}/players/{player}")
    async def get_player(request: web.Request) -> web.Response:
        return web.json_response(engine.get_player(request.match_info["conference"],
                                                   request.match_info["player"]))

    @routes.patch("/conferences/{conference}/players/{player}")
    async def update_player(request: web.Request) -> web.Response:
        body = await _json_body(request)
        return web.json_response(engine.update_player(
            request.match_info["conference"], request.match_info["player"],
            _field(body, "muted", bool)))

    @routes.delete("/conferences/{conference}/players/{player}")
    async def remove_player(request: web.Request) -> web.Response:
        engine.remove_player(request.match_info["conference"], request.match_info["player"])
        return web.Response(status=204)

    @routes.post("/conferences/{conference}/recordings")
    async def start_recording(request: web.Request) -> web.Response:
        body = await _json_body(request)
        result = engine.start_recording(
            request.match_info["conference"], format=_field(body, "format", str) or "ogg",
            tracks=_field(body, "tracks", str) or "mix", recording_id=_field(body, "id", str))
        return web.json_response(result, status=201)

    @routes.get("/conferences/{conference}/recordings/{recording}")
    async def get_recording(request: web.Request) -> web.Response:
        return web.json_response(engine.get_recording(request.match_info["conference"],
                                                      request.match_info["recording"]))

    @routes.delete("/conferences/{conference}/recordings/{recording}")
    async def stop_recording(request: web.Request) -> web.Response:
        return web.json_response(engine.stop_recording(request.match_info["conference"],
                                                       request.match_info["recording"]))

    @routes.get("/recordings/{recording}")
    async def recording_info(request: web.Request) -> web.Response:
        return web.json_response(engine.recording_info(request.match_info["recording"]))

    @routes.get("/recordings/{recording}/file")
    async def recording_file(request: web.Request) -> web.FileResponse:
        return _audio_file(engine.recording_file(request.match_info["recording"]))

    @routes.get("/recordings/{recording}/tracks/{track}/file")
    async def track_file(request: web.Request) -> web.FileResponse:
        return _audio_file(engine.recording_file(request.match_info["recording"],
                                                 request.match_info["track"]))

    @routes.post("/conferences/{conference}/forks")
    async def add_fork(request: web.Request) -> web.Response:
        body = await _json_body(request)
        result = await engine.add_fork(
            request.match_info["conference"], _field(body, "source", str, required=True),
            _field(body, "destination", str, required=True), srtp=bool(_field(body, "srtp", bool)),
            codec=_field(body, "codec", str), label=_field(body, "label", str),
            fork_id=_field(body, "id", str))
        return web.json_response(result, status=201)

    @routes.get("/conferences/{conference}/forks/{fork}")
    async def get_fork(request: web.Request) -> web.Response:
        return web.json_response(engine.get_fork(request.match_info["conference"],
                                                 request.match_info["fork"]))

    @routes.delete("/conferences/{conference}/forks/{fork}")
    async def remove_fork(request: web.Request) -> web.Response:
        engine.remove_fork(request.match_info["conference"], request.match_info["fork"])
        return web.Response(status=204)

    @routes.get("/stats")
    async def stats(request: web.Request) -> web.Response:
        return web.json_response(engine.stats())

    @routes.get("/metrics")
    async def metrics(request: web.Request) -> web.Response:
        await engine.clock.after_tick()  # build it in the gap after a tick, not before one
        return web.Response(body=exposition(registry), headers={"Content-Type": CONTENT_TYPE})

    @routes.post("/drain")
    async def drain(request: web.Request) -> web.Response:
        body = await _json_body(request)
        timeout = body.get("timeout_s")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not 0 <= timeout <= 86400 * 7):
            raise EngineError(422, "bad_field", "'timeout_s' must be a number of seconds (0..604800)")
        return web.json_response(engine.drain(timeout), status=202)

    app.add_routes(routes)
    return app
