"""Small ONNX models built in code with `onnx.helper`, for the demo, the tests and benchmarks.

Nothing is downloaded: every model the project needs is made here, deterministically (fixed
seeds), and needs the `onnx` package (the `examples` extra) only to be built, not to be served."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

# V2 datatype -> ONNX TensorProto enum name.
_ONNX_ELEMENT_TYPES = {
    "BOOL": "BOOL",
    "INT8": "INT8",
    "INT16": "INT16",
    "INT32": "INT32",
    "INT64": "INT64",
    "UINT8": "UINT8",
    "UINT16": "UINT16",
    "UINT32": "UINT32",
    "UINT64": "UINT64",
    "FP16": "FLOAT16",
    "FP32": "FLOAT",
    "FP64": "DOUBLE",
    "BYTES": "STRING",
}
OPSET = 17
SLOW_LAYERS, SLOW_WIDTH = 80, 512  # about 3 ms more per row than iris on one core here
RETRAINED_SHIFT = 4.35  # iris_retrained: +4.35 on class 0's bias
# iris_training_data: each column normal, centred on the range tests.support.local_run.iris_row
# draws uniformly from (sepal length 4.3-7.9, sepal width 2.0-4.4, petal length 1.0-6.9, petal
# width 0.1-2.5), with a standard deviation of a sixth of that range (so the range is about
# +-3 standard deviations). Drift tests shift a column by a multiple of its std.
IRIS_FEATURE_MEAN: tuple[float, float, float, float] = (6.1, 3.2, 3.95, 1.3)
IRIS_FEATURE_STD: tuple[float, float, float, float] = (0.6, 0.4, 0.98, 0.4)
IRIS_TRAINING_ROWS = 10_000  # rows of examples/models/iris-train.npy and iris.reference.json
IRIS_TRAINING_SEED = 21


def _save(graph: Any, path: Path) -> Path:
    from onnx import checker, helper, save

    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="weir-sample-models"
    )
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    return path


def iris(
    path: Path,
    *,
    seed: int = 7,
    bias_shift: float | tuple[float, float, float] = 0.0,
    classes: tuple[int, ...] = (0, 1, 2),
) -> Path:
    """A linear classifier of iris flowers: `input` FP32 [-1, 4] -> `probabilities` FP32
    [-1, 3] and `label` INT64 [-1]. `seed` and `bias_shift` (one for every class, or one per
    class) make versions that answer differently; `classes` reorders the outputs (a swapped
    label map: as fast, and wrong)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(4, 3)).astype(np.float32)[:, list(classes)]
    bias = (rng.normal(size=(3,)) + np.asarray(bias_shift)).astype(np.float32)[list(classes)]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["logits_raw"]),
            helper.make_node("Add", ["logits_raw", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=-1, keepdims=0),
        ],
        "iris",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")],
    )
    return _save(graph, path)


def iris_training_data(rows: int, seed: int = IRIS_TRAINING_SEED) -> np.ndarray:
    """`rows` iris flowers as FP32 [rows, 4]: independent normal columns with IRIS_FEATURE_MEAN
    and IRIS_FEATURE_STD (the monitoring tests' and the demo's training data: what the
    reference is profiled on, and what in-distribution traffic is drawn from)."""
    rng = np.random.default_rng(seed)
    mean = np.asarray(IRIS_FEATURE_MEAN, dtype=np.float64)
    std = np.asarray(IRIS_FEATURE_STD, dtype=np.float64)
    return (rng.standard_normal((rows, 4)) * std + mean).astype(np.float32)


