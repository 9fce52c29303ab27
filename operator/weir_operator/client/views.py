"""What the commands print, as pure functions of objects and the time: tables, the status
view, history, and the JSON records of `status -o json`. No I/O."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from weir_operator.client.backend import Manifest
from weir_operator.client.state import desired_revision, name_of, parsed, status_of
from weir_operator.core.spec import SpecError, Step
from weir_operator.core.status import parse_timestamp

NONE = "-"
GET_COLUMNS = ("NAME", "PHASE", "STABLE", "CANARY", "WEIGHT", "READY", "AGE")
WIDE_COLUMNS = (*GET_COLUMNS, "STEP", "ANALYSIS", "REVISION", "URI")
HISTORY_COLUMNS = ("#", "REVISION", "VERSION", "URI", "OUTCOME", "AT", "BY", "LINEAGE", "REASON")
STATUS_HISTORY = 3
STATUS_EVENTS = 5
DRIFT_BAR = 24  # characters of a drift bar; the threshold is marked in its middle
DRIFT_FEATURES = 12  # features shown (status.drift has them all, highest first)
DEFAULT_DRIFT_THRESHOLD = 0.2


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns three spaces apart, as kubectl prints them."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)


def age(since: str | None, now: datetime) -> str:
    """How long ago, as kubectl's AGE column: 45s, 5m30s, 42m, 5h12m, 3d4h, 12d."""
    if not since:
        return NONE
    try:
        seconds = int((now - parse_timestamp(since)).total_seconds())
    except ValueError:
        return NONE
    seconds = max(seconds, 0)
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


def ref_label(ref: Any) -> str:
    """A revision as people know it: its version label, else its short hash."""
    if not isinstance(ref, Mapping):
        return NONE
    version = ref.get("version")
    return str(version) if version else str(ref.get("revision") or NONE)[:10]


def _steps(obj: Manifest) -> tuple[Step, ...] | None:
    found = parsed(obj)
    return None if isinstance(found, SpecError) else tuple(found.spec.rollout.steps)


def step_name(step: Step) -> str:
    if step.set_weight is not None:
        return f"setWeight {step.set_weight}"
    if step.shadow is not None:
        return f"shadow {step.shadow.percent}% for {step.shadow.duration}"
    if step.pause is not None and step.pause.duration:
        return f"pause {step.pause.duration}"
    return "pause (until promote)"


def step_text(obj: Manifest, short: bool = False) -> str:
    """The canary's step as `2/4 setWeight 50` (`2/4` when short); NONE without a canary."""
    canary = status_of(obj).get("canary")
    if not isinstance(canary, Mapping):
        return NONE
    index = int(canary.get("step") or 0)
    steps = _steps(obj)
    if steps is None:
        return f"{index + 1}"
    total = len(steps)
    if index >= total:
        return f"{total}/{total}" if short else f"{total}/{total} done, scaling the canary up"
    count = f"{index + 1}/{total}"
    return count if short else f"{count} {step_name(steps[index])}"


def agreement_text(agreement: Mapping[str, Any]) -> str:
    """The shadow comparison of the last window, as `weir status` shows it."""
    rate = agreement.get("rate")
    share = f"{rate * 100:.1f}%" if isinstance(rate, int | float) else NONE
    text = f"{share} of {agreement.get('samples', 0):.0f} compared rows agreed"
    text += f"; {agreement.get('mirrored', 0):.0f} mirrored"
    if agreement.get("dropped"):
        text += f", {agreement['dropped']:.0f} dropped"
    if agreement.get("canaryErrors"):
        text += f", {agreement['canaryErrors']:.0f} canary errors"
    return text


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def disagreement_text(example: Mapping[str, Any]) -> str:
    """One kept disagreement: which row, both answers, and the request (shortened)."""
    why = f" ({example['why']})" if example.get("why") else ""
    return (
        f"disagreed{why} on row {example.get('row', 0)} of {example.get('output', '')}: "
        f"stable {_short(example.get('stable'), 40)}, canary {_short(example.get('canary'), 40)}"
        f"; request {_short(example.get('request'))}"
    )


def drift_bar(score: float, threshold: float, width: int = DRIFT_BAR) -> str:
    """A score as a bar of `#` with the threshold marked `|` in the middle; `>` at the end
    of a bar past twice the threshold."""
    mark = width // 2
    filled = min(width, round(score / threshold * mark)) if threshold > 0 else 0
    cells = ["#" if i < filled else " " for i in range(width)]
    cells[mark] = "|"
    if threshold > 0 and score > 2 * threshold:
        cells[-1] = ">"
    return "".join(cells)


