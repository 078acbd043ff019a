"""Response headers on every answer: no framing, no sniffing, no referrer, own assets only.

The pages load nothing from elsewhere (hospitals are offline and a CDN is a data leak), so
the Content-Security-Policy can say ``default-src 'self'`` and mean it: no inline scripts,
styles only from the app. A plain ASGI middleware (not Starlette's BaseHTTPMiddleware) so
the live event stream passes through unbuffered.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class SecurityHeaders:
    """Adds :data:`HEADERS` (and HSTS when serving HTTPS) to every HTTP response."""

    def __init__(self, app: ASGIApp, *, tls: bool) -> None:
        self._app = app
        self._headers = dict(HEADERS)
        if tls:
            self._headers["Strict-Transport-Security"] = "max-age=31536000"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self._headers.items():
                    headers[name] = value
                if "cache-control" not in headers:
                    # Patient data must not linger in shared caches; assets may.
                    headers["Cache-Control"] = "public, max-age=3600" if static else "no-store"
            await send(message)

        await self._app(scope, receive, send_with_headers)
