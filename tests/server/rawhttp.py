"""HTTP/1.1 by hand, for requests no well-behaved client sends: wrong Content-Length, a body that
stalls, odd framing. One request per connection; the answer is parsed just enough (status,
headers, a Content-Length or chunked body) to compare with what the server counted."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0
    closed: bool = False  # the server closed the connection after answering


def request_bytes(
    body: bytes | None,
    path: str,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    content_length: str | None = "auto",
) -> bytes:
    """One request; `content_length` "auto" = the body's true length, None = no header."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if content_length == "auto":
        content_length = str(len(body or b""))
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def exchange(port: int, raw: bytes, timeout: float = 15.0, then_close: bool = False) -> Answer:
    """Send `raw` on a new connection and read one answer (status 0: none came)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        if then_close:
            sock.shutdown(socket.SHUT_WR)
        return read_answer(sock, started, timeout)


def read_answer(sock: socket.socket, started: float, timeout: float) -> Answer:
    buffer = b""
    deadline = started + timeout
    closed = False

    def more() -> bool:
        nonlocal buffer, closed
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            data = b""
        if not data:
            closed = True
            return False
        buffer += data
        return True

    while b"\r\n\r\n" not in buffer:
        if not more():
            return Answer(0, seconds=time.monotonic() - started, closed=True)
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    buffer = rest
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(buffer) < length and more():
            pass
        body = buffer[:length]
    elif headers.get("transfer-encoding") == "chunked":
        while not buffer.endswith(b"0\r\n\r\n") and more():
            pass
        body = _dechunk(buffer)
    else:
        while more():
            pass
        body = buffer
    if not closed and headers.get("connection", "").lower() == "close":
        while more():
            pass
    return Answer(status, headers, body, time.monotonic() - started, closed)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out
