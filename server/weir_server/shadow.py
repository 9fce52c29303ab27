"""Shadow traffic, on the stable's side: a copy of a share of the live infer requests is sent to
the canary, after the client has its answer, and the canary's answer is compared with the one
the client got (`agreement.compare`). Clients only ever get the stable's answer.

Why it lives in the stable's server: a mirror in a gateway (Gateway API's RequestMirror,
Istio, Flagger, Argo Rollouts' setMirrorRoute) throws the mirrored answer away, so nothing can
be compared. Here the stable already holds its own decoded outputs for the request; the copy
and the comparison take none of the client's response time, and a bounded share of the
stable's CPU (copies a second, below).

What to mirror is level-based, read from a small JSON file (`weir serve --mirror-config FILE`)
that the operator or `weir run` writes and rewrites; the file is checked at most once a second,
so a rollout turns mirroring on, changes its percent and turns it off with no restart:

    {"source": "<stable revision>", "url": "http://10.0.0.7:8080", "percent": 10,
     "revision": "<canary revision>",
     "agreement": {"compare": "top1", "output": "probabilities", "atol": 1e-4, "rtol": 1e-3},
     "tls": {"ca": "/etc/weir/tls/ca.crt", "serverName": "iris.prod.svc"}}

No file, an empty one or `"percent": 0` mirrors nothing; nor does a server whose revision
(WEIR_REVISION) is not `source` (the canary mounts the same file). `tls` verifies an https://
canary with that CA, checking its certificate for `serverName`. `agreement` may be null: the
canary's own errors and latency on the copies are then all that is judged (by its metrics).

Bounds: `maxPerSecond` copies a second on average (default MAX_PER_SECOND; a token bucket, so
a burst of one second's worth after an idle spell): a copy costs the stable's loop about what
serving a small request costs (docs/benchmarks.md: 90 us on iris), so an unbounded share
would cost it throughput under load; capped, about 1-2 %. Copies wait in a queue of
`QUEUE_REQUESTS` requests and `QUEUE_BYTES` bytes (bodies and the stable's outputs kept for
the comparison); a copy over either bound is dropped and counted
(`weir_shadow_dropped_requests_total{reason}`). `SENDERS` copies are in flight at most, on
keep-alive connections of `weir_server.upstream` (httpx cost the stable more CPU per copy than
serving the request did). A copy is the request body byte for byte (the binary tensor
extension's header length included), to the same model path. Canary answers over
OFFLOAD_ANSWER_BYTES are decoded and compared off the loop. With `examples`, the latest
disagreeing requests are kept (bounded) for GET /shadow/examples: opt-in, since requests can
hold personal data.

Counted, by canary revision: requests mirrored, dropped, answered with an error by the canary
(or not at all), and rows compared, agreed and disagreed (one row of a batch is one sample)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter

from weir_server.agreement import AgreementRule, Array, Comparison, compare
from weir_server.codec import ProtocolError, TensorSpec
from weir_server.codec import _array_from_binary as array_from_binary
from weir_server.codec import _array_from_json as array_from_json
from weir_server.datatypes import ALL_V2_DATATYPES
from weir_server.metrics import LABELS
from weir_server.upstream import Upstream, UpstreamError

log = logging.getLogger("weir.server.shadow")

QUEUE_REQUESTS: Final = 256
QUEUE_BYTES: Final = 32 * 1024 * 1024
SENDERS: Final = 4
CONNECT_TIMEOUT: Final = 1.0
READ_TIMEOUT: Final = 5.0
MAX_PER_SECOND: Final = 100.0  # default copies a second at most (the mirror file's maxPerSecond)
OFFLOAD_ANSWER_BYTES: Final = 64 * 1024  # bigger canary answers are decoded off the loop
MAX_EXAMPLES: Final = 100  # disagreeing requests kept at most (the file's `examples`)
EXAMPLE_BYTES: Final = 4096  # a JSON request body kept whole up to this size
EXAMPLE_VALUES: Final = 64  # values of each answer's row kept
CHECK_EVERY: Final = 1.0  # seconds between looks at the mirror file
MAX_FILE_BYTES: Final = 64 * 1024
SHADOW_LABELS: Final = (*LABELS, "canary_revision")
HEADER_LENGTH: Final = "inference-header-content-length"


@dataclass(frozen=True, slots=True)
class MirrorTarget:
    """Where copies go and what is compared: the mirror file, parsed."""

    url: str
    percent: float
    revision: str = ""
    rule: AgreementRule | None = None
    source: str = ""  # the revision whose servers mirror; "" = any server that reads the file
    ca: str | None = None  # PEM CA file that verifies an https:// canary
    server_name: str | None = None  # the name its certificate must carry (sent as SNI)
    max_per_second: float = MAX_PER_SECOND  # copies a second at most
    examples: int = 0  # disagreeing requests kept for an SRE to see (inputs may be personal)


def parse_mirror(text: str) -> MirrorTarget | None:
    """The target a mirror file names; None when it mirrors nothing. ValueError says what is
    wrong with a file that cannot be used (then nothing is mirrored either)."""
    if not text.strip():
        return None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    percent = raw.get("percent", 0)
    if isinstance(percent, bool) or not isinstance(percent, int | float):
        raise ValueError("percent must be a number from 0 to 100")
    if not 0 <= percent <= 100 or not math.isfinite(percent):
        raise ValueError(f"percent must be from 0 to 100, got {percent}")
    if percent == 0:
        return None
    url = raw.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError("url must be the canary's http(s):// base URL")
    revision = raw.get("revision") or ""
    if not isinstance(revision, str):
        raise ValueError("revision must be a string")
    agreement = raw.get("agreement")
    rule = None
    if agreement is not None:
        if not isinstance(agreement, dict):
            raise ValueError("agreement must be an object or null")
        compare_as = agreement.get("compare", "top1")
        if compare_as not in ("top1", "close"):
            raise ValueError(f"agreement.compare must be top1 or close, got {compare_as!r}")
        output = agreement.get("output")
        if output is not None and not isinstance(output, str):
            raise ValueError("agreement.output must be an output name")
        tolerances = [agreement.get("atol", 1e-4), agreement.get("rtol", 1e-3)]
        if not all(isinstance(t, int | float) and t >= 0 for t in tolerances):
            raise ValueError("agreement.atol and rtol must be numbers >= 0")
        rule = AgreementRule(compare_as, output, float(tolerances[0]), float(tolerances[1]))
    source = raw.get("source") or ""
    if not isinstance(source, str):
        raise ValueError("source must be a revision")
    tls = raw.get("tls") or {}
    if not isinstance(tls, dict) or not all(
        isinstance(tls.get(k), str | None) for k in ("ca", "serverName")
    ):
        raise ValueError("tls must be an object of ca and serverName (file path and name)")
    rate = raw.get("maxPerSecond", MAX_PER_SECOND)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 1 <= rate <= 100000:
        raise ValueError("maxPerSecond must be a number from 1 to 100000")
    examples = raw.get("examples", 0)
    if isinstance(examples, bool) or not isinstance(examples, int) or not 0 <= examples <= 100:
        raise ValueError("examples must be a whole number from 0 to 100")
    return MirrorTarget(
        url.rstrip("/"),
        float(percent),
        revision,
        rule,
        source,
        tls.get("ca"),
        tls.get("serverName"),
        float(rate),
        examples,
    )


def decode_response(body: bytes, header_length: int | None) -> dict[str, Array]:
    """The outputs of a V2 infer response (JSON, or the binary tensor extension), as arrays.
    ProtocolError when the answer is not a well-formed response."""
    header = body if header_length is None else body[:header_length]
    if header_length is not None and not 0 <= header_length <= len(body):
        raise ProtocolError(f"{HEADER_LENGTH} {header_length} is beyond the body")
    try:
        document = orjson.loads(header)
    except orjson.JSONDecodeError:
        raise ProtocolError("the answer is not JSON") from None
    outputs = document.get("outputs") if isinstance(document, dict) else None
    if not isinstance(outputs, list):
        raise ProtocolError("the answer has no outputs")
    found: dict[str, Array] = {}
    offset = header_length or 0
    view = memoryview(body)
    for item in outputs:
        if not isinstance(item, dict):
            raise ProtocolError("an output is not an object")
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        if (
            not isinstance(name, str)
            or datatype not in ALL_V2_DATATYPES
            or not isinstance(shape, list)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise ProtocolError("an output lacks a name, a V2 datatype or a shape")
        spec = TensorSpec(name, datatype, tuple(shape))
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(body):
                raise ProtocolError(f"output '{name}' has a binary_data_size beyond the body")
            found[name] = array_from_binary(view[offset : offset + size], spec.shape, spec)
            offset += size
        else:
            found[name] = array_from_json(item.get("data"), spec.shape, spec)
    return found


@dataclass(slots=True)
class _Copy:
    target: MirrorTarget
    path: str
    body: bytes
    header_length: str | None
    stable: dict[str, Array] | None  # None when nothing is compared
    first_output: str | None
    size: int  # bytes held: the body and the stable's outputs


class _Counts:
    """The shadow counters of one server, children made once per label set."""

    def __init__(self, labels: tuple[str, ...], registry: CollectorRegistry | None) -> None:
        def counter(name: str, help_text: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(name, help_text, (*SHADOW_LABELS, *extra), registry=registry)

        self._labels = labels
        self._families = {
            "mirrored": counter(
                "weir_shadow_mirrored_requests", "Infer requests copied to the canary."
            ),
            "dropped": counter(
                "weir_shadow_dropped_requests",
                "Copies not sent, by reason: queue (the mirror queue was full) or rate (over "
                "maxPerSecond). Clients are never slowed.",
                ("reason",),
            ),
            "errors": counter(
                "weir_shadow_canary_errors",
                "Copies the canary answered with an error, an unreadable answer or not at all.",
            ),
            "compared": counter(
                "weir_shadow_compared_samples", "Rows of mirrored requests compared."
            ),
            "agreed": counter(
                "weir_shadow_agreed_samples", "Compared rows where the canary agreed."
            ),
            "disagreed": counter(
                "weir_shadow_disagreed_samples",
                "Compared rows where the canary disagreed (compared - agreed).",
            ),
        }
        self._children: dict[tuple[str, ...], Any] = {}

    def inc(self, what: str, revision: str, amount: int = 1, *extra: str) -> None:
        key = (what, revision, *extra)
        child = self._children.get(key)
        if child is None:
            child = self._families[what].labels(*self._labels, revision, *extra)
            self._children[key] = child
        child.inc(amount)


class _RateLimit:
    """A token bucket: at most `rate` a second, bursts of up to a second's worth."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._tokens = 0.0
        self._at = clock()

    def take(self, rate: float) -> bool:
        now = self._clock()
        self._tokens = min(rate, self._tokens + (now - self._at) * rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class Mirror:
    """The stable's mirror: `offer` each answered request (never blocks, never raises); the
    copies are sent and compared by background tasks of the server's loop."""

    def __init__(
        self,
        path: Path,
        labels: tuple[str, ...],
        registry: CollectorRegistry | None,
        *,
        revision: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.revision = revision  # this server's: a file whose source is another is ignored
        self.counts = _Counts(labels, registry)
        self._clock = clock
        self._checked_at = -math.inf
        self._stamp: tuple[int, int] | None = None
        self._target: MirrorTarget | None = None
        self._credit = 0.0
        self._rate = _RateLimit(clock)
        self._queue: deque[_Copy] = deque()
        self._queued_bytes = 0
        self._ready: asyncio.Event | None = None
        self._senders: list[asyncio.Task[None]] = []
        self._upstreams: dict[tuple[str, str | None, str | None], Upstream] = {}
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._examples: deque[dict[str, Any]] = deque(maxlen=MAX_EXAMPLES)

    @property
    def target(self) -> MirrorTarget | None:
        self._refresh()
        return self._target

    def offer(
        self,
        path: str,
        body: bytes,
        header_length: str | None,
        stable: dict[str, Array],
        first_output: str | None,
    ) -> None:
        """One request the stable answered with 200: copied if its share says so."""
        target = self.target
        if target is None:
            return
        self._credit += target.percent
        if self._credit < 100.0:
            return
        self._credit -= 100.0
        size = len(body) + (sum(a.nbytes for a in stable.values()) if target.rule else 0)
        if len(self._queue) >= QUEUE_REQUESTS or self._queued_bytes + size > QUEUE_BYTES:
            self.counts.inc("dropped", target.revision, 1, "queue")
            return
        if not self._rate.take(target.max_per_second):
            self.counts.inc("dropped", target.revision, 1, "rate")
            return
        kept = stable_outputs(stable) if target.rule is not None else None
        self._queue.append(_Copy(target, path, body, header_length, kept, first_output, size))
        self._queued_bytes += size
        self._start()
        assert self._ready is not None
        self._ready.set()

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked_at < CHECK_EVERY:
            return
        self._checked_at = now
        try:
            stat = os.stat(self.path)
        except OSError:
            self._stamp, self._target = None, None
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            if stat.st_size > MAX_FILE_BYTES:
                raise ValueError(f"over {MAX_FILE_BYTES} bytes")
            target = parse_mirror(self.path.read_text(errors="replace"))
        except (OSError, ValueError) as error:
            log.warning("mirror file %s: %s; mirroring nothing", self.path, error)
            target = None
        if target is not None and target.source and target.source != self.revision:
            target = None  # another revision's servers mirror (this is the canary)
        ca = target.ca if target is not None else None
        if ca is not None:
            try:  # read again whenever the file changes: a rotated CA is picked up
                self._contexts[ca] = ssl.create_default_context(cafile=ca)
            except (OSError, ssl.SSLError) as error:
                log.warning(
                    "mirror file %s: tls.ca %s: %s; mirroring nothing", self.path, ca, error
                )
                target = None
        if target != self._target:
            # Copies queued for the old target are not sent: a slow canary's backlog would
            # otherwise delay (and drop) the new one's copies for minutes.
            self._queue.clear()
            self._queued_bytes = 0
            self._drop_pools(target)
            log.info(
                "mirroring %s",
                f"{target.percent:g}% to {target.url}" if target else "nothing",
            )
        self._target = target

    def _drop_pools(self, target: MirrorTarget | None) -> None:
        """Close the connection pools of canaries no longer mirrored to."""
        keep = None
        if target is not None:
            url = urlsplit(target.url)
            keep = (f"{url.scheme}://{url.hostname}", target.ca, target.server_name)
        for key in [k for k in self._upstreams if k != keep]:
            upstream = self._upstreams.pop(key)
            with contextlib.suppress(RuntimeError):  # no running loop: nothing was opened
                asyncio.get_running_loop().create_task(upstream.aclose())

    def _start(self) -> None:
        if self._senders:
            return
        self._ready = asyncio.Event()
        self._senders = [asyncio.create_task(self._send_loop()) for _ in range(SENDERS)]

    async def _send_loop(self) -> None:
        assert self._ready is not None
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            copy = self._queue.popleft()
            self._queued_bytes -= copy.size
            try:
                await self._send(copy)
            except Exception:  # a bug here must never stop the mirror, nor reach a client
                log.exception("mirroring a request to %s failed", copy.target.url)

    def _upstream(self, target: MirrorTarget) -> tuple[Upstream, int, bytes]:
        """The connection pool to the target, its port, and the path prefix of its URL."""
        url = urlsplit(target.url)
        https = url.scheme == "https"
        port = url.port or (443 if https else 80)
        key = (f"{url.scheme}://{url.hostname}", target.ca, target.server_name)
        upstream = self._upstreams.get(key)
        if upstream is None:
            context = None
            if https:
                context = self._contexts.get(target.ca or "") or ssl.create_default_context()
            upstream = Upstream(
                host=url.hostname or "",
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=READ_TIMEOUT,
                max_idle=SENDERS,
                ssl=context,
                server_hostname=target.server_name,
            )
            self._upstreams[key] = upstream
        return upstream, port, url.path.rstrip("/").encode()

    async def _send(self, copy: _Copy) -> None:
        target, revision = copy.target, copy.target.revision
        upstream, port, prefix = self._upstream(target)
        headers = [(b"content-type", b"application/json")]
        if copy.header_length is not None:
            headers = [
                (b"content-type", b"application/octet-stream"),
                (HEADER_LENGTH.encode(), copy.header_length.encode("latin-1")),
            ]
        self.counts.inc("mirrored", revision)
        try:
            response = await upstream.request(
                port, "POST", prefix + copy.path.encode(), headers, copy.body
            )
        except UpstreamError:
            self.counts.inc("errors", revision)
            return
        if response.status != 200:
            self.counts.inc("errors", revision)
            return
        if target.rule is None or copy.stable is None:
            return
        length = response.header(HEADER_LENGTH.encode())
        try:
            header_length = int(length) if length is not None else None
            if len(response.body) > OFFLOAD_ANSWER_BYTES:
                result = await asyncio.to_thread(_compare, response.body, header_length, copy)
            else:
                result = _compare(response.body, header_length, copy)
        except (ProtocolError, ValueError):
            self.counts.inc("errors", revision)
            return
        self.counts.inc("compared", revision, result.rows)
        if result.agreed:
            self.counts.inc("agreed", revision, result.agreed)
        if result.rows > result.agreed:
            self.counts.inc("disagreed", revision, result.rows - result.agreed)
        if target.examples and result.agreed < result.rows:
            self._keep_example(copy, response.body, header_length, result)

    def _keep_example(
        self, copy: _Copy, body: bytes, header_length: int | None, result: Comparison
    ) -> None:
        """One disagreeing request, bounded: its JSON body (up to EXAMPLE_BYTES) and, for the
        first disagreeing row, both answers (up to EXAMPLE_VALUES values each)."""
        assert copy.target.rule is not None
        assert copy.stable is not None
        name = copy.target.rule.output or copy.first_output or next(iter(copy.stable), "")
        row = result.disagreeing[0] if result.disagreeing else 0
        example: dict[str, Any] = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "canaryRevision": copy.target.revision,
            "output": name,
            "row": row,
            "rows": result.rows,
            "agreed": result.agreed,
            "stable": _row_values(copy.stable.get(name), row),
        }
        try:
            example["canary"] = _row_values(decode_response(body, header_length).get(name), row)
        except ProtocolError:
            example["canary"] = None
        if result.why:
            example["why"] = result.why
        if copy.header_length is None and len(copy.body) <= EXAMPLE_BYTES:
            try:
                example["request"] = orjson.loads(copy.body)
            except orjson.JSONDecodeError:
                example["request"] = None
        else:
            example["request"] = {"bytes": len(copy.body), "binary": copy.header_length is not None}
        self._examples.append(example)
        while len(self._examples) > copy.target.examples:
            self._examples.popleft()

    def examples(self) -> list[dict[str, Any]]:
        """The disagreeing requests kept (the newest last); empty unless the file asks."""
        target = self.target
        if target is None or not target.examples:
            return []
        return list(self._examples)[-target.examples :]

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def aclose(self) -> None:
        for task in self._senders:
            task.cancel()
        for task in self._senders:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._senders = []
        for upstream in self._upstreams.values():
            await upstream.aclose()
        self._upstreams.clear()


def _row_values(array: Array | None, row: int) -> list[Any] | None:
    """One row of an output as JSON values, at most EXAMPLE_VALUES of them."""
    if array is None:
        return None
    values = array[row] if array.ndim >= 2 and row < array.shape[0] else array
    flat = np.asarray(values).ravel()[:EXAMPLE_VALUES]
    return [v.item() if hasattr(v, "item") else v for v in flat]


def _compare(body: bytes, header_length: int | None, copy: _Copy) -> Comparison:
    assert copy.target.rule is not None
    assert copy.stable is not None
    canary = decode_response(body, header_length)
    return compare(canary, copy.stable, copy.target.rule, copy.first_output)


def stable_outputs(outputs: dict[str, Array]) -> dict[str, Array]:
    """The stable's outputs as kept for a comparison (arrays a batch may share: copied only
    when they are views, so a later batch cannot change them)."""
    return {
        name: (np.array(array) if array.base is not None else array)
        for name, array in outputs.items()
    }
