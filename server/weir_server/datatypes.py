"""The three type systems a tensor crosses (V2 datatype, numpy dtype, ONNX type) and their mapping.

Kept in one table so that a datatype the server accepts is always one ONNX Runtime can run."""

from __future__ import annotations

from typing import Final

import numpy as np

# ONNX Runtime's `NodeArg.type` strings -> V2 datatypes.
ONNX_TO_V2: Final[dict[str, str]] = {
    "tensor(bool)": "BOOL",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

# V2 datatypes -> numpy dtypes. BYTES tensors are numpy object arrays of `str` for ONNX Runtime.
V2_TO_NUMPY: Final[dict[str, np.dtype[np.generic]]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}

ALL_V2_DATATYPES: Final[frozenset[str]] = frozenset(V2_TO_NUMPY)
INTEGER_DATATYPES: Final[frozenset[str]] = frozenset(
    {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
FLOAT_DATATYPES: Final[frozenset[str]] = frozenset({"FP16", "FP32", "FP64"})


def v2_datatype_of_onnx(onnx_type: str) -> str:
    """The V2 datatype for an ONNX Runtime type string; ValueError for types V2 cannot carry."""
    try:
        return ONNX_TO_V2[onnx_type]
    except KeyError:
        raise ValueError(f"ONNX type {onnx_type} has no Open Inference Protocol datatype") from None


_NUMPY_TO_V2: Final[dict[np.dtype[np.generic], str]] = {
    dtype: name for name, dtype in V2_TO_NUMPY.items() if name != "BYTES"
}


def v2_datatype_of_numpy(dtype: np.dtype[np.generic]) -> str:
    """The V2 datatype for a numpy array that ONNX Runtime returned."""
    if dtype.kind in ("U", "S", "O"):
        return "BYTES"
    try:
        return _NUMPY_TO_V2[dtype]
    except KeyError:
        raise ValueError(f"numpy dtype {dtype} has no Open Inference Protocol datatype") from None
