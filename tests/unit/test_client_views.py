"""What the client prints, as pure functions: the `get` table (and -o wide), ages as kubectl
shows them, the step, the status view, history, and the JSON records of `status -o json`."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from weir_operator.client.views import (
    age,
    change_key,
    drift_bar,
    get_table,
    history_table,
    measurement,
    ref_label,
    status_record,
    status_view,
    step_text,
    table,
)
from weir_operator.core.render import revision_of
from weir_operator.core.spec import parse_model_deployment

NOW = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)


def md(
    name: str = "iris", version: str = "8", steps: list[dict[str, Any]] | None = None, **status: Any
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "serving.weir.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": name,
            "namespace": "prod",
            "generation": 3,
            "creationTimestamp": "2026-01-01T11:58:30Z",
        },
        "spec": {
            "model": {
                "uri": f"https://models.example.com/{name}-{version}.onnx",
                "version": version,
            }
        },
    }
    if steps is not None:
        obj["spec"]["rollout"] = {"steps": steps}
    if status:
        obj["status"] = status
    return obj


def revision(version: str) -> str:
    return revision_of(parse_model_deployment(md(version=version)).spec)


STABLE = {
    "revision": revision("7"),
    "uri": "https://models.example.com/iris-7.onnx",
    "version": "7",
}
CANARY = {
    "revision": revision("8"),
    "uri": "https://models.example.com/iris-8.onnx",
    "version": "8",
    "weight": 33,
    "setWeight": 50,
    "step": 2,
    "failedChecks": 1,
}
ANALYSIS = {
    "at": "2026-01-01T12:00:20Z",
    "verdict": "Pass",
    "reason": "canary p99 12 ms <= 500 ms",
    "canary": {"requests": 120, "errorRate": 0.0, "p99Ms": 12.3},
    "stable": {"requests": 1080, "errorRate": 0.001, "p99Ms": 11},
}
CONDITIONS = [
    {
        "type": "Ready",
        "status": "True",
        "reason": "AllServersReady",
        "message": "all servers of iris are ready",
        "lastTransitionTime": "2026-01-01T12:00:00Z",
    },
    {
        "type": "Progressing",
        "status": "True",
        "reason": "Analysing",
        "message": "waiting for a passing analysis at 33%",
        "lastTransitionTime": "2026-01-01T12:00:00Z",
    },
]
HISTORY = [
    {
        "revision": f"{i:016x}",
        "uri": f"https://models.example.com/iris-{i}.onnx",
        "version": str(i),
        "outcome": outcome,
        "at": "2026-01-01T11:00:00Z",
        "reason": f"reason {i}",
    }
    for i, outcome in zip(
        range(6, 0, -1),
        ["Promoted", "RolledBack", "Aborted", "Failed", "Promoted", "Promoted"],
        strict=True,
    )
]


def progressing() -> dict[str, Any]:
    return md(
        phase="Progressing",
        observedGeneration=3,
        stable=STABLE,
        canary=CANARY,
        lastAnalysis=ANALYSIS,
        readyText="3/3",
        conditions=CONDITIONS,
        history=HISTORY,
        lastRequest={
            "id": "r1",
            "action": "promote",
            "at": "2026-01-01T12:00:00Z",
            "accepted": True,
            "message": "step 2 ended",
        },
    )


class TestTables:
    def test_columns_are_left_aligned_three_spaces_apart_without_trailing_blanks(self) -> None:
        text = table(("A", "LONGER"), [["xxxx", "1"], ["y", ""]])
        assert text.splitlines() == ["A      LONGER", "xxxx   1", "y"]

    @pytest.mark.parametrize(
        ("seconds", "text"),
        [
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (330, "5m30s"),
            (42 * 60, "42m"),
            (179 * 60, "179m"),
            (5 * 3600 + 12 * 60, "5h12m"),
            (6 * 3600, "6h"),
            (30 * 3600, "30h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (12 * 86400, "12d"),
        ],
    )
    def test_ages_read_as_kubectl_prints_them(self, seconds: int, text: str) -> None:
        since = (NOW - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
        assert age(since, NOW) == text

    def test_unknown_or_future_times(self) -> None:
        assert age(None, NOW) == "-"
        assert age("yesterday", NOW) == "-"
        assert age("2026-01-01T13:00:00Z", NOW) == "0s"

    def test_get_shows_phase_versions_weight_ready_and_age(self) -> None:
        healthy = md(
            "mnist",
            "3",
            phase="Healthy",
            observedGeneration=3,
            stable={"revision": "0123456789abcdef", "uri": "u"},
            readyReplicas=2,
            replicas=2,
        )
        lines = get_table([progressing(), healthy, md("fresh")], NOW).splitlines()
        assert lines[0].split() == ["NAME", "PHASE", "STABLE", "CANARY", "WEIGHT", "READY", "AGE"]
        assert lines[1].split() == ["iris", "Progressing", "7", "8", "33%", "3/3", "2m"]
        # no version label: the short revision; no readyText: ready/replicas
        assert lines[2].split() == ["mnist", "Healthy", "0123456789", "-", "-", "2/2", "2m"]
        assert lines[3].split() == ["fresh", "-", "-", "-", "-", "-", "2m"]

    def test_wide_adds_step_verdict_desired_revision_and_uri(self) -> None:
        broken = md("broken")
        broken["spec"]["model"]["uri"] = "ftp://x"
        lines = get_table([progressing(), broken], NOW, wide=True).splitlines()
        assert lines[0].split()[7:] == ["STEP", "ANALYSIS", "REVISION", "URI"]
        assert lines[1].split()[7:] == [
            "3/4",
            "Pass",
            revision("8")[:10],
            "https://models.example.com/iris-8.onnx",
        ]
        assert lines[2].split()[7:] == ["-", "-", "invalid", "ftp://x"]

    def test_history_is_numbered_from_the_most_recent_as_undo_takes_it(self) -> None:
        lines = history_table(progressing()).splitlines()
        assert lines[0].split() == [
            "#", "REVISION", "VERSION", "URI", "OUTCOME", "AT", "BY", "LINEAGE", "REASON"
        ]  # fmt: skip
        assert lines[1].split() == [
            "1",
            "0000000000",
            "6",
            "https://models.example.com/iris-6.onnx",
            "Promoted",
            "2026-01-01T11:00:00Z",
            "-",
            "-",
            "reason",
            "6",
        ]
        assert [line.split()[4] for line in lines[1:]] == [
            "Promoted",
            "RolledBack",
            "Aborted",
            "Failed",
            "Promoted",
            "Promoted",
        ]

    def test_ref_labels(self) -> None:
        assert ref_label({"revision": "0123456789abcdef", "version": "9"}) == "9"
        assert ref_label({"revision": "0123456789abcdef"}) == "0123456789"
        assert ref_label(None) == "-"


class TestStep:
    @pytest.mark.parametrize(
        ("step", "text"),
        [
            (0, "1/4 setWeight 10"),
            (1, "2/4 pause 30s"),
            (2, "3/4 setWeight 50"),
            (3, "4/4 pause (until promote)"),
            (4, "4/4 done, scaling the canary up"),
        ],
    )
    def test_the_current_step_is_numbered_from_one_and_named(self, step: int, text: str) -> None:
        steps = [
            {"setWeight": 10},
            {"pause": {"duration": "30s"}},
            {"setWeight": 50},
            {"pause": {}},
        ]
        obj = md(steps=steps, canary={**CANARY, "step": step})
        assert step_text(obj) == text
        assert step_text(obj, short=True) == text.split()[0]

    def test_default_steps_count_and_no_canary_has_no_step(self) -> None:
        assert step_text(md(canary={**CANARY, "step": 1})) == "2/4 pause 30s"
        assert step_text(md(stable=STABLE)) == "-"


class TestStatusView:
    def test_a_rollout_in_progress_reads_top_to_bottom(self) -> None:
        events = [
            {
                "at": "2026-01-01T12:00:10Z",
                "type": "Normal",
                "reason": "WeightChanged",
                "message": "canary at 33%",
            }
        ]
        text = status_view(progressing(), NOW, events)
        lines = text.splitlines()
        assert lines[0] == "Name:       iris (namespace prod)"
        assert lines[1] == "Phase:      Progressing"
        assert lines[2] == f"Spec:       revision {revision('8')[:10]} (version 8)"
        assert (
            lines[3]
            == f"Stable:     {revision('7')[:10]}  version 7  https://models.example.com/iris-7.onnx"
        )
        assert (
            lines[4]
            == f"Canary:     {revision('8')[:10]}  version 8  https://models.example.com/iris-8.onnx"
        )
        assert lines[5] == "Step:       3/4 setWeight 50"
        assert lines[6] == "Weight:     33% (the step asks for 50%), 1 failed analysis in a row"
        assert lines[7] == "Ready:      3/3"
        assert (
            lines[8]
            == "Analysis:   Pass 10s ago: canary 120 req, 0.00% errors, p99 12.3 ms; stable 1080 req, 0.10% errors, p99 11.0 ms"
        )
        assert lines[9].strip() == "canary p99 12 ms <= 500 ms"
        assert lines[10] == "Request:    promote accepted 30s ago: step 2 ended"
        assert "waiting for a passing analysis at 33%" in text
        assert "all servers of iris are ready" in text
        history = text.split("History (newest first):\n")[1].split("Events:")[0].splitlines()
        assert len(history) == 1 + 3  # header and the three most recent entries
        assert history[1].split()[:4] == ["1", "0000000000", "6", "Promoted"]
        assert "WeightChanged" in text.split("Events:")[1]

    def test_the_autoscalers_decision_with_each_tracks_own_count(self) -> None:
        autoscaler = {
            "desiredReplicas": 4,
            "load": 40.0,
            "reason": "40.0 requests/s on 4 servers, target 10: scaling up",
            "at": "2026-01-01T12:00:18Z",
            "tracks": [
                {"revision": revision("7"), "desiredReplicas": 1, "load": 5.0},
                {"revision": revision("8"), "desiredReplicas": 4, "load": 35.04},
            ],
        }
        obj = md(phase="Progressing", stable=STABLE, autoscaler=autoscaler)
        (line,) = [x for x in status_view(obj, NOW).splitlines() if x.startswith("Autoscaler:")]
        assert line == (
            "Autoscaler: 4 servers wanted (12s ago): 40.0 requests/s on 4 servers, target 10: "
            f"scaling up; on their own loads: {revision('7')[:10]} 1 (5), "
            f"{revision('8')[:10]} 4 (35.04)"
        )
        assert "Autoscaler:" not in status_view(md(phase="Healthy", stable=STABLE), NOW)

    def test_a_status_for_an_older_generation_says_so(self) -> None:
        obj = md(phase="Healthy", observedGeneration=2, stable=STABLE)
        assert "status is for generation 2, spec is generation 3" in status_view(obj, NOW)

    def test_no_status_yet_and_an_invalid_spec(self) -> None:
        obj = md()
        obj["spec"]["model"]["uri"] = "ftp://x"
        text = status_view(obj, NOW)
        assert "Phase:      unknown (no status yet)" in text
        assert "Spec:       invalid" in text
        assert "Stable:     -" in text
        assert "Canary" not in text

    def test_a_held_revision_and_a_refused_request_are_shown(self) -> None:
        obj = md(
            phase="RolledBack",
            observedGeneration=3,
            stable=STABLE,
            rolledBackRevision=revision("8"),
            lastRequest={
                "id": "r",
                "action": "promote",
                "at": "2026-01-01T12:00:00Z",
                "accepted": False,
                "message": "no canary to promote",
            },
        )
        text = status_view(obj, NOW)
        assert f"Held:       revision {revision('8')[:10]} (rolled back)" in text
        assert "Request:    promote refused 30s ago: no canary to promote" in text

    def test_measurements_without_data(self) -> None:
        assert measurement(None) == "no data"
        assert measurement({"requests": 0, "errorRate": 0}) == "0 req, 0.00% errors, p99 -"


class TestWhoAndWhereFrom:
    def test_history_says_who_asked_and_where_the_model_came_from(self) -> None:
        entry = {**HISTORY[0], "requestedBy": "alice@example.com",
                 "lineage": {"trainingRun": "runs:/7f3c", "metrics": {"auc": 0.94}}}  # fmt: skip
        dataset_only = {**HISTORY[1], "lineage": {"dataset": {"uri": "s3://d/x.parquet"}}}
        obj = md(phase="Healthy", stable=STABLE, history=[entry, dataset_only])
        lines = history_table(obj).splitlines()
        assert lines[1].split()[6:8] == ["alice@example.com", "runs:/7f3c"]
        assert lines[2].split()[6:8] == ["-", "s3://d/x.parquet"]


class TestShadowSteps:
    def test_the_status_says_what_is_mirrored_and_how_well_the_canary_agreed(self) -> None:
        steps = [{"shadow": {"percent": 20, "duration": "1m"}}, {"setWeight": 50}]
        canary = {**CANARY, "weight": 0, "setWeight": 0, "step": 0, "failedChecks": 0,
                  "shadowPercent": 20}  # fmt: skip
        agreement = {"samples": 212, "agreed": 66, "rate": 66 / 212, "mirrored": 212,
                     "dropped": 3, "canaryErrors": 0}  # fmt: skip
        obj = md(steps=steps, phase="Progressing", stable=STABLE, canary=canary,
                 lastAnalysis={**ANALYSIS, "verdict": "Fail", "agreement": agreement})  # fmt: skip
        lines = status_view(obj, NOW).splitlines()
        assert "Step:       1/2 shadow 20% for 1m" in lines
        assert "Weight:     0% (shadow: 20% mirrored)" in lines
        assert "Agreement:  31.1% of 212 compared rows agreed; 212 mirrored, 3 dropped" in lines


DRIFT = {
    "at": "2026-01-01T12:00:20Z",
    "window": "10m",
    "revision": STABLE["revision"],
    "samples": 1200,
    "features": [
        {"name": "input[2]", "score": 1.84},
        {"name": "input[0]", "score": 0.07},
        {"name": "input[1]", "score": 0.0},
    ],
    "prediction": {"output": "probabilities", "score": 0.31},
    "confidence": {"output": "probabilities", "mean": 0.62, "reference": 0.87, "score": 0.4},
    "drifting": True,
}
DRIFTING = {
    "type": "Drifting",
    "status": "True",
    "reason": "DriftDetected",
    "message": "input drift: input[2] PSI 1.84, input[0] 0.07 (threshold 0.2) over 1200 rows",
    "lastTransitionTime": "2026-01-01T12:00:20Z",
}


def monitored(**status: Any) -> dict[str, Any]:
    obj = md(version="7", phase="Healthy", stable=STABLE, **status)
    obj["spec"]["monitoring"] = {
        "reference": {"uri": "https://models.example.com/iris-7.reference.json"},
        "drift": {"threshold": 0.2},
    }
    return obj


class TestDrift:
    def test_a_bar_per_feature_highest_first_with_the_threshold_marked(self) -> None:
        lines = status_view(monitored(drift=DRIFT, conditions=[DRIFTING]), NOW).splitlines()
        start = lines.index(
            "Drift:      True (DriftDetected): input drift: input[2] PSI 1.84, input[0] 0.07 "
            "(threshold 0.2) over 1200 rows"
        )
        assert lines[start + 1] == (
            f"            window 10m ended 10s ago: 1200 rows, stable {STABLE['revision'][:10]}; "
            "PSI, threshold 0.2 at |"
        )
        section = lines[start + 2 : start + 8]
        assert section[0].split() == ["FEATURE", "PSI", "SCORE"]
        assert [row.split()[0] for row in section[1:5]] == [
            "input[2]", "input[0]", "input[1]", "probabilities"
        ]  # fmt: skip
        assert section[1].endswith("1.84")
        assert "#|#" in section[1]
        assert ">" in section[1]
        assert "|" in section[3]
        assert "#" not in section[3]
        assert section[5] == "  confidence of probabilities: mean 0.620, reference 0.870"

    def test_bars_are_scaled_to_the_threshold(self) -> None:
        assert drift_bar(0.0, 0.2, width=10) == "     |    "
        assert drift_bar(0.12, 0.2, width=10) == "###  |    "
        assert drift_bar(0.2, 0.2, width=10) == "#####|    "
        assert drift_bar(0.32, 0.2, width=10) == "#####|##  "
        assert drift_bar(5.0, 0.2, width=10) == "#####|###>"

    def test_before_the_first_window_only_the_verdict_is_shown(self) -> None:
        waiting = {**DRIFTING, "status": "Unknown", "reason": "NotEnoughData",
                   "message": "measuring the first 10m window"}  # fmt: skip
        lines = status_view(monitored(conditions=[waiting]), NOW).splitlines()
        assert "Drift:      Unknown (NotEnoughData): measuring the first 10m window" in lines
        assert not any(line.startswith("  FEATURE") for line in lines)

    def test_without_monitoring_there_is_no_drift_section(self) -> None:
        assert not any(
            line.startswith("Drift:") for line in status_view(progressing(), NOW).splitlines()
        )

    def test_json_has_status_drift(self) -> None:
        record = status_record(monitored(drift=DRIFT, conditions=[DRIFTING]))
        assert record["drift"] == DRIFT
        json.dumps(record)


class TestJsonRecords:
    def test_a_record_is_the_status_plus_name_generation_and_desired_revision(self) -> None:
        record = status_record(progressing())
        assert record["name"] == "iris"
        assert record["namespace"] == "prod"
        assert record["generation"] == 3
        assert record["desiredRevision"] == revision("8")
        assert record["phase"] == "Progressing"
        assert record["canary"]["weight"] == 33
        assert "result" not in record
        assert status_record(progressing(), "healthy")["result"] == "healthy"
        json.dumps(record)  # serialisable as one line

    def test_a_watch_changes_on_status_spec_or_generation_only(self) -> None:
        obj = progressing()
        same = copy.deepcopy(obj)
        same["metadata"]["resourceVersion"] = "99"
        assert change_key(obj) == change_key(same)
        moved = copy.deepcopy(obj)
        moved["status"]["canary"]["weight"] = 50
        assert change_key(obj) != change_key(moved)
        respec = copy.deepcopy(obj)
        respec["metadata"]["generation"] = 4
        assert change_key(obj) != change_key(respec)