def _drift_threshold(obj: Manifest) -> float:
    found = parsed(obj)
    if isinstance(found, SpecError) or found.spec.monitoring is None:
        return DEFAULT_DRIFT_THRESHOLD
    return found.spec.monitoring.drift.threshold


def drift_lines(obj: Manifest, now: datetime) -> list[str]:
    """The drift section of `weir status`: the Drifting verdict, the window, and a bar per
    feature (highest first), for the prediction and for the confidence; none without
    status.drift or a Drifting condition."""
    status = status_of(obj)
    drift = status.get("drift")
    drifting = next(
        (
            c
            for c in status.get("conditions") or []
            if isinstance(c, Mapping) and c.get("type") == "Drifting"
        ),
        None,
    )
    if not isinstance(drift, Mapping) and drifting is None:
        return []
    lines: list[str] = []
    if drifting is not None:
        said = f": {drifting['message']}" if drifting.get("message") else ""
        verdict = f"{drifting.get('status')} ({drifting.get('reason')}){said}"
    else:
        verdict = NONE
    lines.append(f"{'Drift:':<12}{verdict}")
    if not isinstance(drift, Mapping):
        return lines
    threshold = _drift_threshold(obj)
    samples = float(drift.get("samples") or 0)
    where = f", stable {str(drift['revision'])[:10]}" if drift.get("revision") else ""
    lines.append(
        " " * 12 + f"window {drift.get('window')} ended {age(drift.get('at'), now)} ago: "
        f"{samples:.0f} rows{where}; PSI, threshold {threshold:g} at |"
    )  # fmt: skip
    rows: list[list[str]] = []
    for feature in [f for f in drift.get("features") or [] if isinstance(f, Mapping)][
        :DRIFT_FEATURES
    ]:
        score = float(feature.get("score") or 0)
        rows.append([str(feature.get("name")), drift_bar(score, threshold), f"{score:.3g}"])
    prediction = drift.get("prediction")
    if isinstance(prediction, Mapping):
        score = float(prediction.get("score") or 0)
        label = f"{prediction.get('output') or 'prediction'} (predictions)"
        rows.append([label, drift_bar(score, threshold), f"{score:.3g}"])
    if rows:
        lines += ["  " + line for line in table(("FEATURE", "PSI", "SCORE"), rows).splitlines()]
    confidence = drift.get("confidence")
    if isinstance(confidence, Mapping) and isinstance(confidence.get("mean"), int | float):
        reference = confidence.get("reference")
        against = f", reference {reference:.3f}" if isinstance(reference, int | float) else ""
        lines.append(
            f"  confidence of {confidence.get('output') or 'the output'}: mean "
            f"{confidence['mean']:.3f}{against}"
        )
    return lines


def _ready(status: Mapping[str, Any]) -> str:
    if status.get("readyText"):
        return str(status["readyText"])
    if "replicas" in status or "readyReplicas" in status:
        return f"{status.get('readyReplicas', 0)}/{status.get('replicas', 0)}"
    return NONE


def _weight(status: Mapping[str, Any]) -> str:
    canary = status.get("canary")
    if not isinstance(canary, Mapping):
        return NONE
    shadow = canary.get("shadowPercent") or 0
    mirrored = f" (shadow: {shadow}% mirrored)" if shadow else ""
    return f"{canary.get('weight', 0)}%{mirrored}"


def get_row(obj: Manifest, now: datetime, wide: bool = False) -> list[str]:
    status = status_of(obj)
    created = (obj.get("metadata") or {}).get("creationTimestamp")
    row = [
        name_of(obj),
        str(status.get("phase") or NONE),
        ref_label(status.get("stable")),
        ref_label(status.get("canary")),
        _weight(status),
        _ready(status),
        age(created, now),
    ]
    if wide:
        analysis = status.get("lastAnalysis")
        verdict = analysis.get("verdict") if isinstance(analysis, Mapping) else None
        desired = desired_revision(obj)
        uri = ((obj.get("spec") or {}).get("model") or {}).get("uri")
        row += [
            step_text(obj, short=True),
            str(verdict or NONE),
            desired[:10] if desired else "invalid",
            str(uri or NONE),
        ]
    return row


def get_table(objects: Sequence[Manifest], now: datetime, wide: bool = False) -> str:
    headers = WIDE_COLUMNS if wide else GET_COLUMNS
    return table(headers, [get_row(obj, now, wide) for obj in objects])


