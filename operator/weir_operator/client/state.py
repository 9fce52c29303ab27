"""Pure decisions over a ModelDeployment object (a dict as the API returns it): which revision
the spec asks for, whether a wait is over, which revision `undo --to-revision` means, and how
long a duration is. No I/O."""

from __future__ import annotations

import functools
import json
import re
from typing import Any, Literal

from weir_operator.client.backend import Manifest, UsageError
from weir_operator.core.render import revision_of
from weir_operator.core.spec import (
    ModelDeployment,
    SpecError,
    duration_seconds,
    parse_model_deployment,
)

DoneState = Literal["healthy", "failed"]

_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$")
_SECONDS = re.compile(r"^[0-9]+(\.[0-9]+)?$")
MAX_HISTORY_INDEX_DIGITS = 3
MIN_REVISION_PREFIX = 4


def parse_duration(text: str) -> float:
    """Seconds in `90s`, `5m`, `1h`, `1m30s`, `250ms` or a bare number of seconds."""
    text = text.strip()
    if _SECONDS.match(text):
        return float(text)
    if _DURATION.match(text):
        return duration_seconds(text)
    raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 5m, 1h or 1h30m")


def format_duration(seconds: float) -> str:
    """`900` -> `15m`, `90` -> `1m30s`, `0.5` -> `0.5s`: the shortest exact Go-style text."""
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:g}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)
    return text or "0s"


def status_of(obj: Manifest) -> dict[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def name_of(obj: Manifest) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


@functools.lru_cache(maxsize=64)
def _parse(document: str) -> ModelDeployment | SpecError:
    try:
        return parse_model_deployment(json.loads(document))
    except SpecError as error:
        return error


def parsed(obj: Manifest) -> ModelDeployment | SpecError:
    """The object's spec parsed as Weir parses it (or why it is invalid); cached, because a
    wait reads the same spec every poll and parsing evaluates CEL rules."""
    meta = obj.get("metadata") or {}
    document = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {k: meta[k] for k in ("name", "namespace") if k in meta},
        "spec": obj.get("spec"),
    }
    return _parse(json.dumps(document, sort_keys=True, default=str))


def desired_revision(obj: Manifest) -> str | None:
    """The revision the spec asks for (a hash of spec.model + spec.server); None if the spec
    is not a valid ModelDeployment."""
    found = parsed(obj)
    return None if isinstance(found, SpecError) else revision_of(found.spec)


def spec_problems(obj: Manifest) -> list[str]:
    found = parsed(obj)
    return found.problems if isinstance(found, SpecError) else []


def observed(obj: Manifest) -> bool:
    """Whether the status describes the current spec (observedGeneration >= generation)."""
    seen = status_of(obj).get("observedGeneration")
    generation = (obj.get("metadata") or {}).get("generation")
    return isinstance(seen, int) and (not isinstance(generation, int) or seen >= generation)


def _revision(ref: Any) -> str | None:
    return ref.get("revision") if isinstance(ref, dict) else None


def done_state(obj: Manifest) -> DoneState | None:
    """Whether a rollout to what the spec asks for is over: "healthy" (the spec's revision is
    stable, no canary, phase Healthy), "failed" (it was rolled back or failed, or the spec is
    invalid), or None (not yet, or the status does not describe the current spec yet)."""
    if not observed(obj):
        return None
    desired = desired_revision(obj)
    if desired is None:
        return "failed"
    status = status_of(obj)
    phase = status.get("phase")
    stable = _revision(status.get("stable"))
    if status.get("rolledBackRevision") == desired:
        return "failed"
    if status.get("canary"):
        return None
    if phase == "Healthy" and stable == desired:
        return "healthy"
    if phase == "Failed" and stable in (None, desired):
        return "failed"
    if phase == "RolledBack" and stable != desired:
        return "failed"
    return None


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in status.get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == kind:
            return condition
    return {}


def _label(revision: str, version: Any) -> str:
    return f"{revision[:10]} (version {version})" if version else revision[:10]


def done_message(obj: Manifest, state: DoneState) -> str:
    """One line saying how the wait ended, with the reason Weir gave."""
    name, status = name_of(obj), status_of(obj)
    desired = desired_revision(obj)
    if desired is None:
        return f"{name}: the spec is not a valid ModelDeployment: " + "; ".join(spec_problems(obj))
    version = (((obj.get("spec") or {}).get("model")) or {}).get("version")
    label = _label(desired, version)
    if state == "healthy":
        return f"{name}: Healthy on revision {label}"
    entry = next(
        (
            h
            for h in status.get("history") or []
            if isinstance(h, dict) and h.get("revision") == desired
        ),
        {},
    )
    if status.get("rolledBackRevision") == desired or status.get("phase") == "RolledBack":
        outcome = str(entry.get("outcome") or "RolledBack")
        verb = {"Aborted": "was aborted", "Failed": "failed"}.get(outcome, "was rolled back")
        why = entry.get("reason") or _condition(status, "RolledBack").get("message") or ""
    else:
        verb = "failed"
        why = _condition(status, "Ready").get("message") or ""
    return f"{name}: revision {label} {verb}" + (f": {why}" if why else "")


def waiting_message(obj: Manifest) -> str:
    """What a wait that timed out was still waiting for."""
    status = status_of(obj)
    if not observed(obj):
        seen = status.get("observedGeneration")
        generation = (obj.get("metadata") or {}).get("generation")
        return f"the operator has not observed generation {generation} yet (observed: {seen})"
    parts = [f"phase {status.get('phase') or 'unknown'}"]
    canary = status.get("canary")
    if isinstance(canary, dict):
        parts.append(f"canary {str(canary.get('revision', ''))[:10]} at {canary.get('weight', 0)}%")
    return ", ".join(parts)


def resolve_revision(status: dict[str, Any], target: str) -> str:
    """`undo --to-revision`: a history index (1 = the most recent entry) or a prefix of a
    revision hash found in the history (or the stable one), as the full revision hash."""
    history = [h for h in status.get("history") or [] if isinstance(h, dict) and h.get("revision")]
    target = target.strip().lower()
    if target.isdigit() and len(target) <= MAX_HISTORY_INDEX_DIGITS:
        index = int(target)
        if not 1 <= index <= len(history):
            raise UsageError(
                f"--to-revision {target}: the history has {len(history)} "
                f"entr{'y' if len(history) == 1 else 'ies'} (1 = the most recent)"
            )
        return str(history[index - 1]["revision"])
    if len(target) < MIN_REVISION_PREFIX or not re.fullmatch(r"[0-9a-f]+", target):
        raise UsageError(
            f"--to-revision {target}: give a history index (1 = the most recent entry) or at "
            f"least {MIN_REVISION_PREFIX} hex characters of a revision"
        )
    known = [str(h["revision"]) for h in history]
    stable = _revision(status.get("stable"))
    if stable:
        known.append(stable)
    matches = sorted({revision for revision in known if revision.startswith(target)})
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(f"--to-revision {target} matches several revisions: {', '.join(matches)}")
    raise UsageError(f"--to-revision {target}: no such revision in the history")
