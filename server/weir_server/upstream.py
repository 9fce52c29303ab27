"""An HTTP/1.1 keep-alive client to `weir serve`: the local router's upstream (weir run) and
the stable's shadow mirror (weir_server.shadow), which copies requests to the canary.

Why it exists: the router only forwards a request it has read whole to a server on
127.0.0.1 and the whole answer back, and with httpx on that path most of `weir run`'s CPU per
request went to the client's layers (httpx → httpcore → anyio → h11): the router added about
3 ms at p50 and topped out near 280 requests/s (docs/benchmarks.md, "Local router overhead").
This is the little that path needs, on bare asyncio protocols: a bounded pool of idle
keep-alive connections per server port, a request written with Content-Length, a response
parsed as it arrives (status line, case-insensitive headers, a Content-Length, chunked or
close-delimited body, `Connection: close`), a connect timeout and a read (inactivity) timeout.

What the router gets back is one of three things: a `Response`; `UpstreamUnavailable` (the
server refused the connection, dropped it during the answer, or answered nonsense: the router
tries another server and reports this one); or `UpstreamTimeout` (504). A keep-alive connection
that the server closed while it was idle (uvicorn closes them after 5 s) is not a failure of
the server: an idle connection that sees its end leaves the pool at once, and one closed in the
race with a new request (its end, or a reset, before any byte of the answer) is replaced by a
fresh connection to the same server once, silently. Inference is a pure function of its input,
so sending a request again repeats nothing.

The mirror measured the same about httpx on its side (docs/benchmarks.md, "Shadow traffic"):
the client's layers cost the stable more CPU per copy than serving the request. So it uses
this client too, over TLS when the canary speaks HTTPS (`ssl` and `server_hostname`)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
from collections.abc import Iterable
from typing import cast

__all__ = ["Response", "Upstream", "UpstreamError", "UpstreamTimeout", "UpstreamUnavailable"]

CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 60.0
MAX_IDLE_PER_SERVER = 64
MAX_HEAD_BYTES = 64 * 1024  # status line and headers; also the bound of a chunk-size line
METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
_SMALL_BODY = 16 * 1024  # smaller bodies go out in the same write (and packet) as the head

# Parser states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_EOF, _DONE = range(8)


class UpstreamError(Exception):
    """The server gave no answer."""


class UpstreamUnavailable(UpstreamError):
    """The server could not be reached, or dropped the connection or answered something that
    is not HTTP/1.1: another server may answer instead."""


class UpstreamTimeout(UpstreamError):
    """No connection within the connect timeout, or no byte of the answer within the read
    timeout."""


class _Stale(Exception):
    """The connection ended (end of stream or reset) before any byte of the answer."""


class _ProtocolError(Exception):
    pass


class Response:
    """A complete answer: status code, headers (names lower-cased, in order) and body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: bytes) -> bytes | None:
        """The value of a header (`name` in lower case); repeated fields joined by ", "."""
        values = [v for k, v in self.headers if k == name]
        if not values:
            return None
        return values[0] if len(values) == 1 else b", ".join(values)

    def __repr__(self) -> str:
        return f"<Response {self.status}, {len(self.body)} B>"


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one exchange at a time, its answer parsed as it arrives."""

    def __init__(self, upstream: Upstream, port: int) -> None:
        self.upstream = upstream
        self.port = port
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self.closed = False
        self._waiter: asyncio.Future[Response] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._read_timeout = READ_TIMEOUT
        self._last_read = 0.0
        self._buffer = bytearray()
        self._state = _DONE
        self._received = False
        self._head_only = False
        self._reusable = True
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._remaining = 0
        self._parts: list[bytes] = []

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports (the server's loop under Granian) are not asyncio.Transport
        # subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            # Nothing was asked (or the asker is gone): bytes now are not ours to read.
            self.abort()
            return
        self._received = True
        self._last_read = self.loop.time()
        self._buffer += data
        try:
            self._parse()
        except (_ProtocolError, ValueError) as error:
            self._fail(UpstreamUnavailable(f"port {self.port}: bad HTTP answer: {error}"))
            self.abort()

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.upstream._forget(self)
        if not self.lost.done():
            self.lost.set_result(None)
        if self._waiter is None or self._waiter.done():
            return
        if self._state == _UNTIL_EOF and exc is None:
            self._reusable = False
            self._finish(bytes(self._buffer))
        elif not self._received:
            self._fail(_Stale())
        else:
            reason = f": {exc}" if exc else ""
            self._fail(UpstreamUnavailable(f"port {self.port}: connection lost mid-answer{reason}"))

    # -- an exchange ------------------------------------------------------------------------

    def send(
        self, data: Iterable[bytes], head_only: bool, read_timeout: float
    ) -> asyncio.Future[Response]:
        """Write a request; the future gets its answer (or `_Stale`, `UpstreamUnavailable`,
        `UpstreamTimeout`)."""
        assert self.transport is not None
        waiter: asyncio.Future[Response] = self.loop.create_future()
        self._waiter = waiter
        self._state = _HEAD
        self._received = False
        self._head_only = head_only
        self._reusable = True
        self._buffer.clear()
        if self.closed or self.transport.is_closing():
            self._fail(_Stale())
            return waiter
        self._read_timeout = read_timeout
        self._last_read = self.loop.time()
        self._timer = self.loop.call_at(self._last_read + read_timeout, self._check_timeout)
        for chunk in data:
            self.transport.write(chunk)
        return waiter

    @property
    def reusable(self) -> bool:
        return self._reusable and not self.closed and self._state == _DONE

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _check_timeout(self) -> None:
        self._timer = None
        if self._waiter is None or self._waiter.done():
            return
        deadline = self._last_read + self._read_timeout
        if self.loop.time() < deadline:  # bytes arrived since: wait for the rest
            self._timer = self.loop.call_at(deadline, self._check_timeout)
            return
        self._fail(UpstreamTimeout(f"port {self.port}: no answer within {self._read_timeout:g} s"))
        self.abort()

    def _finish(self, body: bytes) -> None:
        self._state = _DONE
        if self._buffer:
            self._reusable = False  # more than the answer: nothing was asked for it
        waiter, self._waiter = self._waiter, None
        self._stop_timer()
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._status, self._headers, body))

    def _fail(self, error: Exception) -> None:
        self._reusable = False
        waiter, self._waiter = self._waiter, None
        self._stop_timer()
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- the answer's parser ----------------------------------------------------------------

    def _parse(self) -> None:
        buffer = self._buffer
        while True:
            state = self._state
            if state == _HEAD:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD_BYTES:
                        raise _ProtocolError("header section too large")
                    return
                head = bytes(buffer[:end])
                del buffer[: end + 4]
                self._head(head)
                if self._state == _DONE:
                    self._finish(b"")
                    return
            elif state == _LENGTH:
                if len(buffer) < self._remaining:
                    return
                if len(buffer) == self._remaining:
                    body = bytes(buffer)
                    buffer.clear()
                else:
                    body = bytes(buffer[: self._remaining])
                    del buffer[: self._remaining]
                self._finish(body)
                return
            elif state == _CHUNK_SIZE:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD_BYTES:
                        raise _ProtocolError("chunk size line too long")
                    return
                size_text = bytes(buffer[:end]).split(b";", 1)[0].strip()
                del buffer[: end + 2]
                if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                    raise _ProtocolError(f"bad chunk size {size_text!r}")
                size = int(size_text, 16)
                if size == 0:
                    self._state = _TRAILERS
                else:
                    self._remaining, self._state = size, _CHUNK_DATA
            elif state == _CHUNK_DATA:
                taken = min(len(buffer), self._remaining)
                if taken == 0:
                    return
                self._parts.append(bytes(buffer[:taken]))
                del buffer[:taken]
                self._remaining -= taken
                if self._remaining:
                    return
                self._state = _CHUNK_END
            elif state == _CHUNK_END:
                if len(buffer) < 2:
                    return
                if buffer[:2] != b"\r\n":
                    raise _ProtocolError("chunk not followed by CRLF")
                del buffer[:2]
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD_BYTES:
                        raise _ProtocolError("trailer section too large")
                    return
                del buffer[: end + 2]
                if end == 0:  # the empty line after the trailers (usually there are none)
                    body = b"".join(self._parts)
                    self._parts = []
                    self._finish(body)
                    return
            else:  # _UNTIL_EOF (the body is all the buffer holds when the stream ends) or _DONE
                return

    def _head(self, head: bytes) -> None:
        """Status line and headers; sets the body's framing (the next state)."""
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        version = parts[0]
        if len(parts) < 2 or version not in (b"HTTP/1.1", b"HTTP/1.0"):
            raise _ProtocolError(f"bad status line {lines[0][:100]!r}")
        code = parts[1]
        if len(code) != 3 or not code.isdigit():
            raise _ProtocolError(f"bad status code {code[:20]!r}")
        status = int(code)
        headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise _ProtocolError(f"bad header line {line[:100]!r}")
            headers.append((name.lower(), value.strip(b" \t")))
        if 100 <= status < 200:
            if status == 101:
                raise _ProtocolError("101 Switching Protocols was not asked for")
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        self._status, self._headers = status, headers
        connection = b",".join(v for k, v in headers if k == b"connection").lower()
        tokens = {t.strip() for t in connection.split(b",")}
        if b"close" in tokens or (version == b"HTTP/1.0" and b"keep-alive" not in tokens):
            self._reusable = False
        encodings = [v for k, v in headers if k == b"transfer-encoding"]
        lengths = {v for k, v in headers if k == b"content-length"}
        if self._head_only or status in (204, 304):
            self._state = _DONE
        elif encodings:
            if b",".join(encodings).lower().split(b",")[-1].strip() == b"chunked":
                self._parts, self._state = [], _CHUNK_SIZE
            else:  # not chunked last: the body ends with the connection (RFC 9112, 6.3)
                self._reusable, self._state = False, _UNTIL_EOF
        elif lengths:
            length = lengths.pop() if len(lengths) == 1 else b""
            if not length.isdigit():
                raise _ProtocolError(f"bad content-length {b','.join(sorted(lengths))[:40]!r}")
            self._remaining = int(length)
            self._state = _LENGTH if self._remaining else _DONE
        else:
            self._reusable, self._state = False, _UNTIL_EOF


