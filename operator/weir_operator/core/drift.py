"""Drift of the stable revision's live traffic from its model's reference: PSI per input
feature and per output's predicted classes, and the mean confidence against the reference's
(docs/monitoring.md, section 3).

Why it exists: a model that answers fast, with 200, on inputs that have moved away from its
training data passes every latency and error check. The servers count each row they serve
into the reference's bins (the weir_drift_* counters, with the reference's shares as gauges);
this module turns the counts of one window into scores and a verdict. It is pure, like the
canary analysis, so both sources of counts feed it the same way: the direct provider as the
difference of two scrapes of each pod (`delta`, then summed over pods with `merge`), the
prometheus provider as PromQL increases (`window_from_samples`). Judging (`judge`) gives the
value of `status.drift` and the `Drifting` condition: True, False, or Unknown when the window
is too small to tell (no data is not drift)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from weir_operator.core.spec import Monitoring
from weir_operator.core.status import (
    DRIFT_FEATURES_SHOWN,
    ConfidenceDrift,
    DriftStatus,
    Event,
    FeatureScore,
    ModelDeploymentStatus,
    PredictionDrift,
    condition,
    find_condition,
    timestamp,
)

EPSILON = 1e-4
TOP_FEATURES = 3  # named in the Drifting condition's message
SCORE_DIGITS = 6  # scores in status.drift (and so in weir_model_drift_score)

ROWS = "weir_drift_rows_total"
FEATURE_ROWS = "weir_drift_feature_rows_total"
FEATURE_SHARE = "weir_drift_feature_reference_share"
PREDICTION_ROWS = "weir_drift_prediction_rows_total"
PREDICTION_SHARE = "weir_drift_prediction_reference_share"
CONFIDENCE_ROWS = "weir_drift_confidence_rows_total"
CONFIDENCE_SHARE = "weir_drift_confidence_reference_share"
CONFIDENCE_SUM = "weir_drift_confidence_sum_total"
CONFIDENCE_MEAN = "weir_drift_confidence_reference_mean"
MODEL_MATCH = "weir_drift_reference_model_match"  # 0: the reference is another model's
OTHER_BIN = "other"

# Counter families: (sample name, the label naming the histogram, the label naming the bin).
_HISTOGRAMS = {
    FEATURE_ROWS: ("features", "feature", "bin"),
    PREDICTION_ROWS: ("predictions", "output", "class"),
    CONFIDENCE_ROWS: ("confidence_bins", "output", "bin"),
}
_SHARES = {
    FEATURE_SHARE: ("features", "feature", "bin"),
    PREDICTION_SHARE: ("predictions", "output", "class"),
    CONFIDENCE_SHARE: ("confidence_bins", "output", "bin"),
}

Sample = tuple[str, Mapping[str, str], float]
DriftVerdict = Literal["True", "False", "Unknown"]


def psi(counts: Sequence[float], expected: Sequence[float]) -> float:
    """The population stability index of observed `counts` against `expected` shares, bin by
    bin: sum of (a - e) * ln(a / e), with a = count / total and both clamped at EPSILON (an
    empty bin would otherwise be infinitely far). 0 without any count: no data is not drift.
    Every term is >= 0, so the sum is too."""
    if len(counts) != len(expected):
        raise ValueError(f"{len(counts)} counts against {len(expected)} expected shares")
    total = sum(max(c, 0.0) for c in counts)
    if total <= 0:
        return 0.0
    score = 0.0
    for count, share in zip(counts, expected, strict=True):
        a = max(max(count, 0.0) / total, EPSILON)
        e = max(share, EPSILON)
        score += (a - e) * math.log(a / e)
    return score


@dataclass(frozen=True, slots=True)
class Histogram:
    """One feature's (or output's) bins in a window: the rows that fell in each, and the
    reference's share of each, in the same order (`bins`: their labels, "0".."k" then
    "other"; empty when made by hand, positions then name them)."""

    counts: tuple[float, ...]
    expected: tuple[float, ...]
    bins: tuple[str, ...] = ()

    @property
    def total(self) -> float:
        return sum(self.counts)

    @property
    def score(self) -> float:
        return psi(self.counts, self.expected)

    def labels(self) -> tuple[str, ...]:
        return self.bins if len(self.bins) == len(self.counts) else _positions(len(self.counts))


def _positions(count: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(count))


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """What the stable's servers counted in one window (or, for the direct provider, since
    they started: a cumulative snapshot), summed over its pods: rows monitored, per input
    feature and per output its histograms, per output the sum of top-1 probabilities and the
    reference's mean of it."""

    rows: float = 0.0
    features: Mapping[str, Histogram] = field(default_factory=dict)
    predictions: Mapping[str, Histogram] = field(default_factory=dict)
    confidence_bins: Mapping[str, Histogram] = field(default_factory=dict)
    confidence_sum: Mapping[str, float] = field(default_factory=dict)
    confidence_reference_mean: Mapping[str, float] = field(default_factory=dict)
    # False when a server counts against a reference made for another model file; None when
    # the servers do not say (older ones).
    reference_for_model: bool | None = None

    @property
    def empty(self) -> bool:
        """No row was counted."""
        return self.rows <= 0

    @property
    def has_reference(self) -> bool:
        """The servers count against a reference (without one they export no histograms)."""
        return bool(self.features or self.predictions or self.confidence_bins)

    def confidence_mean(self, output: str) -> float | None:
        """Mean top-1 probability of the rows of `output`; None without any."""
        bins = self.confidence_bins.get(output)
        rows = bins.total if bins is not None else 0.0
        if rows <= 0 or output not in self.confidence_sum:
            return None
        return self.confidence_sum[output] / rows


