"""Security headers on every response, and CORS only for the origins an operator allows.

The web client (controller/web) has no inline script or style and loads only its own files, so
its page can carry a strict Content-Security-Policy: scripts, styles and fetches from this origin
only, no plugins, no <base> rewriting, and no framing (`frame-ancestors 'none'` and
`X-Frame-Options: DENY`: no clickjacking of the call buttons). `Referrer-Policy: no-referrer`
keeps call ids in URLs from leaking to other sites; `Permissions-Policy` lets only this origin
ask for the microphone. API responses get the same headers (harmless on JSON, and one rule is
easier to audit than two).

CORS (cross-origin use of the API by a page served elsewhere, e.g. an app embedding voicemix.js)
is off unless `cors_origins` lists the allowed origins: the API takes bearer tokens, never
cookies, so no credentials mode is needed.
"""
from __future__ import annotations

# connect-src 'self' covers this origin's https and wss (CSP Level 3); media-src blob: is the
# remote audio the page plays from a MediaStream
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; media-src 'self' blob:; font-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'; object-src 'none'")

SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"permissions-policy", b"microphone=(self), camera=(), geolocation=()"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"strict-transport-security", b"max-age=31536000"),  # the controller serves only HTTPS
)


class SecurityHeaders:
    """ASGI middleware adding SECURITY_HEADERS to every HTTP response that lacks them."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