class Upstream:
    """HTTP/1.1 keep-alive connections to local servers, by port (one exchange at a time on
    each; as many connections as requests in flight; at most `max_idle` idle per port)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        max_idle: int = MAX_IDLE_PER_SERVER,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.host = host
        self.ssl = ssl  # TLS, verified by this context, the certificate checked for
        self.server_hostname = server_hostname  # this name (default: host)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self._idle: dict[int, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._closing = False

    async def request(
        self,
        port: int,
        method: str,
        target: bytes,
        headers: Iterable[tuple[bytes, bytes]] = (),
        body: bytes = b"",
    ) -> Response:
        """Send one request to `host`:`port` and read its whole answer. `target` is the
        request target as it goes on the wire (path and query, percent-encoded); `headers`
        must not include Host, Content-Length, Transfer-Encoding or Connection."""
        if self._closing:
            raise UpstreamUnavailable("the upstream client is closed")
        head = [f"{method} ".encode("ascii"), target, b" HTTP/1.1\r\nhost: "]
        head.append(f"{self.host}:{port}\r\n".encode("ascii"))
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        if body or method in METHODS_WITH_BODY:
            head.append(b"content-length: %d\r\n" % len(body))
        head.append(b"\r\n")
        data = [b"".join(head) + body] if len(body) < _SMALL_BODY else [b"".join(head), body]
        head_only = method == "HEAD"
        connection = self._take_idle(port)
        if connection is not None:
            try:
                return await self._exchange(connection, data, head_only)
            except _Stale:
                pass  # closed by the server while idle: once more, on a fresh connection
        connection = await self._connect(port)
        try:
            return await self._exchange(connection, data, head_only)
        except _Stale:
            raise UpstreamUnavailable(
                f"port {port}: connection closed before any byte of the answer"
            ) from None

    async def aclose(self) -> None:
        """Close every connection, idle or busy (a request in flight gets
        `UpstreamUnavailable`), and wait until they are closed."""
        self._closing = True
        connections = list(self._open)
        self._idle.clear()
        for connection in connections:
            connection.close()
        if connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await asyncio.gather(*(c.lost for c in connections))
        for connection in connections:
            if not connection.lost.done():
                connection.abort()
        self._open.clear()

    def idle(self, port: int) -> int:
        """How many idle connections to this port the pool holds."""
        return len(self._idle.get(port, ()))

    # -- internals --------------------------------------------------------------------------

    def _take_idle(self, port: int) -> _Connection | None:
        idle = self._idle.get(port)
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be closed
            if not connection.closed:
                return connection
        return None

    async def _connect(self, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.ssl is None:
                    _, connection = await loop.create_connection(
                        lambda: _Connection(self, port), self.host, port
                    )
                else:
                    _, connection = await loop.create_connection(
                        lambda: _Connection(self, port),
                        self.host,
                        port,
                        ssl=self.ssl,
                        server_hostname=self.server_hostname or self.host,
                    )
        except TimeoutError:
            raise UpstreamTimeout(
                f"port {port}: no connection within {self.connect_timeout:g} s"
            ) from None
        except OSError as error:
            raise UpstreamUnavailable(f"port {port}: cannot connect: {error}") from error
        if self._closing:
            connection.abort()
            raise UpstreamUnavailable("the upstream client is closed")
        self._open.add(connection)
        return connection

    async def _exchange(
        self, connection: _Connection, data: list[bytes], head_only: bool
    ) -> Response:
        waiter = connection.send(data, head_only, self.read_timeout)
        try:
            response = await waiter
        except BaseException:
            # Failed, timed out or cancelled: the rest of this answer must never be read as
            # the next one's.
            connection.abort()
            raise
        if connection.reusable and not self._closing:
            idle = self._idle.setdefault(connection.port, [])
            if len(idle) < self.max_idle:
                idle.append(connection)
                return response
        connection.close()
        return response

    def _forget(self, connection: _Connection) -> None:
        """A connection ended (either side closed it): out of the pool."""
        self._open.discard(connection)
        idle = self._idle.get(connection.port)
        if idle and connection in idle:
            idle.remove(connection)
