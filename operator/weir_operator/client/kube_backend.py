"""The client's door to a Kubernetes cluster, through the `kubernetes` package: standard
kubeconfig discovery (`--kubeconfig`, `KUBECONFIG`, `~/.kube/config`, in-cluster), `--context`,
the namespace from the context unless `-n` says otherwise. Writes are JSON merge patches
(what both a real API server and the test emulator apply the same way)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from weir_operator.client.backend import (
    Applied,
    Manifest,
    NotFound,
    Refused,
    Unreachable,
)
from weir_operator.client.manifests import update_patch
from weir_operator.core.requests import REQUEST_ANNOTATION
from weir_operator.core.spec import API_VERSION, GROUP, KIND, PLURAL, VERSION
from weir_operator.kubeapi import MERGE_PATCH, explain

TIMEOUT = (5.0, 30.0)  # connect, read (seconds) for every call
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_KUBECONFIG = "~/.kube/config"


def kubeconfig_file(explicit: str | None, environ: Mapping[str, str]) -> str | None:
    """The kubeconfig to read: `--kubeconfig`, else `KUBECONFIG` (a list of files, as kubectl
    reads it), else ~/.kube/config; None when there is none (in a pod: in-cluster config)."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise Unreachable(f"kubeconfig {explicit} does not exist")
        return str(path)
    listed = environ.get("KUBECONFIG", "")
    if listed:
        files = [Path(p).expanduser() for p in listed.split(os.pathsep) if p]
        if not any(f.is_file() for f in files):
            raise Unreachable(f"KUBECONFIG={listed}: no such file")
        return os.pathsep.join(str(f) for f in files if f.is_file())
    default = Path(DEFAULT_KUBECONFIG).expanduser()
    return str(default) if default.is_file() else None


def _reason(error: BaseException) -> str:
    inner = getattr(error, "reason", None) or error
    text = str(inner)
    return re.sub(r"^<[^>]*>: ", "", text) or type(inner).__name__


