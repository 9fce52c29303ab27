"""`weir fetch-model`: the init container of every Weir pod. Copies the model named by
`spec.model.uri` into the pod's model volume, checking its sha256 on the way.

Sources:
- http(s)://, with an optional header from a Secret (spec.model.auth.header: the operator sets
  WEIR_FETCH_HEADER_NAME, WEIR_FETCH_HEADER_PREFIX and WEIR_FETCH_HEADER_VALUE). The header goes
  only to the URI's own origin (never to another host a redirect points to), and its value is
  never printed. A 401 or 403 answer says the credential was refused (or is missing).
- s3://BUCKET/KEY with boto3 (`pip install weir[s3]`; the image installs it). Credentials come
  from boto3's default chain: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN (the
  operator fills them from spec.model.auth.secretRef), else the pod's ServiceAccount (IRSA web
  identity), a credentials file or the instance's role. AWS_ENDPOINT_URL_S3 (an S3-compatible
  store; path-style addressing) and AWS_REGION come from spec.model.s3. Timeouts are bounded and
  botocore does not retry by itself: every retry is this module's, with its backoff.
- file:// (also how pvc:// arrives: the claim is mounted read-only).

Every failure is one line naming what failed and what to fix, never a traceback. Failures that
can pass (a connection refused or cut, a timeout, a 5xx, S3's SlowDown) are retried with
backoff; the rest (a wrong or refused credential, a missing bucket or object, a sha256
mismatch) are not, as retrying cannot help. The file appears at its destination only once
complete and verified (written aside, then renamed), so a server never starts on a
half-downloaded or wrong model.

`weir run` calls `fetch` in its own process, with a `StoreAccess` built from its secrets folder
instead of the environment.

With `--reference-uri` (spec.monitoring.reference), the model's monitoring reference is fetched
the same way (same transports, credentials and sha256 check) to `reference.json` next to the
model, and checked to be a reference, so that a file that is not one fails here rather than in
the server. One made for another model (a model changed without its reference) is kept with a
warning: monitoring must never stop a rollout, or an undo, from serving a model."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import math
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from weir_server.exit_codes import FAILED, OK, USAGE

CHUNK = 1 << 20
REFERENCE_FILE = "reference.json"  # --reference-uri's destination, in --dest's folder
# What the operator sets in the fetch-model container (weir_operator.core.render).
HEADER_NAME_ENV = "WEIR_FETCH_HEADER_NAME"
HEADER_PREFIX_ENV = "WEIR_FETCH_HEADER_PREFIX"
HEADER_VALUE_ENV = "WEIR_FETCH_HEADER_VALUE"
S3_ENDPOINT_ENV = "AWS_ENDPOINT_URL_S3"  # boto3 reads it too; read here for path-style
REGION_ENV = "AWS_REGION"  # botocore itself reads only AWS_DEFAULT_REGION
S3_CONNECT_TIMEOUT = 10.0  # seconds; reads wait --timeout
RETRIABLE_HTTP = frozenset({408, 425, 429})  # and every 5xx
RETRIABLE_S3_CODES = frozenset(
    {
        "SlowDown",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
    }
)
S3_SECRET = "the Secret named by spec.model.auth.secretRef"
HEADER_SECRET = "the Secret key named by spec.model.auth.header.secretKeyRef"


class FetchError(Exception):
    """The model could not be fetched or is not the one asked for."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


@dataclass(frozen=True, slots=True)
class StoreAccess:
    """How to reach the model's store and what to show it. The secret values stay out of
    repr(), so printing one never shows them; no message of this module contains them."""

    s3_endpoint: str | None = None
    s3_region: str | None = None
    # Explicit S3 credentials (weir run). None: boto3's default chain (the environment, which
    # the operator fills from spec.model.auth.secretRef, then web identity, files, roles).
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_session_token: str | None = field(default=None, repr=False)
    header_name: str | None = None
    header_prefix: str = ""
    header_value: str | None = field(default=None, repr=False)
    # Where the credentials come from, in words, for the message that says what to fix
    # (weir run: its secrets folder). None: the Secret named in spec.model.auth.
    credentials_from: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> StoreAccess:
        """What the operator put in the fetch-model container's environment."""
        return cls(
            s3_endpoint=environ.get(S3_ENDPOINT_ENV) or None,
            s3_region=environ.get(REGION_ENV) or None,
            header_name=environ.get(HEADER_NAME_ENV) or None,
            header_prefix=environ.get(HEADER_PREFIX_ENV, ""),
            header_value=environ.get(HEADER_VALUE_ENV),
        )

    def header(self) -> tuple[str, str] | None:
        """The header to send with http(s):// downloads; FetchError if it cannot be sent
        (the message never shows the value)."""
        if self.header_name is None:
            return None
        value = (self.header_value or "").strip()  # a Secret file often ends with a newline
        source = self.credentials_from or HEADER_SECRET
        if not value:
            raise FetchError(f"the {self.header_name} header has no value: {source} is empty")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in self.header_prefix + value):
            raise FetchError(
                f"the {self.header_name} header's value (from {source}) holds a control "
                "character or line break; a header cannot carry it"
            )
        return self.header_name, self.header_prefix + value


