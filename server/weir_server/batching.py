"""Dynamic batching: concurrent requests stacked along the batch dimension into one model run.

On a model where compute dominates, one ONNX Runtime call on 32 rows costs far less than 32
calls on one row. Requests are grouped only when their inputs agree on every name, datatype and
non-batch dimension; a batch waits at most `max_delay` for company (and not at all while
requests come one at a time), and one request that makes a batch fail is found by running the
batch's requests one by one, so it fails alone."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from weir_server.codec import Array
from weir_server.model import LoadedModel, ModelRunError

BatchKey = tuple[tuple[str, str, tuple[int, ...]], ...]


def batch_key(inputs: dict[str, Array]) -> BatchKey:
    return tuple(
        sorted((name, array.dtype.str, tuple(array.shape[1:])) for name, array in inputs.items())
    )


@dataclass(slots=True)
class _Pending:
    inputs: dict[str, Array]
    output_names: list[str] | None
    key: BatchKey
    rows: int
    future: asyncio.Future[dict[str, Array]] = field(repr=False)


def stack(items: list[dict[str, Array]]) -> dict[str, Array]:
    return {name: np.concatenate([item[name] for item in items]) for name in items[0]}


def split(outputs: dict[str, Array], rows: list[int]) -> list[dict[str, Array]] | None:
    """Split batched outputs back by each request's row count; None if an output is not batched."""
    total = sum(rows)
    if any(array.ndim == 0 or array.shape[0] != total for array in outputs.values()):
        return None
    bounds = np.cumsum(rows)[:-1]
    per_name = {name: np.split(array, bounds) for name, array in outputs.items()}
    return [{name: parts[i] for name, parts in per_name.items()} for i in range(len(rows))]


class DynamicBatcher:
    """Collects requests into batches and runs them, one batch at a time, on a worker thread."""

    def __init__(
        self,
        model: LoadedModel,
        max_batch_size: int,
        max_delay_seconds: float,
        on_batch: Callable[[int], None] = lambda rows: None,
    ) -> None:
        self._model = model
        self._max_rows = max_batch_size
        self._max_delay = max_delay_seconds
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch")
        self._task: asyncio.Task[None] | None = None
        self._all_outputs = list(model.signature.output_names())

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._collect_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def run(
        self, inputs: dict[str, Array], output_names: list[str] | None
    ) -> dict[str, Array]:
        shapes = iter(inputs.values())
        rows = next(shapes).shape[0]
        # A request whose inputs disagree on their first dimension is not rows of one batch:
        # stacked with others and split by its first input's rows, its other outputs would be
        # cut at the wrong rows. It runs alone (the model decides what such inputs mean).
        if rows >= self._max_rows or any(array.shape[0] != rows for array in shapes):
            self._on_batch(rows)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._model.run, inputs, output_names)
        future: asyncio.Future[dict[str, Array]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(inputs, output_names, batch_key(inputs), rows, future))
        return await future

    async def _collect_forever(self) -> None:
        loop = asyncio.get_running_loop()
        carry: deque[_Pending] = deque()
        alone = True  # the last batch had one request: the load is light, do not wait
        while True:
            first = carry.popleft() if carry else await self._queue.get()
            batch, rows = [first], first.rows
            waiting = not alone or not self._queue.empty() or bool(carry)
            deadline = loop.time() + (self._max_delay if waiting else 0.0)
            left_over: deque[_Pending] = deque()
            for item in carry:
                if item.key == first.key and rows + item.rows <= self._max_rows:
                    batch.append(item)
                    rows += item.rows
                else:
                    left_over.append(item)
            carry = left_over
            while rows < self._max_rows:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            item = await self._queue.get()
                    except TimeoutError:
                        break
                if item.key == first.key and rows + item.rows <= self._max_rows:
                    batch.append(item)
                    rows += item.rows
                else:
                    carry.append(item)
            alone = len(batch) == 1
            await self._run_batch([item for item in batch if not item.future.done()])

    async def _run_batch(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        loop = asyncio.get_running_loop()
        rows = [item.rows for item in batch]
        self._on_batch(sum(rows))
        results: list[dict[str, Array]] | None = None
        if len(batch) > 1:
            try:
                outputs = await loop.run_in_executor(
                    self._executor,
                    self._model.run,
                    stack([i.inputs for i in batch]),
                    self._all_outputs,
                )
                results = split(outputs, rows)
            except ModelRunError:
                results = None
        if results is None:
            # One at a time, so that a request that breaks the batch fails alone.
            for item in batch:
                try:
                    result = await loop.run_in_executor(
                        self._executor, self._model.run, item.inputs, item.output_names
                    )
                except ModelRunError as error:
                    _settle(item.future, error=error)
                else:
                    _settle(item.future, result=result)
            return
        for item, result in zip(batch, results, strict=True):
            wanted = item.output_names if item.output_names is not None else self._all_outputs
            _settle(item.future, result={name: result[name] for name in wanted})


def _settle(
    future: asyncio.Future[dict[str, Array]],
    result: dict[str, Array] | None = None,
    error: BaseException | None = None,
) -> None:
    if future.done():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert result is not None
        future.set_result(result)
