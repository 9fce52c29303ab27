"""The `weir` client commands against Kubernetes: the kube backend, through the `kubernetes`
client and a kubeconfig, against the (extended) kmock emulator. The test plays the operator by
patching status, except in the last test, where the real `weir operator` answers."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from tests.emulator.test_operator import DEPLOYMENTS, MD, make_ready
from tests.support.emulator import (
    RESOURCES,
    EmulatorApi,
    WeirEmulator,
    eventually,
    serve,
    write_kubeconfig,
)
from tests.support.operator_process import Operator
from tests.support.processes import free_port
from weir_operator.cli import build_parser
from weir_operator.client import cli as client_cli
from weir_operator.core.render import revision_of
from weir_operator.core.requests import REQUEST_ANNOTATION, parse_request
from weir_operator.core.rollout import Request
from weir_operator.core.spec import parse_model_deployment

SHA = "ef" * 32


def manifest(name: str = "iris", version: str = "7", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.weir.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "labels": {"team": "ml"}},
        "spec": {
            "model": {
                "uri": f"https://models.example.com/{name}-{version}.onnx",
                "version": version,
                "name": "flowers",
            },
            **spec,
        },
    }


def revision(document: dict[str, Any]) -> str:
    return revision_of(parse_model_deployment(document).spec)


async def weir(kubeconfig: Path, *argv: str) -> tuple[int, str, str]:
    """`weir ARGV` in process, off the loop serving the emulator, KUBECONFIG set."""

    def call() -> tuple[int, str, str]:
        args = build_parser().parse_args(list(argv))
        out, err = io.StringIO(), io.StringIO()
        code = client_cli.run(args, out, err, {"KUBECONFIG": str(kubeconfig)})
        return code, out.getvalue(), err.getvalue()

    return await asyncio.wait_for(asyncio.to_thread(call), 60)


async def set_status(
    api: EmulatorApi, name: str = "iris", namespace: str = "default", **status: Any
) -> None:
    """Play the operator: a status for the object's current generation."""
    found = await api.get(MD, namespace, name)
    assert found is not None
    status = {"observedGeneration": found["metadata"]["generation"], **status}
    await api.patch(MD, namespace, name, {"status": status}, subresource="status")


def write(path: Path, *documents: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(documents))
    return path


async def test_apply_creates_then_updates_only_what_changed(
    emulator_api: EmulatorApi, kubeconfig: Path, tmp_path: Path
) -> None:
    path = write(tmp_path / "md.yaml", manifest("iris"), manifest("mnist"))
    assert await weir(kubeconfig, "apply", "-f", str(path)) == (
        0,
        "modeldeployment.serving.weir.dev/iris created\nmodeldeployment.serving.weir.dev/mnist created\n",
        "",
    )
    created = await emulator_api.get(MD, "default", "iris")
    assert created is not None
    assert created["spec"] == manifest()["spec"]
    assert created["metadata"]["labels"] == {"team": "ml"}
    assert created["metadata"]["generation"] == 1

    # What the operator writes stays: annotations of others, status.
    await emulator_api.patch(
        MD,
        "default",
        "iris",
        {"metadata": {"annotations": {"kopf.zalando.org/last-handled-configuration": "{}"}}},
    )
    await set_status(emulator_api, phase="Healthy")
    code, out, _ = await weir(kubeconfig, "apply", "-f", str(path))
    assert (code, out.split()[1::2]) == (0, ["unchanged", "unchanged"])
    assert (await emulator_api.get(MD, "default", "iris") or {})["metadata"]["generation"] == 1

    changed = manifest("iris", replicas=3)
    changed["spec"]["model"].pop("name")  # a field removed from the file goes from the object
    changed["metadata"]["annotations"] = {"note": "three"}
    write(path, changed)
    assert await weir(kubeconfig, "apply", "-f", str(path)) == (
        0,
        "modeldeployment.serving.weir.dev/iris configured\n",
        "",
    )
    updated = await emulator_api.get(MD, "default", "iris")
    assert updated is not None
    assert updated["spec"] == changed["spec"]
    assert updated["metadata"]["generation"] == 2
    assert updated["metadata"]["annotations"] == {
        "kopf.zalando.org/last-handled-configuration": "{}",
        "note": "three",
    }
    assert updated["status"]["phase"] == "Healthy"