def history_rows(obj: Manifest) -> list[list[str]]:
    rows = []
    for index, entry in enumerate(status_of(obj).get("history") or [], start=1):
        rows.append(
            [
                str(index),
                str(entry.get("revision") or NONE)[:10],
                str(entry.get("version") or NONE),
                str(entry.get("uri") or NONE),
                str(entry.get("outcome") or NONE),
                str(entry.get("at") or NONE),
                str(entry.get("requestedBy") or NONE),
                lineage_text(entry.get("lineage")),
                str(entry.get("reason") or ""),
            ]
        )
    return rows


def lineage_text(lineage: Any) -> str:
    """Where a revision's model came from, in one cell: its training run, else its dataset
    (the whole lineage is in `weir history -o json`)."""
    if not isinstance(lineage, Mapping):
        return NONE
    dataset = lineage.get("dataset")
    found = lineage.get("trainingRun") or (
        dataset.get("uri") if isinstance(dataset, Mapping) else None
    )
    return str(found) if found else NONE


def history_table(obj: Manifest) -> str:
    """status.history, newest first; `#` is what `undo --to-revision` takes."""
    return table(HISTORY_COLUMNS, history_rows(obj))


def measurement(track: Any) -> str:
    if not isinstance(track, Mapping):
        return "no data"
    p99 = track.get("p99Ms")
    latency = f"p99 {float(p99):.1f} ms" if p99 is not None else "p99 -"
    requests = float(track.get("requests") or 0)
    error_rate = float(track.get("errorRate") or 0)
    return f"{requests:g} req, {error_rate * 100:.2f}% errors, {latency}"


def _revision_line(ref: Mapping[str, Any]) -> str:
    version = ref.get("version")
    parts = [str(ref.get("revision") or NONE)[:10]]
    if version:
        parts.append(f"version {version}")
    parts.append(str(ref.get("uri") or ""))
    return "  ".join(p for p in parts if p)


def _autoscaler_line(autoscaler: Mapping[str, Any], now: datetime) -> str:
    """`4 servers wanted (12s ago): <reason>; on their own loads: 1111111111 3 (25), ...`."""
    count = autoscaler.get("desiredReplicas")
    when = age(autoscaler.get("at"), now)
    line = f"{count} server{'' if count == 1 else 's'} wanted ({when} ago)"
    if autoscaler.get("reason"):
        line += f": {autoscaler['reason']}"
    tracks = [t for t in autoscaler.get("tracks") or [] if isinstance(t, Mapping)]
    if tracks:
        own = ", ".join(
            f"{str(t.get('revision'))[:10]} {t.get('desiredReplicas')}"
            + (f" ({t['load']:g})" if isinstance(t.get("load"), int | float) else "")
            for t in tracks
        )
        line += f"; on their own loads: {own}"
    return line


