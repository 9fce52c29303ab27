"""A test that fails on purpose, to prove this tier is real: the chart's RBAC with one verb
taken away, and the API server refuses exactly that call ("forbidden"), while the operator stays
up. (The chart's full RBAC reconciling everything is shown in test_operator.py.)"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.controlplane.conftest import (
    OPERATOR_NAMESPACE,
    Kubectl,
    chart_rbac,
    eventually,
    operator_kubeconfig,
)
from tests.support.controlplane import ControlPlane
from tests.support.operator_process import Operator

ROOT = Path(__file__).resolve().parents[2]
CRIPPLED = "weir-crippled"

pytestmark = pytest.mark.timeout(180)


def without_verb(group: str, resource: str, verb: str) -> list[dict[str, Any]]:
    """The chart's ServiceAccount and RBAC, renamed, with `verb` on `group/resource` removed."""
    objects = copy.deepcopy(chart_rbac())
    removed = False
    for obj in objects:
        obj["metadata"]["name"] = CRIPPLED
        if obj["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            obj["roleRef"]["name"] = CRIPPLED
            for subject in obj["subjects"]:
                subject["name"] = CRIPPLED
        for rule in obj.get("rules", []):
            if (
                group in rule["apiGroups"]
                and resource in rule["resources"]
                and verb in rule["verbs"]
            ):
                others = [r for r in rule["resources"] if r != resource]
                if others:  # keep the verb for the rule's other resources
                    obj["rules"].append({**rule, "resources": others})
                rule["resources"] = [resource]
                rule["verbs"] = [v for v in rule["verbs"] if v != verb]
                removed = True
        if "rules" in obj:
            obj["rules"] = [rule for rule in obj["rules"] if rule["verbs"]]
    assert removed, f"the chart grants no {verb} on {group}/{resource}: nothing to take away"
    return objects


@pytest.mark.parametrize(
    ("group", "resource", "verb", "kept_away"),
    [
        ("serving.weir.dev", "modeldeployments/status", "patch", "status"),
        ("apps", "deployments", "create", "deployments"),
    ],
    ids=["no-status-patch", "no-deployment-create"],
)
def test_an_operator_missing_one_verb_is_refused_that_call(
    controlplane: ControlPlane,
    admin: Kubectl,
    namespace: str,
    tmp_path: Path,
    group: str,
    resource: str,
    verb: str,
    kept_away: str,
) -> None:
    kubeconfig = operator_kubeconfig(
        controlplane, admin, without_verb(group, resource, verb), tmp_path / "kubeconfig"
    )
    operator = Operator(kubeconfig, tmp_path / "operator.log", "--namespace", namespace)
    try:
        document = yaml.safe_load((ROOT / "examples" / "iris.yaml").read_text())
        admin.apply(document, namespace=namespace)
        user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{CRIPPLED}"
        refusal = (
            f'is forbidden: User \\"{user}\\" cannot {verb} resource \\"{resource.split("/")[0]}'
        )
        eventually(lambda: refusal in operator.log(), within=60, what=f"a refused {verb}")
        assert operator.process.poll() is None, "the operator must survive a refused call"

        stored = admin.json("get", "md", "iris", "-n", namespace)
        deployments = admin.json("get", "deployments", "-n", namespace)["items"]
        if kept_away == "status":
            assert not (stored.get("status") or {}).get("phase")
            assert deployments, "everything but the status write is allowed"
        else:
            assert deployments == []
    finally:
        operator.terminate()
        print(operator.log()[-6000:])
        admin("delete", "clusterrolebinding,clusterrole", CRIPPLED)
        admin("delete", "serviceaccount", CRIPPLED, "-n", OPERATOR_NAMESPACE)