async def test_apply_sends_nothing_when_any_document_is_invalid(
    emulator: WeirEmulator, emulator_api: EmulatorApi, kubeconfig: Path, tmp_path: Path
) -> None:
    bad = manifest("bad")
    bad["spec"]["model"]["uri"] = "ftp://nope"
    path = write(tmp_path / "md.yaml", manifest("good"), bad)
    requests_before = len(list(emulator))
    code, out, err = await weir(kubeconfig, "apply", "-f", str(path))
    assert (code, out) == (3, "")
    assert f"{path} (document 2, bad): spec.model.uri: must be an https://" in err
    assert len(list(emulator)) == requests_before  # not even a GET
    assert await emulator_api.list(MD, "default") == []


async def test_apply_and_get_in_the_namespace_asked_for(
    emulator_api: EmulatorApi, kubeconfig: Path, tmp_path: Path
) -> None:
    path = write(tmp_path / "md.yaml", manifest())
    assert (await weir(kubeconfig, "apply", "-f", str(path), "-n", "team-a"))[0] == 0
    assert await emulator_api.get(MD, "team-a", "iris") is not None
    assert await emulator_api.get(MD, "default", "iris") is None
    code, out, _ = await weir(kubeconfig, "get", "-n", "team-a", "-o", "json")
    assert code == 0
    assert [o["metadata"]["name"] for o in json.loads(out)["items"]] == ["iris"]
    code, out, err = await weir(kubeconfig, "get", "iris")
    assert (code, out) == (3, "")
    assert 'modeldeployment "iris" not found in namespace "default"' in err


async def test_get_shows_the_table_from_the_status(
    emulator_api: EmulatorApi, kubeconfig: Path
) -> None:
    await emulator_api.create(
        MD, {**manifest(), "metadata": {"name": "iris", "namespace": "default"}}
    )
    stable = {"revision": "a" * 16, "uri": "u", "version": "7"}
    canary = {
        "revision": revision(manifest()),
        "uri": "u",
        "version": "8",
        "weight": 50,
        "setWeight": 50,
        "step": 2,
    }
    await set_status(
        emulator_api, phase="Progressing", stable=stable, canary=canary, readyText="3/3"
    )
    code, out, _ = await weir(kubeconfig, "get")
    assert code == 0
    assert out.splitlines()[1].split()[:6] == ["iris", "Progressing", "7", "8", "50%", "3/3"]
    code, out, _ = await weir(kubeconfig, "get", "iris", "-o", "yaml")
    assert yaml.safe_load(out)["status"]["canary"]["weight"] == 50


async def set_model_of(
    emulator_api: EmulatorApi, kubeconfig: Path, original: dict[str, Any], *args: str
) -> tuple[str, dict[str, Any]]:
    """`weir set-model iris --uri .../iris-8.onnx ARGS` on `original`: its output and the
    object it left."""
    await emulator_api.create(
        MD, {**original, "metadata": {"name": "iris", "namespace": "default"}}
    )
    uri = "https://models.example.com/iris-8.onnx"
    code, out, err = await weir(kubeconfig, "set-model", "iris", "--uri", uri, *args)
    assert (code, err) == (0, "")
    found = await emulator_api.get(MD, "default", "iris")
    assert found is not None
    return out, found


async def test_set_model_merge_patches_the_model_keeping_its_name(
    emulator_api: EmulatorApi, kubeconfig: Path
) -> None:
    original = manifest()
    original["spec"]["model"]["sha256"] = SHA
    out, found = await set_model_of(emulator_api, kubeconfig, original, "--version", "8")
    # replaced: the old sha256 is gone, the served name stays
    assert found["spec"]["model"] == {
        "uri": "https://models.example.com/iris-8.onnx",
        "version": "8",
        "name": "flowers",
    }
    assert found["metadata"]["generation"] == 2
    assert (
        out
        == f"iris: spec.model set to https://models.example.com/iris-8.onnx (version 8): revision {revision(found)[:10]}\n"
    )
    code, _, err = await weir(
        kubeconfig, "set-model", "nope", "--uri", "https://models.example.com/x.onnx"
    )
    assert code == 3
    assert 'modeldeployment "nope" not found in namespace "default"' in err


