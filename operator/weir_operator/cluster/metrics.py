"""The operator's Prometheus metrics (`weir_rollout_*`, `weir_rollouts_total`, reconcile health,
`weir_model_drift_score`)."""

from __future__ import annotations

import contextlib
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from weir_operator.core.status import ModelDeploymentStatus, Phase, RevisionRef

PHASES = get_args(Phase)
LINEAGE_LABEL_CHARS = 256  # label values stay small; the status holds the lineage in full


def _model_labels(ref: RevisionRef, track: str) -> tuple[str, ...]:
    """revision, track, version and lineage of a serving revision, as label values."""
    lineage = ref.lineage
    dataset = lineage.dataset if lineage is not None else None
    values = (
        ref.version or "",
        (lineage.training_run if lineage is not None else None) or "",
        (dataset.uri if dataset is not None else None) or "",
        (dataset.sha256 if dataset is not None else None) or "",
    )
    return (ref.revision, track, *(v[:LINEAGE_LABEL_CHARS] for v in values))


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ("namespace", "name")
        self.phase = Gauge(
            "weir_rollout_phase",
            "1 for the phase each ModelDeployment is in, 0 for the others.",
            (*labels, "phase"),
            registry=self.registry,
        )
        self.canary_weight = Gauge(
            "weir_rollout_canary_weight",
            "Percent of traffic on the canary (0 without one).",
            labels,
            registry=self.registry,
        )
        self.revision_info = Gauge(
            "weir_rollout_revision_info",
            "1 for each revision serving a ModelDeployment, with its track (stable or canary) "
            "and served model name: joins the servers' per-revision metrics to tracks.",
            (*labels, "revision", "track", "model"),
            registry=self.registry,
        )
        self._revisions: dict[tuple[str, str], set[tuple[str, str, str]]] = {}
        self.model_info = Gauge(
            "weir_model_info",
            "1 for each revision serving a ModelDeployment, with its model version and "
            "lineage (spec.model.lineage: training run, dataset URI and sha256; each cut to "
            f"{LINEAGE_LABEL_CHARS} characters).",
            (*labels, "revision", "track", "version", "training_run", "dataset", "dataset_sha256"),
            registry=self.registry,
        )
        self._models: dict[tuple[str, str], set[tuple[str, ...]]] = {}
        self.analysis = Counter(
            "weir_rollout_analysis",
            "Canary analyses, by verdict.",
            (*labels, "verdict"),
            registry=self.registry,
        )
        self.rollouts = Counter(
            "weir_rollouts",
            "Finished rollouts, by outcome.",
            (*labels, "outcome"),
            registry=self.registry,
        )
        self.drift_score = Gauge(
            "weir_model_drift_score",
            "PSI of the stable revision's last drift window against its reference "
            "(status.drift): per input feature, per output for its predictions (feature "
            "<output>) and its confidence (feature <output>:confidence).",
            (*labels, "feature"),
            registry=self.registry,
        )
        self._drift: dict[tuple[str, str], set[str]] = {}
        self.reconcile_errors = Counter(
            "weir_reconcile_errors",
            "Reconciles that failed (and will be retried), by reason.",
            ("reason",),
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "weir_reconcile_duration_seconds",
            "Time one reconcile takes, API calls included.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

    def record(
        self, namespace: str, name: str, old: ModelDeploymentStatus, new: ModelDeploymentStatus
    ) -> None:
        for phase in PHASES:
            self.phase.labels(namespace, name, phase).set(1 if new.phase == phase else 0)
        self.canary_weight.labels(namespace, name).set(new.canary.weight if new.canary else 0)
        model = new.model_name or name
        serving = {
            (ref.revision, track, model)
            for ref, track in ((new.stable, "stable"), (new.canary, "canary"))
            if ref is not None
        }
        for gone in self._revisions.get((namespace, name), set()) - serving:
            with contextlib.suppress(KeyError):
                self.revision_info.remove(namespace, name, *gone)
        for values in serving:
            self.revision_info.labels(namespace, name, *values).set(1)
        self._revisions[(namespace, name)] = serving
        models = {
            _model_labels(ref, track)
            for ref, track in ((new.stable, "stable"), (new.canary, "canary"))
            if ref is not None
        }
        for old_model in self._models.get((namespace, name), set()) - models:
            with contextlib.suppress(KeyError):
                self.model_info.remove(namespace, name, *old_model)
        for model_labels in models:
            self.model_info.labels(namespace, name, *model_labels).set(1)
        self._models[(namespace, name)] = models
        self._record_drift(namespace, name, new)
        result = new.last_analysis
        if result is not None and (old.last_analysis is None or old.last_analysis.at != result.at):
            self.analysis.labels(namespace, name, result.verdict).inc()
        seen = {(h.revision, h.at, h.outcome) for h in old.history}
        for entry in new.history:
            if (entry.revision, entry.at, entry.outcome) not in seen:
                self.rollouts.labels(namespace, name, entry.outcome).inc()

    def _record_drift(self, namespace: str, name: str, new: ModelDeploymentStatus) -> None:
        scores = drift_scores(new)
        for gone in self._drift.get((namespace, name), set()) - scores.keys():
            with contextlib.suppress(KeyError):
                self.drift_score.remove(namespace, name, gone)
        for feature, score in scores.items():
            self.drift_score.labels(namespace, name, feature).set(score)
        self._drift[(namespace, name)] = set(scores)

    def forget(self, namespace: str, name: str) -> None:
        """Drop the series of a deleted ModelDeployment."""
        series: list[tuple[Gauge, tuple[str, ...]]] = [
            (self.phase, (namespace, name, p)) for p in PHASES
        ]
        series.append((self.canary_weight, (namespace, name)))
        series += [
            (self.revision_info, (namespace, name, *values))
            for values in self._revisions.pop((namespace, name), set())
        ]
        series += [
            (self.model_info, (namespace, name, *values))
            for values in self._models.pop((namespace, name), set())
        ]
        series += [
            (self.drift_score, (namespace, name, feature))
            for feature in self._drift.pop((namespace, name), set())
        ]
        for gauge, values in series:
            with contextlib.suppress(KeyError):
                gauge.remove(*values)


def drift_scores(status: ModelDeploymentStatus) -> dict[str, float]:
    """weir_model_drift_score's values by its feature label, from status.drift."""
    drift = status.drift
    if drift is None:
        return {}
    scores = {f.name: f.score for f in drift.features}
    if drift.prediction is not None and drift.prediction.output:
        scores[drift.prediction.output] = drift.prediction.score
    confidence = drift.confidence
    if confidence is not None and confidence.output and confidence.score is not None:
        scores[f"{confidence.output}:confidence"] = confidence.score
    return scores
