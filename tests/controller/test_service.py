"""The service around the API: error shapes, unbuilt endpoints, TURN credentials, OpenAPI, first
start (secrets, certificate), plain HTTP only when asked, and `voicemix serve` as a process."""
import base64
import hashlib
import hmac
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import uvloop

from controller.settings import ControllerSettings, ensure_secrets
from controller.testing import running_controller

ROOT = Path(__file__).resolve().parents[2]


def run(coro):
    return uvloop.run(coro)


def test_errors_are_in_the_shared_shape(tmp_path):
    async def scenario():
        async with running_controller(tmp_path) as c:
            http = c.client
            alice = await c.user("alice")

            async def error(response) -> tuple[int, str]:
                body = response.json()
                assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
                return response.status_code, body["error"]["code"]

            assert await error(await http.get("/v1/no-such-thing")) == (404, "not_found")
            assert await error(await http.put("/v1/health")) == (405, "method_not_allowed")
            assert await error(await http.post("/v1/calls", content=b"{nope",
                                               headers={**alice, "content-type": "application/json"})
                               ) == (400, "bad_json")
            assert await error(await http.post("/v1/calls", json={"mode": "fm"}, headers=alice)) == (
                422, "validation_failed")
            assert await error(await http.post("/v1/calls", json={"expected_participants": -1},
                                               headers=alice)) == (422, "validation_failed")
            assert await error(await http.post("/v1/calls", content=b"x" * 300_000,
                                               headers={**alice, "content-type": "application/json"})
                               ) == (413, "too_large")
            call = (await http.post("/v1/calls", headers=alice)).json()
            participants = f"/v1/calls/{call['id']}/participants"
            assert await error(await http.post(participants, json={}, headers=alice)) == (422, "bad_field")
            assert await error(await http.post(participants, json={"sdp": "garbage"}, headers=alice)) == (
                400, "bad_sdp")
            video_only = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                          "m=audio 40000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n")
            status, code = await error(await http.post(participants, json={"sdp": video_only},
                                                       headers=alice))
            assert status == 488 and code == "no_common_codec"
            # PSTN belongs to a later issue: an honest 501 in the shared shape
            pstn = await c.user("paula", scopes=("voip", "pstn"))
            assert await error(await http.post(participants, json={"kind": "pstn", "number": "+15551234567"},
                                               headers=pstn)) == (403, "not_a_member")
            own = (await http.post("/v1/calls", headers=pstn)).json()
            assert await error(await http.post(f"/v1/calls/{own['id']}/participants",
                                               json={"kind": "pstn", "number": "+15551234567"},
                                               headers=pstn)) == (501, "not_implemented")
            assert await error(await http.post(f"/v1/calls/{own['id']}/participants",
                                               json={"kind": "pstn"}, headers=alice)) == (
                403, "insufficient_scope")
            for method, path in (("POST", "/v1/numbers"), ("GET", "/v1/numbers"),
                                 ("DELETE", "/v1/numbers/+15551234567")):
                assert await error(await http.request(method, path, headers=c.admin)) == (
                    501, "not_implemented")
            assert await error(await http.get("/v1/numbers", headers=alice)) == (403, "insufficient_scope")
            # OpenAPI names every path of the contract
            paths = (await http.get("/openapi.json")).json()["paths"]
            for path in ("/v1/health", "/v1/identities", "/v1/identities/{identity}/tokens",
                         "/v1/calls", "/v1/calls/{call_id}", "/v1/calls/{call_id}/participants",
                         "/v1/calls/{call_id}/participants/{participant_id}",
                         "/v1/calls/{call_id}/events", "/v1/calls/{call_id}/recording",
                         "/v1/recordings/{recording_id}", "/v1/turn/credentials", "/v1/cdrs",
                         "/v1/numbers", "/v1/numbers/{number}"):
                assert path in paths, path
            stats = (await http.get("/v1/stats", headers=c.admin)).json()
            assert stats["controller"]["calls_created"] == 2 and stats["engines"]["local"]["conferences"] == 2
    run(scenario())


