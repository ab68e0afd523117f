"""The engine's control API is authenticated (issue 18): a bearer secret on every request, TLS
with a pinned certificate off loopback, and no start on a non-loopback address without a secret.

Real sockets throughout: aiohttp and the controller's `HttpEngine` against `start_control_api`,
and `voicemix engine` itself in a subprocess for the start-up rules.
"""
from __future__ import annotations

import asyncio
import io
import logging
import os
import socket
import ssl
import stat
import subprocess
import sys
import time

import pytest
import uvloop
from aiohttp import ClientSession
from hypothesis import given, settings, strategies as st

from mixer.certificates import normalize_fingerprint
from mixer.engine.client import EnginePins, EngineError, HttpEngine, engine_url
from mixer.engine.control import start_control_api
from mixer.engine.control_auth import (
    ControlGuard, ControlSecurityError, check_control_settings, control_tls_context,
)
from mixer.engine.engine import Engine
from mixer.settings import EngineSettings

SECRET = "correct-horse-battery-staple-42"


async def control(settings: EngineSettings, scenario, tls: bool = False):
    engine = Engine(settings)
    engine.start()
    context = control_tls_context(settings, "127.0.0.1")[0] if tls else None
    runner, port = await start_control_api(engine, "127.0.0.1", 0, context)
    try:
        return await scenario(engine, port)
    finally:
        engine.stop()
        await runner.cleanup()


async def error_of(response) -> str:
    body = await response.json()
    assert set(body) == {"error"} and body["error"]["message"]
    return body["error"]["code"]


def test_missing_and_wrong_secrets_get_401_and_change_nothing(tmp_path):
    settings = EngineSettings(data_dir=tmp_path, control_secret=SECRET, auth_failure_limit=6)

    async def scenario(engine, port):
        base = f"http://127.0.0.1:{port}"
        async with ClientSession() as http:
            out = []
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": SECRET},
                            {"Authorization": f"Basic {SECRET}"}):
                response = await http.post(base + "/conferences", json={"id": "x"}, headers=headers)
                out.append((response.status, await error_of(response),
                            response.headers.get("WWW-Authenticate")))
            stats = await http.get(base + "/stats")
            nothing = (len(engine.conferences), stats.status)
            good = await http.post(base + "/conferences", json={"id": "x"},
                                   headers={"Authorization": f"Bearer {SECRET}"})
            made = (good.status, len(engine.conferences))
            # a success starts the count afresh; six failures in a row start the cool-down, and
            # then even the right secret is refused
            for _ in range(6):
                await http.get(base + "/stats", headers={"Authorization": "Bearer guess"})
            cooling = await http.get(base + "/stats", headers={"Authorization": f"Bearer {SECRET}"})
            cooled = (cooling.status, await error_of(cooling), cooling.headers.get("Retry-After"))
            return out, nothing, made, cooled, dict(engine.control_refusals)

    out, nothing, made, cooled, refusals = uvloop.run(control(settings, scenario))
    assert [o[:2] for o in out] == [(401, "unauthorized")] * 4
    assert all(o[2] == 'Bearer realm="voicemix-engine"' for o in out)
    assert nothing == (0, 401)
    assert made == (201, 1)
    assert cooled[0] == 429 and cooled[1] == "too_many_failures" and int(cooled[2]) >= 1
    assert refusals == {"missing": 4, "wrong": 7, "cooldown": 1}


def test_the_controller_pins_the_engines_certificate_and_sends_its_secret(tmp_path):
    settings = EngineSettings(data_dir=tmp_path / "engine", control_secret=SECRET, control_tls=True)
    pins_path = tmp_path / "controller" / "engine-pins.json"
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logging.getLogger().addHandler(handler)

    async def scenario(engine, port):
        url = f"https://127.0.0.1:{port}"
        first = HttpEngine(url, SECRET, EnginePins(pins_path))
        created = await first.create_conference("mcu", "pinned")
        await first.close()
        # a later controller run trusts only the pinned certificate: the same engine is fine
        again = HttpEngine(url, SECRET, EnginePins(pins_path))
        listed = await again.list_conferences()
        await again.close()
        # a certificate other than the pin (an impostor, or a new one nobody re-pinned): refused
        # before anything, the secret included, is sent
        impostor = HttpEngine(f"{url}#sha256=" + ":".join(["AB"] * 32), SECRET)
        try:
            await impostor.stats()
            mismatch = None
        except EngineError as exc:
            mismatch = (exc.status, exc.code)
        await impostor.close()
        no_secret = HttpEngine(url, None, EnginePins(pins_path))
        try:
            await no_secret.stats()
            refused = None
        except EngineError as exc:
            refused = exc.status
        await no_secret.close()
        return created, listed, mismatch, refused, dict(engine.control_refusals)

    try:
        created, listed, mismatch, refused, refusals = uvloop.run(control(settings, scenario, True))
    finally:
        logging.getLogger().removeHandler(handler)
    assert created["id"] == "pinned" and [c["id"] for c in listed] == ["pinned"]
    assert mismatch == (503, "engine_certificate_mismatch")
    assert refused == 401 and refusals == {"missing": 1}  # the impostor's request never arrived
    assert stat.S_IMODE(pins_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "engine").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "engine" / "engine-control-key.pem").stat().st_mode) == 0o600
    assert SECRET not in out.getvalue()


