"""How `personas serve` reads HTTP: uvicorn's httptools protocol with a deadline on headers.

uvicorn has no timeout on reading a request's headers (its keep-alive timer runs only between
requests, after a response): a client that connects and sends nothing, or trickles a header
byte now and then (slowloris), holds its connection for ever, and a few hundred such clients
exhaust the process before the app sees a request. The app cannot help: it is called once the
headers are in. So the deadline lives in the protocol, below the app.
"""

from __future__ import annotations

import asyncio

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def header_timeout_refusal(timeout_s: float) -> bytes:
    """The 408 a client gets when its headers were not in within ``timeout_s``: the API's JSON
    error with a code, as every other refusal, and the connection closed."""
    body = orjson.dumps({"error": {
        "code": "TIMEOUT", "message": f"the request headers did not arrive within "
        f"{timeout_s:g} s (PERSONAS_API_HEADER_TIMEOUT_S)"}})
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
            + body)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes a connection whose request headers are not complete
    ``header_timeout_s`` after the connection opened (first request) or after the request's
    first byte (later requests on a kept-alive connection). Between requests uvicorn's own
    keep-alive timeout applies. Subclassed per server by :func:`header_deadline_protocol`."""

    header_timeout_s: float = 10.0
    _header_deadline: asyncio.TimerHandle | None = None

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

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        super().handle_websocket_upgrade()


def header_deadline_protocol(timeout_s: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class to give uvicorn (``http=``), with headers due within ``timeout_s``."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,),
                {"header_timeout_s": timeout_s})
