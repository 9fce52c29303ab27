"""The monitoring reference (docs/monitoring.md §1): what a model's inputs and outputs looked like
on its training data, as `weir profile` writes it and `weir serve --reference` reads it.

Why it exists: the profiler, the server and the tests must agree on one format and on one way
of putting a value into a bin, or the shares the server counts could never be compared with the
shares the reference expects. So the format (frozen dataclasses, loaded and validated with
one-line errors naming the file and the field) and the bin assignment (numeric: numpy's
`searchsorted(edges, v, side="right")`, NaN in no bin; categorical: the category's index, or
"other") live here, and nowhere else. Pure: numpy and the standard library, no I/O beyond
reading and writing the one file."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

SCHEMA_VERSION: Final = 1
OTHER: Final = "other"  # the bin of categorical values (and classes) the reference does not list
MAX_CLASSES: Final = 32  # classes an output keeps by name; the rest are "other"
# What a reference may hold, whoever wrote it (weir profile stays within these): every bin is a
# Prometheus series on every server, so a hand-edited or hostile file must not be able to make
# a server export millions of them, nor to make it read a huge file.
MAX_FEATURES: Final = 1024  # weir profile --max-features at most
MAX_BINS: Final = 100  # bins (edges + 1) or categories of a feature, or of a confidence
MAX_SERIES: Final = 16_384  # bins of all features and outputs together
MAX_FILE_BYTES: Final = 16 << 20
SHARE_TOLERANCE: Final = 1e-3  # a list of shares sums to 1 within this
PROBABILITY_TOLERANCE: Final = 1e-3  # a row of probabilities sums to 1 within this (else logits)
SHA256_PATTERN: Final = re.compile(r"[0-9a-f]{64}")

FeatureKind = Literal["numeric", "categorical"]
OutputKind = Literal["classes", "numeric"]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class ReferenceError(ValueError):  # the contract's name; shadows the builtin (weakrefs) here
    """A reference file that cannot be used: the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class ModelIdentity:
    """Which model a reference was made for: the .onnx file's sha256 and its first input."""

    sha256: str
    input: str


@dataclass(frozen=True, slots=True)
class Feature:
    """One input feature: a column of a 2-D input (`x[2]`) or a whole 1-D input (`x`).

    numeric: `edges` ascending and unique, `len(edges) + 1` shares (bin `i` holds
    `edges[i-1] <= v < edges[i]`). categorical: `categories` (values as strings),
    `len(categories) + 1` shares, the last one "other"."""

    name: str
    kind: FeatureKind
    shares: tuple[float, ...]
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()

    def bins(self) -> tuple[str, ...]:
        """The `bin` label of each share: the bin's index, and "other" for categorical."""
        if self.kind == "numeric":
            return tuple(str(i) for i in range(len(self.shares)))
        return (*(str(i) for i in range(len(self.categories))), OTHER)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "numeric":
            document["edges"] = list(self.edges)
        else:
            document["categories"] = list(self.categories)
        document["shares"] = list(self.shares)
        return document


@dataclass(frozen=True, slots=True)
class Confidence:
    """The distribution of an output's top-1 probability: bins over `edges` and the mean."""

    edges: tuple[float, ...]
    shares: tuple[float, ...]
    mean: float

    def bins(self) -> tuple[str, ...]:
        return tuple(str(i) for i in range(len(self.shares)))

    def to_json(self) -> dict[str, Any]:
        return {"edges": list(self.edges), "shares": list(self.shares), "mean": self.mean}


@dataclass(frozen=True, slots=True)
class Output:
    """One model output. classes: the predicted class (argmax index as a string, or the label
    itself) with `len(classes)` shares, plus one for "other" when the output has more classes
    than the reference names; `confidence` for probabilities (or logits). numeric: quantile
    bins, as a numeric feature."""

    name: str
    kind: OutputKind
    shares: tuple[float, ...]
    classes: tuple[str, ...] = ()
    edges: tuple[float, ...] = ()
    confidence: Confidence | None = None

    @property
    def has_other(self) -> bool:
        return self.kind == "classes" and len(self.shares) == len(self.classes) + 1

    def bins(self) -> tuple[str, ...]:
        """The `class` label of each share: the class itself ("other" last when there is one),
        or the bin's index for a numeric output."""
        if self.kind == "numeric":
            return tuple(str(i) for i in range(len(self.shares)))
        return (*self.classes, OTHER) if self.has_other else self.classes

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "classes":
            document["classes"] = list(self.classes)
        else:
            document["edges"] = list(self.edges)
        document["shares"] = list(self.shares)
        if self.confidence is not None:
            document["confidence"] = self.confidence.to_json()
        return document