def test_turn_credentials_are_coturn_rest_style(tmp_path):
    async def scenario():
        async with running_controller(tmp_path, turn_secret="s3cret", turn_ttl_s=600,
                                      turn_urls=["stun:turn.example:3478",
                                                 "turn:turn.example:443?transport=tcp"]) as c:
            alice = await c.user("alice")
            before = int(time.time())
            response = await c.client.get("/v1/turn/credentials", headers=alice)
            assert response.status_code == 200
            body = response.json()
            expiry, identity = body["username"].split(":")
            assert identity == "alice" and before + 600 <= int(expiry) <= int(time.time()) + 600
            expected = base64.b64encode(hmac.new(b"s3cret", body["username"].encode(),
                                                 hashlib.sha1).digest()).decode()
            assert body["credential"] == expected and body["ttl"] == 600
            assert body["urls"] == ["stun:turn.example:3478", "turn:turn.example:443?transport=tcp"]
        async with running_controller(tmp_path / "off", turn_enabled=False) as c:
            response = await c.client.get("/v1/turn/credentials", headers=await c.user("alice"))
            assert response.status_code == 404 and response.json()["error"]["code"] == "turn_disabled"
    run(scenario())


def test_first_start_generates_and_keeps_secrets_and_certificate(tmp_path):
    settings = ControllerSettings(data_dir=tmp_path)
    assert sorted(ensure_secrets(settings)) == ["admin_key", "token_secret", "turn_secret"]
    assert oct((tmp_path / "secrets.json").stat().st_mode & 0o777) == "0o600"
    again = ControllerSettings(data_dir=tmp_path)
    assert ensure_secrets(again) == []
    assert again.admin_key == settings.admin_key and again.token_secret == settings.token_secret
    configured = ControllerSettings(data_dir=tmp_path, admin_key="from-settings")
    ensure_secrets(configured)
    assert configured.admin_key == "from-settings"

    async def scenario():
        async with running_controller(tmp_path) as c:
            first = c.server.fingerprint
            cert = c.server.cert_path
            # plain HTTP to the HTTPS port gets no HTTP answer at all
            with pytest.raises(httpx.TransportError):
                async with httpx.AsyncClient() as plain:
                    await plain.get(f"http://127.0.0.1:{c.server.port}/v1/health")
            # a client that does not trust the self-signed certificate refuses it
            with pytest.raises(httpx.ConnectError):
                async with httpx.AsyncClient(verify=ssl.create_default_context()) as strict:
                    await strict.get(f"{c.server.url}/v1/health")
        async with running_controller(tmp_path) as c:
            assert c.server.fingerprint == first and c.server.cert_path == cert
        if shutil.which("openssl"):
            out = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint",
                                  "-sha256"], capture_output=True, text=True, check=True).stdout
            assert out.strip().split("=", 1)[1] == first
        async with running_controller(tmp_path, insecure_http=True) as c:
            assert c.server.url.startswith("http://")
            assert (await c.client.get("/v1/health")).json() == {"status": "ok"}
    run(scenario())


def test_voicemix_serve_runs_and_stops_on_sigterm(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "VOICEMIX_TURN_ENABLED": "true"}
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "mixer.cli", "serve", "--listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env, cwd=tmp_path)
    lines = []
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"controller started: (https://127\.0\.0\.1:\d+)", line)
            url = match.group(1) if match else None
        assert url, "".join(lines)
        page = None
        while page is None and time.monotonic() < deadline:  # serve prints the web page's URL
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"web client at (https://\S+/)", line)
            page = match.group(1) if match else None
        output = "".join(lines)
        assert page == url + "/", output
        assert "development mode" in output
        assert "generated admin key" in output and "SHA-256 fingerprint" in output
        context = ssl.create_default_context(cafile=str(tmp_path / "controller-cert.pem"))
        assert httpx.get(f"{url}/v1/health", verify=context).json() == {"status": "ok"}
        assert "voicemix.js" in httpx.get(page, verify=context).text
        assert httpx.post(f"{url}/v1/dev/identities", json={}, verify=context).status_code == 201
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=20)
    output = "".join(lines) + rest
    assert process.returncode == 0, output
    assert "engine started in-process" in output and "controller stopped" in output
    assert "engine stopped" in output
    assert "TURN" in output  # started, or said absent until mixer.turn lands
