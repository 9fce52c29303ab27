"""Canary analysis math: from scrapes of the servers' counters to a Pass / Fail / Inconclusive
verdict with the numbers that explain it. Pure: no I/O, no clock, so every rule is tested on
hand-computed windows and the operator and `weir run` judge a canary the same way.

The inputs are cumulative counters (`weir_inference_requests_total` by code and the
`weir_inference_request_duration_seconds` histogram, see weir_server.metrics). A window is the
difference of two scrapes of one pod; a pod that restarted in between (any counter went down)
counts from zero. Pod windows add up per revision into a track window, whose p99 is interpolated
in the histogram's bucket deltas exactly as Prometheus' `histogram_quantile` does, so the direct
and the Prometheus providers agree.

The verdict follows one rule above all: no data is not failure. Too few canary requests, a
provider error or a first scrape give Inconclusive (hold the weight), never Pass, never Fail."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families

from weir_operator.core.status import TrackMeasurement, timestamp

REQUESTS_SAMPLE: Final = "weir_inference_requests_total"
LATENCY_BUCKET_SAMPLE: Final = "weir_inference_request_duration_seconds_bucket"
LATENCY_SUM_SAMPLE: Final = "weir_inference_request_duration_seconds_sum"
REVISION_LABEL: Final = "revision"
CANARY_REVISION_LABEL: Final = "canary_revision"
# weir_server.shadow's counters on a stable server, by the canary revision copies went to.
SHADOW_SAMPLES: Final = {
    "weir_shadow_mirrored_requests_total": "mirrored",
    "weir_shadow_dropped_requests_total": "dropped",
    "weir_shadow_canary_errors_total": "canary_errors",
    "weir_shadow_compared_samples_total": "compared",
    "weir_shadow_agreed_samples_total": "agreed",
}
# weir_server.monitor's predicted classes (with spec.monitoring.reference), by output and class.
PREDICTION_SAMPLE: Final = "weir_drift_prediction_rows_total"
P99: Final = 0.99
INF: Final = math.inf

# Relative slack in threshold comparisons, so that a rate equal to its limit (1/100 against
# 0.01) passes however the floating-point sums were ordered.
_SLACK: Final = 1e-9

Buckets = Mapping[float, float]
"""A cumulative histogram: upper bound `le` (seconds, +Inf included) -> observations <= le."""


class ScrapeError(ValueError):
    """A scrape that is not a weir server's metrics (unparsable, no latency histogram, several
    revisions)."""


@dataclass(frozen=True, slots=True)
class ShadowCounts:
    """What a stable server mirrored to one canary revision (cumulative in a sample, the
    difference in a window)."""

    mirrored: float = 0.0
    dropped: float = 0.0
    canary_errors: float = 0.0
    compared: float = 0.0  # rows compared
    agreed: float = 0.0  # rows agreed

    def minus(self, before: ShadowCounts) -> ShadowCounts:
        return ShadowCounts(
            *(max(a - b, 0.0) for a, b in zip(self._values(), before._values(), strict=True))
        )

    def plus(self, other: ShadowCounts) -> ShadowCounts:
        return ShadowCounts(*(a + b for a, b in zip(self._values(), other._values(), strict=True)))

    def went_down_from(self, before: ShadowCounts) -> bool:
        return any(a < b for a, b in zip(self._values(), before._values(), strict=True))

    def _values(self) -> tuple[float, ...]:
        return (self.mirrored, self.dropped, self.canary_errors, self.compared, self.agreed)


Shadow = Mapping[str, ShadowCounts]
"""Shadow counts by the canary revision the copies went to."""

Predictions = Mapping[tuple[str, str], float]
"""Rows predicted, by (output, class) (cumulative in a sample, the difference in a window)."""


def _minus(later: Predictions, earlier: Predictions) -> dict[tuple[str, str], float]:
    return {key: max(value - earlier.get(key, 0.0), 0.0) for key, value in later.items()}


@dataclass(frozen=True, slots=True)
class PodSample:
    """One scrape of one pod's cumulative counters."""

    pod: str
    revision: str
    taken_at: float  # seconds on the provider's clock (only differences matter)
    requests: float  # answers of any code
    errors: float  # 5xx answers
    buckets: Buckets = field(default_factory=dict)
    busy: float = 0.0  # seconds spent answering (the latency histogram's sum)
    shadow: Shadow = field(default_factory=dict)  # a stable's copies, by canary revision
    predictions: Predictions = field(default_factory=dict)  # with a monitoring reference