@dataclass(frozen=True, slots=True)
class Reference:
    """A whole reference file (schemaVersion 1)."""

    model: ModelIdentity
    rows: int
    features: tuple[Feature, ...]
    outputs: tuple[Output, ...]
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "schemaVersion": self.schema_version,
            "model": {"sha256": self.model.sha256, "input": self.model.input},
            "rows": self.rows,
            "features": [feature.to_json() for feature in self.features],
            "outputs": [output.to_json() for output in self.outputs],
        }


# -- reading and writing ------------------------------------------------------------------


class _Field:
    """Where in the document a value sits, for messages: `features[2].edges[3]`."""

    def __init__(self, source: str, path: str = "") -> None:
        self.source, self.path = source, path

    def at(self, key: str | int) -> _Field:
        if isinstance(key, int):
            return _Field(self.source, f"{self.path}[{key}]")
        return _Field(self.source, f"{self.path}.{key}" if self.path else key)

    def error(self, problem: str) -> ReferenceError:
        where = f"{self.source}: {self.path}" if self.path else self.source
        return ReferenceError(f"{where}: {problem}; a reference is what `weir profile` writes")


def _object(value: Any, field: _Field) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise field.error(f"must be a JSON object, got {_kind(value)}")
    return value


def _member(document: dict[str, Any], key: str, field: _Field) -> Any:
    if key not in document:
        raise field.at(key).error("is missing")
    return document[key]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"[:80]
    if isinstance(value, list):
        return "a list"
    return "an object"


def _string(value: Any, field: _Field) -> str:
    if not isinstance(value, str) or not value:
        raise field.error(f"must be a non-empty string, got {_kind(value)}")
    return value


def _number(value: Any, field: _Field) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise field.error(f"must be a number, got {_kind(value)}")
    if not math.isfinite(value):
        raise field.error(f"must be a finite number, got {value!r}")
    return float(value)


def _list(value: Any, field: _Field) -> list[Any]:
    if not isinstance(value, list):
        raise field.error(f"must be a list, got {_kind(value)}")
    return value


def _edges(value: Any, field: _Field) -> tuple[float, ...]:
    raw = _at_most(_list(value, field), MAX_BINS - 1, field, "edges")
    edges = tuple(_number(v, field.at(i)) for i, v in enumerate(raw))
    for i in range(1, len(edges)):
        if not edges[i - 1] < edges[i]:
            raise field.at(i).error(
                f"edges must be ascending and unique, but {edges[i]!r} follows {edges[i - 1]!r}"
            )
    return edges


def _shares(value: Any, field: _Field, count: int, what: str) -> tuple[float, ...]:
    shares = tuple(_number(v, field.at(i)) for i, v in enumerate(_list(value, field)))
    if len(shares) != count:
        raise field.error(f"must hold {count} shares ({what}), got {len(shares)}")
    for i, share in enumerate(shares):
        if not 0 <= share <= 1:
            raise field.at(i).error(f"a share is from 0 to 1, got {share!r}")
    if abs(sum(shares) - 1) > SHARE_TOLERANCE:
        raise field.error(f"shares must sum to 1, these sum to {sum(shares):.6g}")
    return shares


def _at_most(items: list[Any], most: int, field: _Field, what: str) -> list[Any]:
    if len(items) > most:
        raise field.error(f"holds {len(items)} {what}, more than the {most} a reference may hold")
    return items


def _labels(value: Any, field: _Field, what: str, most: int = MAX_BINS) -> tuple[str, ...]:
    raw = _at_most(_list(value, field), most, field, f"{what} labels")
    labels = tuple(_string(v, field.at(i)) for i, v in enumerate(raw))
    if not labels:
        raise field.error(f"must name at least one {what}")
    if len(set(labels)) != len(labels):
        repeated = next(label for label in labels if labels.count(label) > 1)
        raise field.error(f"{what} {repeated!r} is listed twice")
    return labels


