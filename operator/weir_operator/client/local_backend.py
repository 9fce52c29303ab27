"""The client's door to `weir run`: its control API on 127.0.0.1 (docs/local-runtime.md).

Same objects as on Kubernetes, in namespace `default`; errors are `{"error", "problems"?}` with
400 (bad input), 404 (no such ModelDeployment) or 422 (not a valid ModelDeployment)."""

from __future__ import annotations

import contextlib
import getpass
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx

from weir_operator.client.backend import (
    Applied,
    ClientError,
    Manifest,
    NotFound,
    Refused,
    Unreachable,
    UsageError,
)
from weir_operator.control_access import SCHEME, TOKEN_ENV, find_token

NAMESPACE = "default"
TIMEOUT = httpx.Timeout(30.0, connect=3.0)
API = "/api/v1/modeldeployments"


class LocalBackend:
    """ModelDeployments of a `weir run` process, through its control API."""

    poll_interval = 0.5
    namespace = NAMESPACE

    def __init__(self, url: str, transport: httpx.BaseTransport | None = None) -> None:
        url = url.strip().rstrip("/")
        if "://" not in url:
            url = f"http://{url}"
        if not url.startswith(("http://", "https://")):
            raise UsageError(
                f"--local {url}: give the control API's URL, e.g. http://127.0.0.1:8081"
            )
        self.url = url
        token = find_token(url)
        headers = {"Authorization": f"{SCHEME} {token}"} if token else {}
        self.client = httpx.Client(
            base_url=url, timeout=TIMEOUT, transport=transport, headers=headers
        )

    def close(self) -> None:
        self.client.close()

    def _call(self, method: str, path: str, body: Any = None, name: str | None = None) -> Any:
        try:
            response = self.client.request(method, path, json=body)
        except httpx.TransportError as error:
            raise Unreachable(
                f"cannot reach the local runtime at {self.url} ({error or type(error).__name__}); "
                "is it running? Start it with `weir run -f PATH`"
            ) from None
        try:
            answer: Any = response.json()
        except ValueError:
            answer = None
        if response.is_success:
            return answer
        body = answer if isinstance(answer, dict) else {}
        message = str(body.get("error") or f"HTTP {response.status_code} {response.reason_phrase}")
        problems = [str(p) for p in body.get("problems") or []]
        if response.status_code == 401:
            raise ClientError(
                f"the local runtime at {self.url} refused the control token ({message}); run "
                f"the CLI as the user who started weir run, or set {TOKEN_ENV} to the token in "
                "its state folder's control-token file"
            )
        if response.status_code == 404:
            if name is not None:
                raise NotFound(
                    f'modeldeployment "{name}" not found in the local runtime at {self.url}'
                )
            raise NotFound(f"{self.url}{path}: {message}")
        raise Refused(f"the local runtime at {self.url} refused: {message}", problems)

    @staticmethod
    def _path(name: str, tail: str = "") -> str:
        return f"{API}/{quote(name, safe='')}{tail}"

    def list_all(self) -> list[Manifest]:
        items = (self._call("GET", API) or {}).get("items") or []
        return sorted(items, key=lambda o: str((o.get("metadata") or {}).get("name")))

    def get(self, name: str) -> Manifest:
        found: Manifest = self._call("GET", self._path(name), name=name)
        return found

    def apply(self, documents: Sequence[Manifest]) -> list[Applied]:
        for document in documents:
            namespace = (document.get("metadata") or {}).get("namespace") or NAMESPACE
            if namespace != NAMESPACE:
                name = document["metadata"].get("name")
                raise UsageError(
                    f"{name}: namespace {namespace!r}: the local runtime has only {NAMESPACE!r}"
                )
        bodies = [{k: v for k, v in d.items() if k != "status"} for d in documents]
        answer = self._call("POST", API, {"items": bodies}) or {}
        return [
            Applied(str(i.get("name")), str(i.get("result"))) for i in answer.get("items") or []
        ]

    def set_model(self, name: str, model: Manifest, reference: Manifest | None = None) -> Manifest:
        body = {key: model[key] for key in ("uri", "sha256", "version") if model.get(key)}
        if reference is not None:
            given = ("uri", "sha256")
            body["reference"] = {key: reference[key] for key in given if reference.get(key)}
        found: Manifest = self._call("PATCH", self._path(name, "/model"), body, name=name)
        return found

    def request(self, name: str, action: str, revision: str | None) -> str:
        body = {"action": action, **({"revision": revision} if revision else {})}
        with contextlib.suppress(KeyError, OSError):
            body["by"] = getpass.getuser()  # who asked, as this client says (its OS user)
        answer = self._call("POST", self._path(name, "/requests"), body, name=name) or {}
        return str(answer.get("id"))

    def events(self, name: str, limit: int) -> list[Manifest]:
        items = (self._call("GET", self._path(name, "/events"), name=name) or {}).get("items")
        return list(items or [])[-limit:] if limit else []
