"""The web client's lockdown over real HTTPS (issue 18): security headers on the page and the
API, no inline script or style to need an unsafe CSP, tokens only in memory, CORS off unless an
origin is allowed."""
from __future__ import annotations

import re

import pytest
import uvloop

from controller.app import WEB_DIR
from controller.testing import running_controller

pytestmark = pytest.mark.store_independent


def test_the_page_and_the_api_carry_the_security_headers(tmp_path):
    async def scenario():
        async with running_controller(tmp_path) as c:
            return [await c.client.get(path) for path in
                    ("/", "/web/app.js", "/v1/health", "/v1/nope")]

    for response in uvloop.run(scenario()):
        headers = response.headers
        csp = {d.split()[0]: d.split()[1:] for d in headers["content-security-policy"].split("; ")}
        assert csp["default-src"] == ["'none'"] and csp["script-src"] == ["'self'"]
        assert csp["style-src"] == ["'self'"] and csp["frame-ancestors"] == ["'none'"]
        assert csp["object-src"] == ["'none'"] and csp["base-uri"] == ["'none'"]
        assert not any("unsafe" in value for values in csp.values() for value in values)
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-content-type-options"] == "nosniff"
        assert "microphone=(self)" in headers["permissions-policy"]
        assert "access-control-allow-origin" not in headers


def test_the_page_has_no_inline_script_or_style_and_keeps_tokens_in_memory():
    html = (WEB_DIR / "index.html").read_text()
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag, f"inline script: {tag}"
    assert re.search(r"<script\b[^>]*>\s*[^<\s]", html) is None  # nothing between script tags
    assert "<style" not in html and not re.search(r"\sstyle\s*=", html)
    assert not re.search(r"\son[a-z]+\s*=", html)  # no inline event handlers
    for name in ("voicemix.js", "app.js"):
        source = (WEB_DIR / name).read_text()
        for store in ("localStorage", "sessionStorage", "document.cookie", "indexedDB"):
            assert store not in source, f"{name} keeps something in {store}"
        assert "eval(" not in source and "new Function" not in source


def test_cors_is_off_by_default_and_only_for_allowed_origins(tmp_path):
    preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    evil = {**preflight, "Origin": "https://evil.example"}

    async def scenario(**settings):
        async with running_controller(tmp_path, **settings) as c:
            return (await c.client.options("/v1/calls", headers=preflight),
                    await c.client.options("/v1/calls", headers=evil),
                    await c.client.get("/v1/health", headers={"Origin": "https://app.example.com"}))

    off = uvloop.run(scenario())
    for response in off:
        assert "access-control-allow-origin" not in response.headers
    allowed, refused, simple = uvloop.run(scenario(cors_origins=["https://app.example.com"]))
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in allowed.headers
    assert "access-control-allow-origin" not in refused.headers
    assert simple.headers["access-control-allow-origin"] == "https://app.example.com"
