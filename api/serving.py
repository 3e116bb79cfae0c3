"""How `personas serve` reads HTTP: uvicorn's httptools protocol with a deadline and a size
limit on request headers.

uvicorn has no timeout on reading a request's headers (its keep-alive timer runs only between
requests, after a response): a client that connects and sends nothing, or trickles a header
byte now and then (slowloris), holds its connection for ever, and a few hundred such clients
exhaust the process before the app sees a request. Nor is there a limit on their size: a 20 MB
cookie was buffered whole and answered 200, so a few clients sending headers of hundreds of
megabytes each (quickly, within any deadline) exhaust its memory. The app cannot help: it is
called once the headers are in. So both bounds live in the protocol, below the app.
"""

from __future__ import annotations

import asyncio

import orjson
from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def refusal(status: bytes, code: str, message: str) -> bytes:
    """A whole HTTP response refusing a request before the app sees it: the API's JSON error
    with a code, as every other refusal, and the connection closed after."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
            + body)


def header_timeout_refusal(timeout_s: float) -> bytes:
    """The 408 a client gets when its headers were not in within ``timeout_s``."""
    return refusal(b"408 Request Timeout", "TIMEOUT", f"the request headers did not arrive "
                   f"within {timeout_s:g} s (PERSONAS_API_HEADER_TIMEOUT_S)")


def header_size_message(limit: int) -> str:
    return f"the request line and headers pass {limit} bytes (PERSONAS_API_MAX_HEADER_BYTES)"


def header_size_refusal(limit: int) -> bytes:
    """The 431 a client gets when its request line and headers pass ``limit`` bytes."""
    return refusal(b"431 Request Header Fields Too Large", "LIMIT_EXCEEDED",
                   header_size_message(limit))


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes a connection whose request headers are not complete
    ``header_timeout_s`` after the connection opened (first request) or after the request's
    first byte (later requests on a kept-alive connection), or pass ``max_header_bytes``.
    Between requests uvicorn's own keep-alive timeout applies. Subclassed per server by
    :func:`header_deadline_protocol`."""

    header_timeout_s: float = 10.0
    max_header_bytes: int = 65_536
    _header_deadline: asyncio.TimerHandle | None = None
    _header_bytes = 0
    _began = False
    _between_messages = True
    _oversized = False

    def _arm(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout_s,
                                                         self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request waits on the one being answered (bounded by the app's body
            # and read timeouts): its headers get their time again from now.
            self._arm()
            return
        if not self.transport.is_closing():
            self.transport.write(header_timeout_refusal(self.header_timeout_s))
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        between, self._began = self._between_messages, False
        super().data_received(data)
        if self._header_deadline is None or self.transport.is_closing():
            return  # no request's headers pending
        # The whole read is the pending headers, unless the previous request's body ended in
        # it (pipelining): then at most this one read more is held than the limit.
        if between or not self._began:
            self._header_bytes += len(data)
        if self._header_bytes > self.max_header_bytes:
            self._refuse_size()

    def send_400_response(self, msg: str) -> None:
        """What uvicorn answers a request its parser refuses (smuggling attempts such as a
        Content-Length beside a Transfer-Encoding, bare LFs, NUL bytes in headers, an HTTP/2
        preface): the API's JSON error with a code, not uvicorn's plain text."""
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(refusal(b"400 Bad Request", "BAD_USER_INPUT",
                                         f"the request is not valid HTTP/1.1 ({msg})"))
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._began, self._between_messages, self._header_bytes = True, False, 0
        self._arm()

    def on_message_complete(self) -> None:
        self._between_messages = True
        super().on_message_complete()

    def on_headers_complete(self) -> None:
        self._disarm()
        # Headers that came whole in few reads: their size as parsed. Over the limit, this
        # request is answered by a refusal in the app's place (as uvicorn answers its own 503
        # over `limit_concurrency`), in its turn among pipelined ones, and the connection
        # closed after; an upgrade is refused in handle_websocket_upgrade.
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        self._oversized = size > self.max_header_bytes
        if not self._oversized:
            super().on_headers_complete()
            return
        app, self.app = self.app, self._too_large
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    async def _too_large(self, _scope: Scope, _receive: ASGIReceiveCallable,
                         send: ASGISendCallable) -> None:
        body = orjson.dumps({"error": {"code": "LIMIT_EXCEEDED",
                                       "message": header_size_message(self.max_header_bytes)}})
        await send({"type": "http.response.start", "status": 431, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _refuse_size(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(header_size_refusal(self.max_header_bytes))
            self.transport.close()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        if self._oversized:
            self._refuse_size()
            return
        super().handle_websocket_upgrade()


def header_deadline_protocol(timeout_s: float, max_bytes: int) -> type[HeaderDeadlineProtocol]:
    """The protocol class to give uvicorn (``http=``), with headers due within ``timeout_s``
    and at most ``max_bytes`` long."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,),
                {"header_timeout_s": timeout_s, "max_header_bytes": max_bytes})
