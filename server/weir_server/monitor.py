"""What `weir serve --reference FILE` counts as it serves (docs/monitoring.md §2): the bin of
every monitored input feature, the predicted class (or bin) and the top-1 probability of every
output, for every row answered, as `weir_drift_*` Prometheus series next to the reference's
shares, so that Prometheus (and the operator, from two scrapes) can compute the same PSI.

Why it is written by hand, and why it counts late: the budget is a few percent of a request
that takes ~70 µs on iris, and a single numpy call costs about a microsecond. So the request
path (`Monitor.record`) only appends the request's input and output arrays (references, no
copy) to a buffer; the counting is vectorised over many requests at once (`Monitor.flush`:
one concatenation, one comparison of every value against a matrix of bin edges, one
`np.bincount` over all series) when the buffer holds FLUSH_WEIGHT rows and requests, before
every /metrics scrape (so a scrape sees every row answered before it), every FLUSH_SECONDS and
at shutdown. Measured: docs/benchmarks.md, "Model monitoring"; decisions: docs/decisions.md.

One process keeps the counts as numpy arrays and exports them through a Collector (as
`metrics._LocalRequestMetrics` does); with several workers (prometheus-client's multiprocess
mode) each flush adds to prometheus-client Counters, whose files the scrape sums. Every bin's
series exists at 0 from the moment the reference is loaded. Only the event loop's thread
records and flushes (the batcher answers on the loop too), so nothing here takes a lock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from weir_server.codec import Array, ModelSignature
from weir_server.digests import file_sha256
from weir_server.metrics import LABELS, ServerMetrics
from weir_server.model import LoadedModel
from weir_server.reference import (
    Reference,
    ReferenceError,
    categorical_bins,
    category_number,
    feature_column,
    load_reference,
    model_mismatch,
    top1,
)
from weir_server.settings import ServerSettings

log = logging.getLogger("weir.server")

# A flush when the buffered rows plus requests reach this (512 one-row requests), so that a
# flush's fixed cost (~100 µs) is spread over many requests and the buffer stays small.
FLUSH_WEIGHT: Final = 1024
FLUSH_SECONDS: Final = 1.0  # and at least this often while rows wait (other workers' scrapes)

ROWS: Final = "weir_drift_rows"
ROWS_HELP: Final = "Rows monitored (answered) against the reference."
FEATURE_ROWS: Final = "weir_drift_feature_rows"
FEATURE_ROWS_HELP: Final = "Rows whose input feature fell in bin `bin` of the reference."
FEATURE_SHARE: Final = "weir_drift_feature_reference_share"
FEATURE_SHARE_HELP: Final = "The reference's (training data's) share of the feature's bin."
PREDICTION_ROWS: Final = "weir_drift_prediction_rows"
PREDICTION_ROWS_HELP: Final = "Rows predicted as `class` (numeric outputs: the bin)."
PREDICTION_SHARE: Final = "weir_drift_prediction_reference_share"
PREDICTION_SHARE_HELP: Final = "The reference's share of the output's class."
CONFIDENCE_ROWS: Final = "weir_drift_confidence_rows"
CONFIDENCE_ROWS_HELP: Final = "Rows whose top-1 probability fell in confidence bin `bin`."
CONFIDENCE_SHARE: Final = "weir_drift_confidence_reference_share"
CONFIDENCE_SHARE_HELP: Final = "The reference's share of the confidence bin."
CONFIDENCE_SUM: Final = "weir_drift_confidence_sum"
CONFIDENCE_SUM_HELP: Final = "Sum of the top-1 probabilities of the rows monitored."
CONFIDENCE_MEAN: Final = "weir_drift_confidence_reference_mean"
CONFIDENCE_MEAN_HELP: Final = "The reference's mean top-1 probability."
INFO: Final = "weir_drift_reference_info"
INFO_HELP: Final = "1, labelled with the sha256 of the reference file the server counts against."
MODEL_MATCH: Final = "weir_drift_reference_model_match"
MODEL_MATCH_HELP: Final = (
    "1 if the reference was made for the model served (by the model file's sha256), else 0: "
    "the inputs are still compared, the outputs against another model's."
)

IntArray = npt.NDArray[np.int64]

# The counter families a slot of the counts vector belongs to, with their extra label names.
_FAMILIES: Final = {
    FEATURE_ROWS: (FEATURE_ROWS_HELP, ("feature", "bin")),
    PREDICTION_ROWS: (PREDICTION_ROWS_HELP, ("output", "class")),
    CONFIDENCE_ROWS: (CONFIDENCE_ROWS_HELP, ("output", "bin")),
}
_SHARES: Final = {
    FEATURE_ROWS: (FEATURE_SHARE, FEATURE_SHARE_HELP),
    PREDICTION_ROWS: (PREDICTION_SHARE, PREDICTION_SHARE_HELP),
    CONFIDENCE_ROWS: (CONFIDENCE_SHARE, CONFIDENCE_SHARE_HELP),
}


def reference_problem(
    reference: Reference, source: str, signature: ModelSignature, model_path: Path
) -> str | None:
    """Why `reference` cannot be counted against this model (one line), or None. A reference
    made for another model file (another sha256) can: `model_mismatch` says so, as a warning."""
    if not signature.inputs:
        return f"the model {model_path} has no inputs to monitor"
    spec = signature.inputs[0]
    if reference.model.input != spec.name:
        return (
            f"reference {source} describes input {reference.model.input!r}, but the model's "
            f"first input is {spec.name!r}"
        )
    rank = len(spec.shape)
    width = spec.shape[1] if rank == 2 else None
    for feature in reference.features:
        where = f"reference {source}: feature {feature.name!r}"
        try:
            column = feature_column(feature.name, spec.name)
        except ValueError as error:
            return f"reference {source}: {error}"
        if rank not in (1, 2) or (rank == 1) != (column is None):
            return f"{where} does not fit the model's input {spec.name!r} ({spec.describe()})"
        if column is not None and width is not None and width >= 0 and column >= width:
            return (
                f"{where} is column {column}, but the model's input {spec.name!r} "
                f"({spec.describe()}) has {width} columns"
            )
        if spec.datatype == "BYTES" and feature.kind == "numeric":
            return f"{where} is numeric, but the model's input {spec.name!r} is text (BYTES)"
        if spec.datatype != "BYTES" and feature.kind == "categorical":
            text = [c for c in feature.categories if category_number(c) is None]
            if text:
                return (
                    f"{where} has the category {text[0]!r}, which the model's "
                    f"{spec.datatype} input {spec.name!r} cannot hold"
                )
    outputs = {o.name: o for o in signature.outputs}
    for output in reference.outputs:
        where = f"reference {source}: output {output.name!r}"
        model_output = outputs.get(output.name)
        if model_output is None:
            return f"{where} is not an output of the model ({', '.join(outputs)})"
        scores = output.confidence is not None
        if (scores or output.kind == "numeric") and model_output.datatype not in (
            "FP16",
            "FP32",
            "FP64",
        ):
            return f"{where} holds scores or numbers, but the model's is {model_output.datatype}"
        if scores and not all(c.isdigit() for c in output.classes):
            return f"{where}: the classes of an output with confidence are argmax indices"
    return None


def load_checked(path: Path, signature: ModelSignature, model_path: Path) -> tuple[Reference, str]:
    """The reference at `path` and the file's sha256, checked against the model's signature;
    ReferenceError (one line) if it cannot be counted against it."""
    reference = load_reference(path)
    try:
        reference_sha256 = file_sha256(path)
    except OSError as error:
        raise ReferenceError(f"cannot read {error.filename}: {error.strerror or error}") from None
    problem = reference_problem(reference, str(path), signature, model_path)
    if problem is not None:
        raise ReferenceError(problem)
    return reference, reference_sha256


def start_monitor(settings: ServerSettings, model: LoadedModel, metrics: ServerMetrics) -> Monitor:
    """The monitor of `settings.reference` for the loaded model, its series registered (at 0);
    ReferenceError (one line) if the reference does not fit the model."""
    assert settings.reference is not None
    path = Path(settings.reference)
    reference, sha256 = load_checked(path, model.signature, model.path)
    try:
        # --sha256 was checked when the model was loaded: no need to read the file again.
        model_sha256 = settings.sha256 or file_sha256(model.path)
        mismatch = model_mismatch(reference, str(path), model.path, model_sha256)
    except OSError as error:
        raise ReferenceError(f"cannot read {error.filename}: {error.strerror or error}") from None
    if mismatch is not None:
        log.warning("%s (counting anyway: the outputs are compared with another model's)", mismatch)
    labels = (settings.model_name, settings.model_version or "", settings.revision, settings.track)
    monitor = Monitor(
        reference, sha256, labels, metrics.registry, model.signature, for_model=mismatch is None
    )
    metrics.before_scrape.append(monitor.flush)
    log.info(
        "monitoring against reference %s (sha256 %s): %d features, %d outputs",
        path,
        sha256[:12],
        len(reference.features),
        len(reference.outputs),
    )
    return monitor


@dataclass(frozen=True, slots=True)
class _Slot:
    """One bin's series: its family (a counter name) and its extra label values."""

    family: str
    labels: tuple[str, str]
    share: float