def _feature(value: Any, field: _Field) -> Feature:
    document = _object(value, field)
    name = _string(_member(document, "name", field), field.at("name"))
    kind = _member(document, "kind", field)
    if kind == "numeric":
        edges = _edges(_member(document, "edges", field), field.at("edges"))
        shares = _shares(
            _member(document, "shares", field), field.at("shares"), len(edges) + 1, "edges + 1"
        )
        return Feature(name, "numeric", shares, edges=edges)
    if kind == "categorical":
        field_c = field.at("categories")
        categories = _labels(_member(document, "categories", field), field_c, "category")
        shares = _shares(
            _member(document, "shares", field),
            field.at("shares"),
            len(categories) + 1,
            "categories + 1 for other",
        )
        return Feature(name, "categorical", shares, categories=categories)
    raise field.at("kind").error(f"must be 'numeric' or 'categorical', got {_kind(kind)}")


def _confidence(value: Any, field: _Field) -> Confidence:
    document = _object(value, field)
    edges = _edges(_member(document, "edges", field), field.at("edges"))
    shares = _shares(
        _member(document, "shares", field), field.at("shares"), len(edges) + 1, "edges + 1"
    )
    mean = _number(_member(document, "mean", field), field.at("mean"))
    if not 0 <= mean <= 1:
        raise field.at("mean").error(f"a mean probability is from 0 to 1, got {mean!r}")
    return Confidence(edges, shares, mean)


def _output(value: Any, field: _Field) -> Output:
    document = _object(value, field)
    name = _string(_member(document, "name", field), field.at("name"))
    kind = _member(document, "kind", field)
    confidence = None
    if document.get("confidence") is not None:
        confidence = _confidence(document["confidence"], field.at("confidence"))
    if kind == "classes":
        field_c = field.at("classes")
        classes = _labels(_member(document, "classes", field), field_c, "class", MAX_CLASSES)
        raw = _list(_member(document, "shares", field), field.at("shares"))
        count = len(classes) + 1 if len(raw) == len(classes) + 1 else len(classes)
        shares = _shares(raw, field.at("shares"), count, "one per class, + 1 for other")
        if count > len(classes) and OTHER in classes:
            raise field.at("classes").error(f"a class named {OTHER!r} cannot have an other bin")
        return Output(name, "classes", shares, classes=classes, confidence=confidence)
    if kind == "numeric":
        edges = _edges(_member(document, "edges", field), field.at("edges"))
        shares = _shares(
            _member(document, "shares", field), field.at("shares"), len(edges) + 1, "edges + 1"
        )
        return Output(name, "numeric", shares, edges=edges, confidence=confidence)
    raise field.at("kind").error(f"must be 'classes' or 'numeric', got {_kind(kind)}")


def too_many_bins(features: tuple[Feature, ...], outputs: tuple[Output, ...]) -> str | None:
    """Why the features and outputs hold more bins than a server exports (MAX_SERIES), or None."""
    series = sum(len(f.shares) for f in features) + sum(
        len(o.shares) + (len(o.confidence.shares) if o.confidence is not None else 0)
        for o in outputs
    )
    if series <= MAX_SERIES:
        return None
    return (
        f"has {series} bins in all, more than the {MAX_SERIES} a server exports (each is a "
        "series): profile fewer features (--max-features, --features) or fewer --bins"
    )


def parse_reference(document: Any, source: str) -> Reference:
    """A reference from its parsed JSON; ReferenceError (one line, naming `source` and the
    field) if it is not one. Keys the format does not define are ignored."""
    root = _Field(source)
    top = _object(document, root)
    version = _member(top, "schemaVersion", root)
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        raise root.at("schemaVersion").error(
            f"this weir reads schemaVersion {SCHEMA_VERSION}, got {_kind(version)}"
        )
    model_field = root.at("model")
    model = _object(_member(top, "model", root), model_field)
    sha256 = _string(_member(model, "sha256", model_field), model_field.at("sha256"))
    if not SHA256_PATTERN.fullmatch(sha256.lower()):
        raise model_field.at("sha256").error(f"must be 64 hexadecimal characters, got {sha256!r}")
    input_name = _string(_member(model, "input", model_field), model_field.at("input"))
    rows = _member(top, "rows", root)
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise root.at("rows").error(f"must be a whole number of at least 1, got {_kind(rows)}")
    features_field = root.at("features")
    listed = _list(_member(top, "features", root), features_field)
    features = tuple(
        _feature(value, features_field.at(i))
        for i, value in enumerate(_at_most(listed, MAX_FEATURES, features_field, "features"))
    )
    outputs_field = root.at("outputs")
    listed = _list(_member(top, "outputs", root), outputs_field)
    outputs = tuple(
        _output(value, outputs_field.at(i))
        for i, value in enumerate(_at_most(listed, MAX_FEATURES, outputs_field, "outputs"))
    )
    if (too_many := too_many_bins(features, outputs)) is not None:
        raise root.error(too_many)
    for what, items, field in (
        ("feature", features, features_field),
        ("output", outputs, outputs_field),
    ):
        names = [item.name for item in items]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise field.at(i).at("name").error(f"{what} {name!r} is listed twice")
    return Reference(ModelIdentity(sha256.lower(), input_name), rows, features, outputs)


