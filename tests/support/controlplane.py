"""A real Kubernetes control plane for the tests: etcd, kube-apiserver and
kube-controller-manager built from Kubernetes' Go modules (hack/controlplane), started on
127.0.0.1 with certificates made here, RBAC on, in the envtest style.

The emulator tier tells us what the operator says to the API; this tier tells us whether a real
API server accepts it: the CRD's schema and CEL rules, generation and observedGeneration, the
status and scale subresources, RBAC, garbage collection. Everything listens on loopback only,
and `stop()` leaves no process behind."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.processes import die_with_parent, free_port

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "hack" / "controlplane" / "build.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
SERVICE_CIDR = "10.0.0.0/24"  # an allocation range inside the API server only: never contacted
START_TIMEOUT = 90.0


CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True, key_cert_sign=True, crl_sign=True,
    content_commitment=False, key_encipherment=False, data_encipherment=False,
    key_agreement=False, encipher_only=False, decipher_only=False,
)  # fmt: skip


class ControlPlaneUnavailable(Exception):
    """The binaries cannot be had here (no Go, build failed); the message says what to do."""


def binaries() -> Path:
    """The folder holding the three binaries, from hack/controlplane/build.sh: instant once
    built. `make test` builds them before pytest starts (about 17 minutes the first time on 2
    cores, with progress), so a build here happens only when pytest is run directly."""
    override = os.environ.get("WEIR_CONTROLPLANE_BIN")
    if override:
        folder = Path(override)
        missing = [b for b in BINARIES if not (folder / b).is_file()]
        if missing:
            raise ControlPlaneUnavailable(f"WEIR_CONTROLPLANE_BIN={folder} lacks {missing}")
        return folder
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=3600
    )
    if result.returncode != 0:
        if shutil.which("go") is None:
            raise ControlPlaneUnavailable(
                "the control-plane binaries are not built and Go is not installed: install "
                "Go >= 1.26 and run `make controlplane` (or set WEIR_CONTROLPLANE_BIN to a folder "
                "with etcd, kube-apiserver and kube-controller-manager)"
            )
        tail = "\n".join(result.stderr.splitlines()[-30:])
        raise ControlPlaneUnavailable(
            f"hack/controlplane/build.sh failed (exit {result.returncode}):\n{tail}"
        )
    return Path(result.stdout.strip().splitlines()[-1])


# --- certificates ---------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@dataclass
class Authority:
    """A small certificate authority (ECDSA P-256), valid for a day."""

    name: str
    key: ec.EllipticCurvePrivateKey = field(default_factory=_key)
    cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        self.cert = (
            self._builder(subject, self.key.public_key())
            .issuer_name(subject)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(CA_KEY_USAGE, critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @staticmethod
    def _builder(
        subject: x509.Name, public_key: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def issue(
        self, common_name: str, *, groups: Sequence[str] = (), server: bool = False
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = _key()
        names = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        names += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
        issuer = self.cert.subject
        builder = self._builder(x509.Name(names), key.public_key()).issuer_name(issuer)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return key, builder.sign(self.key, hashes.SHA256())


# --- kubeconfig -----------------------------------------------------------------------------


def write_kubeconfig(
    path: Path,
    server: str,
    ca_file: Path,
    user: dict[str, str],
    namespace: str = "default",
) -> Path:
    """A kubeconfig with one context; `user` holds token or client-certificate/-key paths."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "weir-test",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": "user", "user": user}],
        "contexts": [
            {
                "name": "weir-test",
                "context": {"cluster": "weir-test", "user": "user", "namespace": namespace},
            }
        ],
        "current-context": "weir-test",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


# --- the processes --------------------------------------------------------------------------


