"""Certificates made in the test (test support): a small CA and server certificates for DNS
names, as cert-manager would write them into a Secret of type kubernetes.io/tls (tls.crt,
tls.key, ca.crt). ECDSA P-256, valid for a day; nothing is read from or written to the system."""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class ServerCert:
    """A server certificate, its key and the CA that signed it, as PEM bytes."""

    cert: bytes
    key: bytes
    ca: bytes

    def write(self, folder: Path) -> tuple[Path, Path, Path]:
        """tls.crt, tls.key, ca.crt in `folder` (the key 0600)."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = folder / "tls.crt", folder / "tls.key", folder / "ca.crt"
        for path, data in zip(paths, (self.cert, self.key, self.ca), strict=True):
            path.write_bytes(data)
        paths[1].chmod(0o600)
        return paths

    def secret(
        self, name: str, *, with_ca: bool = True, namespace: str = "default"
    ) -> dict[str, Any]:
        """A Secret of type kubernetes.io/tls holding it (cert-manager's shape)."""
        data = {"tls.crt": self.cert, "tls.key": self.key}
        if with_ca:
            data["ca.crt"] = self.ca
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": "kubernetes.io/tls",
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }


@dataclass
class Authority:
    """A certificate authority that issues server certificates for DNS names."""

    name: str = "weir-test-ca"
    key: ec.EllipticCurvePrivateKey = field(default_factory=_key)

    def __post_init__(self) -> None:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        self.cert = (
            _builder(subject, subject, self.key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return pem_cert(self.cert)

    def issue(self, *dns_names: str) -> ServerCert:
        key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])])
        cert = (
            _builder(subject, self.cert.subject, key)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return ServerCert(pem_cert(cert), pem_key(key), self.pem)
