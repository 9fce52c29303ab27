"""`weir profile MODEL.onnx --data FILE -o reference.json`: the reference drift is measured
against (docs/monitoring.md §1).

Why it exists: a served model's inputs and answers can only be said to have drifted relative to
what they were on the data it was trained on. This command reads that data (.npy, .csv with or
without a header row, .parquet when pyarrow is installed), bins every input feature (quantile
edges for numbers, the most frequent values for integers, booleans and text), runs the model on
it in batches with ONNX Runtime and records each output's class shares and confidence, and
writes all of it with the model file's sha256 (`weir_server.reference`). The server then counts
the same bins as it serves (`weir_server.monitor`).

Every problem with the data (its width, a dtype the model's input cannot take, an empty or
unreadable file, Parquet without pyarrow) is one line on stderr and exit code 3, never a
traceback. numpy, ONNX Runtime and pyarrow are imported only once a profile runs: `weir`
builds every subcommand's parser at start, and numpy alone would add ~0.15 s to every command."""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from weir_server.exit_codes import FAILED, OK, USAGE

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from weir_server.reference import Confidence, Feature, Output, Reference

    AnyArray = npt.NDArray[Any]

DEFAULT_BINS: Final = 10
DEFAULT_MAX_FEATURES: Final = 32
DEFAULT_BATCH: Final = 1024
PROGRESS_SECONDS: Final = 2.0
SUFFIXES: Final = (".npy", ".csv", ".parquet")

Log = Callable[[str], None]


class ProfileError(Exception):
    """What stops a profile, in one line; `code` is the exit code (weir_server.exit_codes)."""

    def __init__(self, message: str, code: int = USAGE) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Table:
    """Training data as read from its file: 1-D columns of equal length, each numeric (floats)
    or categorical (integers, booleans, text), or one array of any rank (`whole`: a .npy file,
    for inputs of rank 3 or more)."""

    source: str
    columns: tuple[AnyArray, ...]
    categorical: tuple[bool, ...]
    whole: AnyArray | None = None

    @property
    def rows(self) -> int:
        if self.whole is not None:
            return int(self.whole.shape[0]) if self.whole.ndim else 0
        return len(self.columns[0]) if self.columns else 0

    @classmethod
    def from_array(cls, array: AnyArray, source: str) -> Table:
        """A 1-D array is one column; a 2-D one a column per second index; higher ranks whole.
        Categorical or not by dtype (integers, booleans and text are categories)."""
        if array.dtype.kind == "O":
            raise ProfileError(
                f"{source} holds Python objects; save text as a fixed-width string array "
                "(numpy dtype 'U'), numbers as numbers"
            )
        if array.dtype.kind not in "biufUS":
            raise ProfileError(f"{source} holds {array.dtype} values, which weir cannot profile")
        categorical = array.dtype.kind in "biuUS"
        if array.ndim == 1:
            return cls(source, (array,), (categorical,), array)
        if array.ndim == 2:
            columns = tuple(array[:, j] for j in range(array.shape[1]))
            return cls(source, columns, (categorical,) * len(columns), array)
        return cls(source, (), (), array)


# -- reading the data ---------------------------------------------------------------------


