"""Sending many HTTP requests so that they reach a server at nearly the same instant.

An async client does not do that: httpx spends about as long sending one request (encoding it,
opening its connection) as `weir serve` spends answering a small one, so its "concurrent"
requests can reach the server one after another. A test about what the server does with
requests that arrive together (dynamic batching) needs them to arrive together, so this opens
every connection first, encodes every request first, then writes them all in one tight loop."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def post_all_at_once(url: str, bodies: list[bytes], timeout: float = 30.0) -> list[Answer]:
    """POST each body to `url` on its own connection; the answers come back in the same order."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path or "/"
    connections = [h11.Connection(our_role=h11.CLIENT) for _ in bodies]
    headers = [("Host", f"{host}:{port}"), ("Content-Type", "application/json")]
    wires = [
        _encode(
            connection,
            h11.Request(
                method="POST",
                target=target,
                headers=[*headers, ("Content-Length", str(len(body)))],
            ),
            h11.Data(data=body),
            h11.EndOfMessage(),
        )
        for connection, body in zip(connections, bodies, strict=True)
    ]
    sockets: list[socket.socket] = []
    try:
        for _ in bodies:
            sockets.append(socket.create_connection((host, port), timeout=timeout))
        for sock, wire in zip(sockets, wires, strict=True):
            sock.sendall(wire)
        return [
            _read_answer(sock, connection)
            for sock, connection in zip(sockets, connections, strict=True)
        ]
    finally:
        for sock in sockets:
            sock.close()


def _encode(
    connection: h11.Connection, *events: h11.Request | h11.Data | h11.EndOfMessage
) -> bytes:
    return b"".join(connection.send(event) or b"" for event in events)


def _read_answer(sock: socket.socket, connection: h11.Connection) -> Answer:
    status: int | None = None
    chunks: list[bytes] = []
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            assert status is not None
            return Answer(status, b"".join(chunks))
        elif isinstance(event, h11.ConnectionClosed):
            raise ConnectionError(f"the server closed the connection before answering ({status})")