@dataclass(frozen=True, slots=True)
class PodWindow:
    """What one pod served between two of its scrapes."""

    pod: str
    revision: str
    seconds: float
    requests: float
    errors: float
    buckets: Buckets
    restarted: bool  # counters went down: the pod restarted, counts are since its restart
    busy: float = 0.0  # seconds spent answering: busy / seconds is the mean concurrency
    shadow: Shadow = field(default_factory=dict)
    predictions: Predictions = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TrackWindow:
    """What one revision served in the last window, summed over its pods."""

    revision: str
    requests: float
    errors: float
    p99_ms: float | None
    # Pods whose two scrapes make up the window; None when the provider does not know
    # (Prometheus aggregates server-side).
    pods: int | None = None
    new_pods: int = 0  # scraped for the first time: their first window starts now
    restarted_pods: int = 0  # restarted within the window (their counters went down)
    seconds: float = 0.0
    buckets: Buckets = field(default_factory=dict)
    shadow: Shadow = field(default_factory=dict)  # what this (stable) revision mirrored
    # What this revision predicted, by (output, class): only servers with a monitoring
    # reference count it (empty otherwise).
    predictions: Predictions = field(default_factory=dict)

    def predicted(self, output: str) -> dict[str, float]:
        """Rows predicted as each class of `output` in the window."""
        return {c: rows for (o, c), rows in self.predictions.items() if o == output}

    @property
    def error_rate(self) -> float | None:
        """5xx share of the window's answers; None without requests."""
        return self.errors / self.requests if self.requests > 0 else None

    def measurement(self) -> TrackMeasurement:
        return TrackMeasurement(
            requests=self.requests, error_rate=self.error_rate or 0.0, p99_ms=self.p99_ms
        )


# ---------------------------------------------------------------------------------------------
# Scrapes and windows


