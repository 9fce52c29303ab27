"""`weir fetch-model`: the init container of every Weir pod. Copies the model named by
`spec.model.uri` into the pod's model volume, checking its sha256 on the way.

http(s):// with retries, file:// (also how pvc:// arrives: the claim is mounted read-only),
and s3:// when boto3 is installed (`pip install weir[s3]`). The file appears at its destination
only once complete and verified (written aside, then renamed), so a server never starts on a
half-downloaded or wrong model."""

from __future__ import annotations

import argparse
import hashlib
import http.client
import math
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from weir_server.exit_codes import FAILED, OK, USAGE

CHUNK = 1 << 20


class FetchError(Exception):
    """The model could not be fetched or is not the one asked for."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


def _read_chunks(stream: BinaryIO, uri: str) -> Iterator[bytes]:
    """The stream's bytes; a read that fails midway (a timeout, a reset, a short body) is a
    transient failure, retried, never a traceback. A failed write (a full disk) is not."""
    while True:
        try:
            chunk = stream.read(CHUNK)
        except (OSError, http.client.HTTPException) as error:
            reason = getattr(error, "strerror", None) or error or type(error).__name__
            raise FetchError(f"reading {uri} failed: {reason}", retriable=True) from None
        if not chunk:
            return
        yield chunk


def _open(uri: str, timeout: float) -> tuple[BinaryIO, int | None]:
    if uri.startswith("file://"):
        path = Path(uri.removeprefix("file://"))
        if not path.is_file():
            raise FetchError(f"{path} does not exist or is not a file")
        try:
            return path.open("rb"), path.stat().st_size
        except OSError as error:
            raise FetchError(f"cannot read {path}: {error.strerror or error}") from None
    if uri.startswith(("http://", "https://")):
        request = urllib.request.Request(uri, headers={"User-Agent": "weir-fetch-model"})
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as error:
            message = f"GET {uri} answered {error.code} {error.reason}"
            raise FetchError(message, retriable=error.code >= 500) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise FetchError(f"GET {uri} failed: {reason}", retriable=True) from None
        length = response.headers.get("Content-Length")
        return response, int(length) if length and length.isdigit() else None
    if uri.startswith("s3://"):
        try:
            import boto3  # type: ignore[import-not-found]
        except ImportError:
            raise FetchError(
                "s3:// URIs need boto3 in the image (pip install 'weir[s3]')"
            ) from None
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        try:
            body = boto3.client("s3").get_object(Bucket=bucket, Key=key)
        except Exception as error:  # botocore raises many types
            raise FetchError(f"s3 get_object {uri} failed: {error}", retriable=True) from None
        return body["Body"], body.get("ContentLength")
    raise FetchError(f"unsupported URI {uri!r}: use https://, http://, s3:// or file://")


Log = Callable[[str], None]


def fetch(
    uri: str,
    dest: Path,
    sha256: str | None = None,
    *,
    timeout: float = 60.0,
    attempts: int = 3,
    log: Log = print,
) -> str:
    """Copy `uri` to `dest`; returns the sha256. Retries transient failures with backoff."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    if (problem := _writable(dest)) is not None:
        raise problem
    for attempt in range(1, attempts + 1):
        try:
            return _fetch_once(uri, dest, sha256, timeout, log)
        except FetchError as error:
            if attempt == attempts or not error.retriable:
                raise
            delay = 2 ** (attempt - 1)
            log(
                f"fetch-model: {error}; retrying in {delay} s (attempt {attempt + 1} of {attempts})"
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def _writable(dest: Path) -> FetchError | None:
    """Why `dest` cannot be written, checked before anything is downloaded; None if it can."""
    if dest.is_dir():
        return FetchError(f"--dest {dest} is a directory; give the path of the model file")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return FetchError(f"cannot create the folder {dest.parent}: {error.strerror or error}")
    if not os.access(dest.parent, os.W_OK | os.X_OK):
        return FetchError(f"cannot write into {dest.parent}: permission denied")
    return None


def _fetch_once(uri: str, dest: Path, sha256: str | None, timeout: float, log: Log) -> str:
    stream, size = _open(uri, timeout)
    partial = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    received = 0
    started = last_report = time.monotonic()
    try:
        try:
            out = partial.open("wb")
        except OSError as error:
            stream.close()
            raise FetchError(f"cannot write {partial}: {error.strerror or error}") from None
        try:
            with stream, out:
                for chunk in _read_chunks(stream, uri):
                    digest.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
                    if time.monotonic() - last_report > 5:
                        last_report = time.monotonic()
                        total = f" of {size / 1e6:.1f}" if size else ""
                        log(f"fetch-model: {received / 1e6:.1f}{total} MB")
        except OSError as error:  # reads are FetchErrors already: this is a write (disk full)
            raise FetchError(f"writing {partial} failed: {error.strerror or error}") from None
        if size is not None and received != size:
            message = f"{uri}: got {received} bytes, expected {size} (connection cut?)"
            raise FetchError(message, retriable=True)
        actual = digest.hexdigest()
        if sha256 is not None and actual.lower() != sha256.lower():
            raise FetchError(f"{uri} has sha256 {actual}, but {sha256} was expected")
        try:
            os.replace(partial, dest)
        except OSError as error:
            raise FetchError(f"cannot write {dest}: {error.strerror or error}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    log(
        f"fetch-model: {uri} -> {dest} ({received} bytes, sha256 {actual}, "
        f"{time.monotonic() - started:.1f} s)"
    )
    return actual


def add_fetch_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fetch-model",
        help="copy a model from a URI to a file, checking its sha256 (the pods' init container)",
        description="Copy a model from a URI to a file, checking its sha256.",
    )
    parser.add_argument("--uri", required=True, help="https://, http://, s3:// or file:// URI")
    parser.add_argument("--dest", required=True, type=Path, help="where to write the model")
    parser.add_argument("--sha256", help="expected hex sha256; a mismatch fails")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per network read")
    parser.add_argument("--attempts", type=int, default=3, help="tries for transient failures")
    parser.set_defaults(handler=run_fetch)


def _usage_problem(args: argparse.Namespace) -> str | None:
    if not 1 <= args.attempts <= 100:
        return f"--attempts must be from 1 to 100, got {args.attempts}"
    if not (math.isfinite(args.timeout) and 0 < args.timeout <= 86_400):
        return (
            f"--timeout must be a number of seconds more than 0, at most 86400; "
            f"got {args.timeout:g}"
        )
    if args.sha256 is not None and not re.fullmatch(r"[a-fA-F0-9]{64}", args.sha256):
        return f"--sha256 must be 64 hexadecimal characters, got {args.sha256!r}"
    if args.dest.is_dir():
        return f"--dest {args.dest} is a directory; give the path of the model file"
    return None


def run_fetch(args: argparse.Namespace) -> int:
    """Exit codes (weir_server.exit_codes): 0 fetched and verified; 1 the model could not be
    fetched, written or verified; 3 a bad option value."""
    if (problem := _usage_problem(args)) is not None:
        print(f"weir fetch-model: error: {problem}", file=sys.stderr)
        return USAGE
    try:
        fetch(
            args.uri,
            args.dest,
            args.sha256,
            timeout=args.timeout,
            attempts=args.attempts,
            log=lambda message: print(message, file=sys.stderr, flush=True),
        )
    except FetchError as error:
        print(f"weir fetch-model: error: {error}", file=sys.stderr)
        return FAILED
    return OK
