"""`weir apply -f`: every document is validated before anything is sent, problems name the
file, the document and the field path; and the merge patch that updates an existing object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from weir_operator.client.backend import UsageError
from weir_operator.client.manifests import (
    exact_patch,
    load_manifests,
    update_patch,
    with_namespace,
)

ROOT = Path(__file__).resolve().parents[2]


def doc(name: str = "iris", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.weir.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": {"uri": "https://models.example.com/iris-7.onnx"}, **spec},
    }


def write(path: Path, *documents: Any) -> Path:
    path.write_text(yaml.safe_dump_all(documents))
    return path


def problems(paths: list[Path]) -> list[str]:
    with pytest.raises(UsageError) as raised:
        load_manifests(paths)
    assert raised.value.code == 3
    return raised.value.problems


class TestLoading:
    def test_a_multi_document_file_and_a_folder_load_in_order(self, tmp_path: Path) -> None:
        write(tmp_path / "b.yaml", doc("b1"), doc("b2"))
        write(tmp_path / "a.yml", doc("a"))
        (tmp_path / "notes.txt").write_text("not a manifest")
        (tmp_path / "sub").mkdir()
        write(tmp_path / "sub" / "c.yaml", doc("c"))  # folders are not searched recursively
        names = [d["metadata"]["name"] for d in load_manifests([tmp_path])]
        assert names == ["a", "b1", "b2"]

    def test_the_examples_load(self) -> None:
        loaded = load_manifests(
            [ROOT / "examples" / "iris.yaml", ROOT / "examples" / "iris-gateway.yaml"]
        )
        assert len(loaded) == 2

    def test_empty_documents_are_skipped(self, tmp_path: Path) -> None:
        path = tmp_path / "m.yaml"
        path.write_text("---\n" + yaml.safe_dump(doc()) + "---\n---\n")
        assert len(load_manifests([path])) == 1

    def test_an_invalid_field_is_named_with_its_file_document_and_path(
        self, tmp_path: Path
    ) -> None:
        good = write(tmp_path / "good.yaml", doc("good"))
        bad = doc("bad", replicas=-1, rollout={"steps": [{"setWeight": 10}, {"setWeight": 150}]})
        bad["spec"]["model"]["sha256"] = "xyz"
        path = write(tmp_path / "bad.yaml", doc("fine"), bad)
        found = problems([good, path])
        prefix = f"{path} (document 2, bad): "
        assert all(p.startswith(prefix) for p in found), found
        fields = sorted(p.removeprefix(prefix).split(":")[0] for p in found)
        assert fields == ["spec.model.sha256", "spec.replicas", "spec.rollout.steps[1].setWeight"]

    def test_every_broken_example_is_refused_by_field(self) -> None:
        folder = ROOT / "examples" / "invalid"
        found = problems([folder])
        assert len(found) == len(list(folder.glob("*.yaml")))
        assert any(
            "missing-uri.yaml (document 1, broken): spec.model.uri: required field is missing" in p
            for p in found
        )
        assert any(
            "unknown-field.yaml (document 1, broken): spec.replicaz: unknown field" in p
            for p in found
        )

    def test_bad_yaml_names_the_file_line_and_column(self, tmp_path: Path) -> None:
        path = tmp_path / "broken.yaml"
        path.write_text(
            "apiVersion: serving.weir.dev/v1alpha1\nkind: ModelDeployment\nmetadata:\n  name: [iris\n"
        )
        with pytest.raises(UsageError) as raised:
            load_manifests([path])
        assert raised.value.message.startswith(f"{path}:5:1: invalid YAML:")

    def test_other_kinds_and_non_mappings_are_refused(self, tmp_path: Path) -> None:
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}
        path = write(tmp_path / "mixed.yaml", service, ["a", "list"], doc())
        found = problems([path])
        assert found[0].startswith(f"{path} (document 1, s): (root): kind 'Service'")
        assert found[1] == f"{path} (document 2): (root): a ModelDeployment must be a mapping"
        assert len(found) == 2

    def test_the_same_object_twice_is_refused(self, tmp_path: Path) -> None:
        first = write(tmp_path / "a.yaml", doc())
        second = write(tmp_path / "b.yaml", doc())
        assert problems([first, second]) == [
            f"{second} (document 1, iris): metadata.name: iris is also in {first} (document 1, iris)"
        ]

    def test_missing_paths_and_empty_inputs_are_usage_errors(self, tmp_path: Path) -> None:
        with pytest.raises(UsageError, match="no such file or folder"):
            load_manifests([tmp_path / "nope.yaml"])
        with pytest.raises(UsageError, match=r"no \.yaml, \.yml or \.json files"):
            load_manifests([tmp_path])
        (tmp_path / "empty.yaml").write_text("---\n")
        with pytest.raises(UsageError, match="nothing to apply"):
            load_manifests([tmp_path / "empty.yaml"])


class TestNamespaces:
    def test_the_default_namespace_fills_in_and_a_manifests_own_wins(self) -> None:
        own = doc("own")
        own["metadata"]["namespace"] = "team"
        placed = with_namespace([doc(), own], "ctx-ns", explicit=None)
        assert [d["metadata"]["namespace"] for d in placed] == ["ctx-ns", "team"]
        assert "namespace" not in doc()["metadata"]  # the input is not changed

    def test_a_manifest_in_another_namespace_than_dash_n_is_refused(self) -> None:
        own = doc()
        own["metadata"]["namespace"] = "team"
        assert with_namespace([own], "team", explicit="team")[0]["metadata"]["namespace"] == "team"
        with pytest.raises(UsageError, match="namespace 'team' but -n says 'prod'"):
            with_namespace([own], "prod", explicit="prod")


class TestUpdatePatch:
    def test_exact_patch_nulls_what_is_gone_and_replaces_lists(self) -> None:
        old = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2], "f": "same"}
        new = {"a": 2, "b": {"c": 2}, "e": [1], "f": "same", "g": {}}
        assert exact_patch(old, new) == {"a": 2, "b": {"d": None}, "e": [1], "g": {}}
        assert exact_patch(new, new) == {}

    def test_an_unchanged_manifest_needs_no_write_even_with_defaults_filled_in(self) -> None:
        live = doc()
        live["metadata"].update(
            generation=4, annotations={"kopf.zalando.org/last-handled-configuration": "{}"}
        )
        live["spec"]["replicas"] = 1  # the API server's default
        live["status"] = {"phase": "Healthy"}
        assert update_patch(live, doc()) == {}

    def test_a_changed_spec_is_made_exactly_the_manifests(self) -> None:
        live = doc(replicas=3, autoscaling={"minReplicas": 1, "maxReplicas": 4})
        desired = doc(replicas=2)
        desired["spec"]["model"]["version"] = "7"
        assert update_patch(live, desired) == {
            "spec": {"replicas": 2, "autoscaling": None, "model": {"version": "7"}}
        }

    def test_labels_and_annotations_are_added_never_removed(self) -> None:
        live = doc()
        live["metadata"]["labels"] = {"team": "a", "keep": "me"}
        live["metadata"]["annotations"] = {"serving.weir.dev/request": "{}"}
        desired = doc()
        desired["metadata"]["labels"] = {"team": "b"}
        desired["metadata"]["annotations"] = {"note": "x"}
        assert update_patch(live, desired) == {
            "metadata": {"labels": {"team": "b"}, "annotations": {"note": "x"}}
        }