async def test_set_model_with_a_reference_patches_both_keeping_the_drift_settings(
    emulator_api: EmulatorApi, kubeconfig: Path
) -> None:
    original = manifest()
    original["spec"]["monitoring"] = {
        "reference": {"uri": "https://models.example.com/iris-7.reference.json", "sha256": SHA},
        "drift": {"window": "2m"},
    }
    reference = "https://models.example.com/iris-8.reference.json"
    out, found = await set_model_of(
        emulator_api, kubeconfig, original, "--reference-uri", reference
    )
    # the reference replaced (its old sha256 gone), the drift settings kept, one generation
    assert found["spec"]["monitoring"] == {
        "reference": {"uri": "https://models.example.com/iris-8.reference.json"},
        "drift": {"window": "2m"},
    }
    assert found["spec"]["model"]["uri"] == "https://models.example.com/iris-8.onnx"
    assert found["metadata"]["generation"] == 2
    assert "with the reference https://models.example.com/iris-8.reference.json" in out


async def test_a_request_is_written_as_the_annotation_and_its_answer_awaited(
    emulator_api: EmulatorApi, kubeconfig: Path
) -> None:
    await emulator_api.create(
        MD, {**manifest(), "metadata": {"name": "iris", "namespace": "default"}}
    )
    canary = {"revision": "c" * 16, "uri": "u", "weight": 10, "step": 0}
    await set_status(
        emulator_api,
        phase="Progressing",
        stable={"revision": revision(manifest()), "uri": "u"},
        canary=canary,
    )
    promoting = asyncio.create_task(weir(kubeconfig, "promote", "iris", "--full"))

    async def written() -> Request | None:
        found = await emulator_api.get(MD, "default", "iris")
        text = ((found or {}).get("metadata") or {}).get("annotations", {}).get(REQUEST_ANNOTATION)
        parsed = parse_request(text)
        return parsed if isinstance(parsed, Request) else None

    request = await eventually(written, within=10)
    assert request.action == "promote-full"
    assert request.revision == "c" * 16
    assert len(request.id) == 32  # a uuid4 in hex
    assert not promoting.done()  # waiting for Weir's answer
    record = {
        "id": request.id,
        "action": "promote-full",
        "at": "2026-01-01T12:00:00Z",
        "accepted": True,
        "message": "promoted, steps skipped",
    }
    await set_status(
        emulator_api, phase="Healthy", stable={"revision": "c" * 16, "uri": "u"}, lastRequest=record
    )
    assert await promoting == (0, "iris: promote-full accepted: promoted, steps skipped\n", "")

    code, out, err = await weir(kubeconfig, "abort", "iris", "--timeout", "2s")
    assert (code, out) == (2, "")
    assert "no answer to the abort request" in err
    assert (await written()).action == "abort"  # type: ignore[union-attr]


async def test_undo_resolves_its_target_from_the_history(
    emulator_api: EmulatorApi, kubeconfig: Path
) -> None:
    await emulator_api.create(
        MD, {**manifest(), "metadata": {"name": "iris", "namespace": "default"}}
    )
    history = [
        {
            "revision": "1234abcd00000000",
            "uri": "u2",
            "outcome": "Promoted",
            "at": "2026-01-01T11:00:00Z",
        },
        {
            "revision": "5678ef0000000000",
            "uri": "u1",
            "outcome": "Promoted",
            "at": "2026-01-01T10:00:00Z",
        },
    ]
    await set_status(
        emulator_api,
        phase="Healthy",
        stable={"revision": revision(manifest()), "uri": "u"},
        history=history,
    )
    assert (await weir(kubeconfig, "undo", "iris", "--to-revision", "2", "--no-wait"))[0] == 0
    found = await emulator_api.get(MD, "default", "iris")
    sent = json.loads(found["metadata"]["annotations"][REQUEST_ANNOTATION])  # type: ignore[index]
    assert (sent["action"], sent["revision"]) == ("undo", "5678ef0000000000")
    code, _, err = await weir(kubeconfig, "undo", "iris", "--to-revision", "9999")
    assert code == 3
    assert "no such revision in the history" in err
    code, out, _ = await weir(kubeconfig, "history", "iris")
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [
        ["1", "1234abcd00"],
        ["2", "5678ef0000"],
    ]