def _bin_order(label: str) -> tuple[int, int, str]:
    """Bins by index, labels that are not numbers by name, "other" last."""
    if label == OTHER_BIN:
        return (2, 0, "")
    try:
        return (0, int(label), label)
    except ValueError:
        return (1, 0, label)


def _name(metric: str) -> str:
    """A counter's sample name with its _total (PromQL results and some clients drop it)."""
    known = {ROWS, FEATURE_ROWS, PREDICTION_ROWS, CONFIDENCE_ROWS, CONFIDENCE_SUM}
    return metric + "_total" if metric + "_total" in known else metric


def window_from_samples(samples: Iterable[Sample]) -> WindowCounts:
    """The window of (metric name, labels, value) samples of the weir_drift_* series, from
    any number of pods: counters are summed, reference gauges taken as the largest (every pod
    of a revision has the same reference). Other series are ignored. A bin with a count and
    no reference share expects 0 (EPSILON), and the other way round counts 0."""
    rows = 0.0
    counts: dict[str, dict[str, dict[str, float]]] = {k: {} for k, _, _ in _HISTOGRAMS.values()}
    shares: dict[str, dict[str, dict[str, float]]] = {k: {} for k, _, _ in _SHARES.values()}
    sums: dict[str, float] = {}
    means: dict[str, float] = {}
    for_model: bool | None = None
    for metric, labels, value in samples:
        name = _name(metric)
        if not math.isfinite(value):
            continue
        if name == ROWS:
            rows += value
        elif name in _HISTOGRAMS:
            kind, key, part = _HISTOGRAMS[name]
            bins = counts[kind].setdefault(labels.get(key, ""), {})
            bins[labels.get(part, "")] = bins.get(labels.get(part, ""), 0.0) + value
        elif name in _SHARES:
            kind, key, part = _SHARES[name]
            bins = shares[kind].setdefault(labels.get(key, ""), {})
            bins[labels.get(part, "")] = max(bins.get(labels.get(part, ""), value), value)
        elif name == CONFIDENCE_SUM:
            output = labels.get("output", "")
            sums[output] = sums.get(output, 0.0) + value
        elif name == CONFIDENCE_MEAN:
            output = labels.get("output", "")
            means[output] = max(means.get(output, value), value)
        elif name == MODEL_MATCH:
            for_model = (for_model is not False) and value >= 1

    def histograms(kind: str) -> dict[str, Histogram]:
        found: dict[str, Histogram] = {}
        for key in sorted(counts[kind].keys() | shares[kind].keys()):
            got, want = counts[kind].get(key, {}), shares[kind].get(key, {})
            bins = tuple(sorted(got.keys() | want.keys(), key=_bin_order))
            found[key] = Histogram(
                tuple(got.get(b, 0.0) for b in bins), tuple(want.get(b, 0.0) for b in bins), bins
            )
        return found

    return WindowCounts(
        rows=rows,
        features=histograms("features"),
        predictions=histograms("predictions"),
        confidence_bins=histograms("confidence_bins"),
        confidence_sum=sums,
        confidence_reference_mean=means,
        reference_for_model=for_model,
    )