@dataclass(frozen=True, slots=True)
class _ScoresPlan:
    """How one scores output is counted: argmax index -> slot (`lookup`; `beyond` for indices
    past it), top-1 probability -> a confidence slot from `confidence_offset` on."""

    name: str
    lookup: IntArray
    beyond: int
    edges: npt.NDArray[np.float64]
    confidence_offset: int


class Monitor:
    """The counts of one server process against one reference. `record(inputs, outputs)` per
    answered request (the hot path: two appends and an addition); everything else is off it."""

    def __init__(
        self,
        reference: Reference,
        reference_sha256: str,
        labels: tuple[str, ...],
        registry: CollectorRegistry | None,
        signature: ModelSignature,
        for_model: bool = True,
    ) -> None:
        self.reference = reference
        self.reference_sha256 = reference_sha256
        self.for_model = for_model  # the reference was made for the model served
        self._labels = labels
        self._input = reference.model.input
        spec = signature.input(self._input)
        self._rank = len(spec.shape) if spec is not None else 2
        # Arrays whose dimensions past the first are all fixed (and not text) are stacked by
        # joining their bytes: ten times faster than np.concatenate on many one-row arrays.
        self._joinable = {
            s.name: s.datatype != "BYTES" and all(d >= 0 for d in s.shape[1:])
            for s in (*signature.inputs, *signature.outputs)
        }
        self._inputs: list[Array] = []
        self._outputs: list[dict[str, Array]] = []
        self._weight = 0  # rows + requests buffered
        self._timer: asyncio.TimerHandle | None = None
        self._failed = False
        slots: list[_Slot] = []

        def add(family: str, first: str, bins: tuple[str, ...], shares: tuple[float, ...]) -> int:
            offset = len(slots)
            slots.extend(_Slot(family, (first, b), s) for b, s in zip(bins, shares, strict=True))
            return offset

        # Numeric features: a searchsorted per feature over its column (measured faster than
        # one comparison of every value against a matrix of all the edges: 0.04 against 0.15
        # µs a row on iris's 4 features, 0.9 against 2.1 on 32 of mlp's).
        numeric = [f for f in reference.features if f.kind == "numeric"]
        self._numeric_columns = np.array(
            [feature_column(f.name, self._input) or 0 for f in numeric], dtype=np.intp
        )
        self._numeric_edges = [np.array(f.edges, dtype=np.float64) for f in numeric]
        self._numeric_offsets = np.array(
            [add(FEATURE_ROWS, f.name, f.bins(), f.shares) for f in numeric], dtype=np.int64
        ).reshape(-1, 1)
        self._categorical = [
            (
                feature_column(f.name, self._input),
                f.categories,
                add(FEATURE_ROWS, f.name, f.bins(), f.shares),
            )
            for f in reference.features
            if f.kind == "categorical"
        ]
        # Outputs: scores (argmax -> class slot, top-1 -> confidence slot), labels, numbers.
        scores: list[tuple[str, list[int], int, tuple[float, ...], int]] = []
        self._labels_out: list[tuple[str, tuple[str, ...], int]] = []
        self._numeric_out: list[tuple[str, npt.NDArray[np.float64], int]] = []
        self._confidence_outputs: list[str] = []
        for output in reference.outputs:
            offset = add(PREDICTION_ROWS, output.name, output.bins(), output.shares)
            if output.confidence is not None:
                confidence = output.confidence
                positions = {int(c): offset + i for i, c in enumerate(output.classes)}
                # an index the reference does not name: "other" when it has one, else no class
                other = offset + len(output.classes) if output.has_other else -1
                size = max(positions, default=-1) + 1
                lookup = [positions.get(c, other) for c in range(size)]
                conf_offset = add(
                    CONFIDENCE_ROWS, output.name, confidence.bins(), confidence.shares
                )
                scores.append((output.name, lookup, other, confidence.edges, conf_offset))
                self._confidence_outputs.append(output.name)
            elif output.kind == "classes":
                self._labels_out.append((output.name, output.classes, offset))
            else:
                edges = np.array(output.edges, dtype=np.float64)
                self._numeric_out.append((output.name, edges, offset))
        self._slots = tuple(slots)
        self._dump = len(slots)  # values in no bin (NaN) are counted here, and dropped
        dump = self._dump
        self._scores = [
            _ScoresPlan(
                name,
                np.array([slot if slot >= 0 else dump for slot in lookup], dtype=np.int64),
                other if other >= 0 else dump,
                np.array(edges, dtype=np.float64),
                conf_offset,
            )
            for name, lookup, other, edges, conf_offset in scores
        ]
        self.counts = np.zeros(len(slots), dtype=np.int64)
        self.rows = 0
        self.confidence_sums = np.zeros(len(self._confidence_outputs))
        self._shared: _SharedCounters | None = None
        if registry is not None:
            registry.register(_Exporter(self))
        else:
            self._shared = _SharedCounters(self)

    # -- the hot path -------------------------------------------------------------------

    def record(self, inputs: dict[str, Array], outputs: dict[str, Array]) -> None:
        """One answered request: its arrays are kept (not copied) until the next flush."""
        array = inputs[self._input]
        self._inputs.append(array)
        self._outputs.append(outputs)
        self._weight += len(array) + 1
        if self._weight >= FLUSH_WEIGHT:
            self.flush()

    # -- off it -------------------------------------------------------------------------

    def flush(self) -> None:
        """Count every buffered row. Never raises: a failure is logged once and the rows it
        could not count are dropped (serving goes on)."""
        if not self._inputs:
            return
        inputs, outputs = self._inputs, self._outputs
        rows = self._weight - len(inputs)
        self._inputs, self._outputs, self._weight = [], [], 0
        try:
            self._count(inputs, outputs, rows)
        except Exception:
            if not self._failed:
                self._failed = True
                log.exception("model monitoring could not count %d requests", len(inputs))

    def _stack(self, name: str, arrays: list[Array], rows: int) -> Array:
        """The arrays of one input or output, one after the other along the first axis."""
        first = arrays[0]
        if len(arrays) == 1:
            return first
        if self._joinable.get(name, False):
            try:
                joined = b"".join(arrays)  # type: ignore[arg-type]  # arrays are buffers
            except (BufferError, TypeError):  # not C-contiguous
                pass
            else:
                if len(joined) == rows * first[:1].nbytes:
                    return np.frombuffer(joined, dtype=first.dtype).reshape(-1, *first.shape[1:])
        return np.concatenate(arrays)

    def _count(self, inputs: list[Array], outputs: list[dict[str, Array]], rows: int) -> None:
        try:
            x = self._stack(self._input, inputs, rows)
        except ValueError:  # inputs of several widths (a dynamic dimension): one at a time
            for one, answer in zip(inputs, outputs, strict=True):
                self._count([one], [answer], len(one))
            return
        rows = len(x)
        dump = self._dump
        parts: list[IntArray] = []
        if self._numeric_edges:
            values = x[:, self._numeric_columns] if self._rank == 2 else x.reshape(-1, 1)
            bins = np.empty((len(self._numeric_edges), rows), dtype=np.int64)
            for j, edges in enumerate(self._numeric_edges):
                bins[j] = np.searchsorted(edges, values[:, j], side="right")
            bins += self._numeric_offsets
            if values.dtype.kind == "f":
                missing = np.isnan(values.T)
                if missing.any():
                    bins[missing] = dump
            parts.append(bins.reshape(-1))
        for column, categories, offset in self._categorical:
            values = x if column is None else x[:, column]
            parts.append(categorical_bins(categories, values) + offset)
        sums: list[float] = []
        for plan in self._scores:
            found = self._gather(outputs, plan.name, rows)
            if found is None or found.ndim != 2:
                sums.append(0.0)
                continue
            index = found.argmax(axis=-1)
            lookup = plan.lookup
            if len(lookup) and index.max() < len(lookup):
                parts.append(lookup[index])
            else:
                classes = np.full(len(index), plan.beyond, dtype=np.int64)
                inside = index < len(lookup)
                classes[inside] = lookup[index[inside]]
                parts.append(classes)
            confidence = top1(found)
            known = ~np.isnan(confidence)
            confidence_bins = np.searchsorted(plan.edges, confidence, side="right")
            confidence_bins += plan.confidence_offset
            if not known.all():
                confidence_bins[~known] = dump
                confidence = confidence[known]
            parts.append(confidence_bins)
            sums.append(float(confidence.sum()))
        for name, classes_, offset in self._labels_out:
            labels = self._gather(outputs, name, rows)
            if labels is not None:
                parts.append(categorical_bins(classes_, labels.reshape(-1)) + offset)
        for name, edges_, offset in self._numeric_out:
            numbers = self._gather(outputs, name, rows)
            if numbers is not None:
                flat = numbers.reshape(-1)
                found_bins = np.searchsorted(edges_, flat, side="right") + offset
                if flat.dtype.kind == "f":
                    found_bins[np.isnan(flat)] = dump
                parts.append(found_bins)
        counted = np.bincount(
            np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64),
            minlength=dump + 1,
        )[:dump]
        self.counts += counted
        self.rows += rows
        confidence_sums = np.array(sums)
        if len(confidence_sums):
            self.confidence_sums += confidence_sums
        if self._shared is not None:
            self._shared.add(counted, rows, confidence_sums)

    def _gather(self, outputs: list[dict[str, Array]], name: str, rows: int) -> Array | None:
        """One output of every buffered request, stacked; None if no request asked for it."""
        try:
            arrays = [answer[name] for answer in outputs]
        except KeyError:  # a request that asked for other outputs only
            arrays = [answer[name] for answer in outputs if name in answer]
            if not arrays:
                return None
            return np.concatenate(arrays)
        return self._stack(name, arrays, rows)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Flush every FLUSH_SECONDS on `loop` while rows wait (for scrapes other workers take)."""
        self._timer = loop.call_later(FLUSH_SECONDS, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self.flush()
        self._timer = loop.call_later(FLUSH_SECONDS, self._tick, loop)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()

    # -- what is exported ---------------------------------------------------------------

    def series(self) -> Iterator[tuple[_Slot, int]]:
        yield from zip(self._slots, self.counts.tolist(), strict=True)

    @property
    def confidence_outputs(self) -> list[str]:
        return self._confidence_outputs

    def reference_means(self) -> list[float]:
        means = {o.name: o.confidence.mean for o in self.reference.outputs if o.confidence}
        return [means[name] for name in self._confidence_outputs]

    @property
    def labels(self) -> tuple[str, ...]:
        return self._labels


class _Exporter(Collector):
    """The monitor's counts as Prometheus series (one process), flushed first."""

    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[Metric]:
        monitor = self._monitor
        monitor.flush()
        labels = list(monitor.labels)
        rows = CounterMetricFamily(ROWS, ROWS_HELP, labels=list(LABELS))
        rows.add_metric(labels, monitor.rows)
        yield rows
        counters: dict[str, CounterMetricFamily] = {}
        gauges: dict[str, GaugeMetricFamily] = {}
        for family, (help_text, extra) in _FAMILIES.items():
            counters[family] = CounterMetricFamily(family, help_text, labels=[*LABELS, *extra])
            share_name, share_help = _SHARES[family]
            gauges[family] = GaugeMetricFamily(share_name, share_help, labels=[*LABELS, *extra])
        for slot, count in monitor.series():
            counters[slot.family].add_metric([*labels, *slot.labels], count)
            gauges[slot.family].add_metric([*labels, *slot.labels], slot.share)
        for family in _FAMILIES:
            yield counters[family]
            yield gauges[family]
        sums = CounterMetricFamily(CONFIDENCE_SUM, CONFIDENCE_SUM_HELP, labels=[*LABELS, "output"])
        means = GaugeMetricFamily(CONFIDENCE_MEAN, CONFIDENCE_MEAN_HELP, labels=[*LABELS, "output"])
        for name, total, mean in zip(
            monitor.confidence_outputs,
            monitor.confidence_sums.tolist(),
            monitor.reference_means(),
            strict=True,
        ):
            sums.add_metric([*labels, name], total)
            means.add_metric([*labels, name], mean)
        yield sums
        yield means
        info = GaugeMetricFamily(INFO, INFO_HELP, labels=[*LABELS, "sha256"])
        info.add_metric([*labels, monitor.reference_sha256], 1)
        yield info
        match = GaugeMetricFamily(MODEL_MATCH, MODEL_MATCH_HELP, labels=list(LABELS))
        match.add_metric(list(labels), 1 if monitor.for_model else 0)
        yield match