def read_table(path: Path, feature_names: Sequence[str] = ()) -> Table:
    """The data file as a Table; ProfileError (exit 3) if it cannot be read. `feature_names`
    (the model's, `x[0]`...) help tell a CSV header row from data."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ProfileError(
            f"--data {path}: give a .npy, .csv or .parquet file (the suffix says which)"
        )
    if path.is_dir():
        raise ProfileError(f"--data {path} is a directory; give the data file")
    if not path.exists():
        raise ProfileError(f"--data {path} does not exist")
    try:
        if suffix == ".npy":
            table = _read_npy(path)
        elif suffix == ".csv":
            table = _read_csv(path, feature_names)
        else:
            table = _read_parquet(path)
    except OSError as error:
        raise ProfileError(f"cannot read {path}: {error.strerror or error}") from None
    if table.rows == 0:
        raise ProfileError(f"{path} holds no rows")
    return table


def _read_npy(path: Path) -> Table:
    import numpy as np

    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:  # not a .npy file, or pickled objects
        reason = " ".join(str(error).split())[:200]
        raise ProfileError(f"{path} is not a .npy array numpy can read: {reason}") from None
    except EOFError:
        raise ProfileError(f"{path} is empty or cut short: not a .npy array") from None
    if not isinstance(array, np.ndarray):
        raise ProfileError(f"{path} is not a single .npy array")
    if array.ndim == 0:
        raise ProfileError(f"{path} holds a single value, not rows")
    return Table.from_array(array, str(path))


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_csv(path: Path, feature_names: Sequence[str]) -> Table:
    import numpy as np

    with path.open(newline="", encoding="utf-8-sig") as handle:
        try:
            lines = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
        except (csv.Error, UnicodeDecodeError) as error:
            raise ProfileError(f"{path} is not CSV text: {error}") from None
    if not lines:
        raise ProfileError(f"{path} holds no rows")
    width = len(lines[0])
    for number, line in enumerate(lines[1:], 2):
        if len(line) != width:
            raise ProfileError(
                f"{path}: row {number} has {len(line)} cells, but the first row has {width}"
            )
    if _is_header(lines, feature_names):
        lines = lines[1:]
    if not lines:
        raise ProfileError(f"{path} holds a header row and no data")
    columns: list[AnyArray] = []
    categorical: list[bool] = []
    for j in range(width):
        cells = [line[j].strip() for line in lines]
        if all(not cell or _is_number(cell) for cell in cells):
            columns.append(np.array([float(c) if c else math.nan for c in cells]))
            categorical.append(False)
        else:  # not all numbers: text, the category is the cell itself
            text = np.empty(len(cells), dtype=object)
            text[:] = cells
            columns.append(text)
            categorical.append(True)
    return Table(str(path), tuple(columns), tuple(categorical))


def _is_header(lines: list[list[str]], feature_names: Sequence[str]) -> bool:
    """The first row is a header when it names the model's features, or when a cell of it is
    not a number where every cell below is one (numbers under a name)."""
    first = [cell.strip() for cell in lines[0]]
    if feature_names and first == list(feature_names)[: len(first)]:
        return True
    for j, cell in enumerate(first):
        if cell and not _is_number(cell):
            below = [line[j].strip() for line in lines[1:]]
            if below and all(not c or _is_number(c) for c in below) and any(below):
                return True
    return False


def _read_parquet(path: Path) -> Table:
    import numpy as np

    try:
        import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
        import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise ProfileError(
            f"reading {path} needs pyarrow, which is not installed: pip install pyarrow "
            "(or give the data as .npy or .csv)"
        ) from None
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, ValueError) as error:
        reason = " ".join(str(error).split())[:200]
        raise ProfileError(f"{path} is not a Parquet file pyarrow can read: {reason}") from None
    columns: list[AnyArray] = []
    categorical: list[bool] = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = column.type
        if pa.types.is_floating(kind):
            columns.append(column.to_numpy(zero_copy_only=False).astype(np.float64))
            categorical.append(False)
        elif pa.types.is_integer(kind) or pa.types.is_boolean(kind):
            values = column.to_numpy(zero_copy_only=False)
            if values.dtype.kind == "f" or column.null_count:
                raise ProfileError(
                    f"{path}: column {name!r} ({kind}) has empty (null) values; fill them or "
                    "drop those rows"
                )
            columns.append(values)
            categorical.append(True)
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            text = np.empty(len(column), dtype=object)
            text[:] = ["" if v is None else v for v in column.to_pylist()]
            columns.append(text)
            categorical.append(True)
        else:
            raise ProfileError(
                f"{path}: column {name!r} is of type {kind}; weir profiles columns of numbers, "
                "booleans and text"
            )
    return Table(str(path), tuple(columns), tuple(categorical))


# -- casting to the model's input ---------------------------------------------------------


def _cast(column: AnyArray, dtype: np.dtype[Any], what: str) -> AnyArray:
    """`column` as the model input's dtype; ProfileError naming `what` if it cannot be."""
    import numpy as np

    from weir_server.reference import category_key

    source = column.dtype.kind
    target = dtype.kind
    if target == "O":  # BYTES: text, numbers written as text
        if source in "OUS":
            out = np.empty(len(column), dtype=object)
            out[:] = [
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in column
            ]
            return out
        out = np.empty(len(column), dtype=object)
        out[:] = [category_key(v) for v in column]
        return out
    if source in "OUS":
        sample = next((v for v in column if not _is_number(str(v))), column[0])
        raise ProfileError(
            f"{what} holds text ({str(sample)[:40]!r}), which the model's {dtype} input cannot take"
        )
    if target == "f":
        return column.astype(dtype)
    if target == "b":
        if source != "b" and not np.isin(column, (0, 1)).all():
            raise ProfileError(f"{what} holds values other than 0 and 1; the input is boolean")
        return column.astype(dtype)
    # integers
    if source == "f":
        finite = np.isfinite(column)
        if not finite.all():
            raise ProfileError(f"{what} holds NaN or infinite values; the model's input is {dtype}")
        if not (column == np.round(column)).all():
            raise ProfileError(f"{what} holds fractions; the model's input is {dtype}")
    info = np.iinfo(dtype)
    if source != "b" and len(column) and (column.min() < info.min or column.max() > info.max):
        raise ProfileError(f"{what} holds values outside the range of the model's {dtype} input")
    return column.astype(dtype)


