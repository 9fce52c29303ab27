"""The sha256 of a file, read in 1 MiB blocks: how a model file and a monitoring reference are
checked against the sha256 a spec gives, and how a reference names the model it was made for.
Its own module so that neither needs the other (nor onnxruntime) to hash a file."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
