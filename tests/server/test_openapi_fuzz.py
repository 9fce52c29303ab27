"""schemathesis drives the server from its own OpenAPI document, valid and invalid input alike:
no request may get a 5xx, and every answer must be one the document declares.

(schemathesis' pytest plugin does not run on pytest 9 yet, so its strategies are driven with
hypothesis directly: one parametrized test per operation and generation mode.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    status_code_conformance,
)

from tests.support.processes import running_server

OPERATIONS = [
    "GET /v2/health/live",
    "GET /v2/health/ready",
    "GET /v2",
    "GET /v2/models/{model_name}",
    "GET /v2/models/{model_name}/versions/{model_version}",
    "GET /v2/models/{model_name}/ready",
    "GET /v2/models/{model_name}/versions/{model_version}/ready",
    "POST /v2/models/{model_name}/infer",
    "POST /v2/models/{model_name}/versions/{model_version}/infer",
]


@pytest.fixture(scope="module")
def live_schema(iris_model: Path) -> Iterator[schemathesis.BaseSchema]:
    with running_server(
        iris_model, "--name", "iris", "--version", "1", "--no-access-log"
    ) as server:
        yield schemathesis.openapi.from_url(f"{server.url}/openapi.json")


def test_the_document_lists_every_v2_operation(live_schema: schemathesis.BaseSchema) -> None:
    labels = {result.ok().label for result in live_schema.get_all_operations()}
    assert set(OPERATIONS) <= labels


# (operation, generation mode, real model name and version in the path?). Only request bodies
# can be made invalid: any string is a valid path parameter.
CASES = [(label, GenerationMode.POSITIVE, False) for label in OPERATIONS] + [
    (label, mode, True)
    for label in OPERATIONS
    if label.endswith("/infer")
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
]


@pytest.mark.parametrize(
    ("label", "mode", "served_model"),
    CASES,
    ids=[f"{label} {mode.value}{' iris' if served else ''}" for label, mode, served in CASES],
)
def test_no_input_makes_the_server_fail(
    live_schema: schemathesis.BaseSchema, label: str, mode: GenerationMode, served_model: bool
) -> None:
    operation = live_schema.find_operation_by_label(label)
    assert operation is not None
    calls = []
    path = {"model_name": "iris", "model_version": "1"} if served_model else None
    if path is not None and "{model_version}" not in label:
        del path["model_version"]

    @given(operation.as_strategy(generation_mode=mode, path_parameters=path))
    @settings(
        max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    def call(case: schemathesis.Case) -> None:
        calls.append(case)
        case.call_and_validate(
            checks=[not_a_server_error, status_code_conformance, content_type_conformance]
        )

    call()
    assert calls, "schemathesis generated no request"