def load_reference(path: Path) -> Reference:
    """Read and validate a reference file; ReferenceError (one line) if it cannot be used."""
    try:
        with path.open("rb") as handle:
            text = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ReferenceError(f"reference file {path} does not exist") from None
    except IsADirectoryError:
        raise ReferenceError(f"{path} is a directory; give the reference file") from None
    except OSError as error:
        raise ReferenceError(
            f"reference file {path} cannot be read: {error.strerror or error}"
        ) from None
    if len(text) > MAX_FILE_BYTES:
        raise ReferenceError(
            f"reference file {path} is over {MAX_FILE_BYTES >> 20} MiB: not a reference"
        )
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise ReferenceError(f"{path} is not JSON: {' '.join(str(error).split())}") from None
    return parse_reference(document, str(path))


def dumps(reference: Reference) -> str:
    """The file's text: one line per feature and per output, so that a person can read it."""
    document = reference.to_json()
    features = ",\n".join("    " + json.dumps(f) for f in document["features"])
    outputs = ",\n".join("    " + json.dumps(o) for o in document["outputs"])
    return (
        "{\n"
        f'  "schemaVersion": {document["schemaVersion"]},\n'
        f'  "model": {json.dumps(document["model"])},\n'
        f'  "rows": {document["rows"]},\n'
        f'  "features": [{chr(10) + features + chr(10) + "  " if features else ""}],\n'
        f'  "outputs": [{chr(10) + outputs + chr(10) + "  " if outputs else ""}]\n'
        "}\n"
    )


def write_reference(reference: Reference, path: Path) -> None:
    """Write the file whole or not at all (written aside, then renamed)."""
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(dumps(reference))
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def model_mismatch(reference: Reference, source: str, model_path: Path, sha256: str) -> str | None:
    """Why `reference` (read from `source`) is not the one of the model file at `model_path`,
    whose sha256 is `sha256` (one line), or None."""
    if reference.model.sha256 == sha256.lower():
        return None
    return (
        f"reference {source} was made for the model with sha256 {reference.model.sha256}, "
        f"but {model_path} has sha256 {sha256}: profile this model (weir profile) or serve "
        "the one the reference was made for"
    )


def reference_file_problem(path: Path) -> str | None:
    """What `weir serve --reference` checks before it starts (one line): the file is a
    reference. The server checks it against the model's signature once the model is loaded,
    and warns when it was made for another model file (weir_server.monitor.start_monitor)."""
    try:
        load_reference(path)
    except ReferenceError as error:
        return str(error)
    return None


# -- feature names ------------------------------------------------------------------------


def feature_name(input_name: str, column: int | None) -> str:
    """`x[2]` for column 2 of a 2-D input `x`; `x` itself for a 1-D one (column None)."""
    return input_name if column is None else f"{input_name}[{column}]"


def feature_column(name: str, input_name: str) -> int | None:
    """The column a feature name stands for (None: the whole 1-D input); ValueError if the name
    is not one of `input_name`'s."""
    if name == input_name:
        return None
    prefix = f"{input_name}["
    if name.startswith(prefix) and name.endswith("]"):
        digits = name[len(prefix) : -1]
        if digits.isdigit() and digits.isascii():
            return int(digits)
    raise ValueError(
        f"{name!r} is not a feature of input {input_name!r}: features are named "
        f"{input_name}[COLUMN] (2-D input) or {input_name} (1-D)"
    )


# -- bins ---------------------------------------------------------------------------------