# -- profiling ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    bins: int = DEFAULT_BINS
    features: tuple[str, ...] | None = None  # names; None: the first max_features
    max_features: int = DEFAULT_MAX_FEATURES
    batch: int = DEFAULT_BATCH


def _round_edge(value: float, dtype: np.dtype[Any]) -> float:
    """An edge as short as the input's precision allows (5.4, not 5.400000095367432)."""
    import numpy as np

    if dtype.kind == "f" and dtype.itemsize <= 4:
        return float(str(np.float32(value)))
    return float(value)


def numeric_edges(values: AnyArray, bins: int) -> tuple[float, ...]:
    """Quantiles at 1/bins .. (bins-1)/bins of the finite values, deduplicated, ascending."""
    import numpy as np

    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if finite.size == 0:
        return ()
    quantiles = np.quantile(finite.astype(np.float64), [i / bins for i in range(1, bins)])
    return tuple(sorted({_round_edge(float(q), values.dtype) for q in quantiles}))


def _numeric_feature(name: str, values: AnyArray, bins: int) -> Feature:
    from weir_server.reference import Feature, numeric_bins, shares_of

    edges = numeric_edges(values, bins)
    return Feature(name, "numeric", shares_of(numeric_bins(edges, values), len(edges) + 1), edges)


def _category_order(key: str) -> tuple[int, float, str]:
    from weir_server.reference import category_number

    number = category_number(key)
    return (0, number, "") if number is not None else (1, 0.0, key)


def top_categories(values: AnyArray, keep: int) -> tuple[str, ...]:
    """The `keep` most frequent values as category strings, in their natural order."""
    import numpy as np

    from weir_server.reference import category_key

    if values.dtype.kind in "biu":
        uniques, counts = np.unique(values, return_counts=True)
        counted = Counter({category_key(u): int(c) for u, c in zip(uniques, counts, strict=True)})
    else:
        counted = Counter(category_key(v) for v in values)
    ranked = sorted(counted.items(), key=lambda item: (-item[1], _category_order(item[0])))
    return tuple(sorted((key for key, _ in ranked[:keep]), key=_category_order))


def _categorical_feature(name: str, values: AnyArray, bins: int) -> Feature:
    from weir_server.reference import Feature, categorical_bins, shares_of

    categories = top_categories(values, bins)
    shares = shares_of(categorical_bins(categories, values), len(categories) + 1)
    return Feature(name, "categorical", shares, categories=categories)


def _confidence(scores: AnyArray, bins: int) -> Confidence:
    import numpy as np

    from weir_server.reference import Confidence, numeric_bins, shares_of

    confidence = scores[~np.isnan(scores)]
    edges = tuple(round(i / bins, 6) for i in range(1, bins))
    mean = float(confidence.mean()) if confidence.size else 0.0
    shares = shares_of(numeric_bins(edges, confidence), len(edges) + 1)
    return Confidence(edges, shares, min(1.0, max(0.0, mean)))