class _SharedCounters:
    """The same series in prometheus-client's multiprocess files (several workers): every
    child created (at 0) and every gauge set now; each flush adds what it counted."""

    def __init__(self, monitor: Monitor) -> None:
        labels = monitor.labels
        self._rows = Counter(ROWS, ROWS_HELP, LABELS, registry=None).labels(*labels)
        self._rows.inc(0)
        counters: dict[str, Counter] = {}
        gauges: dict[str, Gauge] = {}
        for family, (help_text, extra) in _FAMILIES.items():
            counters[family] = Counter(family, help_text, (*LABELS, *extra), registry=None)
            share_name, share_help = _SHARES[family]
            gauges[family] = Gauge(
                share_name, share_help, (*LABELS, *extra), multiprocess_mode="max", registry=None
            )
        self._children: list[Any] = []
        for slot, _ in monitor.series():
            self._children.append(counters[slot.family].labels(*labels, *slot.labels))
            gauges[slot.family].labels(*labels, *slot.labels).set(slot.share)
        sums = Counter(CONFIDENCE_SUM, CONFIDENCE_SUM_HELP, (*LABELS, "output"), registry=None)
        means = Gauge(
            CONFIDENCE_MEAN,
            CONFIDENCE_MEAN_HELP,
            (*LABELS, "output"),
            multiprocess_mode="max",
            registry=None,
        )
        self._sums = [sums.labels(*labels, name) for name in monitor.confidence_outputs]
        for name, mean in zip(monitor.confidence_outputs, monitor.reference_means(), strict=True):
            means.labels(*labels, name).set(mean)
        Gauge(INFO, INFO_HELP, (*LABELS, "sha256"), multiprocess_mode="max", registry=None).labels(
            *labels, monitor.reference_sha256
        ).set(1)
        Gauge(MODEL_MATCH, MODEL_MATCH_HELP, LABELS, multiprocess_mode="min", registry=None).labels(
            *labels
        ).set(1 if monitor.for_model else 0)

    def add(self, counted: IntArray, rows: int, confidence_sums: npt.NDArray[np.float64]) -> None:
        self._rows.inc(rows)
        for index in np.flatnonzero(counted).tolist():
            self._children[index].inc(int(counted[index]))
        for child, total in zip(self._sums, confidence_sums.tolist(), strict=True):
            if total:
                child.inc(total)