def iris_degraded(
    path: Path,
    *,
    seed: int = 7,
    slow_layers: int = 0,
    width: int = 256,
    fail_from: float | None = None,
) -> Path:
    """The iris classifier's signature and answers, made worse on purpose (for canaries that
    must be rolled back): `slow_layers` layers of `width`-wide work per row that add latency
    without changing the answer, and, with `fail_from`, a failure (ONNX Runtime raises: HTTP
    500) for every row whose first feature is `fail_from` or more (sepal lengths run 4.3-7.9,
    so 7.0 fails about one row in five of uniform traffic)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(4, 3)).astype(np.float32)
    bias = rng.normal(size=(3,)).astype(np.float32)
    spread = (np.random.default_rng(11).normal(size=(4, width)) / 2).astype(np.float32)
    layer = (np.random.default_rng(5).normal(size=(width, width)) / np.sqrt(width)).astype(
        np.float32
    )
    initializers = [
        numpy_helper.from_array(weights, "W"),
        numpy_helper.from_array(bias, "B"),
        numpy_helper.from_array(np.zeros((1,), np.float32), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("MatMul", ["input", "W"], ["logits_raw"]),
        helper.make_node("Add", ["logits_raw", "B"], ["logits_clean"]),
    ]
    extra = []  # [batch, 1] terms that are always 0, computed from the input
    if slow_layers > 0:
        initializers += [
            numpy_helper.from_array(spread, "spread"),
            numpy_helper.from_array(layer, "layer"),
        ]
        nodes.append(helper.make_node("MatMul", ["input", "spread"], ["h0"]))
        for index in range(slow_layers):
            nodes.append(helper.make_node("MatMul", [f"h{index}", "layer"], [f"m{index}"]))
            nodes.append(helper.make_node("Tanh", [f"m{index}"], [f"h{index + 1}"]))
        nodes.append(helper.make_node("ReduceSum", [f"h{slow_layers}", "axis1"], ["slow_sum"]))
        extra.append("slow_sum")
    if fail_from is not None:
        size = int(np.floor(fail_from))
        initializers += [
            numpy_helper.from_array(np.zeros((size,), np.float32), "table"),
            numpy_helper.from_array(np.array([0], np.int64), "start0"),
            numpy_helper.from_array(np.array([1], np.int64), "end1"),
        ]
        nodes += [
            helper.make_node("Slice", ["input", "start0", "end1", "axis1"], ["first"]),
            helper.make_node("Floor", ["first"], ["first_floor"]),
            helper.make_node("Cast", ["first_floor"], ["index"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "index"], ["looked_up"], axis=0),
        ]
        extra.append("looked_up")
    current = "logits_clean"
    for index, term in enumerate(extra):
        nodes.append(helper.make_node("Mul", [term, "zero"], [f"nothing{index}"]))
        nodes.append(helper.make_node("Add", [current, f"nothing{index}"], [f"logits{index}"]))
        current = f"logits{index}"
    nodes += [
        helper.make_node("Identity", [current], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=-1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "iris",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        initializer=initializers,
    )
    return _save(graph, path)


def identity_all_types(path: Path) -> Path:
    """One Identity per V2 datatype: input `x_<TYPE>` [-1, 2] -> output `y_<TYPE>` [-1, 2]."""
    from onnx import TensorProto, helper

    nodes, inputs, outputs = [], [], []
    for datatype, onnx_name in _ONNX_ELEMENT_TYPES.items():
        element = getattr(TensorProto, onnx_name)
        nodes.append(helper.make_node("Identity", [f"x_{datatype}"], [f"y_{datatype}"]))
        inputs.append(helper.make_tensor_value_info(f"x_{datatype}", element, ["batch", 2]))
        outputs.append(helper.make_tensor_value_info(f"y_{datatype}", element, ["batch", 2]))
    return _save(helper.make_graph(nodes, "identity_all_types", inputs, outputs), path)


def mlp(path: Path, *, width: int = 1024, layers: int = 6, seed: int = 3) -> Path:
    """A dense network where compute dominates: `x` FP32 [-1, width] -> `y` FP32 [-1, width].
    One row costs `layers` matrix-vector products of width x width (about 6 MFLOP by default)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    current = "x"
    for layer in range(layers):
        weight = (rng.normal(size=(width, width)) / np.sqrt(width)).astype(np.float32)
        initializers.append(numpy_helper.from_array(weight, f"W{layer}"))
        nodes.append(helper.make_node("MatMul", [current, f"W{layer}"], [f"h{layer}"]))
        out = "y" if layer == layers - 1 else f"a{layer}"
        nodes.append(helper.make_node("Tanh", [f"h{layer}"], [out]))
        current = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=initializers,
    )
    return _save(graph, path)


def slow(path: Path, *, width: int = 512, layers: int = 32) -> Path:
    """Many layers sharing one weight matrix: a small file whose run time grows with the rows
    sent (`x` FP32 [-1, width] -> `y`), for tests that need a request to stay in flight."""
    from onnx import TensorProto, helper, numpy_helper

    weight = (np.random.default_rng(5).normal(size=(width, width)) / np.sqrt(width)).astype(
        np.float32
    )
    nodes, current = [], "x"
    for layer in range(layers):
        out = "y" if layer == layers - 1 else f"h{layer}"
        nodes.append(helper.make_node("MatMul", [current, "W"], [out]))
        current = out
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=[numpy_helper.from_array(weight, "W")],
    )
    return _save(graph, path)


