"""The autoscaler's eyes: the load of an instance's servers over the last short window.

Why it exists: `weir_operator.core.autoscaling` is pure; someone must scrape. This shell scrapes the
serving pods' /metrics (through the direct provider's scraper, so the same parsing and
checks), keeps the previous sample of each pod (its own memory: the analysis' windows are not
disturbed), and turns two samples into pod windows. A pod seen for the first time only opens
its window; a measurement younger than `min_seconds` is not taken (the window would be noise).
Serving pods without a window this time (first seen, or their scrape failed) are counted as
unmeasured, so the load is known to be a lower bound."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from weir_operator.core.analysis import PodSample, PodWindow, pod_window
from weir_operator.core.autoscaling import Load, LoadMetric, observed_load, track_loads
from weir_operator.providers.base import PodTarget
from weir_operator.providers.direct import DirectProvider

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class Measurement:
    total: Load | None  # all serving pods
    tracks: Mapping[str, Load | None]  # per serving revision


class LoadMeter:
    def __init__(
        self,
        scraper: DirectProvider,
        *,
        min_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._scraper = scraper
        self._min_seconds = min_seconds
        self._clock = clock
        self._previous: dict[Key, dict[str, PodSample]] = {}
        self._last: dict[Key, float] = {}

    def due(self, key: Key) -> bool:
        return self._clock() - self._last.get(key, float("-inf")) >= self._min_seconds

    async def measure(
        self, key: Key, metric: LoadMetric, targets: Sequence[tuple[str, PodTarget]]
    ) -> Measurement:
        """The load over the window since the last call, in all and per revision (None:
        nothing to compare yet)."""
        self._last[key] = self._clock()
        scraped = await self._scraper.scrape(list(targets))
        samples = [s for s in scraped if isinstance(s, PodSample)]
        previous = self._previous.get(key, {})
        windows: list[PodWindow] = [
            pod_window(previous[s.pod], s)
            for s in samples
            if s.pod in previous and previous[s.pod].revision == s.revision
        ]
        self._previous[key] = {s.pod: s for s in samples}
        tracks = track_loads(metric, windows, Counter(revision for revision, _ in targets))
        load = observed_load(metric, windows)
        if load is None:
            return Measurement(None, tracks)
        return Measurement(dataclasses.replace(load, unmeasured=len(targets) - load.pods), tracks)

    def forget(self, key: Key) -> None:
        self._previous.pop(key, None)
        self._last.pop(key, None)