def numeric_bins(edges: Sequence[float] | FloatArray, values: npt.ArrayLike) -> IntArray:
    """The bin of every value: `searchsorted(edges, v, side="right")`, so bin `i` holds
    `edges[i-1] <= v < edges[i]` and -inf/+inf fall in the first/last bin; -1 for NaN (no bin)."""
    array = np.asarray(values)
    bins = np.searchsorted(np.asarray(edges, dtype=np.float64), array, side="right").astype(
        np.int64
    )
    if array.dtype.kind in "fc":
        bins[np.isnan(array)] = -1
    return bins


def category_key(value: Any) -> str:
    """A value as a category string: integers as `3`, booleans as `true`/`false`, strings (and
    UTF-8 bytes) as themselves; a whole float as the integer it is, any other float as Python
    writes it."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def category_number(category: str) -> float | None:
    """The number a category string stands for (`3`, `true` = 1, `2.5`), None for text."""
    if category == "true":
        return 1.0
    if category == "false":
        return 0.0
    try:
        number = float(category)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _category_integer(category: str) -> int | None:
    """The integer a category string stands for (`3`, `true` = 1, `4.0`), None otherwise."""
    try:
        return int(category)
    except ValueError:
        number = category_number(category)
        return int(number) if number is not None and number.is_integer() else None


def categorical_bins(categories: Sequence[str], values: npt.ArrayLike) -> IntArray:
    """The index of every value's category, `len(categories)` ("other") when it has none.
    Numeric arrays are compared as numbers (so `3`, `3.0` and `true` = 1 match), text as text."""
    array = np.asarray(values)
    other = len(categories)
    if array.dtype.kind in "biuf":
        bins = np.full(array.shape, other, dtype=np.int64)
        positions: list[int] = []
        wanted: list[int | float] = []
        if array.dtype.kind in "iu":  # as integers: exact beyond 2**53 too
            limits = np.iinfo(array.dtype)
            for i, category in enumerate(categories):
                integer = _category_integer(category)
                if integer is not None and limits.min <= integer <= limits.max:
                    positions.append(i)
                    wanted.append(integer)
            targets = np.array(wanted, dtype=array.dtype)
        else:
            for i, category in enumerate(categories):
                number = category_number(category)
                if number is not None:
                    positions.append(i)
                    wanted.append(number)
            targets = np.array(wanted, dtype=np.float64)
        if not positions:
            return bins
        index = np.array(positions, dtype=np.int64)
        matches = array.reshape(-1, 1) == targets.reshape(1, -1)
        found = matches.any(axis=1)
        flat = bins.reshape(-1)
        flat[found] = index[matches[found].argmax(axis=1)]
        return bins
    lookup = {category: i for i, category in enumerate(categories)}
    flat_values = array.reshape(-1)
    found_bins = np.fromiter(
        (lookup.get(category_key(v), other) for v in flat_values),
        dtype=np.int64,
        count=flat_values.size,
    )
    return found_bins.reshape(array.shape)


def top1(scores: npt.ArrayLike) -> FloatArray:
    """The top-1 probability of every row of `[N, C]` scores (the last axis): the row's maximum
    when the row sums to 1 within PROBABILITY_TOLERANCE (probabilities), else the maximum of
    its softmax (logits). NaN for a row with a NaN. Computed in the scores' own precision
    (float32 stays float32: measured, float64 copies cost as much again), summed in float64."""
    array = np.asarray(scores)
    if array.dtype.kind != "f":
        array = array.astype(np.float64)
    highest = array.max(axis=-1)
    logits = np.abs(array.sum(axis=-1, dtype=np.float64) - 1) > PROBABILITY_TOLERANCE
    result: FloatArray = highest.astype(np.float64)
    if logits.any():
        rows, tops = (array, highest) if logits.all() else (array[logits], highest[logits])
        shifted = rows - tops[..., None]
        np.exp(shifted, out=shifted)
        result[logits] = 1 / shifted.sum(axis=-1, dtype=np.float64)
    return result


def shares_of(bins: IntArray, count: int) -> tuple[float, ...]:
    """The share of each of `count` bins among the values that are in one (-1: in none). With
    no value in any bin (a column of NaN), every bin gets an equal share: shares sum to 1."""
    counted = bins[bins >= 0]
    if counted.size == 0:
        return tuple(1 / count for _ in range(count))
    totals = np.bincount(counted, minlength=count)[:count]
    return tuple(float(t) for t in totals / counted.size)
