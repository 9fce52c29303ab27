"""Loading an ONNX model into ONNX Runtime: integrity checks, signature, warm-up, inference.

The only module that talks to onnxruntime, so the rest of the server sees numpy arrays and a
`ModelSignature`, and startup errors are turned into one clear `ModelLoadError`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from weir_server.codec import Array, ModelSignature, TensorSpec
from weir_server.datatypes import V2_TO_NUMPY, v2_datatype_of_onnx
from weir_server.digests import file_sha256


class ModelLoadError(Exception):
    """The model file cannot be served; the message says why and what to do."""


class ModelRunError(Exception):
    """ONNX Runtime raised while running the model on a request."""


def _shape_of(raw: Any) -> tuple[int, ...]:
    # ONNX Runtime gives ints for fixed dims and strings or None for symbolic ones.
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (raw or ()))


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """An ONNX Runtime session with the model's V2 signature."""

    session: Any
    signature: ModelSignature
    load_seconds: float
    path: Path
    intra_op_threads: int
    _run: Any = field(init=False, repr=False, compare=False)
    _run_options: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Measured on iris (docs/benchmarks.md), a run took 25 µs through the public method and
        # 14 µs like this. `InferenceSession.run` checks that every input is present, that no
        # OrtValue belongs to another session and that no WebGPU graph is captured, then calls
        # `_sess.run`: the codec has already checked the inputs and the server passes numpy
        # arrays on the CPU, so the checks only cost time (6 µs). Without run options ONNX
        # Runtime builds default ones on every run (4 µs); one reused object does. A future
        # onnxruntime without `_sess` gets the public method, which takes the same arguments.
        inner = getattr(self.session, "_sess", None)
        object.__setattr__(self, "_run", inner.run if inner is not None else self.session.run)
        object.__setattr__(self, "_run_options", ort.RunOptions())

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        sha256: str | None = None,
        intra_op_threads: int = 0,
        tiny: bool = False,
    ) -> LoadedModel:
        """`tiny`: a model whose run takes microseconds; it runs on one thread without ONNX
        Runtime's memory arena and memory-pattern planning, which cost more than they save at
        that size (measured on iris: 16.2 -> 14.3 µs per run)."""
        started = time.perf_counter()
        if not path.is_file():
            raise ModelLoadError(f"model file {path} does not exist or is not a regular file")
        if sha256 is not None:
            try:
                actual = file_sha256(path)
            except OSError as error:
                raise ModelLoadError(
                    f"model file {path} cannot be read: {error.strerror or error}"
                ) from None
            if actual.lower() != sha256.lower():
                raise ModelLoadError(
                    f"model file {path} has sha256 {actual}, but {sha256} was expected; "
                    "refusing to serve a file that is not the one asked for"
                )
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        # Fatal only: ONNX Runtime's own error lines (colored, multi-line, one per failed run)
        # would break the JSON log; every error reaches weir as an exception with its message.
        options.log_severity_level = 4
        if tiny:
            options.enable_cpu_mem_arena = False
            options.enable_mem_pattern = False
        try:
            session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises several unrelated exception types
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise ModelLoadError(
                f"model file {path} is not a valid ONNX model ONNX Runtime can load: {first_line}"
            ) from None
        try:
            signature = ModelSignature(
                inputs=tuple(_spec(arg) for arg in session.get_inputs()),
                outputs=tuple(_spec(arg) for arg in session.get_outputs()),
            )
        except ValueError as error:
            raise ModelLoadError(f"model file {path}: {error}") from None
        return cls(session, signature, time.perf_counter() - started, path, intra_op_threads)

    def run(
        self, inputs: dict[str, Array], output_names: list[str] | None = None
    ) -> dict[str, Array]:
        names = output_names if output_names is not None else self.signature.output_names()
        try:
            results = self._run(names, inputs, self._run_options)
        except Exception as error:
            message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise ModelRunError(message) from None
        return dict(zip(names, results, strict=True))

    def warmup_inputs(self) -> dict[str, Array]:
        """Inputs of the declared shapes (dynamic dims = 1) filled with zeros or empty strings."""
        inputs: dict[str, Array] = {}
        for spec in self.signature.inputs:
            shape = tuple(1 if d < 0 else d for d in spec.shape)
            if spec.datatype == "BYTES":
                inputs[spec.name] = np.full(shape, "", dtype=object)
            else:
                inputs[spec.name] = np.zeros(shape, dtype=V2_TO_NUMPY[spec.datatype])
        return inputs

    def warmup(self, rounds: int = 3) -> float:
        """Run the model a few times; returns the median seconds per run."""
        inputs = self.warmup_inputs()
        timings = []
        for _ in range(rounds):
            started = time.perf_counter()
            try:
                self.run(inputs)
            except ModelRunError as error:
                shapes = ", ".join(f"{name} {list(array.shape)}" for name, array in inputs.items())
                raise ModelLoadError(
                    f"model file {self.path} can never be served: it loads, but ONNX Runtime "
                    f"fails on a one-row request of zeros ({shapes}; each dynamic dimension "
                    "1), which the server must answer before it is ready; does the model "
                    f"take the shapes it declares? {error}"
                ) from None
            timings.append(time.perf_counter() - started)
        return sorted(timings)[len(timings) // 2]

    def batchable(self) -> bool:
        """True when every input and output has a dynamic leading (batch) dimension."""
        specs = self.signature.inputs + self.signature.outputs
        return all(len(spec.shape) >= 1 and spec.shape[0] == -1 for spec in specs)


def _spec(arg: Any) -> TensorSpec:
    return TensorSpec(
        name=arg.name, datatype=v2_datatype_of_onnx(arg.type), shape=_shape_of(arg.shape)
    )
