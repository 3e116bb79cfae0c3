"""A TCP relay in front of the real Neo4j that reads the Bolt messages clients send through it
and records each transaction's access mode: what a cluster's routing acts on, seen on the wire
(a driver in a `neo4j://` cluster sends a READ transaction to a secondary and a WRITE one to the
leader; a single server refuses writes in a READ transaction).

Only the client's side is decoded, and only as far as needed: the handshake is skipped, then
each chunked message is unpacked with a small PackStream reader. A transaction starts with a
BEGIN (explicit, as managed transactions are) or with a RUN that carries its own metadata
(auto-commit); the queries are the RUNs that follow a BEGIN, up to its COMMIT or ROLLBACK.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

RUN, BEGIN, COMMIT, ROLLBACK = 0x10, 0x11, 0x12, 0x13
MANIFEST_V1 = b"\x00\x00\x01\xff"


@dataclass
class Transaction:
    """One transaction a client started: its access mode ("r" or "w"), the bookmarks it waited
    for, and the query texts it ran."""

    mode: str
    bookmarks: list[str]
    queries: list[str] = field(default_factory=list)
    auto_commit: bool = False


class _Unpacker:
    """The PackStream values Bolt requests use (no floats of note, no temporal values needed
    beyond skipping them)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.i = 0

    def _take(self, n: int) -> bytes:
        chunk = self.data[self.i:self.i + n]
        self.i += n
        return chunk

    def _int(self, fmt: str, n: int) -> int:
        return int(struct.unpack(fmt, self._take(n))[0])

    def value(self) -> Any:
        m = self._take(1)[0]
        if m < 0x80:
            return m
        if m >= 0xF0:
            return m - 0x100
        hi, lo = m & 0xF0, m & 0x0F
        if hi == 0x80:
            return self._take(lo).decode()
        if hi == 0x90:
            return [self.value() for _ in range(lo)]
        if hi == 0xA0:
            return self._map(lo)
        if hi == 0xB0:
            return self._struct(lo)
        sizes = {0xC8: ">b", 0xC9: ">h", 0xCA: ">i", 0xCB: ">q"}
        if m in sizes:
            fmt = sizes[m]
            return self._int(fmt, struct.calcsize(fmt))
        if m == 0xC0:
            return None
        if m in (0xC2, 0xC3):
            return m == 0xC3
        if m == 0xC1:
            return struct.unpack(">d", self._take(8))[0]
        lengths = {0xD0: (">B", 1), 0xD1: (">H", 2), 0xD2: (">I", 4)}
        if m in lengths:
            return self._take(self._int(*lengths[m])).decode()
        if m in (0xD4, 0xD5, 0xD6):
            n = self._int(*{0xD4: (">B", 1), 0xD5: (">H", 2), 0xD6: (">I", 4)}[m])
            return [self.value() for _ in range(n)]
        if m in (0xD8, 0xD9, 0xDA):
            return self._map(self._int(*{0xD8: (">B", 1), 0xD9: (">H", 2), 0xDA: (">I", 4)}[m]))
        if m in (0xCC, 0xCD, 0xCE):
            return self._take(self._int(*{0xCC: (">B", 1), 0xCD: (">H", 2), 0xCE: (">I", 4)}[m]))
        raise ValueError(f"PackStream marker {m:#x} not understood")

    def _map(self, n: int) -> dict[str, Any]:
        return {self.value(): self.value() for _ in range(n)}

    def _struct(self, n: int) -> tuple[int, list[Any]]:
        tag = self._take(1)[0]
        return tag, [self.value() for _ in range(n)]


class BoltTap:
    """Listens on a free local port and relays every connection to ``target``; ``transactions``
    lists what the clients started, in order."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.transactions: list[Transaction] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"bolt://127.0.0.1:{self.port}"

    def clear(self) -> None:
        with self._lock:
            self.transactions.clear()

    def taken(self) -> list[Transaction]:
        with self._lock:
            return list(self.transactions)

    def close(self) -> None:
        self._closed = True
        self._server.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            handshake_done = threading.Event()
            manifest: list[bool] = []
            threading.Thread(target=self._client_side,
                             args=(client, upstream, handshake_done, manifest),
                             daemon=True).start()
            threading.Thread(target=self._server_side,
                             args=(upstream, client, handshake_done, manifest),
                             daemon=True).start()

    @staticmethod
    def _recv_exact(sock: socket.socket, n: int, forward: socket.socket) -> bytes:
        out = b""
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError
            forward.sendall(chunk)
            out += chunk
        return out

    def _server_side(self, upstream: socket.socket, client: socket.socket,
                     handshake_done: threading.Event, manifest: list[bool]) -> None:
        try:
            version = self._recv_exact(upstream, 4, client)
            manifest.append(version == MANIFEST_V1)
            handshake_done.set()
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            handshake_done.set()
            for s in (client, upstream):
                s.close()

    def _client_side(self, client: socket.socket, upstream: socket.socket,
                     handshake_done: threading.Event, manifest: list[bool]) -> None:
        current: Transaction | None = None
        try:
            self._recv_exact(client, 20, upstream)  # magic and version proposals
            handshake_done.wait(30)
            if manifest and manifest[0]:
                # Manifest handshake: the chosen version, then the capabilities as a varint.
                self._recv_exact(client, 4, upstream)
                while self._recv_exact(client, 1, upstream)[0] & 0x80:
                    pass
            while True:
                message = b""
                while True:
                    size = struct.unpack(">H", self._recv_exact(client, 2, upstream))[0]
                    if size == 0:
                        break
                    message += self._recv_exact(client, size, upstream)
                if not message:
                    continue  # a NOOP keep-alive
                tag, fields = _Unpacker(message).value()
                current = self._record(tag, fields, current)
        except (OSError, ConnectionError):
            pass
        finally:
            for s in (client, upstream):
                s.close()

    def _record(self, tag: int, fields: list[Any],
                current: Transaction | None) -> Transaction | None:
        if tag == BEGIN:
            extra = fields[0]
            tx = Transaction(extra.get("mode", "w"), list(extra.get("bookmarks", [])))
            with self._lock:
                self.transactions.append(tx)
            return tx
        if tag == RUN:
            query, _params, extra = fields
            if current is not None:
                current.queries.append(query)
                return current
            tx = Transaction(extra.get("mode", "w"), list(extra.get("bookmarks", [])), [query],
                             auto_commit=True)
            with self._lock:
                self.transactions.append(tx)
            return None
        if tag in (COMMIT, ROLLBACK):
            return None
        return current
