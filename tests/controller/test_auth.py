"""Tokens and scopes over real HTTPS: issuance, every 401 reason, 403 for scope and ownership."""
import time

import jwt
import uvloop

from controller.testing import running_controller


def run(coro):
    return uvloop.run(coro)


def forge(secret: str, **claims) -> str:
    now = time.time()
    base = {"iss": "voicemix", "sub": "alice", "scope": "voip", "iat": now, "exp": now + 600,
            "jti": "j1"}
    base.update(claims)
    base = {k: v for k, v in base.items() if v is not None}
    return jwt.encode(base, secret, algorithm="HS256")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_token_issuance_and_every_auth_failure(tmp_path):
    async def scenario():
        async with running_controller(tmp_path, token_leeway_s=5) as c:
            http = c.client
            assert (await http.get("/v1/health")).json() == {"status": "ok"}
            # identities and tokens need the admin key
            created = await http.post("/v1/identities", json={"id": "alice"}, headers=c.admin)
            assert created.status_code == 201 and created.json() == {"id": "alice"}
            again = await http.post("/v1/identities", json={"id": "alice"}, headers=c.admin)
            assert again.status_code == 409
            generated = await http.post("/v1/identities", headers=c.admin)
            assert generated.status_code == 201 and generated.json()["id"]
            issued = await http.post("/v1/identities/alice/tokens",
                                     json={"scopes": ["voip", "pstn"], "ttl_s": 120}, headers=c.admin)
            assert issued.status_code == 201
            body = issued.json()
            assert body["expires_at"].endswith("Z")
            claims = jwt.decode(body["token"], options={"verify_signature": False})
            assert claims["sub"] == "alice" and set(claims["scope"].split()) == {"voip", "pstn"}
            assert claims["exp"] - claims["iat"] <= 121
            alice = bearer(body["token"])
            assert (await http.post("/v1/calls", headers=alice)).status_code == 201
            no_identity = await http.post("/v1/identities/nobody/tokens", headers=c.admin)
            assert no_identity.status_code == 404
            too_long = await http.post("/v1/identities/alice/tokens", json={"ttl_s": 10 ** 9},
                                       headers=c.admin)
            assert too_long.status_code == 422

            async def reason(headers) -> tuple[int, str]:
                response = await http.post("/v1/calls", headers=headers)
                return response.status_code, response.json()["error"]["code"]

            secret = c.server.settings.token_secret
            assert await reason({}) == (401, "token_missing")
            assert await reason({"Authorization": "Basic YWxpY2U6eA=="}) == (401, "token_missing")
            assert await reason(bearer("not-a-jwt")) == (401, "token_invalid")
            assert await reason(bearer(forge("another secret of thirty-two bytes or more"))) == (401, "token_invalid")
            assert await reason(bearer(forge(secret, exp=time.time() - 60))) == (401, "token_expired")
            # within the leeway (5 s), an expired token still passes: clock skew between hosts
            assert (await http.post("/v1/calls", headers=bearer(forge(secret, exp=time.time() - 2)))
                    ).status_code == 201
            assert await reason(bearer(forge(secret, sub="mallory"))) == (401, "token_invalid")
            assert await reason(bearer(forge(secret, jti=None))) == (401, "token_invalid")
            assert await reason(bearer(forge(secret, iss="elsewhere"))) == (401, "token_invalid")
            unsigned = jwt.encode({"sub": "alice", "iss": "voicemix", "exp": time.time() + 60,
                                   "iat": time.time(), "jti": "x", "scope": "voip"},
                                  None, algorithm="none")
            assert await reason(bearer(unsigned)) == (401, "token_invalid")
            # revoke all of alice's tokens: the old one fails, a new one works
            revoked = await http.delete("/v1/identities/alice/tokens", headers=c.admin)
            assert revoked.status_code == 204
            assert await reason(alice) == (401, "token_revoked")
            fresh = await c.user("alice")
            assert (await http.post("/v1/calls", headers=fresh)).status_code == 201
            # revoke one token by its id
            one = await http.post("/v1/identities/alice/tokens", headers=c.admin)
            other = await http.post("/v1/identities/alice/tokens", headers=c.admin)
            gone = await http.delete(f"/v1/identities/alice/tokens/{one.json()['id']}",
                                     headers=c.admin)
            assert gone.status_code == 204
            assert await reason(bearer(one.json()["token"])) == (401, "token_revoked")
            assert (await http.post("/v1/calls", headers=bearer(other.json()["token"]))
                    ).status_code == 201
            unauthorized = await http.post("/v1/calls")
            assert unauthorized.headers["www-authenticate"] == "Bearer"
    run(scenario())


def test_scopes_and_ownership(tmp_path):
    async def scenario():
        async with running_controller(tmp_path) as c:
            http = c.client
            alice = await c.user("alice")
            bob = await c.user("bob")
            pstn_only = await c.user("carol", scopes=("pstn",))
            admin_token = await c.user("root", scopes=("admin",))

            async def status(method, path, headers, **kw) -> tuple[int, str | None]:
                response = await http.request(method, path, headers=headers, **kw)
                code = response.json().get("error", {}).get("code") if response.content else None
                return response.status_code, code

            # user tokens cannot administer; a token with the admin scope can
            assert await status("POST", "/v1/identities", alice, json={}) == (403, "insufficient_scope")
            assert await status("DELETE", "/v1/identities/bob/tokens", alice) == (403, "insufficient_scope")
            assert (await status("POST", "/v1/identities", admin_token, json={"id": "dave"}))[0] == 201
            # calls need voip; the admin key is not a caller
            assert await status("POST", "/v1/calls", pstn_only) == (403, "insufficient_scope")
            assert await status("POST", "/v1/calls", c.admin) == (403, "insufficient_scope")
            assert await status("GET", "/v1/turn/credentials", pstn_only) == (403, "insufficient_scope")
            call = (await http.post("/v1/calls", headers=alice)).json()
            path = f"/v1/calls/{call['id']}"
            # another user's call: 403 everywhere; an unknown call: 404
            assert await status("GET", path, bob) == (403, "not_a_member")
            assert await status("DELETE", path, bob) == (403, "not_a_member")
            assert await status("POST", f"{path}/participants", bob,
                                json={"kind": "bot", "play": "tone:440"}) == (403, "not_a_member")
            assert await status("POST", f"{path}/recording", bob, json={"action": "start"}) == (
                403, "not_a_member")
            assert await status("GET", f"{path}/events", bob) == (403, "not_a_member")
            assert await status("GET", "/v1/calls/nope", alice) == (404, "no_such_call")
            assert await status("GET", "/v1/cdrs?user=bob", alice) == (403, "not_your_records")
            # admins see every call
            assert (await status("GET", path, c.admin))[0] == 200
            # an invited identity may look and join (and then is a member)
            invited = await http.post(f"{path}/invitations", json={"identities": ["bob"]}, headers=alice)
            assert invited.status_code == 200 and invited.json()["invited"] == ["bob"]
            assert (await status("GET", path, bob))[0] == 200
            assert await status("DELETE", path, bob) == (403, "not_a_member")  # not yet a member
            assert await status("DELETE", path, alice) == (204, None)
            assert await status("GET", path, alice) == (404, "no_such_call")
    run(scenario())