class KubeBackend:
    """ModelDeployments in one namespace of a cluster."""

    poll_interval = 1.0

    def __init__(self, api_client: Any, namespace: str) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.server = str(api_client.configuration.host)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)

    @classmethod
    def connect(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        namespace: str | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> KubeBackend:
        config_file = kubeconfig_file(kubeconfig, environ)
        if config_file is None:
            if context is None and environ.get("KUBERNETES_SERVICE_HOST"):
                return cls._in_cluster(namespace)
            raise Unreachable(
                "no Kubernetes cluster configured: no --kubeconfig, no KUBECONFIG and no "
                f"{DEFAULT_KUBECONFIG}; for `weir run` on this machine use --local URL"
            )
        try:
            contexts, active = kubernetes.config.list_kube_config_contexts(config_file)  # type: ignore[no-untyped-call]
            chosen = active
            if context is not None:
                chosen = next((c for c in contexts if c.get("name") == context), None)
                if chosen is None:
                    names = ", ".join(str(c.get("name")) for c in contexts)
                    raise Unreachable(
                        f"kubeconfig {config_file} has no context {context!r} ({names})"
                    )
            api_client = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=config_file, context=context
            )
        except Unreachable:
            raise
        except Exception as error:  # ConfigException, YAML errors, missing keys, ...
            raise Unreachable(f"kubeconfig {config_file}: {error}") from None
        found = ((chosen or {}).get("context") or {}).get("namespace")
        return cls(api_client, namespace or found or "default")

    @classmethod
    def _in_cluster(cls, namespace: str | None) -> KubeBackend:
        configuration = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except kubernetes.config.ConfigException as error:
            raise Unreachable(f"in-cluster Kubernetes configuration: {error}") from None
        if namespace is None and SERVICE_ACCOUNT_NAMESPACE.is_file():
            namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        return cls(kubernetes.client.ApiClient(configuration), namespace or "default")

    def close(self) -> None:
        self.api_client.close()

    # -- errors ---------------------------------------------------------------------------------

    @staticmethod
    def _missing_what(error: ApiException) -> str:
        """What a 404 is about: "namespace", "api" (the server has no ModelDeployment API:
        "the server could not find the requested resource", or not even a Status answer) or
        else the "object"."""
        try:
            body = json.loads(error.body or "")
        except (TypeError, ValueError):
            body = None
        if not isinstance(body, dict) or body.get("kind") != "Status":
            return "api"
        details = body.get("details") or {}
        message = str(body.get("message") or "")
        if details.get("kind") == "namespaces" or message.startswith("namespaces "):
            return "namespace"
        if "could not find the requested resource" in message:
            return "api"
        return "object"

    def _missing(self, error: ApiException, name: str | None, namespace: str) -> NotFound:
        what = self._missing_what(error)
        if what == "namespace":
            return NotFound(f'namespace "{namespace}" not found ({self.server})')
        if what == "object" and name is not None:
            return NotFound(
                f'modeldeployment "{name}" not found in namespace "{namespace}" ({self.server})'
            )
        return NotFound(
            f"{self.server} does not serve the ModelDeployment API ({GROUP}/{VERSION}): "
            "install Weir's CRD first (helm install weir charts/weir)"
        )

    @contextlib.contextmanager
    def _calling(self, name: str | None = None, namespace: str | None = None) -> Iterator[None]:
        """API refusals, missing objects and unreachable servers as the client's errors."""
        namespace = namespace or self.namespace
        try:
            yield
        except ApiException as error:
            if error.status == 404:
                raise self._missing(error, name, namespace) from None
            if not error.status:  # the client's own failure, no answer
                raise Unreachable(
                    f"cannot reach the Kubernetes API server {self.server}: {error.reason}"
                ) from None
            raise Refused(f"{self.server} refused: {explain(error)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise Unreachable(
                f"cannot reach the Kubernetes API server {self.server}: {_reason(error)}"
            ) from None

    # -- reads ----------------------------------------------------------------------------------

    def list_all(self) -> list[Manifest]:
        with self._calling():
            found = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, _request_timeout=TIMEOUT
            )
        items = cast(Manifest, found).get("items") or []
        return sorted(items, key=lambda o: str((o.get("metadata") or {}).get("name")))

    def _get(self, name: str, namespace: str) -> Manifest:
        with self._calling(name, namespace):
            found = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _request_timeout=TIMEOUT
            )
        return cast(Manifest, found)

    def get(self, name: str) -> Manifest:
        return self._get(name, self.namespace)

    def _find(self, name: str, namespace: str) -> Manifest | None:
        """The object, or None when it does not exist (but its API and namespace do)."""
        with self._calling(name, namespace):
            try:
                found = self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, _request_timeout=TIMEOUT
                )
            except ApiException as error:
                if error.status == 404 and self._missing_what(error) == "object":
                    return None
                raise
        return cast(Manifest, found)

    def events(self, name: str, limit: int) -> list[Manifest]:
        selector = f"involvedObject.name={name},involvedObject.kind={KIND}"
        with self._calling():
            response: Any = self.core.list_namespaced_event(
                self.namespace,
                field_selector=selector,
                _preload_content=False,
                _request_timeout=TIMEOUT,
            )
            items = json.loads(response.data).get("items") or []
        events = [
            {
                "at": e.get("lastTimestamp")
                or e.get("eventTime")
                or e.get("firstTimestamp")
                or (e.get("metadata") or {}).get("creationTimestamp"),
                "type": e.get("type"),
                "reason": e.get("reason"),
                "message": e.get("message"),
            }
            for e in items
            if isinstance(e, dict)
        ]
        events.sort(key=lambda e: str(e["at"] or ""))
        return events[-limit:] if limit else []

    # -- writes ---------------------------------------------------------------------------------

    def _patch(self, name: str, namespace: str, body: Manifest) -> Manifest:
        with self._calling(name, namespace):
            patched = self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                body,
                _content_type=MERGE_PATCH,
                _request_timeout=TIMEOUT,
            )
        return cast(Manifest, patched)

    def apply(self, documents: Sequence[Manifest]) -> list[Applied]:
        results = []
        for document in documents:
            meta = document["metadata"]
            name, namespace = str(meta["name"]), str(meta.get("namespace") or self.namespace)
            body: Manifest = {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    **{k: meta[k] for k in ("labels", "annotations") if meta.get(k)},
                },
                "spec": document["spec"],
            }
            live = self._find(name, namespace)
            if live is None:
                with self._calling(name, namespace):
                    try:
                        self.custom.create_namespaced_custom_object(
                            GROUP, VERSION, namespace, PLURAL, body, _request_timeout=TIMEOUT
                        )
                        results.append(Applied(name, "created"))
                        continue
                    except ApiException as error:
                        if error.status != 409:
                            raise
                live = self._get(name, namespace)  # created meanwhile: update it instead
            patch = update_patch(live, body)
            if not patch:
                results.append(Applied(name, "unchanged"))
                continue
            self._patch(name, namespace, patch)
            results.append(Applied(name, "configured"))
        return results

    def set_model(self, name: str, model: Manifest, reference: Manifest | None = None) -> Manifest:
        # A merge patch: the keys not given are removed (null), spec.model.name is kept, and
        # so are the other fields of spec.monitoring.
        spec: Manifest = {"model": {key: model.get(key) for key in ("uri", "sha256", "version")}}
        if reference is not None:
            fields = {key: reference.get(key) for key in ("uri", "sha256")}
            spec["monitoring"] = {"reference": fields}
        return self._patch(name, self.namespace, {"spec": spec})

    def whoami(self) -> str | None:
        """Who the API server says this client is (SelfSubjectReview, authentication.k8s.io/v1,
        Kubernetes 1.28+); None when it cannot say (an older server, or no permission). The
        name goes into a request as `by`: asserted by this client, so the API server's audit
        log, not the status, is the authority on who changed what."""
        review = kubernetes.client.V1SelfSubjectReview(
            api_version="authentication.k8s.io/v1", kind="SelfSubjectReview"
        )
        try:
            answer = kubernetes.client.AuthenticationV1Api(
                self.api_client
            ).create_self_subject_review(review, _request_timeout=5)
        except (ApiException, OSError, ValueError, urllib3.exceptions.HTTPError):
            return None
        user = answer.status.user_info if answer.status is not None else None
        return str(user.username) if user is not None and user.username else None

    def request(self, name: str, action: str, revision: str | None) -> str:
        request_id = uuid.uuid4().hex
        request: Manifest = {"id": request_id, "action": action}
        if revision:
            request["revision"] = revision
        by = self.whoami()
        if by:
            request["by"] = by[:256]
        annotations = {REQUEST_ANNOTATION: json.dumps(request)}
        self._patch(name, self.namespace, {"metadata": {"annotations": annotations}})
        return request_id
