"""The local runtime's API server: ModelDeployment objects, their generations and events.

Why it exists: on a cluster the API server keeps each object (spec, metadata.generation,
annotations, status) and `kubectl apply` writes it; `weir run` keeps the same objects here,
written by the files it watches and by the control API, and (with a `StateDir`) on disk after
every change, as etcd would, so a restart resumes where it was. Objects are plain dicts in the
Kubernetes shape, so the core and the CLI read them the same way in both places. Every write
is validated first (`parse_model_deployment`); an invalid one changes nothing."""

from __future__ import annotations

import builtins
import copy
import json
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from weir_operator.core.requests import REQUEST_ANNOTATION
from weir_operator.core.spec import ModelDeployment, SpecError, parse_model_deployment
from weir_operator.core.status import Event, timestamp
from weir_operator.local.state import StateDir

NAMESPACE = "default"
MAX_EVENTS = 200
ApplyResult = Literal["created", "configured", "unchanged"]


class NotFound(KeyError):
    pass


@dataclass
class Entry:
    object: dict[str, Any]
    parsed: ModelDeployment | None  # None: its spec is invalid (`problems` say why)
    source: str  # the file it came from, or "api"
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))
    # What the runtime's shells remember for this object (the autoscaler's windows), kept
    # with it so that a restart resumes them too.
    memory: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def merge_patch(document: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`document` with a JSON merge patch applied (RFC 7386): null removes a key, an object
    merges into an object, anything else replaces."""
    result = dict(document)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            before = result.get(key)
            result[key] = merge_patch(before if isinstance(before, dict) else {}, value)
        else:
            result[key] = value
    return result


def _now() -> str:
    return timestamp(datetime.now(UTC))


class Store:
    def __init__(self, state: StateDir | None = None) -> None:
        self._entries: dict[str, Entry] = {}
        self._state = state
        self._written: dict[str, bytes] = {}

    def load(self) -> list[str]:
        """Read back every object the state folder holds (before anything else is applied);
        returns their names. StateError names a file that cannot be read: nothing is reset."""
        if self._state is None:
            return []
        for name, record in self._state.read_objects():
            body = record["object"]
            parsed: ModelDeployment | None
            try:
                parsed, problems = parse_model_deployment(body), []
            except SpecError as error:  # valid once, not under today's rules: as on a cluster
                parsed, problems = None, error.problems
            events: deque[dict[str, Any]] = deque(record.get("events") or [], maxlen=MAX_EVENTS)
            memory = record.get("memory")
            memory = memory if isinstance(memory, dict) else {}
            source = str(record.get("source", "api"))
            self._entries[name] = Entry(body, parsed, source, events, memory, problems)
        return self.names()

    def _persist(self, name: str) -> None:
        if self._state is None:
            return
        found = self._entries.get(name)
        if found is None:
            self._written.pop(name, None)
            self._state.remove_object(name)
            return
        record = {
            "source": found.source,
            "object": found.object,
            "events": list(found.events),
            "memory": found.memory,
        }
        data = json.dumps(record, sort_keys=True).encode()
        if self._written.get(name) != data:
            self._state.write_object(name, record)
            self._written[name] = data

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise NotFound(name) from None

    def get(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.entry(name).object)

    def list(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(self._entries[n].object) for n in self.names()]

    def apply(
        self, document: dict[str, Any], source: str, parsed: ModelDeployment | None = None
    ) -> ApplyResult:
        """Create or update from a manifest (validated first, unless `parsed` is the document
        already validated: SpecError changes nothing)."""
        result = self._apply(document, source, parsed)
        self._persist(self._entries_name(document, parsed))
        return result

    @staticmethod
    def _entries_name(document: dict[str, Any], parsed: ModelDeployment | None) -> str:
        return parsed.name if parsed is not None else str(document["metadata"]["name"])

    def _apply(
        self, document: dict[str, Any], source: str, parsed: ModelDeployment | None
    ) -> ApplyResult:
        md = parsed or parse_model_deployment(document, source if source != "api" else "")
        name = md.name
        spec = copy.deepcopy(document["spec"])
        labels = dict((document.get("metadata") or {}).get("labels") or {})
        found = self._entries.get(name)
        if found is None:
            body = {
                "apiVersion": md.api_version,
                "kind": md.kind,
                "metadata": {
                    "name": name,
                    "namespace": NAMESPACE,
                    "uid": str(uuid.uuid4()),
                    "generation": 1,
                    "creationTimestamp": _now(),
                    "labels": labels,
                    "annotations": {},
                },
                "spec": spec,
            }
            self._entries[name] = Entry(body, self._parse(body), source)
            return "created"
        found.source = source
        metadata = found.object["metadata"]
        unchanged = found.object["spec"] == spec and metadata["labels"] == labels
        if unchanged and found.parsed is not None:
            return "unchanged"
        found.object["apiVersion"], found.object["kind"] = md.api_version, md.kind
        metadata["labels"] = labels
        if found.object["spec"] != spec:
            found.object["spec"] = spec
            metadata["generation"] += 1
        found.parsed = self._parse(found.object)
        found.problems = []
        return "configured"

    def hold_invalid(
        self, document: dict[str, Any], source: str, problems: builtins.list[str]
    ) -> None:
        """Keep a new object whose spec is invalid, so that its status can say why (Failed,
        InvalidSpec), as an operator does with an object it cannot parse. An object that exists
        keeps its last good spec instead (the file's problem goes into its status)."""
        name = str(document["metadata"]["name"])
        if name in self._entries:
            raise ValueError(f"{name} exists; an invalid spec does not replace it")
        body = {
            "apiVersion": document.get("apiVersion"),
            "kind": document.get("kind"),
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "uid": str(uuid.uuid4()),
                "generation": 1,
                "creationTimestamp": _now(),
                "labels": {},
                "annotations": {},
            },
            "spec": copy.deepcopy(document.get("spec")),
        }
        self._entries[name] = Entry(body, None, source, problems=list(problems))
        self._persist(name)

    def delete(self, name: str) -> None:
        self.entry(name)
        del self._entries[name]
        self._persist(name)

    def set_model(
        self, name: str, model: dict[str, Any], reference: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Replace spec.model (keeping its served name), and with `reference`
        spec.monitoring.reference (keeping the rest of spec.monitoring): the change a rollout
        starts from."""
        found = self.entry(name)
        kept = (
            {"name": found.object["spec"]["model"]["name"]}
            if "name" in found.object["spec"]["model"]
            else {}
        )
        new_model = {**kept, **{k: v for k, v in model.items() if v is not None}}
        spec = {**found.object["spec"], "model": new_model}
        if reference is not None:
            spec["monitoring"] = {**(spec.get("monitoring") or {}), "reference": reference}
        self.apply({**found.object, "spec": spec}, found.source)
        return self.get(name)

    def patch_spec(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Apply a JSON merge patch (RFC 7386: null removes a key) to the spec, as the API
        server applies one: what undo writes back (core.rollout.restored_spec)."""
        found = self.entry(name)
        spec = merge_patch(found.object["spec"], patch)
        self.apply({**found.object, "spec": spec}, found.source)
        return self.get(name)

    def request(self, name: str, action: str, revision: str | None, by: str | None = None) -> str:
        """Store a rollout request, as `kubectl weir` writes it on a cluster; returns its id."""
        found = self.entry(name)
        request_id = uuid.uuid4().hex
        body: dict[str, Any] = {"id": request_id, "action": action}
        if revision:
            body["revision"] = revision
        if by:
            body["by"] = by
        found.object["metadata"]["annotations"][REQUEST_ANNOTATION] = json.dumps(body)
        self._persist(name)
        return request_id

    def clear_request(self, name: str) -> None:
        self.entry(name).object["metadata"]["annotations"].pop(REQUEST_ANNOTATION, None)
        self._persist(name)

    def set_status(
        self, name: str, status: dict[str, Any], memory: dict[str, Any] | None = None
    ) -> None:
        """Write the status (and what the shells remember for the object) when changed."""
        if name in self._entries:
            found = self._entries[name]
            found.object["status"] = status
            if memory is not None:
                found.memory = memory
            self._persist(name)

    def record(self, name: str, event: Event) -> None:
        if name in self._entries:
            self._entries[name].events.append(
                {"at": _now(), "type": event.type, "reason": event.reason, "message": event.message}
            )
            self._persist(name)

    @staticmethod
    def _parse(body: dict[str, Any]) -> ModelDeployment:
        return parse_model_deployment(body)
