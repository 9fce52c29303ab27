"""`weir fetch-model`: the init container of every Weir pod. Copies the model named by
`spec.model.uri` into the pod's model volume, checking its sha256 on the way.

http(s):// with retries, file:// (also how pvc:// arrives: the claim is mounted read-only),
and s3:// when boto3 is installed (`pip install weir[s3]`). The file appears at its destination
only once complete and verified (written aside, then renamed), so a server never starts on a
half-downloaded or wrong model."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


class FetchError(Exception):
    """The model could not be fetched or is not the one asked for."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


def _open(uri: str, timeout: float) -> tuple[BinaryIO, int | None]:
    if uri.startswith("file://"):
        path = Path(uri.removeprefix("file://"))
        if not path.is_file():
            raise FetchError(f"{path} does not exist or is not a file")
        return path.open("rb"), path.stat().st_size
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


def _fetch_once(uri: str, dest: Path, sha256: str | None, timeout: float, log: Log) -> str:
    stream, size = _open(uri, timeout)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    received = 0
    started = last_report = time.monotonic()
    try:
        with stream, partial.open("wb") as out:
            for chunk in _chunks(stream):
                digest.update(chunk)
                out.write(chunk)
                received += len(chunk)
                if time.monotonic() - last_report > 5:
                    last_report = time.monotonic()
                    total = f" of {size / 1e6:.1f}" if size else ""
                    log(f"fetch-model: {received / 1e6:.1f}{total} MB")
        if size is not None and received != size:
            message = f"{uri}: got {received} bytes, expected {size} (connection cut?)"
            raise FetchError(message, retriable=True)
        actual = digest.hexdigest()
        if sha256 is not None and actual.lower() != sha256.lower():
            raise FetchError(f"{uri} has sha256 {actual}, but {sha256} was expected")
        os.replace(partial, dest)
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


def run_fetch(args: argparse.Namespace) -> int:
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
        return 1
    return 0