class _OutputProfile:
    """One output's values over every batch, reduced as they come (argmax and top-1 for
    scores, the values themselves for labels and numbers)."""

    def __init__(self, name: str, kind: str, classes: int = 0) -> None:
        self.name, self.kind, self.classes = name, kind, classes
        self.parts: list[AnyArray] = []
        self.confidence: list[AnyArray] = []

    def add(self, array: AnyArray) -> None:
        from weir_server.reference import top1

        if self.kind == "scores":
            self.parts.append(array.argmax(axis=-1))
            self.confidence.append(top1(array))
        else:
            self.parts.append(array.reshape(-1))

    def result(self, bins: int) -> Output:
        import numpy as np

        from weir_server.reference import (
            MAX_CLASSES,
            Output,
            categorical_bins,
            numeric_bins,
            shares_of,
        )

        values = np.concatenate(self.parts)
        if self.kind == "scores":
            counts = np.bincount(values, minlength=self.classes)
            if self.classes <= MAX_CLASSES:
                kept = list(range(self.classes))
            else:
                ranked = sorted(range(self.classes), key=lambda c: (-counts[c], c))
                kept = sorted(ranked[:MAX_CLASSES])
            kept_shares = [float(counts[c]) / values.size for c in kept]
            if self.classes > MAX_CLASSES:
                kept_shares.append(max(0.0, 1 - sum(kept_shares)))
            confidence = _confidence(np.concatenate(self.confidence), bins)
            names = tuple(str(c) for c in kept)
            return Output(self.name, "classes", tuple(kept_shares), names, confidence=confidence)
        if self.kind == "labels":
            # Every label seen (at most MAX_CLASSES), and "other" for the rest and for labels
            # the training data never produced: a new label is drift, not a row to drop.
            classes = top_categories(values, MAX_CLASSES)
            shares = shares_of(categorical_bins(classes, values), len(classes) + 1)
            return Output(self.name, "classes", shares, classes)
        edges = numeric_edges(values, bins)
        shares = shares_of(numeric_bins(edges, values), len(edges) + 1)
        return Output(self.name, "numeric", shares, edges=edges)


def _output_kind(array: AnyArray, rows: int) -> tuple[str, int] | str:
    """("scores", classes), ("labels", 0) or ("numeric", 0); else why it is not profiled."""
    shape = list(array.shape)
    if array.ndim == 0 or shape[0] != rows:
        return f"its shape {shape} does not have one row per input row"
    kind = array.dtype.kind
    if kind == "f" and array.ndim == 2 and shape[1] > 1:
        return "scores", shape[1]
    if array.ndim == 1 or (array.ndim == 2 and shape[1] == 1):
        if kind == "f":
            return "numeric", 0
        if kind in "biuOUS":
            return "labels", 0
    return f"its {array.dtype} values of shape {shape} are neither scores nor one value per row"


def _feature_columns(
    input_name: str, width: int | None, options: Options
) -> list[tuple[str, int | None]]:
    """(name, column) of each feature to profile: those --features names, else the first
    --max-features columns (column None: the whole 1-D input)."""
    from weir_server.reference import feature_column, feature_name

    chosen: list[tuple[str, int | None]]
    if width is None:
        chosen = [(input_name, None)]
    else:
        chosen = [(feature_name(input_name, j), j) for j in range(width)]
    if options.features is None:
        return chosen[: options.max_features]
    if len(options.features) > options.max_features:
        raise ProfileError(
            f"--features names {len(options.features)} features; at most --max-features "
            f"({options.max_features})"
        )
    picked: list[tuple[str, int | None]] = []
    for name in options.features:
        try:
            column = feature_column(name, input_name)
        except ValueError as error:
            raise ProfileError(f"--features: {error}") from None
        if (width is None) != (column is None) or (column is not None and column >= (width or 0)):
            valid = input_name if width is None else f"{input_name}[0] .. {input_name}[{width - 1}]"
            raise ProfileError(f"--features: the model has no feature {name!r} (it has {valid})")
        if (name, column) in picked:
            raise ProfileError(f"--features names {name!r} twice")
        picked.append((name, column))
    return picked


