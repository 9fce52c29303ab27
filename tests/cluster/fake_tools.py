"""Stand-ins for kind, docker, helm, kubectl and weir, so that hack/kind-e2e.sh can run its real
(not --dry-run) code path on a machine without a cluster: `python fake_tools.py TOOL ARGS...`.

Each call is appended to $FAKE_CALLS as one JSON line (tool + argv). The cluster is a JSON file
($FAKE_STATE): ModelDeployments applied by `kubectl apply`, moved by `weir set-model` and
settled by `weir status --wait` (v2 promoted: exit 0; v3 rolled back: exit 1; with
FAKE_BROKEN=rollback the bad version is "promoted" instead, which the harness must catch).
`kubectl port-forward` runs the real relay (hack/kind-e2e/relay.py) on the local port, in front
of $FAKE_UPSTREAM (a real `weir serve` the test started), so the harness' real traffic flows.
The model files and their sha256 are checked against the harness' work folder ($FAKE_WORKDIR)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ["FAKE_STATE"])
WORKDIR = Path(os.environ["FAKE_WORKDIR"])


def load() -> dict[str, Any]:
    state: dict[str, Any] = json.loads(STATE.read_text()) if STATE.exists() else {}
    return state


def save(state: dict[str, Any]) -> None:
    STATE.write_text(json.dumps(state))


def fail(message: str) -> int:
    print(f"fake: {message}", file=sys.stderr)
    return 99


def model_sha256(version: str) -> str:
    path = WORKDIR / "fixtures" / "models" / f"iris-{version}.onnx"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def kind(argv: list[str]) -> int:
    if argv[:2] == ["get", "clusters"]:
        return 0  # no cluster yet
    if argv[:2] == ["create", "cluster"]:
        Path(option(argv, "--kubeconfig")).write_text("apiVersion: v1\nkind: Config\n")
    return 0


def kubectl(argv: list[str]) -> int:
    if argv[:2] == ["apply", "-f"] and argv[2].endswith(".yaml"):
        for document in yaml.safe_load_all(Path(argv[2]).read_text()):
            if document and document["kind"] == "ModelDeployment":
                model = document["spec"]["model"]
                if model["sha256"] != model_sha256(model["version"]):
                    return fail(f"{argv[2]}: sha256 is not that of iris-{model['version']}.onnx")
                state = load()
                state[document["metadata"]["name"]] = {"phase": "Healthy", "stable": "1"}
                save(state)
        return 0
    if "port-forward" in argv:
        local = argv[-1].split(":")[0]
        relay = ROOT / "hack" / "kind-e2e" / "relay.py"
        os.execv(
            sys.executable,
            [sys.executable, str(relay), "--host", "127.0.0.1", "--port", local,
             "--upstream", os.environ["FAKE_UPSTREAM"]],
        )  # fmt: skip
    if "get" in argv:
        name = argv[argv.index("get") + 2]  # get KIND NAME (a ModelDeployment's or its Service's)
        md = load().get(name, {})
        jsonpath = next((w for w in argv if w.startswith("jsonpath=")), "")
        answers = {
            "jsonpath={.status.phase} {.status.stable.version}": (
                f"{md.get('phase')} {md.get('stable')}"
            ),
            "jsonpath={.status.history[0].outcome}": md.get("outcome", ""),
            "jsonpath={.status.stable.revision}": f"rev-{md.get('stable')}",
            r"jsonpath={.spec.selector.serving\.weir\.dev/revision}": f"rev-{md.get('stable')}",
            "jsonpath={.spec.rules[0].backendRefs[*].weight}": "100 0",
            "jsonpath={.items[0].metadata.name}": "envoy-weir-e2e-weir-e2e-0123abcd",
        }
        print(answers.get(jsonpath, ""), end="")
        return 0
    return 0  # rollout status, wait, delete, apply --server-side: nothing to do


def weir(argv: list[str]) -> int:
    command, name = argv[0], argv[1]
    state = load()
    md = state.get(name)
    if md is None:
        return fail(f"no ModelDeployment {name}")
    if command == "set-model":
        version = option(argv, "--version")
        uri = option(argv, "--uri")
        if not re.fullmatch(
            rf"http://weir-e2e-models\.weir-e2e\.svc:8000/iris-{version}\.onnx", uri
        ):
            return fail(f"unexpected --uri {uri}")
        if option(argv, "--sha256") != model_sha256(version):
            return fail(f"--sha256 is not that of iris-{version}.onnx")
        md["pending"] = version
        save(state)
        return 0
    if command == "status" and "--wait" in argv:
        time.sleep(1)  # a rollout takes a while: the harness' traffic flows meanwhile
        version = md.pop("pending", None)
        if version is None:
            return 0
        if version == "3" and os.environ.get("FAKE_BROKEN") != "rollback":
            md.update(phase="RolledBack", outcome="RolledBack")
            save(state)
            return 1
        md.update(phase="Healthy", stable=version, outcome="Promoted")
        save(state)
        return 0
    return 0


def main() -> int:
    tool, argv = sys.argv[1], sys.argv[2:]
    with open(os.environ["FAKE_CALLS"], "a") as calls:
        calls.write(json.dumps([tool, *argv]) + "\n")
    handler = {"kind": kind, "kubectl": kubectl, "weir": weir}.get(tool)
    return handler(argv) if handler else 0  # docker, helm: nothing to do


if __name__ == "__main__":
    sys.exit(main())