@dataclass
class Component:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver + kube-controller-manager on 127.0.0.1."""

    root: Path
    bin: Path
    api_port: int = 0
    components: list[Component] = field(default_factory=list)
    started_in: float = 0.0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def ca_file(self) -> Path:
        return self.root / "pki" / "serving-ca.crt"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    def start(self) -> ControlPlane:
        began = time.monotonic()
        pki = self.root / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        etcd_port, peer_port = free_port(), free_port()
        self.api_port = free_port()
        self._certificates(pki)
        self._spawn(
            "etcd",
            f"--name=weir-test --data-dir={self.root / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=weir-test=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync=true --log-level=warn",
        )
        self._wait("etcd", f"http://127.0.0.1:{etcd_port}/health", lambda r: '"true"' in r.text)
        self._spawn(
            "kube-apiserver",
            "--bind-address=127.0.0.1 --advertise-address=127.0.0.1",
            f"--secure-port={self.api_port} --endpoint-reconciler-type=none",
            f"--etcd-servers=http://127.0.0.1:{etcd_port} --cert-dir={self.root / 'apiserver'}",
            f"--tls-cert-file={pki / 'serving.crt'} --tls-private-key-file={pki / 'serving.key'}",
            f"--client-ca-file={pki / 'client-ca.crt'}",
            f"--authorization-mode=RBAC --service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-issuer={self.url}/ --service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'} --allow-privileged=true",
        )
        self._wait("kube-apiserver", f"{self.url}/readyz", lambda r: r.status_code == 200)
        kcm = self.root / "kcm.kubeconfig"
        write_kubeconfig(
            kcm, self.url, self.ca_file,
            {"client-certificate": str(pki / "kcm.crt"), "client-key": str(pki / "kcm.key")},
        )  # fmt: skip
        kcm_port = free_port()
        # node-lifecycle would mark the test kubelet's Node unreachable (it sends no heartbeats)
        # and evict its pods; nothing else in the default set is left out.
        self._spawn(
            "kube-controller-manager",
            f"--kubeconfig={kcm} --authentication-kubeconfig={kcm} --authorization-kubeconfig={kcm}",
            f"--bind-address=127.0.0.1 --secure-port={kcm_port} --cert-dir={self.root / 'kcm'}",
            f"--flex-volume-plugin-dir={self.root / 'flexvolume'}",
            f"--service-account-private-key-file={pki / 'sa.key'} --root-ca-file={self.ca_file}",
            f"--service-cluster-ip-range={SERVICE_CIDR} --leader-elect=false",
            "--controllers=*,-node-lifecycle-controller --use-service-account-credentials=true",
        )
        self._wait(
            "kube-controller-manager",
            f"https://127.0.0.1:{kcm_port}/healthz",
            lambda r: r.status_code == 200,
            verify=False,  # its self-signed serving cert; loopback only
        )
        self.started_in = time.monotonic() - began
        return self

    def _certificates(self, pki: Path) -> None:
        serving_ca, client_ca = Authority("weir-test-serving-ca"), Authority("weir-test-client-ca")
        _write_cert(serving_ca.cert, pki / "serving-ca.crt")
        _write_cert(client_ca.cert, pki / "client-ca.crt")
        key, cert = serving_ca.issue("kube-apiserver", server=True)
        _write_key(key, pki / "serving.key")
        _write_cert(cert, pki / "serving.crt")
        for name, common_name, groups in (
            ("admin", "weir-test-admin", ["system:masters"]),
            ("kcm", "system:kube-controller-manager", []),
        ):
            key, cert = client_ca.issue(common_name, groups=groups)
            _write_key(key, pki / f"{name}.key")
            _write_cert(cert, pki / f"{name}.crt")
        self._client_ca = client_ca
        sa_key = _key()
        _write_key(sa_key, pki / "sa.key")
        (pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        write_kubeconfig(
            self.admin_kubeconfig, self.url, self.ca_file,
            {"client-certificate": str(pki / "admin.crt"), "client-key": str(pki / "admin.key")},
        )  # fmt: skip

    def _spawn(self, name: str, *flags: str) -> None:
        log_path = self.root / f"{name}.log"
        args = [arg for group in flags for arg in group.split(" ")]
        binary = self.bin / name
        if not binary.is_file():
            raise ControlPlaneUnavailable(f"{binary} is missing")
        process = subprocess.Popen(
            [str(binary), *args],
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self.components.append(Component(name, process, log_path))

    def _wait(self, name: str, url: str, ok: object, verify: bool = True) -> None:
        component = next(c for c in self.components if c.name == name)
        deadline = time.monotonic() + START_TIMEOUT
        context: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(self.ca_file))
            if verify and url.startswith("https")
            else False
        )
        while time.monotonic() < deadline:
            if component.process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {component.process.returncode} while starting; "
                    f"the end of its log ({component.log_path}):\n{component.log_tail()}"
                )
            try:
                response = httpx.get(url, verify=context, timeout=2)
                if ok(response):  # type: ignore[operator]
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(
            f"{name} did not become healthy at {url} within {START_TIMEOUT:.0f} s; "
            f"the end of its log ({component.log_path}):\n{component.log_tail()}"
        )

    def user_kubeconfig(self, path: Path, common_name: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig for a client-certificate identity (RBAC applies unless system:masters)."""
        key, cert = self._client_ca.issue(common_name, groups=groups)
        key_file = _write_key(key, path.with_suffix(".key"))
        cert_file = _write_cert(cert, path.with_suffix(".crt"))
        return write_kubeconfig(
            path, self.url, self.ca_file,
            {"client-certificate": str(cert_file), "client-key": str(key_file)},
        )  # fmt: skip

    def token_kubeconfig(self, path: Path, token: str, namespace: str = "default") -> Path:
        return write_kubeconfig(path, self.url, self.ca_file, {"token": token}, namespace)

    def stop(self) -> None:
        for component in reversed(self.components):
            if component.process.poll() is None:
                component.process.send_signal(signal.SIGTERM)
        for component in reversed(self.components):
            try:
                component.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(component.process.pid, signal.SIGKILL)
                component.process.wait(timeout=5)