def test_engine_urls_and_settings_are_checked():
    assert engine_url("http://127.0.0.1:8790/") == ("http://127.0.0.1:8790", None)
    base, pin = engine_url("https://10.0.0.5:8790#sha256=" + "ab" * 32)
    assert base == "https://10.0.0.5:8790" and pin == ":".join(["AB"] * 32)
    for bad in ("http://10.0.0.5:8790", "https://10.0.0.5:8790#sha256=abc", "ftp://x:1",
                "http://127.0.0.1:8790#sha256=" + "ab" * 32):
        with pytest.raises(ValueError):
            engine_url(bad)
    with pytest.raises(ControlSecurityError):
        check_control_settings(EngineSettings(), "0.0.0.0")
    with pytest.raises(ControlSecurityError):
        check_control_settings(EngineSettings(control_secret="short"), "127.0.0.1")
    assert check_control_settings(EngineSettings(control_secret=SECRET), "10.0.0.5") is True
    assert check_control_settings(EngineSettings(), "127.0.0.1") is False
    assert check_control_settings(EngineSettings(), "::1") is False


def test_the_guard_compares_in_constant_time_and_counts():
    guard = ControlGuard(SECRET, failure_limit=3, window_s=60, cooldown_s=30)
    assert guard.check("a", f"Bearer {SECRET}", now=0.0) is None
    assert guard.check("a", f"bearer {SECRET}", now=0.0) is None  # the scheme is case-insensitive
    assert guard.check("a", "Bearer x", now=1.0)[0] == 401
    assert guard.check("a", "Bearer x", now=2.0)[0] == 401
    assert guard.check("a", "Bearer x", now=3.0)[0] == 401   # the third starts the cool-down
    status, code, _message, retry = guard.check("a", f"Bearer {SECRET}", now=4.0)
    assert (status, code) == (429, "too_many_failures") and retry == pytest.approx(29.0)
    assert guard.check("b", f"Bearer {SECRET}", now=4.0) is None  # others are not affected
    assert guard.check("a", f"Bearer {SECRET}", now=34.0) is None  # the cool-down ends
    assert ControlGuard(None).check("a", None) is None  # no secret: open (loopback only)


# ------------------------------------------------------------------------ voicemix engine itself
def engine_process(tmp_path, control: str, secret: str | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEMIX_")}
    env.update(VOICEMIX_DATA_DIR=str(tmp_path), VOICEMIX_MEDIA_PORTS="46000-46099",
               PYTHONUNBUFFERED="1")
    if secret:
        env["VOICEMIX_CONTROL_SECRET"] = secret
    return subprocess.Popen([sys.executable, "-m", "mixer.cli", "engine", "--control", control],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_an_engine_on_a_non_loopback_address_without_a_secret_refuses_to_start(tmp_path):
    process = engine_process(tmp_path, "0.0.0.0:0", None)
    try:
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 2, output
    assert "VOICEMIX_CONTROL_SECRET" in output and "not started" in output


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return sock.getsockname()[1]


def test_an_engine_on_every_interface_serves_https_and_wants_the_secret(tmp_path):
    port = free_port()
    process = engine_process(tmp_path, f"0.0.0.0:{port}", SECRET)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        fingerprint = None
        while time.monotonic() < deadline and fingerprint is None:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "fingerprint" in line and "voicemix engine:" in line:
                fingerprint = line.rsplit(" ", 1)[1].strip()
        assert fingerprint, "".join(lines)

        async def scenario():
            url = f"https://127.0.0.1:{port}#sha256={fingerprint}"
            for _ in range(100):  # the control API listens shortly after the fingerprint line
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            good = HttpEngine(url, SECRET)
            stats = await good.stats()
            await good.close()
            plain = None
            try:
                async with ClientSession() as http:  # plain HTTP to the TLS port: no answer
                    await http.get(f"http://127.0.0.1:{port}/stats")
            except Exception as exc:
                plain = type(exc).__name__
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            async with ClientSession() as http:
                unauthenticated = await http.get(f"https://127.0.0.1:{port}/stats", ssl=context)
                status = unauthenticated.status
            return stats, plain, status

        stats, plain, status = uvloop.run(scenario())
    finally:
        process.terminate()
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    assert "conferences" in stats and plain is not None and status == 401
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "engine-control-key.pem").stat().st_mode) == 0o600
    assert SECRET not in "".join(lines)


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_engine_urls_and_fingerprints_raise_only_value_error(text):
    """The two parsers of what an operator configures: any text is parsed or refused clearly."""
    for candidate in (text, "https://10.0.0.5:8790#" + text, "https://10.0.0.5:8790#sha256=" + text):
        try:
            base, pin = engine_url(candidate)
        except ValueError:
            continue
        assert base.startswith(("http://", "https://")) and "#" not in base
        assert pin is None or len(pin) == 95
    try:
        normalize_fingerprint(text)
    except ValueError:
        pass


def test_the_guard_parses_any_authorization_header():
    guard = ControlGuard(SECRET, failure_limit=10**9)

    @given(st.text(max_size=300))
    @settings(max_examples=300, deadline=None)
    def check(header):
        refused = guard.check("fuzz", header, now=0.0)
        assert refused is None or refused[0] == 401

    check()


def test_a_controller_refuses_plain_http_to_an_engine_off_loopback(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEMIX_")}
    result = subprocess.run([sys.executable, "-m", "mixer.cli", "controller", "--data-dir",
                             str(tmp_path), "--engine", "http://192.0.2.7:8790"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "https://" in result.stderr and "192.0.2.7" in result.stderr