def samples_of(window: WindowCounts) -> Iterator[Sample]:
    """The window as the samples `window_from_samples` reads (its inverse)."""
    yield ROWS, {}, window.rows
    families = (
        (window.features, FEATURE_ROWS, FEATURE_SHARE, "feature", "bin"),
        (window.predictions, PREDICTION_ROWS, PREDICTION_SHARE, "output", "class"),
        (window.confidence_bins, CONFIDENCE_ROWS, CONFIDENCE_SHARE, "output", "bin"),
    )
    for histograms, rows_name, share_name, key, part in families:
        for name, histogram in histograms.items():
            for label, count, share in zip(
                histogram.labels(), histogram.counts, histogram.expected, strict=True
            ):
                yield rows_name, {key: name, part: label}, count
                yield share_name, {key: name, part: label}, share
    for output, total in window.confidence_sum.items():
        yield CONFIDENCE_SUM, {"output": output}, total
    for output, mean in window.confidence_reference_mean.items():
        yield CONFIDENCE_MEAN, {"output": output}, mean
    if window.reference_for_model is not None:
        yield MODEL_MATCH, {}, 1.0 if window.reference_for_model else 0.0


def merge(windows: Iterable[WindowCounts]) -> WindowCounts:
    """Windows of several pods as one: counts summed, reference gauges the largest."""
    return window_from_samples(s for w in windows for s in samples_of(w))


_COUNTERS = {ROWS, FEATURE_ROWS, PREDICTION_ROWS, CONFIDENCE_ROWS, CONFIDENCE_SUM}


def _key(sample: Sample) -> tuple[str, tuple[tuple[str, str], ...]]:
    return sample[0], tuple(sorted(sample[1].items()))


def delta(later: WindowCounts, earlier: WindowCounts) -> WindowCounts:
    """What was counted between two cumulative snapshots of one pod. A counter that went down
    was reset (the server restarted): it counts from 0, so its later value is the increase;
    when the rows went down the whole snapshot was, and the later one is the window. The
    reference gauges are the later snapshot's."""
    if later.rows < earlier.rows:
        return later
    before = {_key(s): s[2] for s in samples_of(earlier) if s[0] in _COUNTERS}
    changed: list[Sample] = []
    for sample in samples_of(later):
        metric, labels, value = sample
        if metric in _COUNTERS:
            previous = before.get(_key(sample), 0.0)
            value = value - previous if value >= previous else value
        changed.append((metric, labels, value))
    return window_from_samples(changed)


# ---------------------------------------------------------------------------------------------
# The verdict


@dataclass(frozen=True, slots=True)
class DriftResult:
    """One drift measurement: the Drifting condition's status, reason and message, and the
    value of status.drift (None: the measurement failed, what is there stays)."""

    status: DriftVerdict
    reason: str
    message: str
    drift: DriftStatus | None = None


def measurement_failed(message: str) -> DriftResult:
    """The servers' counts could not be had (the message says why)."""
    return DriftResult("Unknown", "MeasurementFailed", message)