def gather(path: Path) -> Path:
    """Looks up `indices` INT64 [-1] in a table of 10 floats -> `values` FP32 [-1]. An index
    outside 0..9 makes ONNX Runtime raise: a model that fails on some valid-looking requests."""
    from onnx import TensorProto, helper, numpy_helper

    table = np.arange(10, dtype=np.float32) * 1.5
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "indices"], ["values"], axis=0)],
        "gather",
        [helper.make_tensor_value_info("indices", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["batch"])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    return _save(graph, path)


def scaled(path: Path) -> Path:
    """A scalar input, dynamic dimensions and strings: `scale` FP32 [] (a scalar), `x` FP32
    [-1, -1] and `tag` BYTES [-1] -> `y` FP32 [-1, -1] (x * scale) and `tag_out` BYTES [-1]
    (tag). For tests of shapes a fixed signature would refuse before any decoding."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "scale"], ["y"]),
            helper.make_node("Identity", ["tag"], ["tag_out"]),
        ],
        "scaled",
        [
            helper.make_tensor_value_info("scale", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "width"]),
            helper.make_tensor_value_info("tag", TensorProto.STRING, ["count"]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "width"]),
            helper.make_tensor_value_info("tag_out", TensorProto.STRING, ["count"]),
        ],
    )
    return _save(graph, path)


def pairs_only(path: Path) -> Path:
    """`x` FP32 [-1, 3] reshaped to [2, 3]: a valid model that fails on every batch but one of
    two rows, so its warm-up on one row fails and it can never be served."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "pair"], ["y"])],
        "pairs_only",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        initializer=[numpy_helper.from_array(np.array([2, 3], np.int64), "pair")],
    )
    return _save(graph, path)


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "iris": iris,
    # The demo's and the local end-to-end tests' versions of iris (same signature): a good v2
    # that answers a little differently, and canaries that must be rolled back.
    "iris_v2": partial(iris, bias_shift=0.25),
    # Fast, always 200, and wrong: the label map swapped (caught only by comparing answers).
    "iris_swapped": partial(iris, classes=(1, 2, 0)),
    # "Retrained": class 0's bias raised so that it wins on about 2 % of uniform traffic
    # (tests.support.local_run.iris_row), where v1 answers class 1 on every row: 98 % top-1
    # agreement with iris v1 (bench/shadow.py --detection measures it with ONNX Runtime).
    "iris_retrained": partial(iris, bias_shift=(RETRAINED_SHIFT, 0.0, 0.0)),
    "iris_slow": partial(iris_degraded, slow_layers=SLOW_LAYERS, width=SLOW_WIDTH),
    "iris_erroring": partial(iris_degraded, fail_from=7.0),
    "iris_bad": partial(iris_degraded, slow_layers=SLOW_LAYERS, width=SLOW_WIDTH, fail_from=7.0),
    "identity_all_types": identity_all_types,
    "mlp": mlp,
    "gather": gather,
    "slow": slow,
}


def build_all(folder: Path) -> dict[str, Path]:
    """Build every sample model into `folder` (skipping files already there)."""
    built = {}
    for name, builder in BUILDERS.items():
        target = folder / f"{name}.onnx"
        built[name] = target if target.is_file() else builder(target)
    return built


def build_iris_reference(folder: Path, iris_model: Path) -> dict[str, Path]:
    """`iris-train.npy` (IRIS_TRAINING_ROWS rows of iris_training_data) and
    `iris.reference.json`, its `weir profile` for `iris_model`; each rebuilt only when missing
    (or, the reference, made for another iris file)."""
    from weir_server.digests import file_sha256
    from weir_server.profile import Table, profile
    from weir_server.reference import ReferenceError, load_reference, write_reference

    data_path = folder / "iris-train.npy"
    if not data_path.is_file():
        np.save(data_path, iris_training_data(IRIS_TRAINING_ROWS))
    reference_path = folder / "iris.reference.json"
    try:
        current = load_reference(reference_path).model.sha256 == file_sha256(iris_model)
    except ReferenceError:
        current = False
    if not current:
        data = np.load(data_path)
        write_reference(profile(iris_model, Table.from_array(data, str(data_path))), reference_path)
    return {"iris-train": data_path, "iris.reference": reference_path}


if __name__ == "__main__":
    import sys

    destination = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/models")
    models = build_all(destination)
    for name, file in models.items():
        print(f"{name}: {file}")
    for name, file in build_iris_reference(destination, models["iris"]).items():
        print(f"{name}: {file}")
