"""The inference server's request plumbing without HTTP: body deadlines, a request's rows, and
an infer request that fails in a way nobody foresaw (counted as the 500 it is)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from weir_server import app as app_module
from weir_server import rsgi
from weir_server.app import ServingState, batch_rows
from weir_server.batching import DynamicBatcher
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


class _Identity:
    """Stands in for a LoadedModel whose outputs are its inputs (`a` -> `a_out`, ...)."""

    class signature:  # the attribute LoadedModel has
        @staticmethod
        def output_names() -> tuple[str, ...]:
            return ("a_out", "b_out")

    def run(self, inputs: dict[str, Any], names: list[str] | None = None) -> dict[str, Any]:
        outputs = {"a_out": inputs["a"], "b_out": inputs["b"]}
        return {name: outputs[name] for name in names or outputs}


def test_requests_whose_inputs_disagree_on_rows_are_not_batched_into_wrong_answers() -> None:
    # Stacked, these two have 3 rows of `a` and 3 of `b`; split by `a`'s rows, the first
    # would get one row of `b` back where it sent two.
    first = {"a": np.zeros((1, 2)), "b": np.arange(4.0).reshape(2, 2)}
    second = {"a": np.zeros((2, 2)), "b": np.full((1, 2), 9.0)}

    async def scenario() -> list[dict[str, Any]]:
        batcher = DynamicBatcher(_Identity(), 16, 0.05)  # type: ignore[arg-type]
        batcher.start()
        try:
            warm = batcher.run({"a": np.zeros((1, 2)), "b": np.zeros((1, 2))}, None)
            results = await asyncio.gather(
                warm, batcher.run(first, None), batcher.run(second, None)
            )
            return list(results[1:])
        finally:
            await batcher.stop()

    answers = asyncio.run(scenario())
    for sent, got in zip((first, second), answers, strict=True):
        np.testing.assert_array_equal(got["b_out"], sent["b"])
        np.testing.assert_array_equal(got["a_out"], sent["a"])


def test_a_load_that_fails_unforeseen_is_fatal_not_an_unready_server_for_ever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(settings: ServerSettings, model: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(app_module, "_prepare", broken)
    fatal: list[str] = []
    settings = ServerSettings(model_path=Path("/m.onnx"), model_name="m", access_log=False)
    app = app_module.create_app(settings, on_fatal=fatal.append)

    async def scenario() -> None:
        app.lifecycle.start(asyncio.get_running_loop())
        for _ in range(100):
            if fatal:
                break
            await asyncio.sleep(0.02)
        await app.lifecycle.stop()

    asyncio.run(scenario())
    assert len(fatal) == 1
    assert "Permission denied" in fatal[0]
    assert app.state.failure == fatal[0]
