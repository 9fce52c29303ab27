"""The pure parts of the rollout's I/O shell: the request annotation and the signature check."""

from __future__ import annotations

import json

from weir_operator.core.gates.signature import same_signature
from weir_operator.core.requests import parse_request
from weir_operator.core.rollout import Request


def test_a_request_annotation_is_parsed_and_a_bad_one_explained() -> None:
    text = json.dumps({"id": "r-1", "action": "promote", "revision": "abc"})
    assert parse_request(text) == Request(id="r-1", action="promote", revision="abc")
    assert parse_request(json.dumps({"id": "r-2", "action": "undo"})) == Request("r-2", "undo")
    assert parse_request(None) is None
    assert parse_request("") is None
    for bad in ("{", "[]", '{"action": "promote"}', '{"id": "x", "action": "deploy"}'):
        problem = parse_request(bad)
        assert isinstance(problem, str), bad
        assert "serving.weir.dev/request" in problem


def test_signatures_compare_inputs_and_outputs_by_name_type_and_shape() -> None:
    tensor = {"name": "input", "datatype": "FP32", "shape": [-1, 4]}
    out = {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}
    stable = {"name": "iris", "versions": ["1"], "inputs": [tensor], "outputs": [out]}
    same = {"name": "iris", "versions": ["2"], "inputs": [tensor], "outputs": [out]}
    assert same_signature(same, stable)[0]
    wider = {**same, "inputs": [{**tensor, "shape": [-1, 5]}]}
    passed, message = same_signature(wider, stable)
    assert not passed
    assert "inputs" in message
    assert "outputs" not in message