NO_ACCESS = StoreAccess()


class Stream(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


def _one_line(text: object, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


def _read_chunks(stream: Stream, uri: str) -> Iterator[bytes]:
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


def _open(uri: str, timeout: float, access: StoreAccess) -> tuple[Stream, int | None]:
    if uri.startswith("file://"):
        path = Path(uri.removeprefix("file://"))
        if not path.is_file():
            raise FetchError(f"{path} does not exist or is not a file")
        try:
            return path.open("rb"), path.stat().st_size
        except OSError as error:
            raise FetchError(f"cannot read {path}: {error.strerror or error}") from None
    if uri.startswith(("http://", "https://")):
        return _open_http(uri, timeout, access)
    if uri.startswith("s3://"):
        return _open_s3(uri, timeout, access)
    raise FetchError(f"unsupported URI {uri!r}: use https://, http://, s3:// or file://")


# -- http(s):// ---------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects; the credential header goes only where the URI itself points (same
    scheme, host and port), never to another host (a CDN, a presigned store URL)."""

    def __init__(self, uri: str, header: tuple[str, str] | None) -> None:
        self._origin = _origin(uri)
        self._header = header

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and self._header is not None and _origin(newurl) == self._origin:
            new.add_unredirected_header(*self._header)
        return new


def _open_http(uri: str, timeout: float, access: StoreAccess) -> tuple[Stream, int | None]:
    header = access.header()
    request = urllib.request.Request(uri, headers={"User-Agent": "weir-fetch-model"})
    if header is not None:
        request.add_unredirected_header(*header)  # see _SameOriginRedirects
    opener = urllib.request.build_opener(_SameOriginRedirects(uri, header))
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        answer = f"GET {uri} answered {error.code} {_one_line(error.reason)}"
        if error.code in (401, 403) and header is not None:
            raise FetchError(
                f"{answer}: the credential in the {header[0]} header was refused; check "
                f"{access.credentials_from or HEADER_SECRET}"
            ) from None
        if error.code in (401, 403):
            raise FetchError(
                f"{answer}: the server wants a credential (spec.model.auth.header)"
            ) from None
        retriable = error.code >= 500 or error.code in RETRIABLE_HTTP
        raise FetchError(answer, retriable=retriable) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise FetchError(f"GET {uri} failed: {_one_line(reason)}", retriable=True) from None
    length = response.headers.get("Content-Length")
    return response, int(length) if length and length.isdigit() else None


# -- s3:// --------------------------------------------------------------------------------


class _S3Body:
    """botocore's streaming body, whose failures midway (a timeout, a cut connection, a
    checksum that does not match) are transient FetchErrors."""

    def __init__(self, body: Any, uri: str, errors: tuple[type[BaseException], ...]) -> None:
        self._body, self._uri, self._errors = body, uri, errors

    def read(self, size: int = -1, /) -> bytes:
        try:
            data: bytes = self._body.read(None if size < 0 else size)
        except self._errors as error:
            message = f"reading {self._uri} failed: {_one_line(error)}"
            raise FetchError(message, retriable=True) from None
        return data

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()


def _open_s3(uri: str, timeout: float, access: StoreAccess) -> tuple[Stream, int | None]:
    try:
        import boto3  # type: ignore[import-untyped,unused-ignore]
        from botocore import exceptions as boto_errors  # type: ignore[import-untyped,unused-ignore]
        from botocore.config import Config  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise FetchError("s3:// URIs need boto3 in the image (pip install 'weir[s3]')") from None
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise FetchError(f"{uri} names no object: an s3:// URI is s3://BUCKET/KEY")
    config = Config(
        connect_timeout=min(timeout, S3_CONNECT_TIMEOUT),
        read_timeout=timeout,
        retries={"total_max_attempts": 1},  # fetch() retries, with its backoff and a log line
        s3={"addressing_style": "path"} if access.s3_endpoint else None,
        user_agent_extra="weir-fetch-model",
    )
    where = f" at {access.s3_endpoint}" if access.s3_endpoint else ""
    session = None
    try:
        session = boto3.session.Session(
            aws_access_key_id=access.aws_access_key_id,
            aws_secret_access_key=access.aws_secret_access_key,
            aws_session_token=access.aws_session_token,
            region_name=access.s3_region,
        )
        client = session.client("s3", endpoint_url=access.s3_endpoint, config=config)
        answer = client.get_object(Bucket=bucket, Key=key)
    except ValueError as error:  # an endpoint URL botocore cannot use
        raise FetchError(f"{uri}: the S3 endpoint{where} is not usable: {error}") from None
    except (boto_errors.BotoCoreError, boto_errors.ClientError) as error:
        raise _s3_problem(error, boto_errors, session, access, bucket, key) from None
    stream_errors = (boto_errors.BotoCoreError, OSError, http.client.HTTPException)
    return _S3Body(answer["Body"], uri, stream_errors), answer.get("ContentLength")


def _credentials_method(session: Any) -> str | None:
    """Where boto3 found the credentials: env, explicit, assume-role-with-web-identity, ..."""
    try:
        credentials = session.get_credentials() if session is not None else None
    except Exception:  # a provider that fails now failed before; the error says so
        return None
    return getattr(credentials, "method", None)


def _s3_problem(
    error: Exception,
    boto_errors: Any,
    session: Any,
    access: StoreAccess,
    bucket: str,
    key: str,
) -> FetchError:
    """One line that says what failed and what to fix; retriable only when retrying can help."""
    target = f"s3://{bucket}/{key}"
    where = f" at {access.s3_endpoint}" if access.s3_endpoint else ""
    if isinstance(error, boto_errors.NoCredentialsError):
        return FetchError(
            f"{target}: no AWS credentials found: name a Secret in spec.model.auth.secretRef, "
            "or give the pods a ServiceAccount with a role (spec.server.serviceAccountName)"
        )
    if isinstance(error, boto_errors.SSLError):
        return FetchError(f"{target}: TLS to the S3 endpoint{where} failed: {_one_line(error)}")
    if isinstance(error, (boto_errors.ConnectionError, boto_errors.HTTPClientError)):
        # refused, reset, timed out, no such host
        return FetchError(
            f"{target}: cannot reach the S3 endpoint{where}: {_one_line(error)}", retriable=True
        )
    if not isinstance(error, boto_errors.ClientError):  # credentials that cannot be read, ...
        return FetchError(f"{target}: {_one_line(error)}")
    details = error.response.get("Error", {})
    code = str(details.get("Code", ""))
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    said = _one_line(details.get("Message") or "")
    operation = getattr(error, "operation_name", "GetObject")
    if operation != "GetObject":  # the credential chain's own call (web identity: STS)
        return FetchError(f"{target}: getting credentials ({operation}) failed: {code}: {said}")
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
        source = _credentials_source(session, access)
        fix = {
            "InvalidAccessKeyId": "the store does not know the access key ID; check "
            f"AWS_ACCESS_KEY_ID in {source}",
            "SignatureDoesNotMatch": "the secret access key does not match the access key ID; "
            f"check AWS_SECRET_ACCESS_KEY in {source}",
            "InvalidToken": f"the session token is not valid; check AWS_SESSION_TOKEN in {source}",
            "ExpiredToken": f"the session token has expired; renew AWS_SESSION_TOKEN in {source}",
        }[code]
        return FetchError(f"{target}{where}: wrong credentials ({code}): {fix}")
    if code == "NoSuchBucket":
        check = "the bucket in spec.model.uri" + (" and spec.model.s3.endpoint" if where else "")
        return FetchError(
            f"{target}: bucket {bucket!r} does not exist{where} ({code}); check {check}"
        )
    if code in ("NoSuchKey", "NotFound") or status == 404:
        return FetchError(
            f"{target}: bucket {bucket!r} has no object {key!r}{where} ({code or status}); "
            "check the key in spec.model.uri"
        )
    if code in ("PermanentRedirect", "AuthorizationHeaderMalformed") or status == 301:
        region = details.get("Region") or details.get("BucketRegion")
        hint = f" ({region})" if region else ""
        return FetchError(
            f"{target}: bucket {bucket!r} is in another region{hint} ({code or status}); "
            "set spec.model.s3.region"
        )
    if code == "AccessDenied" or status == 403:
        return FetchError(
            f"{target}{where}: access denied ({code or status}): the credentials' policy must "
            f"allow s3:GetObject on arn:aws:s3:::{bucket}/{key} (without s3:ListBucket on the "
            "bucket, S3 also answers AccessDenied for an object that does not exist)"
        )
    retriable = status >= 500 or code in RETRIABLE_S3_CODES
    return FetchError(
        f"{target}{where}: GetObject answered {status} {code}: {said}", retriable=retriable
    )


def _credentials_source(session: Any, access: StoreAccess) -> str:
    if access.aws_access_key_id is not None:
        return access.credentials_from or "the credentials given"
    method = _credentials_method(session)
    if method in (None, "env"):
        return f"{S3_SECRET} (the container's environment)"
    return f"the credentials boto3 found ({method})"


# -- fetching -----------------------------------------------------------------------------

Log = Callable[[str], None]


def fetch(
    uri: str,
    dest: Path,
    sha256: str | None = None,
    *,
    timeout: float = 60.0,
    attempts: int = 3,
    log: Log = print,
    access: StoreAccess = NO_ACCESS,
) -> str:
    """Copy `uri` to `dest`; returns the sha256. Retries transient failures with backoff."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    if (problem := _writable(dest)) is not None:
        raise problem
    for attempt in range(1, attempts + 1):
        try:
            return _fetch_once(uri, dest, sha256, timeout, log, access)
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


