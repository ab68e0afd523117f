"""The REST API's rate limits, failed-token cool-down and call quota over real HTTPS (issue 18).

Requests come from two loopback addresses (127.0.0.1, and 127.0.0.2 through httpx's
`local_address`), so "another client" is another TCP peer, as the controller sees it.
"""
from __future__ import annotations

import ssl

import httpx
import pytest
import uvloop

from controller.testing import running_controller

pytestmark = pytest.mark.store_independent


def other_client(c) -> httpx.AsyncClient:
    """A client of the same controller from another address (127.0.0.2)."""
    context = ssl.create_default_context(cafile=str(c.server.cert_path))
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2", verify=context)
    return httpx.AsyncClient(base_url=c.server.url, transport=transport, timeout=10.0)


def error_of(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    return body["error"]["code"]


def test_thirty_wrong_tokens_get_ten_401s_then_429s_and_a_cool_down(tmp_path):
    async def scenario():
        async with running_controller(tmp_path, auth_failure_limit=10,
                                      auth_cooldown_s=120) as c:
            wrong = {"Authorization": "Bearer not-the-key"}
            responses = [await c.client.get("/v1/stats", headers=wrong) for _ in range(30)]
            # while cooling down even the right key is refused from that address, unread
            right_key_here = await c.client.get("/v1/stats", headers=c.admin)
            async with other_client(c) as other:
                elsewhere = await other.get("/v1/stats", headers=c.admin)
                metrics = (await other.get("/metrics", headers=c.admin)).text
            return responses, right_key_here, elsewhere, metrics

    responses, right_key_here, elsewhere, metrics = uvloop.run(scenario())
    statuses = [r.status_code for r in responses]
    assert statuses == [401] * 10 + [429] * 20
    assert {error_of(r) for r in responses[:10]} == {"token_invalid"}
    for response in responses[10:]:
        assert error_of(response) == "too_many_failures"
        assert 1 <= int(response.headers["Retry-After"]) <= 120
    assert right_key_here.status_code == 429
    assert elsewhere.status_code == 200  # another address is not punished
    assert 'voicemix_controller_limits_hit_total{limit="token_failures"} 22.0' in metrics


def test_requests_over_an_address_rate_get_429_with_retry_after(tmp_path):
    async def scenario():
        async with running_controller(tmp_path, rest_rate_per_address=0.5,
                                      rest_burst_per_address=3) as c:
            here = [await c.client.get("/v1/health") for _ in range(8)]
            async with other_client(c) as other:
                elsewhere = await other.get("/v1/health")
            return here, elsewhere

    here, elsewhere = uvloop.run(scenario())
    statuses = [r.status_code for r in here]
    assert statuses[:3] == [200, 200, 200] and statuses.count(429) >= 4
    limited = next(r for r in here if r.status_code == 429)
    assert error_of(limited) == "rate_limited" and int(limited.headers["Retry-After"]) >= 1
    assert elsewhere.status_code == 200


def test_one_identity_is_rate_limited_whatever_its_address(tmp_path):
    async def scenario():
        async with running_controller(tmp_path, rest_rate_per_identity=0.5,
                                      rest_burst_per_identity=3) as c:
            alice = await c.user("alice")
            bob = await c.user("bob")
            here = [await c.client.get("/v1/me", headers=alice) for _ in range(3)]
            async with other_client(c) as other:
                there = await other.get("/v1/me", headers=alice)
                bob_there = await other.get("/v1/me", headers=bob)
            admin = await c.client.get("/v1/stats", headers=c.admin)
            return here, there, bob_there, admin

    here, there, bob_there, admin = uvloop.run(scenario())
    assert [r.status_code for r in here] == [200, 200, 200]
    assert there.status_code == 429 and error_of(there) == "rate_limited"
    assert bob_there.status_code == 200 and admin.status_code == 200


def test_calls_per_identity_quota(tmp_path):
    async def scenario():
        async with running_controller(tmp_path, max_calls_per_identity=2) as c:
            alice, bob = await c.user("alice"), await c.user("bob")
            calls = [await c.client.post("/v1/calls", json={"mode": "mcu"}, headers=alice)
                     for _ in range(3)]
            bobs = await c.client.post("/v1/calls", json={"mode": "mcu"}, headers=bob)
            ended = await c.client.delete(f"/v1/calls/{calls[0].json()['id']}", headers=alice)
            again = await c.client.post("/v1/calls", json={"mode": "mcu"}, headers=alice)
            metrics = (await c.client.get("/metrics", headers=c.admin)).text
            return calls, bobs, ended, again, metrics

    calls, bobs, ended, again, metrics = uvloop.run(scenario())
    assert [r.status_code for r in calls] == [201, 201, 429]
    assert error_of(calls[2]) == "call_quota" and int(calls[2].headers["Retry-After"]) >= 1
    assert bobs.status_code == 201 and ended.status_code == 204 and again.status_code == 201
    assert 'voicemix_controller_limits_hit_total{limit="calls_per_identity"} 1.0' in metrics
