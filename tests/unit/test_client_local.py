"""The client against `weir run`'s control API (docs/local-runtime.md), through a stand-in
served over real HTTP on 127.0.0.1: it follows that contract to the letter (paths, bodies,
error shapes and codes), keeps objects in memory and plays the runtime by writing status when
a test says so. The real runtime is tested against the same client in tests/local."""

from __future__ import annotations

import copy
import io
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.support.processes import free_port
from weir_operator.cli import build_parser
from weir_operator.client import cli as client_cli
from weir_operator.client.backend import NotFound, Refused, Unreachable, UsageError
from weir_operator.client.local_backend import LocalBackend
from weir_operator.core.render import revision_of
from weir_operator.core.requests import REQUEST_ANNOTATION
from weir_operator.core.spec import SpecError, parse_model_deployment

ACTIONS = {"promote", "promote-full", "abort", "retry", "undo"}


def manifest(name: str = "iris", version: str = "7") -> dict[str, Any]:
    return {
        "apiVersion": "serving.weir.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "uri": f"https://models.example.com/{name}-{version}.onnx",
                "version": version,
                "name": "flowers",
            }
        },
    }


def revision(document: dict[str, Any]) -> str:
    return revision_of(parse_model_deployment(document).spec)


def error(status: int, message: str, problems: list[str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if problems is not None:
        body["problems"] = problems
    return JSONResponse(body, status_code=status)


class ControlApi:
    """The control API of docs/local-runtime.md over an in-memory store."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[dict[str, Any]] = []
        self.answer_requests = True
        self.lock = threading.Lock()
        self.app = self._routes()

    def set_status(self, name: str, **status: Any) -> None:
        with self.lock:
            self.objects[name]["status"] = {
                "observedGeneration": self.objects[name]["metadata"]["generation"],
                **status,
            }

    def _apply(self, document: dict[str, Any]) -> str:
        name = document["metadata"]["name"]
        existing = self.objects.get(name)
        if existing is None:
            metadata = {
                **document["metadata"],
                "namespace": "default",
                "generation": 1,
                "annotations": document["metadata"].get("annotations") or {},
            }
            self.objects[name] = {**copy.deepcopy(document), "metadata": metadata, "status": {}}
            return "created"
        if existing["spec"] == document["spec"]:
            return "unchanged"
        existing["spec"] = copy.deepcopy(document["spec"])
        existing["metadata"]["generation"] += 1
        return "configured"

    def _routes(self) -> FastAPI:
        app = FastAPI()
        base = "/api/v1/modeldeployments"

        async def body(request: Request) -> Any:
            try:
                return await request.json()
            except ValueError:
                return None

        @app.get("/healthz")
        def healthz() -> Any:
            return {"ok": True}

        @app.get(base)
        def list_all() -> Any:
            with self.lock:
                return {"items": [copy.deepcopy(o) for o in self.objects.values()]}

        @app.get(base + "/{name}")
        def get(name: str) -> Any:
            with self.lock:
                if name not in self.objects:
                    return error(404, f"no ModelDeployment {name}")
                return copy.deepcopy(self.objects[name])

        @app.post(base)
        async def apply(request: Request) -> Any:
            given = await body(request)
            if not isinstance(given, dict):
                return error(400, "the body must be a JSON object")
            documents = given.get("items", [given])
            problems = []
            for document in documents:
                try:
                    parse_model_deployment(document)
                except SpecError as invalid:
                    name = (document.get("metadata") or {}).get("name", "?")
                    problems += [f"{name}: {p}" for p in invalid.problems]
            if problems:
                return error(422, "not a valid ModelDeployment", problems)
            with self.lock:
                return {
                    "items": [
                        {"name": d["metadata"]["name"], "result": self._apply(d)} for d in documents
                    ]
                }

        @app.delete(base + "/{name}")
        def delete(name: str) -> Any:
            with self.lock:
                if self.objects.pop(name, None) is None:
                    return error(404, f"no ModelDeployment {name}")
            return {"name": name, "result": "deleted"}

        @app.patch(base + "/{name}/model")
        async def set_model(name: str, request: Request) -> Any:
            model = await body(request)
            if (
                not isinstance(model, dict)
                or not isinstance(model.get("uri"), str)
                or set(model) - {"uri", "sha256", "version"}
            ):
                return error(400, "the body must be {uri, sha256?, version?}")
            with self.lock:
                if name not in self.objects:
                    return error(404, f"no ModelDeployment {name}")
                obj = self.objects[name]
                kept = (
                    {"name": obj["spec"]["model"]["name"]}
                    if obj["spec"]["model"].get("name")
                    else {}
                )
                changed = copy.deepcopy(obj)
                changed["spec"]["model"] = {**model, **kept}
                try:
                    parse_model_deployment(changed)
                except SpecError as invalid:
                    return error(422, "not a valid ModelDeployment", invalid.problems)
                obj["spec"]["model"] = changed["spec"]["model"]
                obj["metadata"]["generation"] += 1
                return copy.deepcopy(obj)

        @app.post(base + "/{name}/requests")
        async def post_request(name: str, request: Request) -> Any:
            given = await body(request)
            if not isinstance(given, dict) or given.get("action") not in ACTIONS:
                return error(400, f"action must be one of {', '.join(sorted(ACTIONS))}")
            with self.lock:
                if name not in self.objects:
                    return error(404, f"no ModelDeployment {name}")
                request_id = uuid.uuid4().hex
                recorded = {
                    "id": request_id,
                    "action": given["action"],
                    **({"revision": given["revision"]} if given.get("revision") else {}),
                }
                self.requests.append(recorded)
                self.objects[name]["metadata"]["annotations"][REQUEST_ANNOTATION] = str(recorded)
            if self.answer_requests:  # the runtime's reconcile handles it a moment later
                threading.Timer(0.3, self._answer, (name, recorded)).start()
            return {"id": request_id}

        @app.get(base + "/{name}/events")
        def events(name: str) -> Any:
            with self.lock:
                if name not in self.objects:
                    return error(404, f"no ModelDeployment {name}")
                return {"items": self.events.get(name, [])[-200:]}

        return app

    def _answer(self, name: str, recorded: dict[str, Any]) -> None:
        accepted = recorded["action"] != "retry"
        message = f"{recorded['action']} done" if accepted else "nothing was rolled back"
        with self.lock:
            status = self.objects[name].setdefault("status", {})
            status["lastRequest"] = {
                "id": recorded["id"],
                "action": recorded["action"],
                "at": "2026-01-01T12:00:00Z",
                "accepted": accepted,
                "message": message,
            }


@pytest.fixture
def control() -> Iterator[tuple[ControlApi, str]]:
    api = ControlApi()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(api.app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the stand-in did not start"
        time.sleep(0.02)
    yield api, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def weir(*argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    args = build_parser().parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    code = client_cli.run(args, out, err, environ or {})
    return code, out.getvalue(), err.getvalue()


def test_apply_get_and_set_model_through_the_control_api(
    control: tuple[ControlApi, str], tmp_path: Path
) -> None:
    api, url = control
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump_all([manifest("iris"), manifest("mnist")]))
    assert weir("apply", "-f", str(path), "--local", url) == (
        0,
        "modeldeployment.serving.weir.dev/iris created\nmodeldeployment.serving.weir.dev/mnist created\n",
        "",
    )
    code, out, _ = weir("apply", "-f", str(path), environ={"WEIR_LOCAL": url})
    assert (code, out.split()) == (
        0,
        [
            "modeldeployment.serving.weir.dev/iris",
            "unchanged",
            "modeldeployment.serving.weir.dev/mnist",
            "unchanged",
        ],
    )

    api.set_status(
        "iris",
        phase="Healthy",
        stable={"revision": revision(manifest()), "uri": "u", "version": "7"},
        readyText="1/1",
    )
    code, out, _ = weir("get", "--local", url)
    assert code == 0
    assert [line.split()[:6] for line in out.splitlines()] == [
        ["NAME", "PHASE", "STABLE", "CANARY", "WEIGHT", "READY"],
        ["iris", "Healthy", "7", "-", "-", "1/1"],
        ["mnist", "-", "-", "-", "-", "-"],
    ]

    sha = "cd" * 32
    code, out, _ = weir(
        "set-model",
        "iris",
        "--uri",
        "https://models.example.com/iris-8.onnx",
        "--sha256",
        sha,
        "--version",
        "8",
        "--local",
        url,
    )
    assert code == 0
    model = api.objects["iris"]["spec"]["model"]
    assert model == {
        "uri": "https://models.example.com/iris-8.onnx",
        "sha256": sha,
        "version": "8",
        "name": "flowers",
    }
    assert api.objects["iris"]["metadata"]["generation"] == 2
    assert out.endswith(f"revision {revision(api.objects['iris'])[:10]}\n")


def test_requests_are_posted_and_their_answers_awaited(control: tuple[ControlApi, str]) -> None:
    api, url = control
    document = manifest()
    LocalBackend(url).apply([document])
    canary = {"revision": "c" * 16, "uri": "u", "weight": 10, "step": 0}
    api.set_status(
        "iris",
        phase="Progressing",
        stable={"revision": revision(document), "uri": "u"},
        canary=canary,
    )
    assert weir("promote", "iris", "--local", url) == (
        0,
        "iris: promote accepted: promote done\n",
        "",
    )
    assert api.requests[-1]["action"] == "promote"
    assert api.requests[-1]["revision"] == "c" * 16  # guarded by the canary the client saw
    assert weir("promote", "iris", "--full", "--local", url)[0] == 0
    assert api.requests[-1]["action"] == "promote-full"
    code, _, err = weir("retry", "iris", "--local", url)
    assert (code, err) == (1, "weir: iris: retry refused: nothing was rolled back\n")
    api.answer_requests = False
    code, _, err = weir("abort", "iris", "--timeout", "1s", "--local", url)
    assert code == 2
    assert "no answer to the abort request" in err
    assert weir("undo", "iris", "--no-wait", "--local", url)[0] == 0
    assert api.requests[-1] == {"id": api.requests[-1]["id"], "action": "undo"}


def test_status_wait_follows_the_runtime_to_the_end(control: tuple[ControlApi, str]) -> None:
    api, url = control
    document = manifest(version="8")
    LocalBackend(url).apply([document])
    api.set_status(
        "iris",
        phase="Progressing",
        stable={"revision": "a" * 16, "uri": "u"},
        canary={"revision": revision(document), "uri": "u", "weight": 50, "step": 2},
    )
    threading.Timer(
        1.0,
        lambda: api.set_status(
            "iris",
            phase="Healthy",
            stable={"revision": revision(document), "uri": "u", "version": "8"},
        ),
    ).start()
    started = time.monotonic()
    code, out, err = weir(
        "status", "iris", "--wait", "--timeout", "20s", "-o", "json", "--local", url
    )
    assert code == 0, err
    assert all(line.startswith("weir status: iris: ") for line in err.splitlines()), err
    assert 0.9 < time.monotonic() - started < 5  # polled every 0.5 s
    lines = out.splitlines()
    assert len(lines) == 1
    assert '"result": "healthy"' in lines[0]


def test_events_appear_in_the_status_view(control: tuple[ControlApi, str]) -> None:
    api, url = control
    LocalBackend(url).apply([manifest()])
    api.events["iris"] = [
        {
            "at": "2026-01-01T12:00:00Z",
            "type": "Warning",
            "reason": "RolledBack",
            "message": "canary p99 too high",
        }
    ]
    code, out, _ = weir("status", "iris", "--local", url)
    assert code == 0
    assert "RolledBack" in out.split("Events:")[1]
    assert LocalBackend(url).events("iris", 5)[0]["message"] == "canary p99 too high"


def test_refusals_not_found_and_unreachable(control: tuple[ControlApi, str]) -> None:
    api, url = control
    backend = LocalBackend(url)
    with pytest.raises(Refused) as refused:
        backend.apply([{**manifest(), "spec": {"model": {"uri": "ftp://x"}}}])
    assert refused.value.code == 1
    assert any("spec.model.uri" in p for p in refused.value.problems)
    assert api.objects == {}  # nothing applied
    elsewhere = manifest()
    elsewhere["metadata"]["namespace"] = "ml"
    with pytest.raises(UsageError, match="the local runtime has only 'default'"):
        backend.apply([elsewhere])
    with pytest.raises(
        NotFound, match=f'modeldeployment "nope" not found in the local runtime at {url}'
    ):
        backend.get("nope")
    code, out, err = weir("status", "nope", "--local", url)
    assert (code, out) == (3, "")
    assert (
        err
        == f'weir status: error: modeldeployment "nope" not found in the local runtime at {url}\n'
    )
    closed = f"http://127.0.0.1:{free_port()}"
    code, _, err = weir("get", "--local", closed)
    assert code == 3
    assert f"cannot reach the local runtime at {closed}" in err
    assert "weir run -f PATH" in err
    with pytest.raises(Unreachable):
        LocalBackend(closed).list_all()
