"""Request bounds and response headers that hold for every route, below the routes.

* :func:`bounded_http_protocol`: uvicorn's httptools protocol with a cap on the request head (request line +
  headers, in bytes and in count). httptools itself has none: a 50 MB ``Authorization`` header would be
  buffered whole before any ASGI code runs, so the check has to live in the protocol, before parsing
  finishes. (uvicorn's h11 protocol has ``h11_max_incomplete_event_size``; :func:`uvicorn_options` sets it
  too, for a machine without httptools.)
* :class:`Guard`: ASGI middleware that refuses a body larger than its route's limit *before* the route
  parses it (413 with the limit in the message), adds the security headers (strict CSP: scripts and styles
  from this origin only, no framing), and makes redirects relative so that a forged ``Host`` header cannot
  send a user elsewhere.

Hand-written because these are a few lines each and no maintained package does the protocol-level bound.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: the dashboard and the API: everything from this origin, nothing inline, no framing, no plugins
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'; worker-src 'self'; manifest-src 'self'"
)
#: /docs: Swagger UI (React) sets style attributes on the elements it renders; scripts stay strict
DOCS_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def _refusal(status: int, message: str) -> bytes:
    reason = {413: b"Content Too Large", 431: b"Request Header Fields Too Large"}.get(status, b"Bad Request")
    body = orjson.dumps({"detail": message})
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % (status, reason, len(body))
        + body
    )


def bounded_http_protocol(max_head_bytes: int, max_headers: int) -> type[HttpToolsProtocol]:
    """An httptools protocol class refusing (431, connection closed) a request whose head is longer than
    ``max_head_bytes`` or has more than ``max_headers`` headers. The byte count is checked before each
    chunk is fed to the parser, so at most one read (≤ 256 KB) past the limit is ever buffered."""

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _head_bytes = 0  # bytes fed to the parser since the last complete head
        _in_body = False
        _header_count = 0
        _header_bytes = 0  # request line + headers of the request being parsed
        _refusal: str | None = None

        def data_received(self, data: bytes) -> None:
            if not self._in_body:
                if self._head_bytes > max_head_bytes:
                    return self._refuse(f"request headers larger than {max_head_bytes} bytes")
                self._head_bytes += len(data)
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                if self._refusal is not None:
                    return self._refuse(self._refusal)
                msg = "Invalid HTTP request received."  # not ours: answered as uvicorn always does
                self.logger.warning(msg)
                self.send_400_response(msg)
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()

        def _refuse(self, message: str) -> None:
            self.logger.warning("refused a request from %s: %s", self.client, message)
            self.transport.write(_refusal(431, message))
            self.transport.close()

        def _abort(self, reason: str) -> None:
            self._refusal = reason
            raise ValueError(reason)  # stops the parser; data_received answers 431

        def on_message_begin(self) -> None:
            self._header_count = 0
            self._header_bytes = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._header_bytes += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            self._header_bytes += len(name) + len(value) + 4
            if self._header_count > max_headers:
                self._abort(f"more than {max_headers} request headers")
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            if self._header_bytes > max_head_bytes:  # all of it came in one read
                self._abort(f"request headers larger than {max_head_bytes} bytes")
            self._in_body = True
            self._head_bytes = 0
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_body = False
            super().on_message_complete()

    return BoundedHttpToolsProtocol


def uvicorn_options(settings: Any) -> dict[str, Any]:
    """The uvicorn keyword arguments every way of running the server uses (CLI, demo, tests)."""
    return {
        "http": bounded_http_protocol(settings.max_header_bytes, settings.max_header_count),
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        # the live socket ignores what clients send: no reason to accept 16 MB messages (the default)
        "ws_max_size": 64 * 1024,
        "server_header": False,
    }


class Guard:
    """Body limits per route, security headers, relative redirects (see the module docstring)."""

    def __init__(self, app: ASGIApp, body_limit: Callable[[str, str], int | None]) -> None:
        self.app = app
        self.body_limit = body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        csp = (DOCS_CSP if path == "/docs" else CSP).encode()

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"location"]
                for k, v in message.get("headers", []):
                    if k.lower() == b"location":
                        headers.append((b"location", _relative(v.decode("latin-1"), host).encode("latin-1")))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", csp))
                message["headers"] = headers
            await send(message)

        limit = self.body_limit(scope["method"], path)
        if limit is None:  # the route reads its body as a stream and bounds it itself (ingest)
            await self.app(scope, receive, send_secured)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > limit:
            await _too_large(send_secured, limit)
            return
        # small limits: read the whole body here, then hand it to the app as one message
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(send_secured, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_secured)


async def _too_large(send: Send, limit: int) -> None:
    body = orjson.dumps({"detail": f"request body larger than {limit} bytes"})
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _relative(location: str, host: str) -> str:
    """``http://<our host>/x?y`` → ``/x?y``: a redirect built from the ``Host`` header stays on this site."""
    parts = urlsplit(location)
    if parts.scheme in ("http", "https") and parts.netloc == host:
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return location