def _score(value: float) -> str:
    return f"{value:.3g}"


def _rows(value: float) -> str:
    return f"{value:.0f} row{'' if round(value) == 1 else 's'}"


def _prediction_output(window: WindowCounts, wanted: str | None) -> str | None:
    """The output judged: the one the spec names, else the one whose predictions drifted most
    (ties: by name)."""
    if wanted is not None:
        return wanted if wanted in window.predictions else None
    if not window.predictions:
        return None
    return min(window.predictions, key=lambda o: (-window.predictions[o].score, o))


def _confidence_output(window: WindowCounts, wanted: str | None, judged: str | None) -> str | None:
    if wanted is not None:
        return wanted if wanted in window.confidence_bins else None
    if judged is not None and judged in window.confidence_bins:
        return judged
    return next(iter(sorted(window.confidence_bins)), None)


OTHER_MODEL = (
    "the reference was made for another model than the one served (its outputs are compared "
    "with that model's): profile this one with weir profile"
)


def judge(
    window: WindowCounts,
    spec: Monitoring,
    now: datetime,
    revision: str | None = None,
) -> DriftResult:
    """The verdict on one window of the stable revision (`revision`) ending `now` (`_verdict`),
    its message ending with OTHER_MODEL when a server counts against a reference made for
    another model: still judged, as the inputs are the training data's, not the model's."""
    result = _verdict(window, spec, now, revision)
    if window.reference_for_model is not False:
        return result
    return replace(result, message=f"{result.message}; {OTHER_MODEL}")


def _verdict(
    window: WindowCounts,
    spec: Monitoring,
    now: datetime,
    revision: str | None,
) -> DriftResult:
    """The verdict on one window of the stable revision (`revision`) ending `now`: True when
    a feature's PSI or the prediction's exceeds the threshold, or the mean confidence is lower
    than the reference's by more than maxConfidenceDrop; Unknown under minSamples rows
    (NotEnoughData) or when the servers count against no reference (NoReference)."""
    settings = spec.drift
    measured = DriftStatus(
        at=timestamp(now), window=settings.window, revision=revision, samples=window.rows
    )
    if not window.has_reference:
        return DriftResult(
            "Unknown",
            "NoReference",
            "the stable's servers export no weir_drift_* series: they serve without a "
            "reference (weir serve --reference)",
            measured,
        )
    if window.rows < settings.min_samples:
        if window.empty:
            why = f"no rows served in the {settings.window} window"
        else:
            why = f"{_rows(window.rows)} in the {settings.window} window"
        message = f"{why}, fewer than minSamples {settings.min_samples}: no verdict"
        return DriftResult("Unknown", "NotEnoughData", message, measured)
    names = [n for n in window.features if not spec.features or n in spec.features]
    scored = sorted(((window.features[n].score, n) for n in names), key=lambda s: (-s[0], s[1]))
    features = [FeatureScore(name=n, score=round(s, SCORE_DIGITS)) for s, n in scored]
    shown = features[:DRIFT_FEATURES_SHOWN]
    output = _prediction_output(window, settings.output)
    prediction = None
    if output is not None:
        score = round(window.predictions[output].score, SCORE_DIGITS)
        prediction = PredictionDrift(output=output, score=score)
    confidence = None
    confident = _confidence_output(window, settings.output, output)
    mean = window.confidence_mean(confident) if confident is not None else None
    if confident is not None and mean is not None:
        confidence = ConfidenceDrift(
            output=confident,
            mean=round(mean, SCORE_DIGITS),
            reference=window.confidence_reference_mean.get(confident),
            score=round(window.confidence_bins[confident].score, SCORE_DIGITS),
        )
    threshold = settings.threshold
    inputs_drift = bool(features) and features[0].score > threshold
    prediction_drift = prediction is not None and prediction.score > threshold
    confidence_drop = (
        confidence is not None
        and confidence.reference is not None
        and confidence.reference - confidence.mean > settings.max_confidence_drop
    )
    drifting = inputs_drift or prediction_drift or confidence_drop
    measured = measured.model_copy(
        update={
            "features": shown,
            "prediction": prediction,
            "confidence": confidence,
            "drifting": drifting,
        }
    )
    top = ", ".join(
        f"{f.name} PSI {_score(f.score)}" if i == 0 else f"{f.name} {_score(f.score)}"
        for i, f in enumerate(features[:TOP_FEATURES])
    )
    parts: list[tuple[bool, str]] = []  # (drifted, what it says)
    if top:
        said = "input drift" if inputs_drift else "inputs"
        parts.append((inputs_drift, f"{said}: {top} (threshold {threshold:g})"))
    if prediction is not None:
        said = "prediction drift" if prediction_drift else "predictions"
        parts.append(
            (prediction_drift, f"{said}: {prediction.output} PSI {_score(prediction.score)}")
        )
    elif settings.output is not None:
        parts.append((False, f"output {settings.output} is not monitored by the servers"))
    if confidence is not None:
        said = "confidence drop" if confidence_drop else "confidence"
        reference = (
            f" (reference {confidence.reference:.3f}, max drop {settings.max_confidence_drop:g})"
            if confidence.reference is not None
            else ""
        )
        parts.append(
            (confidence_drop, f"{said}: {confidence.output} mean {confidence.mean:.3f}{reference}")
        )
    parts.sort(key=lambda part: not part[0])  # what drifted first (a stable sort)
    message = "; ".join(text for _, text in parts) + f" over {_rows(window.rows)}"
    if drifting:
        return DriftResult("True", "DriftDetected", message, measured)
    return DriftResult("False", "NoDrift", "no drift: " + message, measured)