def parse_scrape(text: str, *, pod: str, taken_at: float) -> PodSample:
    """A pod's sample from the Prometheus text a `weir serve` exports on /metrics.

    Series of every label set are summed (a pod serves one model; several worker processes are
    already summed by the server). The revision is the series' `revision` label."""
    requests = errors = busy = 0.0
    buckets: dict[float, float] = {}
    shadow: dict[str, dict[str, float]] = {}
    predictions: dict[tuple[str, str], float] = {}
    revisions: set[str] = set()
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == PREDICTION_SAMPLE:
                    key = (sample.labels.get("output", ""), sample.labels.get("class", ""))
                    predictions[key] = predictions.get(key, 0.0) + sample.value
                elif sample.name in SHADOW_SAMPLES:
                    counts = shadow.setdefault(sample.labels.get(CANARY_REVISION_LABEL, ""), {})
                    what = SHADOW_SAMPLES[sample.name]
                    counts[what] = counts.get(what, 0.0) + sample.value
                elif sample.name == REQUESTS_SAMPLE:
                    requests += sample.value
                    if sample.labels.get("code", "").startswith("5"):
                        errors += sample.value
                elif sample.name == LATENCY_BUCKET_SAMPLE:
                    le = float(sample.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + sample.value
                elif sample.name == LATENCY_SUM_SAMPLE:
                    busy += sample.value
                else:
                    continue
                revisions.add(sample.labels.get(REVISION_LABEL, ""))
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise ScrapeError(f"unparsable metrics from pod {pod}: {error}") from None
    if INF not in buckets:
        raise ScrapeError(
            f"pod {pod} exports no {LATENCY_BUCKET_SAMPLE} histogram: not a weir server?"
        )
    if len(revisions) > 1:
        raise ScrapeError(f"pod {pod} exports several revisions: {', '.join(sorted(revisions))}")
    mirrored = {r: ShadowCounts(**counts) for r, counts in shadow.items()}
    return PodSample(
        pod, revisions.pop(), taken_at, requests, errors, buckets, busy, mirrored, predictions
    )


def _went_down(previous: PodSample, current: PodSample) -> bool:
    if current.requests < previous.requests or current.errors < previous.errors:
        return True
    if current.requests - current.errors < previous.requests - previous.errors:
        return True  # the other codes' counters went down, hidden by new 5xx
    if current.buckets.keys() != previous.buckets.keys():
        return True  # a different histogram layout: a different server process
    if any(
        current.shadow.get(r, ShadowCounts()).went_down_from(counts)
        for r, counts in previous.shadow.items()
    ):
        return True
    if any(current.predictions.get(k, 0.0) < rows for k, rows in previous.predictions.items()):
        return True
    return any(current.buckets[le] < count for le, count in previous.buckets.items())


def pod_window(previous: PodSample, current: PodSample) -> PodWindow:
    """What a pod served between two scrapes. If any counter went down, the pod restarted in
    between, and its current counters are what it served since then (the requests before the
    restart, after the previous scrape, are lost, as with Prometheus' `increase`)."""
    if previous.pod != current.pod or previous.revision != current.revision:
        raise ValueError(
            f"a window needs two samples of one pod and revision, got {previous.pod}@"
            f"{previous.revision} and {current.pod}@{current.revision}"
        )
    if current.taken_at < previous.taken_at:
        raise ValueError(f"samples of pod {current.pod} are out of order")
    seconds = current.taken_at - previous.taken_at
    if _went_down(previous, current):
        return PodWindow(
            current.pod,
            current.revision,
            seconds,
            current.requests,
            current.errors,
            dict(current.buckets),
            restarted=True,
            busy=current.busy,
            shadow=dict(current.shadow),
            predictions=dict(current.predictions),
        )
    return PodWindow(
        current.pod,
        current.revision,
        seconds,
        current.requests - previous.requests,
        current.errors - previous.errors,
        {le: count - previous.buckets[le] for le, count in current.buckets.items()},
        restarted=False,
        busy=max(current.busy - previous.busy, 0.0),
        shadow={
            r: counts.minus(previous.shadow.get(r, ShadowCounts()))
            for r, counts in current.shadow.items()
        },
        predictions=_minus(current.predictions, previous.predictions),
    )


def track_window(revision: str, windows: Iterable[PodWindow], new_pods: int = 0) -> TrackWindow:
    """The pods' windows of one revision, summed. Buckets are summed over the bounds every pod
    has (pods of different server versions stay comparable); the sum does not depend on the
    order of the pods."""
    mine = sorted((w for w in windows if w.revision == revision), key=lambda w: w.pod)
    bounds: set[float] | None = None
    for window in mine:
        bounds = set(window.buckets) if bounds is None else bounds & set(window.buckets)
    buckets = {le: math.fsum(w.buckets[le] for w in mine) for le in sorted(bounds or ())}
    quantile = histogram_quantile(P99, buckets)
    shadow: dict[str, ShadowCounts] = {}
    predictions: dict[tuple[str, str], float] = {}
    for window in mine:
        for canary, counts in window.shadow.items():
            shadow[canary] = shadow.get(canary, ShadowCounts()).plus(counts)
        for key, rows in window.predictions.items():
            predictions[key] = predictions.get(key, 0.0) + rows
    return TrackWindow(
        revision=revision,
        requests=math.fsum(w.requests for w in mine),
        errors=math.fsum(w.errors for w in mine),
        p99_ms=None if quantile is None else quantile * 1000.0,
        pods=len(mine),
        new_pods=new_pods,
        restarted_pods=sum(w.restarted for w in mine),
        seconds=max((w.seconds for w in mine), default=0.0),
        buckets=buckets,
        shadow=shadow,
        predictions=predictions,
    )


def windows_between(
    previous: Mapping[str, PodSample], current: Iterable[PodSample]
) -> dict[str, TrackWindow]:
    """Track windows, by revision, from the previous scrape of each pod (by pod name) and this
    scrape. A pod seen for the first time (or now serving another revision) only starts its
    window: it counts in `new_pods`, never with a guess at what it served before. A pod that is
    gone is left out: what it served since its last scrape is lost."""
    windows: list[PodWindow] = []
    new: dict[str, int] = {}
    for sample in current:
        before = previous.get(sample.pod)
        if before is None or before.revision != sample.revision:
            new[sample.revision] = new.get(sample.revision, 0) + 1
        else:
            windows.append(pod_window(before, sample))
    revisions = sorted({w.revision for w in windows} | set(new))
    return {r: track_window(r, windows, new.get(r, 0)) for r in revisions}


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """The q-quantile of a cumulative histogram, as Prometheus' `histogram_quantile`: linear
    interpolation inside the bucket where the rank falls (the first bucket starts at 0); a rank
    in the +Inf bucket gives the highest finite bound. None without observations or without a
    +Inf bucket."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile {q} is not within 0..1")
    bounds = sorted(buckets)
    if len(bounds) < 2 or bounds[-1] != INF:
        return None
    counts: list[float] = []
    for le in bounds:  # counts may dip from float sums or a torn scrape: keep them monotonic
        counts.append(max(buckets[le], counts[-1] if counts else 0.0))
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    index = next((i for i, c in enumerate(counts[:-1]) if c >= rank), len(bounds) - 1)
    if index == len(bounds) - 1:
        return bounds[-2]
    if index == 0 and bounds[0] <= 0:
        return bounds[0]
    start, below = (0.0, 0.0) if index == 0 else (bounds[index - 1], counts[index - 1])
    in_bucket = counts[index] - below
    if in_bucket <= 0:
        return bounds[index]
    return start + (bounds[index] - start) * (rank - below) / in_bucket


# ---------------------------------------------------------------------------------------------
# Pod health


@dataclass(frozen=True, slots=True)
class PodHealth:
    """What Kubernetes says about one canary pod, for the verdict."""

    name: str
    restarts: int = 0  # of its containers, since the pod was created
    last_restart: datetime | None = None  # when a container of it last ended (and restarted)
    # Not ready, and not because it is still starting: it was ready before, or it restarted.
    unready: bool = False


def pod_health(pod: Mapping[str, Any]) -> PodHealth:
    """A Pod object's restarts and readiness. A pod still starting is not unready: its Ready=False
    condition dates from before its container started, while a pod that stopped being ready has
    a Ready=False condition newer than its running container (or a container that restarted)."""
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    restarts = sum(int(c.get("restartCount") or 0) for c in containers)
    ended = [
        _parse_time(((c.get("lastState") or {}).get("terminated") or {}).get("finishedAt"))
        for c in containers
    ]
    last_restart = max((t for t in ended if t is not None), default=None)
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    unready = False
    if ready is not None and ready.get("status") != "True":
        changed = _parse_time(ready.get("lastTransitionTime"))
        started = [
            _parse_time(((c.get("state") or {}).get("running") or {}).get("startedAt"))
            for c in containers
        ]
        running = [s for s in started if s is not None]
        was_ready = changed is not None and bool(running) and changed > max(running)
        unready = was_ready or restarts > 0
    return PodHealth(str(metadata.get("name", "")), restarts, last_restart, unready)


def canary_pod_problem(pods: Iterable[PodHealth], since: datetime) -> str | None:
    """Why the canary's pods count as failing in the window that began at `since`, in words;
    None when they are healthy. A restart counts in the windows it happened in (so
    `failureThreshold` debounces one restart); a pod counts while it is unready."""
    problems = []
    for pod in sorted(pods, key=lambda p: p.name):
        if pod.last_restart is not None and pod.last_restart >= since:
            times = "once" if pod.restarts == 1 else f"{pod.restarts} times"
            problems.append(
                f"canary pod {pod.name} restarted at {timestamp(pod.last_restart)} "
                f"(restarted {times} in all)"
            )
        if pod.unready:
            problems.append(f"canary pod {pod.name} is not ready")
    return "; ".join(problems) or None


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