def profile(
    model_path: Path,
    data: Path | Table,
    options: Options = Options(),
    log: Log = lambda message: None,
) -> Reference:
    """The reference of the model at `model_path` on `data`. ProfileError (exit code inside)
    for anything that stops it."""
    import numpy as np

    from weir_server.datatypes import V2_TO_NUMPY
    from weir_server.digests import file_sha256
    from weir_server.model import LoadedModel, ModelLoadError, ModelRunError
    from weir_server.reference import ModelIdentity, Reference, feature_name, too_many_bins

    if not model_path.is_file():
        raise ProfileError(f"model file {model_path} does not exist or is not a regular file")
    try:
        model = LoadedModel.load(model_path, intra_op_threads=0)
    except ModelLoadError as error:
        raise ProfileError(str(error), FAILED) from None
    inputs = model.signature.inputs
    if len(inputs) != 1:
        names = ", ".join(repr(spec.name) for spec in inputs)
        raise ProfileError(
            f"the model takes {len(inputs)} inputs ({names}); weir profile feeds the data to "
            "a model with one input"
        )
    spec = inputs[0]
    dtype = V2_TO_NUMPY[spec.datatype]
    rank = len(spec.shape)
    declared = spec.shape[1] if rank == 2 and spec.shape[1] >= 0 else None
    if isinstance(data, Path):
        header = [feature_name(spec.name, j) for j in range(declared or 0)]
        table = read_table(data, [spec.name] if rank == 1 else header)
    else:
        table = data
    batch_input, features = _model_input(table, spec.name, spec.shape, dtype, options, log)
    rows = len(batch_input)
    profiled = []
    for name, column, categorical in features:
        values = batch_input if column is None else batch_input[:, column]
        if categorical:
            profiled.append(_categorical_feature(name, values, options.bins))
        else:
            profiled.append(_numeric_feature(name, values, options.bins))
    outputs: dict[str, _OutputProfile | None] = {}
    started = last = time.monotonic()
    for start in range(0, rows, options.batch):
        chunk = batch_input[start : start + options.batch]
        try:
            results = model.run({spec.name: chunk})
        except ModelRunError as error:
            raise ProfileError(
                f"the model failed on rows {start} to {start + len(chunk) - 1} of "
                f"{table.source}: {error}",
                FAILED,
            ) from None
        for name, array in results.items():
            if name not in outputs:
                kind = _output_kind(np.asarray(array), len(chunk))
                if isinstance(kind, str):
                    log(f"output {name!r} is not profiled: {kind}")
                    outputs[name] = None
                else:
                    outputs[name] = _OutputProfile(name, kind[0], kind[1])
            profile_ = outputs[name]
            if profile_ is not None:
                profile_.add(np.asarray(array))
        if time.monotonic() - last > PROGRESS_SECONDS:
            last = time.monotonic()
            done = min(rows, start + options.batch)
            log(f"{done:,} of {rows:,} rows ({done / (last - started):,.0f} rows/s)")
    profiled_outputs = tuple(p.result(options.bins) for p in outputs.values() if p is not None)
    if (too_many := too_many_bins(tuple(profiled), profiled_outputs)) is not None:
        raise ProfileError(f"the reference {too_many}")
    return Reference(
        ModelIdentity(file_sha256(model_path), spec.name), rows, tuple(profiled), profiled_outputs
    )


