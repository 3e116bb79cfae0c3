"""A lean HTTP/1.1 client for load generation: keep-alive connections over asyncio streams,
nothing else.

The load generator shares the machine's two cores with the API and Neo4j, so what it spends is
taken from the system it measures. httpx cost about 2.5 ms of CPU per request here, and past
about 70 requests/s, with requests queueing and its pool growing, it took a whole core and the
bench measured the client instead of the API. This client sends prepared bytes and reads the
answer by its Content-Length.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes


class KeepAliveClient:
    """POSTs JSON (or GETs a probe) to one host, on as many keep-alive connections as requests
    are in flight (up to ``MAX_CONNECTIONS``). Responses must carry a Content-Length (no
    chunked bodies)."""

    MAX_CONNECTIONS = 256

    def __init__(self, host: str, port: int, headers: dict[str, str],
                 timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._head = "".join(f"{k}: {v}\r\n" for k, v in
                             {"Host": f"{host}:{port}", **headers}.items())
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(self.MAX_CONNECTIONS)

    def request_bytes(self, path: str, body: bytes) -> bytes:
        """A prepared POST, to send with ``send`` as often as needed."""
        return (f"POST {path} HTTP/1.1\r\n{self._head}Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    def get_bytes(self, path: str) -> bytes:
        """A prepared GET without a body (a probe such as ``/healthz``)."""
        return f"GET {path} HTTP/1.1\r\n{self._head}Content-Length: 0\r\n\r\n".encode()

    async def send(self, request: bytes) -> Response:
        async with self._slots:
            if self._idle:
                try:
                    return await self._on(self._idle.pop(), request)
                except (asyncio.IncompleteReadError, ConnectionError):
                    pass  # the server closed it while idle (keep-alive timeout): once more, fresh
            return await self._on(await self._connect(), request)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(asyncio.open_connection(self.host, self.port),
                                      self.timeout)

    async def _on(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                  request: bytes) -> Response:
        try:
            response = await asyncio.wait_for(self._exchange(conn, request), self.timeout)
        except BaseException:
            conn[1].close()
            raise
        self._idle.append(conn)
        return response

    @staticmethod
    async def _exchange(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                        request: bytes) -> Response:
        reader, writer = conn
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = next((int(line.split(b":", 1)[1]) for line in lines[1:]
                       if line[:15].lower() == b"content-length:"), None)
        if length is None:
            raise RuntimeError("response without Content-Length")
        return Response(status, await reader.readexactly(length))

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()
