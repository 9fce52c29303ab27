"""The inference server's request plumbing without HTTP: body deadlines, a request's rows, and
an infer request that fails in a way nobody foresaw (counted as the 500 it is)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from weir_server import rsgi
from weir_server.app import ServingState, batch_rows
from weir_server.metrics import ServerMetrics
from weir_server.settings import ServerSettings


class TestBodyDeadlines:
    def test_a_body_that_never_comes_ends_in_a_timeout_after_the_deadline(self) -> None:
        async def scenario() -> float:
            deadlines = rsgi.BodyDeadlines(0.3)
            deadlines.start(asyncio.get_running_loop())
            never: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            started = time.perf_counter()
            try:
                with pytest.raises(TimeoutError):
                    await deadlines.within(never, started)
                return time.perf_counter() - started
            finally:
                await deadlines.stop()

        assert 0.25 < asyncio.run(scenario()) < 3

    def test_a_body_that_comes_in_time_is_returned_and_leaves_nothing_behind(self) -> None:
        async def scenario() -> None:
            deadlines = rsgi.BodyDeadlines(0.2)
            deadlines.start(asyncio.get_running_loop())
            try:

                async def body() -> bytes:
                    await asyncio.sleep(0.05)
                    return b"{}"

                assert await deadlines.within(body(), time.perf_counter()) == b"{}"
                await asyncio.sleep(0.4)  # past the deadline: nothing may cancel us now
                assert deadlines._reading == {}
                assert deadlines._expired == set()
            finally:
                await deadlines.stop()

        asyncio.run(scenario())

    def test_a_cancellation_from_elsewhere_is_not_taken_for_a_timeout(self) -> None:
        async def scenario() -> None:
            deadlines = rsgi.BodyDeadlines(30)
            deadlines.start(asyncio.get_running_loop())
            never: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            reading = asyncio.create_task(deadlines.within(never, time.perf_counter()))
            await asyncio.sleep(0.05)
            reading.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reading
            await deadlines.stop()

        asyncio.run(scenario())

    def test_without_a_watchdog_the_deadline_still_holds(self) -> None:
        async def scenario() -> None:
            deadlines = rsgi.BodyDeadlines(0.1)  # never started
            never: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            with pytest.raises(TimeoutError):
                await deadlines.within(never, time.perf_counter())

        asyncio.run(scenario())


@pytest.mark.parametrize(
    ("shapes", "rows"),
    [
        ([(), (3, 2)], 3),  # a scalar first (issue 17: IndexError)
        ([(5, 4)], 5),
        ([(), ()], 1),
        ([(0, 4)], 0),
    ],
)
def test_a_requests_rows_come_from_its_first_input_that_has_a_dimension(
    shapes: list[tuple[int, ...]], rows: int
) -> None:
    inputs = {f"i{n}": np.zeros(shape, np.float32) for n, shape in enumerate(shapes)}
    assert batch_rows(inputs) == rows


class _Broken:
    """A model whose signature lookup raises: a bug nobody foresaw, deep in a request."""

    @property
    def signature(self) -> Any:
        raise KeyError("surprise")


def test_an_unforeseen_exception_is_a_500_with_a_message_counted_as_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = ServerSettings(model_path=Path("/m.onnx"), model_name="m")
    state = ServingState(settings=settings, metrics=ServerMetrics("m", None, "", ""))
    state.model = _Broken()  # type: ignore[assignment]
    state.ready = True
    status, body, media_type, _ = asyncio.run(state.infer(b"{}", None, "m", None))
    assert (status, media_type) == (500, "application/json")
    assert b"KeyError" in body
    assert b"Traceback" not in body
    text = state.metrics.exposition()[0].decode()
    assert 'code="500"' in text
    assert 'code="200"' not in text
    assert [r.exc_info is not None for r in caplog.records if r.levelname == "ERROR"] == [True]
