"""KServe's Python ModelServer serving an ONNX model with ONNX Runtime (bench/peers.py).

Written the way KServe's docs describe a custom Python serving runtime ("Deploy Custom Python
Serving Runtime", Open Inference Protocol variant): a `kserve.Model` subclass that loads the
model in `load()` and sets `ready`, whose `predict()` takes the V2 `InferRequest`, reads each
input with `InferInput.as_numpy()` and returns an `InferResponse` of `InferOutput`s, started
with `ModelServer().start([model])`, whose arguments extend `kserve.model_server.parser`.
It runs in KServe's venv (.cache/peers/kserve-venv), never in Weir's.

Usage (as bench/peers.py runs it):

    python kserve_server.py --model_name iris --model_path iris.onnx --http_port 8080 \
        --grpc_port 8081 --intra_op_threads 1

Two things are not KServe's defaults, and neither touches the request path:
- ONNX Runtime's thread counts (`--intra_op_threads`; inter-op 1), so that every server in the
  benchmark gives ONNX Runtime the same threads as `weir serve`;
- the listen addresses: KServe 0.21 binds HTTP to 0.0.0.0 and gRPC to [::] with no option to
  change it, and the benchmark's servers listen on 127.0.0.1 only, so the address is rewritten
  to 127.0.0.1 just before each server binds (same ports, same servers, same settings).
"""

from __future__ import annotations

import argparse
from typing import Any

import grpc.aio
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server
from kserve.protocol.rest import server as rest_server
from kserve.utils.numpy_codec import from_np_dtype
from kserve.utils.utils import generate_uuid

LOOPBACK = "127.0.0.1"


def listen_on_loopback_only() -> None:
    rest_init = rest_server.RESTServer.__init__

    def rest_init_loopback(self: Any, *args: Any, **kwargs: Any) -> None:
        rest_init(self, *args, **kwargs)
        self.config.host = LOOPBACK  # read by uvicorn when it binds, at start

    rest_server.RESTServer.__init__ = rest_init_loopback  # type: ignore[method-assign]
    make_grpc_server = grpc.aio.server

    def grpc_server_loopback(*args: Any, **kwargs: Any) -> Any:
        server = make_grpc_server(*args, **kwargs)
        add_port = server.add_insecure_port
        server.add_insecure_port = lambda address: add_port(
            address.replace("[::]", LOOPBACK).replace("0.0.0.0", LOOPBACK)
        )
        return server

    grpc.aio.server = grpc_server_loopback


class OnnxModel(Model):
    def __init__(self, name: str, path: str, intra_op_threads: int) -> None:
        super().__init__(name)
        self.path = path
        self.intra_op_threads = intra_op_threads
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            self.path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.output_names = [output.name for output in self.session.get_outputs()]
        self.ready = True
        return self.ready

    def predict(
        self, payload: InferRequest, headers: dict[str, str] | None = None
    ) -> InferResponse:
        feeds = {infer_input.name: infer_input.as_numpy() for infer_input in payload.inputs}
        results = self.session.run(self.output_names, feeds)
        outputs = []
        for name, value in zip(self.output_names, results, strict=True):
            array = np.asarray(value)
            outputs.append(
                InferOutput(
                    name=name,
                    shape=list(array.shape),
                    datatype=from_np_dtype(array.dtype),
                    data=array,
                )
            )
        return InferResponse(
            response_id=payload.id or generate_uuid(),
            model_name=self.name,
            infer_outputs=outputs,
        )


def main() -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_path", required=True, help="the .onnx file")
    parser.add_argument("--intra_op_threads", type=int, default=0, help="0: ONNX Runtime's")
    args, _ = parser.parse_known_args()
    listen_on_loopback_only()
    model = OnnxModel(args.model_name, args.model_path, args.intra_op_threads)
    ModelServer().start([model])


if __name__ == "__main__":
    main()
