"""`weir serve --tls-cert F --tls-key F`: the certificate and key checked before any work starts.

Why it exists: Granian (rustls) reads the files only once it binds, and says what went wrong
in a Rust panic or a log line of its own, after the model was loaded. A wrong path, a key
that belongs to another certificate or an encrypted key is a usage error like any other bad
option: one line naming the option and the file, exit 3, before the model file is read.

The check loads the pair with Python's own `ssl` module (OpenSSL), which refuses what rustls
refuses here: no PEM certificate, no PEM private key, a key that does not match the first
certificate of the chain."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

CERT_MARK = "-----BEGIN CERTIFICATE-----"
KEY_MARKS = ("PRIVATE KEY-----",)
ENCRYPTED_MARKS = ("BEGIN ENCRYPTED PRIVATE KEY", "Proc-Type: 4,ENCRYPTED")
ENCRYPTED = "--tls-key file {} is encrypted; give the key unencrypted (as a Secret holds it)"
MAX_PEM_BYTES = 1024 * 1024  # a chain of a few certificates is a few kB


class _Encrypted(Exception):
    pass


def _refuse_password() -> bytes:
    raise _Encrypted


def _read(option: str, path: Path) -> tuple[str | None, str | None]:
    """The file's text, or why it cannot be had (naming the option)."""
    if not path.exists():
        return None, f"{option} file {path} does not exist"
    if not path.is_file():
        return None, f"{option} {path} is not a regular file"
    if not os.access(path, os.R_OK):
        return None, f"{option} file {path} cannot be read by this user (uid {os.getuid()})"
    if path.stat().st_size > MAX_PEM_BYTES:
        return None, f"{option} file {path} is over {MAX_PEM_BYTES} bytes: not a PEM file"
    return path.read_text(errors="replace"), None


def tls_problem(cert: str, key: str) -> str | None:
    """What is wrong with this certificate and key, in one line; None when they serve."""
    cert_path, key_path = Path(cert), Path(key)
    cert_text, problem = _read("--tls-cert", cert_path)
    if problem is not None:
        return problem
    key_text, problem = _read("--tls-key", key_path)
    if problem is not None:
        return problem
    assert cert_text is not None
    assert key_text is not None
    if CERT_MARK not in cert_text:
        return f"--tls-cert file {cert_path} holds no PEM certificate ({CERT_MARK})"
    if any(mark in key_text for mark in ENCRYPTED_MARKS):
        return ENCRYPTED.format(key_path)
    if not any(mark in key_text for mark in KEY_MARKS):
        return f"--tls-key file {key_path} holds no PEM private key"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_path, key_path, password=_refuse_password)
    except _Encrypted:
        return ENCRYPTED.format(key_path)
    except ssl.SSLError as error:
        if "KEY_VALUES_MISMATCH" in str(error):
            return f"--tls-key file {key_path} is not the key of the certificate in {cert_path}"
        reason = error.reason or error
        return f"--tls-cert {cert_path} / --tls-key {key_path} cannot be loaded: {reason}"
    return None
