"""`weir run`'s durable state (weir_operator.local.state and the Store on top of it), the
autoscaler windows it keeps, and the file rules that keep a careless save from deleting
anything. What a restart needs is on disk after every change; what cannot be read is named."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from weir_operator.core.celrules import CelRule, holds
from weir_operator.core.spec import REFUSED_ENV_NAMES, SpecError, parse_model_deployment
from weir_operator.core.status import Event
from weir_operator.local.runtime import read_manifests
from weir_operator.local.state import StateDir, StateError, default_state_dir, write_atomically
from weir_operator.local.store import Store
from weir_operator.probes.autoscaler import Autoscalers


def iris(version: str = "1", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.weir.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris"},
        "spec": {"model": {"uri": f"file:///models/iris-{version}.onnx", "version": version},
                 **spec},
    }  # fmt: skip


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    opened = StateDir(tmp_path / "state").open()
    yield opened
    opened.close()


class TestTheStateFolder:
    def test_is_created_private_and_locked_for_one_weir_run(self, tmp_path: Path) -> None:
        first = StateDir(tmp_path / "state").open()
        try:
            assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
            with pytest.raises(StateError, match=f"another weir run \\(pid {os.getpid()}\\)"):
                StateDir(tmp_path / "state").open()
        finally:
            first.close()
        StateDir(tmp_path / "state").open().close()  # released with the first

    def test_an_atomic_write_leaves_no_partial_file_and_is_0600(self, tmp_path: Path) -> None:
        target = tmp_path / "x.json"
        write_atomically(target, b"old")
        write_atomically(target, b"new")
        assert target.read_bytes() == b"new"
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]

    @pytest.mark.parametrize(
        ("content", "why"),
        [
            (b'{"format": 1, "object": {"metadata": ', "cannot be read"),
            (b"[1, 2]", "not a weir run state file"),
            (b'{"format": 99, "object": {}}', "not a weir run state file of format 1"),
            (b'{"format": 1, "object": 5}', "holds no ModelDeployment"),
        ],
    )
    def test_a_file_it_cannot_read_is_named_and_nothing_is_reset(
        self, state: StateDir, content: bytes, why: str
    ) -> None:
        path = state.objects / "iris.json"
        path.write_bytes(content)
        with pytest.raises(StateError, match=why) as raised:
            Store(state).load()
        assert str(path) in str(raised.value)
        assert path.read_bytes() == content

    def test_an_object_that_is_invalid_under_todays_rules_is_kept_with_its_problems(
        self, state: StateDir
    ) -> None:
        """As an operator does with a stored object it cannot parse: the status says Failed
        (InvalidSpec), nothing is dropped."""
        (state.objects / "iris.json").write_text(
            json.dumps({"format": 1, "object": iris(replicas=-1)})
        )
        store = Store(state)
        assert store.load() == ["iris"]
        entry = store.entry("iris")
        assert entry.parsed is None
        assert any("replicas" in p for p in entry.problems)

    def test_the_default_folder_is_one_per_set_of_manifest_paths(self, tmp_path: Path) -> None:
        a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
        assert default_state_dir([a]) == default_state_dir([a])
        assert default_state_dir([a, b]) == default_state_dir([b, a])
        assert default_state_dir([a]) != default_state_dir([b])
        assert "/tmp/weir-run-" not in str(default_state_dir([a]))


class TestTheStore:
    def test_every_change_is_on_disk_and_a_new_store_reads_it_back(self, state: StateDir) -> None:
        store = Store(state)
        assert store.apply(iris("1"), "/m/iris.yaml") == "created"
        store.set_model("iris", {"uri": "file:///models/iris-2.onnx", "version": "2"})
        store.request("iris", "promote", None)
        store.set_status("iris", {"phase": "Paused", "canary": {"step": 1}}, {"autoscaler": {}})
        store.record("iris", Event("Normal", "WeightChanged", "0% -> 50%"))

        again = Store(state)
        assert again.load() == ["iris"]
        entry = again.entry("iris")
        assert entry.object == store.entry("iris").object
        assert entry.object["metadata"]["generation"] == 2
        assert entry.object["status"]["canary"]["step"] == 1
        assert "serving.weir.dev/request" in entry.object["metadata"]["annotations"]
        assert entry.source == "/m/iris.yaml"
        assert [e["reason"] for e in entry.events] == ["WeightChanged"]
        assert entry.memory == {"autoscaler": {}}

    def test_set_model_with_a_reference_keeps_the_rest_of_monitoring(self, state: StateDir) -> None:
        store = Store(state)
        document = iris("1")
        document["spec"]["monitoring"] = {"drift": {"window": "2m"}}
        store.apply(document, "api")
        reference = {"uri": "file:///models/iris-2.reference.json"}
        store.set_model("iris", {"uri": "file:///models/iris-2.onnx"}, reference)
        spec = store.entry("iris").object["spec"]
        assert spec["model"]["uri"] == "file:///models/iris-2.onnx"
        assert spec["monitoring"] == {"drift": {"window": "2m"}, "reference": reference}
        assert store.entry("iris").object["metadata"]["generation"] == 2

    def test_a_delete_removes_the_file(self, state: StateDir) -> None:
        store = Store(state)
        store.apply(iris(), "api")
        store.delete("iris")
        assert list(state.objects.iterdir()) == []
        assert Store(state).load() == []

    def test_an_unchanged_status_is_not_written_again(self, state: StateDir) -> None:
        store = Store(state)
        store.apply(iris(), "api")
        store.set_status("iris", {"phase": "Healthy"})
        path = state.objects / "iris.json"
        path.write_bytes(path.read_bytes())  # same content, new inode time
        before = path.stat().st_mtime_ns
        store.set_status("iris", {"phase": "Healthy"})
        assert path.stat().st_mtime_ns == before


class TestAutoscalerWindowsAcrossARestart:
    def test_recommendations_come_back_on_the_new_processes_clock(self) -> None:
        first = Autoscalers(scraper=None, clock=lambda: 1000.0)  # type: ignore[arg-type]
        first._history[("default", "iris")] = ((990.0, 4), (995.0, 2))
        first._track_history[("default", "iris")] = {"abc": ((999.0, 3),)}
        remembered = json.loads(json.dumps(first.remember("default", "iris")))

        second = Autoscalers(scraper=None, clock=lambda: 50.0)  # type: ignore[arg-type]
        second.recall("default", "iris", remembered)
        ages = [50.0 - at for at, _ in second._history[("default", "iris")]]
        assert ages == pytest.approx([10.0, 5.0], abs=1.0)
        assert [n for _, n in second._history[("default", "iris")]] == [4, 2]
        assert [n for _, n in second._track_history[("default", "iris")]["abc"]] == [3]

    def test_nonsense_is_ignored_rather_than_trusted(self) -> None:
        scaler = Autoscalers(scraper=None, clock=lambda: 5.0)  # type: ignore[arg-type]
        scaler.recall("default", "iris", {"history": [["x"], 5, [1e18, 9]], "tracks": 3})
        assert scaler._history[("default", "iris")] == ()  # a recommendation from the future


class TestWhatAFileMayHold:
    def test_a_misspelled_kind_is_an_error_other_kinds_are_skipped(self, tmp_path: Path) -> None:
        path = tmp_path / "m.yaml"
        path.write_text("kind: ConfigMap\napiVersion: v1\n---\n" + json.dumps(iris()))
        assert [d["kind"] for d in read_manifests(path)] == ["ModelDeployment"]
        for kind in ("ModelDeploymnet", "modeldeployment", "ModelDeployments"):
            path.write_text(json.dumps({**iris(), "kind": kind}))
            with pytest.raises(ValueError, match=f"document 1 has kind '{kind}'"):
                read_manifests(path)
        path.write_text(json.dumps({**iris(), "kind": "Rollout"}))  # our group, another kind
        with pytest.raises(ValueError, match="not 'ModelDeployment'"):
            read_manifests(path)

    def test_a_file_that_is_not_text_is_an_error(self, tmp_path: Path) -> None:
        path = tmp_path / "m.yaml"
        path.write_bytes(b"\xff\xfe\x00")
        with pytest.raises(ValueError, match="not valid YAML"):
            read_manifests(path)


class TestEnvironmentNames:
    @pytest.mark.parametrize(
        "name",
        ["PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONWARNINGS", "PYTHONBREAKPOINT",
         "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_INSERT_LIBRARIES", "WEIR_REVISION",
         "WEIR_TRACK", *REFUSED_ENV_NAMES],
    )  # fmt: skip
    def test_names_that_can_run_code_or_are_weirs_are_refused(self, name: str) -> None:
        with pytest.raises(SpecError) as raised:
            parse_model_deployment(iris(server={"env": [{"name": name, "value": "x"}]}))
        assert raised.value.problems[0].startswith("spec.server.env[0].name: refused")

    @pytest.mark.parametrize("name", ["OMP_NUM_THREADS", "TZ", "pythonpath", "MY_PYTHONPATH"])
    def test_ordinary_names_are_accepted(self, name: str) -> None:
        parse_model_deployment(iris(server={"env": [{"name": name, "value": "x"}]}))


class TestCelRulesReadOnlyTheFieldsTheyName:
    def test_paths_stop_at_macros_and_the_value_is_pruned_to_them(self) -> None:
        rule = CelRule("self.steps.filter(s, has(s.setWeight)).size() > 0 || self.a.b == 1", "m")
        assert rule.paths == (("steps",), ("a", "b"))
        huge = {"steps": [{"setWeight": 1}], "a": {"b": 1, "c": "x" * 10}, "blob": [0] * 10}
        assert holds(rule, huge)
        assert not holds(rule, {"steps": [], "a": {"b": 2}})

    def test_a_rule_on_self_itself_sees_the_whole_value(self) -> None:
        assert CelRule("self.size() == 2", "m").paths == ((),)
        assert holds(CelRule("self.size() == 2", "m"), {"a": 1, "b": 2})
