"""MLServer custom inference runtime serving an ONNX model with ONNX Runtime (bench/peers.py).

Written the way MLServer's docs describe custom runtimes ("Custom Inference Runtimes", "Serving
a custom model"): an `MLModel` subclass whose async `load()` finds the artifact with
`get_model_uri` and returns readiness, and whose async `predict()` decodes each V2 input with
the `NumpyCodec`, runs the model and encodes each output with the same codec. It is named by
`"implementation": "mlserver_runtime.OnnxRuntimeModel"` in the model-settings.json that
bench/peers.py writes, and runs in MLServer's venv (.cache/peers/mlserver-venv), never in Weir's.

The one setting that is not MLServer's: ONNX Runtime's thread counts, from
`parameters.extra.intra_op_threads` of model-settings.json, so that every server in the
benchmark gives ONNX Runtime the same threads (`weir serve` sets inter-op 1 and intra-op N)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        path = await get_model_uri(self._settings)
        extra = (self._settings.parameters.extra if self._settings.parameters else None) or {}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(extra.get("intra_op_threads", 0))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._output_names = [output.name for output in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {
            request_input.name: self.decode(request_input, default_codec=NumpyCodec)
            for request_input in payload.inputs
        }
        results = self._session.run(self._output_names, feeds)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[
                NumpyCodec.encode_output(name, np.asarray(value))
                for name, value in zip(self._output_names, results, strict=True)
            ],
        )