# ---------------------------------------------------------------------------------------------
# Into the status


DRIFTING = "Drifting"


def with_drift(
    spec: Monitoring | None,
    old: ModelDeploymentStatus,
    new: ModelDeploymentStatus,
    result: DriftResult | None,
    now: datetime,
    generation: int | None,
) -> tuple[ModelDeploymentStatus, list[Event]]:
    """The status a reconcile decided (`new`, from `old`) with the drift measured now, if a
    window was (`result`), and the events that tell the story: DriftDetected when the verdict
    turns True, DriftCleared when it turns back to False. The verdict is carried through
    windows without one (status.drift.drifting), so a quiet night (NotEnoughData) between a
    drift and its end still tells DriftCleared. Without spec.monitoring.reference neither
    status.drift nor the Drifting condition is there."""
    if spec is None or spec.reference is None:
        kept = [c for c in new.conditions if c.type != DRIFTING]
        if new.drift is None and len(kept) == len(new.conditions):
            return new, []
        return new.model_copy(update={"drift": None, "conditions": kept}), []
    if result is None:
        if find_condition(new.conditions, DRIFTING) is not None:
            return new, []
        message = f"measuring the first {spec.drift.window} window"
        result = DriftResult("Unknown", "NotEnoughData", message)
    before = old.drift.drifting if old.drift is not None else None
    drift = old.drift
    if result.drift is not None:
        verdict = result.drift.drifting if result.drift.drifting is not None else before
        drift = result.drift.model_copy(update={"drifting": verdict})
    ok = None if result.status == "Unknown" else result.status == "True"
    made = condition(
        new.conditions, DRIFTING, ok, result.reason, result.message, timestamp(now), generation
    )
    conditions = [made if c.type == DRIFTING else c for c in new.conditions]
    if find_condition(new.conditions, DRIFTING) is None:
        conditions.append(made)
    events: list[Event] = []
    after = drift.drifting if drift is not None else None
    if after is True and before is not True:
        events.append(Event("Warning", "DriftDetected", result.message))
    elif after is False and before is True:
        events.append(Event("Normal", "DriftCleared", result.message))
    return new.model_copy(update={"drift": drift, "conditions": conditions}), events