def status_view(obj: Manifest, now: datetime, events: Sequence[Manifest] = ()) -> str:
    """The compact human view of `weir status`: phase, revisions, step, weight, the last
    analysis, drift (spec.monitoring), the last request, conditions, recent history and (when
    given) events."""
    status, meta = status_of(obj), obj.get("metadata") or {}
    lines: list[str] = []

    def field(label: str, value: str) -> None:
        lines.append(f"{label + ':':<12}{value}")

    field("Name", f"{name_of(obj)} (namespace {meta.get('namespace') or 'default'})")
    generation, seen = meta.get("generation"), status.get("observedGeneration")
    phase = str(status.get("phase") or "unknown (no status yet)")
    if generation is not None and seen != generation:
        phase += f"  (status is for generation {seen}, spec is generation {generation})"
    field("Phase", phase)
    desired = desired_revision(obj)
    model = (obj.get("spec") or {}).get("model") or {}
    if desired is None:
        field("Spec", "invalid")
    else:
        version = f" (version {model['version']})" if model.get("version") else ""
        field("Spec", f"revision {desired[:10]}{version}")
    stable, canary = status.get("stable"), status.get("canary")
    field("Stable", _revision_line(stable) if isinstance(stable, Mapping) else NONE)
    if isinstance(canary, Mapping):
        field("Canary", _revision_line(canary))
        field("Step", step_text(obj))
        weight = _weight(status)
        if canary.get("setWeight", canary.get("weight", 0)) != canary.get("weight", 0):
            weight += f" (the step asks for {canary.get('setWeight')}%)"
        failed = int(canary.get("failedChecks") or 0)
        if failed:
            weight += f", {failed} failed analys{'is' if failed == 1 else 'es'} in a row"
        field("Weight", weight)
    if status.get("rolledBackRevision"):
        field("Held", f"revision {str(status['rolledBackRevision'])[:10]} (rolled back)")
    field("Ready", _ready(status))
    autoscaler = status.get("autoscaler")
    if isinstance(autoscaler, Mapping):
        field("Autoscaler", _autoscaler_line(autoscaler, now))
    analysis = status.get("lastAnalysis")
    if isinstance(analysis, Mapping):
        field(
            "Analysis",
            f"{analysis.get('verdict')} {age(analysis.get('at'), now)} ago: "
            f"canary {measurement(analysis.get('canary'))}; "
            f"stable {measurement(analysis.get('stable'))}",
        )
        if analysis.get("reason"):
            lines.append(" " * 12 + str(analysis["reason"]))
        agreement = analysis.get("agreement")
        if isinstance(agreement, Mapping):
            field("Agreement", agreement_text(agreement))
            for example in (agreement.get("examples") or [])[-3:]:
                if isinstance(example, Mapping):
                    lines.append(" " * 12 + disagreement_text(example))
    lines += drift_lines(obj, now)
    request = status.get("lastRequest")
    if isinstance(request, Mapping):
        verdict = "accepted" if request.get("accepted") else "refused"
        said = f": {request['message']}" if request.get("message") else ""
        when = age(request.get("at"), now)
        field("Request", f"{request.get('action')} {verdict} {when} ago{said}")
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, Mapping)]
    if conditions:
        lines.append("Conditions:")
        rows = [
            [
                str(c.get("type")),
                str(c.get("status")),
                str(c.get("reason") or ""),
                str(c.get("message") or ""),
            ]
            for c in conditions
        ]
        lines += [
            "  " + line
            for line in table(("TYPE", "STATUS", "REASON", "MESSAGE"), rows).splitlines()
        ]
    history = history_rows(obj)[:STATUS_HISTORY]
    if history:
        lines.append("History (newest first):")
        rows = [[r[0], r[1], r[2], r[4], age(r[5], now) + " ago", r[6]] for r in history]
        headers = ("#", "REVISION", "VERSION", "OUTCOME", "WHEN", "REASON")
        lines += ["  " + line for line in table(headers, rows).splitlines()]
    if events:
        lines.append("Events:")
        rows = [
            [
                age(e.get("at"), now) + " ago",
                str(e.get("type") or ""),
                str(e.get("reason") or ""),
                str(e.get("message") or ""),
            ]
            for e in list(events)[-STATUS_EVENTS:]
        ]
        lines += [
            "  " + line for line in table(("WHEN", "TYPE", "REASON", "MESSAGE"), rows).splitlines()
        ]
    return "\n".join(lines)


def status_record(obj: Manifest, result: str | None = None) -> dict[str, Any]:
    """One line of `status -o json`: the status plus name, namespace, generation and the
    revision the spec asks for (and, when waiting, the result so far)."""
    meta = obj.get("metadata") or {}
    record: dict[str, Any] = {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "generation": meta.get("generation"),
        "desiredRevision": desired_revision(obj),
        **status_of(obj),
    }
    if result is not None:
        record["result"] = result
    return record


def progress_line(obj: Manifest) -> str:
    """One line for `weir status --wait` to print each time the rollout moves: phase, step,
    weight and the last analysis verdict (a CI log that stays silent for minutes is killed)."""
    status = status_of(obj)
    name = str((obj.get("metadata") or {}).get("name"))
    parts = [f"{name}: {status.get('phase') or 'Pending'}"]
    canary = status.get("canary")
    if isinstance(canary, Mapping):
        parts.append(f"canary {ref_label(canary)} at {_weight(status)}, step {step_text(obj)}")
    elif isinstance(status.get("stable"), Mapping):
        parts.append(f"stable {ref_label(status['stable'])}")
    analysis = status.get("lastAnalysis")
    if isinstance(analysis, Mapping) and analysis.get("verdict"):
        reason = f" ({analysis['reason']})" if analysis.get("reason") else ""
        parts.append(f"last analysis {analysis['verdict']}{reason}")
    return ", ".join(parts)


def change_key(obj: Manifest) -> tuple[Any, ...]:
    """What a watch re-renders on: the status, the generation and the spec."""
    meta = obj.get("metadata") or {}
    return (meta.get("generation"), json.dumps([obj.get("spec"), status_of(obj)], sort_keys=True))