def _model_input(
    table: Table,
    input_name: str,
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
    options: Options,
    log: Log,
) -> tuple[AnyArray, list[tuple[str, int | None, bool]]]:
    """The data as the model's input (all rows), and (name, column, categorical) per feature."""
    import numpy as np

    described = f"input {input_name!r} ({dtype}, shape {list(shape)})"
    rank = len(shape)
    if rank == 0:
        raise ProfileError(f"the model's {described} is a scalar: it takes no rows to profile")
    if rank > 2:
        whole = table.whole
        if (
            whole is None
            or whole.ndim != rank
            or any(
                want >= 0 and want != got
                for want, got in zip(shape[1:], whole.shape[1:], strict=True)
            )
        ):
            got = f"an array of shape {list(whole.shape)}" if whole is not None else "columns"
            raise ProfileError(
                f"{table.source} holds {got}; the model's {described} needs a .npy array of "
                "that shape"
            )
        log(f"{described} has rank {rank}: its features are not profiled, only the outputs")
        return _cast(whole.reshape(-1), dtype, table.source).reshape(whole.shape), []
    width = len(table.columns)
    expected = 1 if rank == 1 else shape[1]
    if expected >= 0 and width != expected:
        raise ProfileError(
            f"{table.source} has {width} column{'s' if width != 1 else ''}, but the model's "
            f"{described} takes {expected}"
        )
    if width == 0:
        raise ProfileError(f"{table.source} has no columns")
    cast = [
        _cast(column, dtype, f"column {j} of {table.source}")
        for j, column in enumerate(table.columns)
    ]
    if rank == 1:
        values = cast[0]
    else:
        values = np.empty((table.rows, width), dtype=dtype)
        for j, column in enumerate(cast):
            values[:, j] = column
    chosen = _feature_columns(input_name, None if rank == 1 else width, options)
    features = [
        (name, column, table.categorical[column or 0] or dtype.kind == "O")
        for name, column in chosen
    ]
    return values, features


# -- the command --------------------------------------------------------------------------


def add_profile_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "profile",
        help="write a model's monitoring reference from its training data (weir serve --reference)",
        description="Bin a model's input features and outputs on its training data and write "
        "the reference that `weir serve --reference` counts drift against "
        "(docs/monitoring.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("model", type=Path, metavar="MODEL.onnx", help="the ONNX model file")
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="FILE",
        help="training data: .npy, .csv (header row optional) or .parquet (needs pyarrow), "
        "one row per request row",
    )
    parser.add_argument(
        "-o", "--output", required=True, type=Path, metavar="FILE", help="reference to write"
    )
    parser.add_argument(
        "--bins", type=int, default=DEFAULT_BINS, help="bins per numeric feature (at most)"
    )
    parser.add_argument(
        "--features",
        metavar="NAMES",
        help="features to profile, comma-separated, e.g. 'x[0],x[3]' (default: the first "
        "--max-features)",
    )
    parser.add_argument(
        "--max-features", type=int, default=DEFAULT_MAX_FEATURES, help="features at most"
    )
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="rows per model run")
    parser.set_defaults(handler=run_profile)


def _options(args: argparse.Namespace) -> Options:
    for option, value, low, high in (
        ("--bins", args.bins, 2, 100),
        ("--max-features", args.max_features, 1, 1024),
        ("--batch", args.batch, 1, 1 << 20),
    ):
        if not low <= value <= high:
            raise ProfileError(f"{option} must be from {low} to {high}, got {value}")
    features = None
    if args.features is not None:
        features = tuple(name.strip() for name in args.features.split(",") if name.strip())
        if not features:
            raise ProfileError("--features names no feature")
    return Options(args.bins, features, args.max_features, args.batch)


def run_profile(args: argparse.Namespace) -> int:
    """Exit codes (weir_server.exit_codes): 0 written; 1 the model cannot be loaded or fails
    on the data; 3 bad options or data (width, dtype, empty, unreadable)."""
    from weir_server.reference import write_reference

    def log(message: str) -> None:
        print(f"weir profile: {message}", file=sys.stderr, flush=True)

    try:
        options = _options(args)
        output: Path = args.output
        if output.is_dir():
            raise ProfileError(f"-o {output} is a directory; give the reference file to write")
        if not output.parent.is_dir():
            raise ProfileError(f"-o {output}: the folder {output.parent} does not exist")
        started = time.monotonic()
        reference = profile(args.model, args.data, options, log)
        try:
            write_reference(reference, output)
        except OSError as error:
            raise ProfileError(f"cannot write {output}: {error.strerror or error}") from None
    except ProfileError as error:
        print(f"weir profile: error: {error}", file=sys.stderr, flush=True)
        return error.code
    log(
        f"wrote {output}: {len(reference.features)} features, {len(reference.outputs)} outputs, "
        f"{reference.rows:,} rows ({time.monotonic() - started:.1f} s)"
    )
    return OK
