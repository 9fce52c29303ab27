"""`weir apply -f PATH`: read a file or a folder of YAML, validate every document before
anything is sent, and say which file, document and field is wrong."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from weir_operator.client.backend import Manifest, UsageError
from weir_operator.core.spec import API_VERSION, KIND, SpecError, parse_model_deployment

SUFFIXES = (".yaml", ".yml", ".json")


def manifest_files(path: Path) -> list[Path]:
    """The file itself, or the YAML/JSON files directly in the folder, sorted by name."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SUFFIXES)
        if not files:
            raise UsageError(f"{path}: no .yaml, .yml or .json files in this folder")
        return files
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    return [path]


def _documents(path: Path) -> list[tuple[int, Any]]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: cannot read: {error}") from None
    try:
        loaded = list(yaml.safe_load_all(text))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error)
        raise UsageError(f"{where}: invalid YAML: {problem}") from None
    return [(index, doc) for index, doc in enumerate(loaded, start=1) if doc is not None]


def _check(document: Any, source: str) -> list[str]:
    """Problems of one document as `field.path: message` (empty when it is valid)."""
    if isinstance(document, dict):
        kind, api_version = document.get("kind"), document.get("apiVersion")
        if kind != KIND or api_version != API_VERSION:
            return [
                f"(root): kind {kind!r} apiVersion {api_version!r} is not a {KIND} "
                f"({API_VERSION}); weir apply only applies {KIND}s"
            ]
    try:
        parse_model_deployment(document, source)
    except SpecError as error:
        return error.problems
    return []


def load_manifests(paths: Sequence[Path]) -> list[Manifest]:
    """Every document under `paths`, validated; UsageError naming file, document and field
    path of every problem when any is invalid (then nothing may be applied)."""
    documents: list[Manifest] = []
    problems: list[str] = []
    seen: dict[tuple[str, str], str] = {}
    for path in paths:
        for file in manifest_files(path):
            for index, document in _documents(file):
                name = ""
                if isinstance(document, dict):
                    name = str((document.get("metadata") or {}).get("name") or "")
                where = f"{file} (document {index}{', ' + name if name else ''})"
                found = _check(document, str(file))
                problems += [f"{where}: {problem}" for problem in found]
                if found:
                    continue
                key = (str(document["metadata"].get("namespace") or ""), name)
                if key in seen:
                    problems.append(f"{where}: metadata.name: {name} is also in {seen[key]}")
                seen[key] = where
                documents.append(document)
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        raise UsageError(f"nothing applied: {count} in the manifests", problems)
    if not documents:
        raise UsageError("nothing to apply: no ModelDeployment in " + ", ".join(map(str, paths)))
    return documents


def with_namespace(
    documents: Sequence[Manifest], namespace: str, explicit: str | None
) -> list[Manifest]:
    """Each document with metadata.namespace set: its own, else `namespace`. A document in
    another namespace than an explicit `-n` is a usage error, as with kubectl."""
    placed = []
    for document in documents:
        meta = dict(document.get("metadata") or {})
        own = meta.get("namespace")
        if own and explicit and own != explicit:
            raise UsageError(
                f"{meta.get('name')}: the manifest says namespace {own!r} but -n says "
                f"{explicit!r}; drop one of them"
            )
        meta["namespace"] = own or namespace
        placed.append({**document, "metadata": meta})
    return placed


def same_spec(live: Manifest, desired: Manifest) -> bool:
    """Whether two objects' specs mean the same (defaults filled in, as Weir reads them)."""
    try:
        return parse_model_deployment(live).spec == parse_model_deployment(desired).spec
    except SpecError:
        return False


def exact_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) turning `old` into exactly `new`: keys `new` lacks are
    nulled, maps are patched recursively, anything else (lists too) is replaced."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            inner = exact_patch(old[key], value)
            if inner:
                patch[key] = inner
        elif key not in old or old[key] != value:
            patch[key] = value
    return patch


def update_patch(live: Manifest, desired: Manifest) -> Manifest:
    """The merge patch `apply` sends to an existing object: the manifest's labels and
    annotations added (others, e.g. the operator's, kept) and, when it means something else,
    the spec made exactly the manifest's (the API server defaults what is left out). Empty when
    the object already says what the manifest says."""
    patch: Manifest = {}
    have_meta, want_meta = live.get("metadata") or {}, desired.get("metadata") or {}
    metadata = {}
    for key in ("labels", "annotations"):
        have = have_meta.get(key) or {}
        changed = {k: v for k, v in (want_meta.get(key) or {}).items() if have.get(k) != v}
        if changed:
            metadata[key] = changed
    if metadata:
        patch["metadata"] = metadata
    if not same_spec(live, desired):
        spec = exact_patch(live.get("spec") or {}, desired.get("spec") or {})
        if spec:
            patch["spec"] = spec
    return patch
