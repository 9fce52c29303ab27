"""Where the operator gets the CA that verifies a TLS server pod: the `ca.crt` key of the
Secret named in `spec.server.tls.secretName`, read through the API (`providers.servers` asks).

Why it exists: a server pod with `spec.server.tls` speaks HTTPS with the certificate of that
Secret (cert-manager writes tls.crt, tls.key and, for CA and self-signed issuers, ca.crt). The
operator's probes and scrapes must verify it, and the only CA it can trust for that pod is the
one its owner put beside the certificate. This module reads it with the operator's own
`kubernetes` client (`cluster.kube.Kube`, in a worker thread: the client blocks), bounded by
`READ_TIMEOUT`, and says in words why it cannot: no such Secret, no ca.crt in it, a ca.crt
that is no PEM text, or the operator not allowed to read it (the chart grants `get` on Secrets
in the namespaces it serves). `ServerClients` keeps what it got (`TRUST_TTL`) or why not
(`FAILURE_TTL`), so this is one API call per Secret per minute, not one per scrape.

The Secret's other keys (the server's private key among them) are never kept or logged."""

from __future__ import annotations

import asyncio
import base64
import binascii

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from weir_operator.cluster.kube import Kube, explain
from weir_operator.providers import TrustError

CA_KEY = "ca.crt"
READ_TIMEOUT = 5.0  # seconds for one read of a Secret
MAX_CA_BYTES = 256 * 1024  # a bundle of a few CA certificates is a few kB
PEM_CERT = "-----BEGIN CERTIFICATE-----"
MAX_REASON = 300  # characters of an unexpected error kept in the message


class SecretTrust:
    """`TrustSource` for the operator: the CA of `Secret <namespace>/<name>`, key ca.crt."""

    def __init__(self, kube: Kube, *, timeout: float = READ_TIMEOUT) -> None:
        self._kube = kube
        self._timeout = timeout

    async def ca_bundle(self, namespace: str, secret: str) -> str:
        where = f"Secret {namespace}/{secret}"
        read = asyncio.to_thread(self._kube.secret_data, namespace, secret, self._timeout)
        try:
            # The client's own timeout bounds each try, this the whole read (its retries too).
            data = await asyncio.wait_for(read, self._timeout + 1.0)
        except ApiException as error:
            raise TrustError(_refusal(where, namespace, error)) from None
        except TimeoutError:
            message = f"{where} cannot be read: the API did not answer within {self._timeout:g} s"
            raise TrustError(message) from None
        except (Urllib3Error, OSError) as error:
            reason = (str(error) or type(error).__name__)[:MAX_REASON]
            raise TrustError(f"{where} cannot be read: the API did not answer ({reason})") from None
        return ca_text(where, data)


def _refusal(where: str, namespace: str, error: ApiException) -> str:
    if error.status == 404:
        return (
            f"{where} does not exist (spec.server.tls.secretName): the CA to verify the "
            "servers with is its ca.crt"
        )
    if error.status in (401, 403):
        return (
            f"{where} cannot be read: the operator is not allowed to get Secrets in namespace "
            f"{namespace} (the chart grants it in the namespaces it serves): {explain(error)}"
        )
    return f"{where} cannot be read: the API answered {explain(error)}"


def ca_text(where: str, data: dict[str, str]) -> str:
    """The PEM text of `data`'s ca.crt (base64, as a Secret's data holds it), or TrustError."""
    encoded = data.get(CA_KEY)
    if not encoded:
        keys = ", ".join(sorted(data)[:8]) or "none"
        raise TrustError(
            f"{where} has no {CA_KEY} key (its keys: {keys}): the CA that issued the servers' "
            "certificate is needed to verify them (cert-manager writes it for CA issuers)"
        )
    if len(encoded) > MAX_CA_BYTES * 4 // 3 + 4:
        raise TrustError(f"{where}: {CA_KEY} is over {MAX_CA_BYTES} bytes, not a CA bundle")
    try:
        text = base64.b64decode(encoded, validate=True).decode("ascii")
    except (binascii.Error, ValueError):
        raise TrustError(f"{where}: {CA_KEY} is not PEM text (base64 of ASCII)") from None
    if PEM_CERT not in text:
        raise TrustError(f"{where}: {CA_KEY} holds no PEM certificate ({PEM_CERT})")
    return text