@pytest.mark.parametrize(
    ("final", "code"),
    [
        pytest.param({"phase": "Healthy", "stable": "desired"}, 0, id="healthy"),
        pytest.param(
            {"phase": "RolledBack", "stable": "old", "rolledBackRevision": "desired"},
            1,
            id="rolled-back",
        ),
        pytest.param({"phase": "Failed", "stable": "desired"}, 1, id="failed"),
        pytest.param(
            {"phase": "Progressing", "stable": "old", "canary": "desired"}, 2, id="timeout"
        ),
    ],
)
async def test_status_wait_exit_codes(
    emulator_api: EmulatorApi, kubeconfig: Path, final: dict[str, Any], code: int
) -> None:
    await emulator_api.create(
        MD, {**manifest(version="7"), "metadata": {"name": "iris", "namespace": "default"}}
    )
    await set_status(
        emulator_api,
        phase="Healthy",
        stable={"revision": revision(manifest(version="7")), "uri": "u"},
    )
    assert (
        await weir(
            kubeconfig,
            "set-model",
            "iris",
            "--uri",
            "https://models.example.com/iris-8.onnx",
            "--version",
            "8",
        )
    )[0] == 0
    found = await emulator_api.get(MD, "default", "iris")
    assert found is not None
    refs = {
        "desired": {"revision": revision(found), "uri": "u8", "version": "8"},
        "old": {"revision": revision(manifest(version="7")), "uri": "u7"},
    }
    waiting = asyncio.create_task(
        weir(kubeconfig, "status", "iris", "--wait", "--timeout", "4s", "-o", "json")
    )
    await asyncio.sleep(1.5)
    assert not waiting.done(), "the status is still for generation 1: not over"
    status = {k: refs[v] if k in ("stable", "canary") else v for k, v in final.items()}
    if "rolledBackRevision" in status:
        status["rolledBackRevision"] = revision(found)
    await set_status(emulator_api, **status)
    exit_code, out, err = await waiting
    assert exit_code == code, err
    record = json.loads(out.splitlines()[-1])
    assert record["result"] == {0: "healthy", 1: "failed", 2: "timeout"}[code]
    assert (record["generation"], record["desiredRevision"]) == (2, revision(found))


async def test_status_of_nothing_exits_3(kubeconfig: Path) -> None:
    code, out, err = await weir(kubeconfig, "status", "iris", "--wait")
    assert (code, out) == (3, "")
    assert (
        err
        == f'weir status: error: modeldeployment "iris" not found in namespace "default" ({kubeconfig_server(kubeconfig)})\n'
    )


def kubeconfig_server(kubeconfig: Path) -> str:
    return str(yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"])


async def test_the_status_view_tells_the_story_with_events(
    emulator_api: EmulatorApi, kubeconfig: Path
) -> None:
    await emulator_api.create(
        MD, {**manifest(), "metadata": {"name": "iris", "namespace": "default"}}
    )
    await set_status(
        emulator_api,
        phase="Healthy",
        stable={"revision": revision(manifest()), "uri": "u", "version": "7"},
    )
    for name, reason, at in (
        ("other", "Unrelated", "2026-01-01T12:00:00Z"),
        ("iris", "Healthy", "2026-01-01T12:00:05Z"),
    ):
        event = {
            "metadata": {"name": f"{name}.1", "namespace": "default"},
            "involvedObject": {"kind": "ModelDeployment", "name": name, "namespace": "default"},
            "reason": reason,
            "message": f"{name} event",
            "type": "Normal",
            "lastTimestamp": at,
        }
        await emulator_api.create("v1/events", event)
    code, out, _ = await weir(kubeconfig, "status", "iris")
    assert code == 0
    assert "Phase:      Healthy" in out
    events = out.split("Events:")[1]
    assert "iris event" in events
    assert "Unrelated" not in events


async def test_an_unreachable_cluster_names_its_server(tmp_path: Path) -> None:
    server = f"http://127.0.0.1:{free_port()}"
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server)
    code, out, err = await weir(kubeconfig, "get")
    assert (code, out) == (3, "")
    assert err.startswith(f"weir get: error: cannot reach the Kubernetes API server {server}: ")
    assert "Connection refused" in err
    assert len(err.splitlines()) == 1


