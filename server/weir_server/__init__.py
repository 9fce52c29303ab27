"""Weir's inference server: the Open Inference Protocol (KServe V2) over REST for one ONNX model.

Every pod Weir runs is a `weir serve` process; the rollout engine trusts what it measures."""

__all__ = ["__version__"]

__version__ = "0.1.0"