def _fetch_once(
    uri: str, dest: Path, sha256: str | None, timeout: float, log: Log, access: StoreAccess
) -> str:
    stream, size = _open(uri, timeout, access)
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
            with contextlib.closing(stream), out:
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
    parser.add_argument(
        "--reference-uri",
        metavar="URI",
        help=f"also fetch the model's monitoring reference (weir profile) to {REFERENCE_FILE} "
        "in --dest's folder; it must have been made for the model fetched",
    )
    parser.add_argument(
        "--reference-sha256", metavar="HEX", help="expected hex sha256 of --reference-uri"
    )
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
    reference_sha256 = args.reference_sha256
    if reference_sha256 is not None and args.reference_uri is None:
        return "--reference-sha256 needs --reference-uri: the reference whose sha256 it is"
    if reference_sha256 is not None and not re.fullmatch(r"[a-fA-F0-9]{64}", reference_sha256):
        return f"--reference-sha256 must be 64 hexadecimal characters, got {reference_sha256!r}"
    if args.reference_uri is not None and args.dest.name == REFERENCE_FILE:
        return f"--dest cannot be named {REFERENCE_FILE}: --reference-uri is written there"
    return None


def fetch_reference(
    uri: str,
    model: Path,
    model_sha256: str,
    sha256: str | None = None,
    *,
    timeout: float = 60.0,
    attempts: int = 3,
    log: Log = print,
    access: StoreAccess = NO_ACCESS,
) -> Path:
    """Fetch a monitoring reference to REFERENCE_FILE next to `model` (as `fetch` fetches a
    model) and check that it is one; FetchError (one line) if not. One made for another model
    than the one whose sha256 is `model_sha256` is kept, with a warning: monitoring never
    stops a model from being served (the server warns too, and exports
    weir_drift_reference_model_match 0). Returns where it was written."""
    from weir_server.reference import ReferenceError, load_reference

    dest = model.with_name(REFERENCE_FILE)
    fetch(uri, dest, sha256, timeout=timeout, attempts=attempts, log=log, access=access)
    try:
        reference = load_reference(dest)
    except ReferenceError as error:
        dest.unlink(missing_ok=True)
        raise FetchError(f"the reference from {uri} cannot be used: {error}") from None
    if reference.model.sha256 != model_sha256.lower():
        log(
            f"fetch-model: warning: the reference from {uri} was made for the model with sha256 "
            f"{reference.model.sha256}, but the model fetched has sha256 {model_sha256}: its "
            "outputs are compared with another model's; profile this model (weir profile) and "
            "point spec.monitoring.reference at it"
        )
    return dest


def run_fetch(args: argparse.Namespace) -> int:
    """Exit codes (weir_server.exit_codes): 0 fetched and verified; 1 the model could not be
    fetched, written or verified; 3 a bad option value."""
    if (problem := _usage_problem(args)) is not None:
        print(f"weir fetch-model: error: {problem}", file=sys.stderr)
        return USAGE

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    access = StoreAccess.from_env(os.environ)
    try:
        model_sha256 = fetch(
            args.uri,
            args.dest,
            args.sha256,
            timeout=args.timeout,
            attempts=args.attempts,
            log=log,
            access=access,
        )
        if args.reference_uri is not None:
            fetch_reference(
                args.reference_uri,
                args.dest,
                model_sha256,
                args.reference_sha256,
                timeout=args.timeout,
                attempts=args.attempts,
                log=log,
                access=access,
            )
    except FetchError as error:
        print(f"weir fetch-model: error: {error}", file=sys.stderr)
        return FAILED
    return OK
