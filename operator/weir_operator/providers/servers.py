"""How the operator talks to server pods: plain HTTP, or HTTPS verified as a client should.

Why it exists: with `spec.server.tls` a server pod speaks HTTPS with the certificate of a
Secret. The operator reaches each pod by its IP, so the usual check (the certificate names the
host in the URL) cannot work, and turning verification off would make the probes and scrapes
trust whoever answers on that address. Instead each TLS pod (`PodTarget.tls`, read from its
annotations) is verified against the ca.crt of its Secret, with the expected name sent as SNI
and checked in place of the address (httpx's `sni_hostname` is the `server_hostname` of the
TLS handshake). The gates' requests, the direct provider's scrapes and the autoscaler's load
scrapes all go through here.

Where a CA comes from is the shell's business (`TrustSource`: the operator reads the Secret
through the API, `cluster/trust.py`); it is kept `TRUST_TTL` seconds (a rotated CA is picked
up within that, or within `FAILURE_TTL` after a certificate fails to verify), a failure to get
it `FAILURE_TTL` seconds (no API call per scrape). One httpx client per CA, so connections made
with one trust are never reused with another. A CA that cannot be had, or a certificate that
does not verify, raises `TrustError` with the reason in words: the probes say it in an event,
the analysis in its reason; neither ever falls back to an unverified connection."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from weir_operator.providers.base import PodTarget, PodTls

TRUST_TTL = 60.0
FAILURE_TTL = 5.0
MAX_TLS_CLIENTS = 64
VERIFY_FAILED = "CERTIFICATE_VERIFY_FAILED"


class TrustError(Exception):
    """A TLS server pod cannot be trusted now (no CA to verify it with, or its certificate
    does not verify); the message says which pod or Secret and why."""


class TrustSource(Protocol):
    async def ca_bundle(self, namespace: str, secret: str) -> str:
        """The PEM CA certificate(s) of a Secret (its ca.crt); TrustError when there is none."""
        ...


@dataclass(frozen=True, slots=True)
class _Trust:
    at: float
    context: ssl.SSLContext | None
    fingerprint: str
    error: str = ""


def _context(pem: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=pem)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class ServerClients:
    """The HTTP clients of one operator process for its server pods: `plain` for HTTP pods,
    one verifying client per CA for HTTPS pods."""

    def __init__(
        self,
        plain: httpx.AsyncClient,
        trust: TrustSource | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plain = plain
        self._source = trust
        self._transport = transport
        self._clock = clock
        self._trusted: dict[tuple[str, str], _Trust] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._clients: OrderedDict[str, httpx.AsyncClient] = OrderedDict()

    async def request(
        self, method: str, target: PodTarget, path: str, **kwargs: Any
    ) -> httpx.Response:
        """`method` `path` on the pod, verified when it speaks HTTPS. httpx's errors pass
        through; a certificate that does not verify is a TrustError."""
        if target.tls is None:
            return await self.plain.request(method, target.url(path), **kwargs)
        client = await self._client(target.tls)
        extensions = {"sni_hostname": target.tls.server_name}
        try:
            return await client.request(method, target.url(path), extensions=extensions, **kwargs)
        except httpx.ConnectError as error:
            if VERIFY_FAILED not in str(error):
                raise
            self._recheck_soon((target.tls.namespace, target.tls.secret))
            raise TrustError(
                f"{target.url(path)}: the certificate does not verify against ca.crt of Secret "
                f"{target.tls.namespace}/{target.tls.secret} as {target.tls.server_name}: "
                f"{_reason(error)}"
            ) from None

    async def get(self, target: PodTarget, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", target, path, **kwargs)

    async def post(self, target: PodTarget, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", target, path, **kwargs)

    async def _client(self, tls: PodTls) -> httpx.AsyncClient:
        trust = await self._trust(tls)
        if trust.context is None:
            raise TrustError(trust.error)
        client = self._clients.get(trust.fingerprint)
        if client is None:
            client = httpx.AsyncClient(
                transport=self._transport, verify=trust.context, follow_redirects=False
            )
            self._clients[trust.fingerprint] = client
            while len(self._clients) > MAX_TLS_CLIENTS:
                _, oldest = self._clients.popitem(last=False)
                await oldest.aclose()
        self._clients.move_to_end(trust.fingerprint)
        return client

    async def _trust(self, tls: PodTls) -> _Trust:
        key = (tls.namespace, tls.secret)
        found = self._trusted.get(key)
        if found is not None and self._fresh(found):
            return found
        async with self._locks.setdefault(key, asyncio.Lock()):
            found = self._trusted.get(key)
            if found is not None and self._fresh(found):
                return found
            found = await self._fetch(tls)
            self._trusted[key] = found
            return found

    def _recheck_soon(self, key: tuple[str, str]) -> None:
        """After a certificate failed to verify: read the CA again (it may have been rotated
        along with the certificate), though not sooner than FAILURE_TTL from now, so a server
        that keeps failing costs no API call per request."""
        found = self._trusted.get(key)
        if found is not None and found.context is not None:
            at = min(found.at, self._clock() - TRUST_TTL + FAILURE_TTL)
            self._trusted[key] = dataclasses.replace(found, at=at)

    def _fresh(self, trust: _Trust) -> bool:
        ttl = TRUST_TTL if trust.context is not None else FAILURE_TTL
        return self._clock() - trust.at < ttl

    async def _fetch(self, tls: PodTls) -> _Trust:
        now = self._clock()
        where = f"Secret {tls.namespace}/{tls.secret}"
        if self._source is None:
            return _Trust(now, None, "", f"{where}: no CA source to verify TLS servers with")
        try:
            pem = await self._source.ca_bundle(tls.namespace, tls.secret)
        except TrustError as error:
            return _Trust(now, None, "", str(error))
        try:
            context = _context(pem)
        except (ssl.SSLError, ValueError) as error:
            message = f"{where}: ca.crt is not a PEM CA certificate ({_reason(error)})"
            return _Trust(now, None, "", message)
        return _Trust(now, context, hashlib.sha256(pem.encode()).hexdigest())

    def forget(self, namespace: str, secret: str) -> None:
        self._trusted.pop((namespace, secret), None)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


def _reason(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.replace("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: ", "")