@pytest_asyncio.fixture
async def crdless(tmp_path: Path) -> AsyncIterator[Path]:
    resources = {k: v for k, v in RESOURCES.items() if not k.startswith("serving.weir.dev")}
    async with serve(resources) as emulator:
        yield write_kubeconfig(tmp_path / "crdless", str(emulator.url).rstrip("/"))


async def test_a_cluster_without_weirs_crd_says_so(crdless: Path, tmp_path: Path) -> None:
    code, _, err = await weir(crdless, "get")
    assert code == 3
    assert "does not serve the ModelDeployment API (serving.weir.dev/v1alpha1)" in err
    code, _, err = await weir(crdless, "apply", "-f", str(write(tmp_path / "md.yaml", manifest())))
    assert code == 3
    assert "helm install weir charts/weir" in err


async def test_kubectl_weir_is_the_same_command(
    emulator_api: EmulatorApi, kubeconfig: Path
) -> None:
    await emulator_api.create(
        MD, {**manifest(), "metadata": {"name": "iris", "namespace": "default"}}
    )
    kubectl_weir = Path(sys.executable).with_name("kubectl-weir")
    process = await asyncio.create_subprocess_exec(
        str(kubectl_weir), "get", "-o", "wide",
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err
    lines = out.decode().splitlines()
    assert lines[0].split()[:3] == ["NAME", "PHASE", "STABLE"]
    assert lines[1].split()[0] == "iris"
    assert revision(manifest())[:10] in lines[1]


async def test_the_real_operator_answers_the_cli(
    emulator_api: EmulatorApi, kubeconfig: Path, operator: Operator, tmp_path: Path
) -> None:
    """apply -> Healthy (status --wait 0), set-model -> promoted (status --wait 0), a promote
    with no canary is refused by the operator (exit 1), undo brings the old model back."""
    straight = {"steps": [], "allowSignatureChange": True}  # promoted once ready
    path = write(tmp_path / "md.yaml", manifest(version="7", rollout=straight))
    assert (await weir(kubeconfig, "apply", "-f", str(path)))[0] == 0
    first = f"iris-{revision(manifest(version='7', rollout=straight))[:10]}"
    waiting = asyncio.create_task(weir(kubeconfig, "status", "iris", "--wait", "--timeout", "40s"))
    await eventually(lambda: emulator_api.get(DEPLOYMENTS, "default", first), within=20)
    await make_ready(emulator_api, first)
    code, out, err = await waiting
    assert code == 0, out + err
    assert out.splitlines()[-1] == f"iris: Healthy on revision {first[5:]} (version 7)"

    assert (
        await weir(
            kubeconfig,
            "set-model",
            "iris",
            "--uri",
            "https://models.example.com/iris-8.onnx",
            "--version",
            "8",
        )
    )[0] == 0
    found = await emulator_api.get(MD, "default", "iris")
    second = f"iris-{revision(found or {})[:10]}"
    waiting = asyncio.create_task(weir(kubeconfig, "status", "iris", "--wait", "--timeout", "40s"))
    await eventually(lambda: emulator_api.get(DEPLOYMENTS, "default", second), within=20)
    await make_ready(emulator_api, second)
    code, out, err = await waiting
    assert code == 0, out + err

    code, out, err = await weir(kubeconfig, "promote", "iris")
    assert code == 1, out + err
    assert err.startswith("weir: iris: promote refused: ")

    code, out, err = await weir(kubeconfig, "undo", "iris")
    assert code == 0, err
    assert out.startswith("iris: undo accepted: spec.model set back to revision")
    restored = await eventually(lambda: _model_version(emulator_api, "7"), within=15)
    assert restored["uri"] == "https://models.example.com/iris-7.onnx"


async def _model_version(api: EmulatorApi, version: str) -> dict[str, Any] | None:
    found = await api.get(MD, "default", "iris")
    model = ((found or {}).get("spec") or {}).get("model") or {}
    return model if model.get("version") == version else None
