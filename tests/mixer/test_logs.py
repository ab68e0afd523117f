"""Logs: one line per lifecycle event with its ids, JSON by setting, and never a secret.

The whole-flow test captures everything every logger says (DEBUG and up) while a controller and an
engine run a call with an SDES-SRTP participant, tokens, TURN credentials, a refused token and a
refused offer carrying a key, then looks for each secret of the flow in the captured text.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import logging

import uvloop
from hypothesis import given, strategies as st

from controller.testing import RestParticipant, continuous_tone, running_controller
from mixer.logs import JsonFormatter, LogSettings, TextFormatter, configure_logging, redact
from mixer.sdp import parse
from mixer.sim.participant import SimulatedParticipant

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"


def test_redact_removes_keys_tokens_and_passwords():
    cases = {
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4":
            "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
        "a=ice-pwd:asd88fgpdd777uzjYhagZg": "asd88fgpdd777uzjYhagZg",
        f"Authorization: Bearer {JWT}": JWT,
        f"token {JWT} refused": JWT,
        "Bearer plain-admin-key-value": "plain-admin-key-value",
        "redis://:hunter2@127.0.0.1:6379/0": "hunter2",
        "postgresql://voice:s3cret-pw@db/voicemix": "s3cret-pw",
        'password=hunter2&user=x': "hunter2",
        '{"turn_secret": "abcDEF123", "ok": 1}': "abcDEF123",
        '{"credential":"Zm9vYmFy"}': "Zm9vYmFy",
    }
    for text, secret in cases.items():
        cleaned = redact(text)
        assert secret not in cleaned, cleaned
        assert "<redacted>" in cleaned or "<token>" in cleaned
    assert redact("leg joined conference_id=abc leg_id=def") == "leg joined conference_id=abc leg_id=def"


@given(st.text(), st.from_regex(r"[A-Za-z0-9+/]{30,40}", fullmatch=True))
def test_redact_never_raises_and_always_hides_an_sdes_key(prefix, key):
    assert key not in redact(f"{prefix} a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n")


def record(message: str, **extra) -> logging.LogRecord:
    item = logging.LogRecord("voicemix.engine", logging.INFO, __file__, 1, message, (), None)
    item.__dict__.update(extra)
    return item


def test_text_and_json_formats_carry_the_event_fields():
    line = TextFormatter().format(record("leg joined", event="leg_joined", conference_id="c1",
                                         leg_id="l1", port=40002))
    assert " INFO voicemix.engine leg joined event=leg_joined conference_id=c1 leg_id=l1 port=40002" in line
    entry = json.loads(JsonFormatter().format(record("leg joined", event="leg_joined",
                                                     conference_id="c1", leg_id="l1")))
    assert entry["event"] == "leg_joined" and entry["leg_id"] == "l1" and entry["level"] == "info"
    assert entry["time"].endswith("Z") and entry["logger"] == "voicemix.engine"
    assert json.loads(JsonFormatter().format(record("x", secret_key_note=f"Bearer {JWT}")))[
        "secret_key_note"] == "Bearer <redacted>"


def test_a_whole_call_logs_its_lifecycle_as_json_and_no_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("VOICEMIX_LOG_FORMAT", "json")
    out = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    handler = configure_logging(LogSettings(log_level="debug"), stream=out)
    secrets_seen: list[str] = []
    try:
        async def scenario():
            async with running_controller(tmp_path) as running:
                http, admin = running.client, running.admin
                secrets_seen.extend([running.server.settings.admin_key,
                                     running.server.settings.token_secret,
                                     running.server.settings.turn_secret])
                alice = await running.user("alice")
                secrets_seen.append(alice["Authorization"].split()[1])
                call = (await http.post("/v1/calls", json={"mode": "mcu"}, headers=alice)).json()
                sim = SimulatedParticipant("alice", 440.0, continuous_tone(440.0, 2), srtp=True)
                participant = RestParticipant(sim, alice)
                response = await participant.join(http, call["id"])
                assert response.status_code == 201
                offer_key = sim._local_crypto.key
                answer = parse(response.json()["sdp"]).media[0].attribute("crypto")
                secrets_seen.extend([answer.split("inline:")[1].split("|")[0]])
                sim.start()
                turn = (await http.get("/v1/turn/credentials", headers=alice)).json()
                secrets_seen.append(turn["credential"])
                # refusals: a forged token, and an offer with a key the engine refuses (bad SDP)
                assert (await http.get("/v1/stats", headers={
                    "Authorization": f"Bearer {JWT}"})).status_code == 401
                bad = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/SAVP 0\r\n"
                       "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk\r\n")
                assert (await http.post(f"/v1/calls/{call['id']}/participants", json={"sdp": bad},
                                        headers=alice)).status_code >= 400
                secrets_seen.append("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk")
                await asyncio.sleep(0.5)
                assert (await http.delete(f"/v1/calls/{call['id']}/participants/{participant.id}",
                                          headers=alice)).status_code == 204
                assert (await http.delete(f"/v1/calls/{call['id']}", headers=alice)).status_code == 204
                sim.close()
                return call["id"], participant.id, offer_key

        call_id, leg_id, offer_key = uvloop.run(scenario())
    finally:
        root.removeHandler(handler)
        for old in saved[0]:
            root.addHandler(old)
        root.setLevel(saved[1])
    text = out.getvalue()
    secrets_seen.append(base64.b64encode(offer_key).decode())
    for secret in secrets_seen:
        assert secret and secret not in text, f"a secret reached the logs: {secret[:6]}..."
    entries = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert entries and all(len(line) < 4096 for line in text.splitlines())  # no payloads
    events = {}
    for entry in entries:
        events.setdefault(entry.get("event"), []).append(entry)
    assert events["call_created"][0]["call_id"] == call_id
    assert events["conference_created"][0]["conference_id"] == call_id
    assert any(e["leg_id"] == leg_id and e["conference_id"] == call_id for e in events["leg_joined"])
    assert any(e["leg_id"] == leg_id and e["call_id"] == call_id for e in events["participant_joined"])
    assert any(e["leg_id"] == leg_id for e in events["leg_left"])
    assert any(e["leg_id"] == leg_id and e["reason"] == "removed" for e in events["participant_left"])
    assert events["call_ended"][0]["call_id"] == call_id
    assert events["conference_deleted"][0]["conference_id"] == call_id
