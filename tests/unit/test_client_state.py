"""The client's pure decisions: durations, when `status --wait` is over (every phase against
the revision the spec asks for), and which revision `undo --to-revision` means."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import pytest

from weir_operator.client.backend import UsageError
from weir_operator.client.state import (
    desired_revision,
    done_message,
    done_state,
    format_duration,
    observed,
    parse_duration,
    resolve_revision,
    waiting_message,
)
from weir_operator.core.render import revision_of
from weir_operator.core.spec import parse_model_deployment


def md(version: str = "8", generation: int = 3, **status: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "serving.weir.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "default", "generation": generation},
        "spec": {
            "model": {"uri": f"https://models.example.com/iris-{version}.onnx", "version": version}
        },
    }
    if status:
        obj["status"] = status
    return obj


DESIRED = revision_of(parse_model_deployment(md("8")).spec)
OLD = revision_of(parse_model_deployment(md("7")).spec)
STABLE_NEW = {"revision": DESIRED, "uri": "https://models.example.com/iris-8.onnx", "version": "8"}
STABLE_OLD = {"revision": OLD, "uri": "https://models.example.com/iris-7.onnx", "version": "7"}
CANARY_NEW = {**STABLE_NEW, "weight": 50, "step": 2}


class TestDurations:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("90s", 90),
            ("5m", 300),
            ("1h", 3600),
            ("1h30m", 5400),
            ("250ms", 0.25),
            ("15m", 900),
            ("42", 42),
            ("1.5", 1.5),
            (" 2m ", 120),
        ],
    )
    def test_go_style_durations_and_bare_seconds_are_read(self, text: str, seconds: float) -> None:
        assert parse_duration(text) == pytest.approx(seconds)

    @pytest.mark.parametrize("text", ["", "-5s", "5 minutes", "m", "1d", "5q", "1h-3m", "s5"])
    def test_anything_else_is_refused_with_an_example(self, text: str) -> None:
        with pytest.raises(ValueError, match=r"e\.g\. 90s, 5m, 1h"):
            parse_duration(text)

    @pytest.mark.parametrize(
        ("seconds", "text"),
        [
            (900, "15m"),
            (90, "1m30s"),
            (3600, "1h"),
            (5430, "1h30m30s"),
            (0.5, "0.5s"),
            (0, "0s"),
            (30, "30s"),
        ],
    )
    def test_durations_print_back_as_go_style_text(self, seconds: float, text: str) -> None:
        assert format_duration(seconds) == text


class TestDoneState:
    """Exit 0 only for Healthy on the spec's revision; 1 for the spec's revision rolled back
    or failed; None (keep waiting) otherwise, and always while the status is for an older
    generation."""

    @pytest.mark.parametrize(
        ("status", "expected"),
        [
            pytest.param({}, None, id="no-status"),
            pytest.param({"phase": "Pending", "observedGeneration": 3}, None, id="pending"),
            pytest.param(
                {"phase": "Healthy", "observedGeneration": 3, "stable": STABLE_NEW},
                "healthy",
                id="healthy-on-desired",
            ),
            pytest.param(
                {"phase": "Healthy", "observedGeneration": 4, "stable": STABLE_NEW},
                "healthy",
                id="healthy-observed-newer",
            ),
            pytest.param(
                {"phase": "Healthy", "observedGeneration": 2, "stable": STABLE_NEW},
                None,
                id="healthy-but-stale-generation",
            ),
            pytest.param(
                {"phase": "Healthy", "stable": STABLE_NEW},
                None,
                id="healthy-without-observed-generation",
            ),
            pytest.param(
                {"phase": "Healthy", "observedGeneration": 3, "stable": STABLE_OLD},
                None,
                id="healthy-on-old-revision",
            ),
            pytest.param(
                {
                    "phase": "Healthy",
                    "observedGeneration": 3,
                    "stable": STABLE_OLD,
                    "canary": CANARY_NEW,
                },
                None,
                id="healthy-with-canary",
            ),
            pytest.param(
                {
                    "phase": "Progressing",
                    "observedGeneration": 3,
                    "stable": STABLE_OLD,
                    "canary": CANARY_NEW,
                },
                None,
                id="progressing",
            ),
            pytest.param(
                {
                    "phase": "Paused",
                    "observedGeneration": 3,
                    "stable": STABLE_OLD,
                    "canary": CANARY_NEW,
                },
                None,
                id="paused",
            ),
            pytest.param(
                {"phase": "Progressing", "observedGeneration": 3, "stable": STABLE_NEW},
                None,
                id="first-revision-starting",
            ),
            pytest.param(
                {"phase": "Degraded", "observedGeneration": 3, "stable": STABLE_NEW},
                None,
                id="degraded-on-desired",
            ),
            pytest.param(
                {
                    "phase": "RolledBack",
                    "observedGeneration": 3,
                    "stable": STABLE_OLD,
                    "rolledBackRevision": DESIRED,
                },
                "failed",
                id="rolled-back",
            ),
            pytest.param(
                {
                    "phase": "RolledBack",
                    "observedGeneration": 2,
                    "stable": STABLE_OLD,
                    "rolledBackRevision": DESIRED,
                },
                None,
                id="rolled-back-stale-generation",
            ),
            pytest.param(
                {"phase": "RolledBack", "observedGeneration": 3, "stable": STABLE_OLD},
                "failed",
                id="rolled-back-phase-only",
            ),
            pytest.param(
                {
                    "phase": "RolledBack",
                    "observedGeneration": 3,
                    "stable": STABLE_OLD,
                    "rolledBackRevision": OLD,
                },
                "failed",
                id="rolled-back-phase-other-held",
            ),
            pytest.param(
                {
                    "phase": "Degraded",
                    "observedGeneration": 3,
                    "stable": STABLE_OLD,
                    "rolledBackRevision": DESIRED,
                },
                "failed",
                id="held-while-stable-degraded",
            ),
            pytest.param(
                {"phase": "Failed", "observedGeneration": 3}, "failed", id="first-revision-failed"
            ),
            pytest.param(
                {"phase": "Failed", "observedGeneration": 3, "stable": STABLE_NEW},
                "failed",
                id="failed-on-desired",
            ),
            pytest.param(
                {"phase": "Failed", "observedGeneration": 3, "stable": STABLE_OLD},
                None,
                id="failed-on-old-revision",
            ),
            pytest.param(
                {"phase": "Failed", "observedGeneration": 2}, None, id="failed-stale-generation"
            ),
        ],
    )
    def test_every_phase_against_the_desired_revision(
        self, status: dict[str, Any], expected: str | None
    ) -> None:
        assert done_state(md("8", generation=3, **status)) == expected

    def test_an_invalid_spec_once_observed_has_failed(self) -> None:
        obj = md("8", generation=2, phase="Failed", observedGeneration=2)
        obj["spec"]["model"]["uri"] = "ftp://nope"
        assert desired_revision(obj) is None
        assert done_state(obj) == "failed"
        assert "spec.model.uri" in done_message(obj, "failed")
        unobserved = copy.deepcopy(obj)
        unobserved["status"]["observedGeneration"] = 1
        assert done_state(unobserved) is None

    def test_observed_needs_a_status_for_this_generation(self) -> None:
        assert not observed(md())
        assert observed(md(generation=3, observedGeneration=3))
        assert not observed(md(generation=3, observedGeneration=2))
        without_generation = md(observedGeneration=1)
        del without_generation["metadata"]["generation"]
        assert observed(without_generation)

    def test_done_messages_name_the_revision_and_give_weirs_reason(self) -> None:
        healthy = md("8", phase="Healthy", observedGeneration=3, stable=STABLE_NEW)
        assert (
            done_message(healthy, "healthy")
            == f"iris: Healthy on revision {DESIRED[:10]} (version 8)"
        )
        history = [
            {
                "revision": DESIRED,
                "uri": "u",
                "outcome": "RolledBack",
                "at": "2026-01-01T00:00:00Z",
                "reason": "canary p99 900 ms > 500 ms",
            }
        ]
        rolled = md(
            "8",
            phase="RolledBack",
            observedGeneration=3,
            stable=STABLE_OLD,
            rolledBackRevision=DESIRED,
            history=history,
        )
        assert (
            done_message(rolled, "failed")
            == f"iris: revision {DESIRED[:10]} (version 8) was rolled back: canary p99 900 ms > 500 ms"
        )
        aborted = copy.deepcopy(rolled)
        aborted["status"]["history"][0]["outcome"] = "Aborted"
        assert "was aborted" in done_message(aborted, "failed")
        ready = {
            "type": "Ready",
            "status": "False",
            "reason": "ModelFetchFailed",
            "message": "sha256 mismatch",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
        failed = md("8", phase="Failed", observedGeneration=3, conditions=[ready])
        assert (
            done_message(failed, "failed")
            == f"iris: revision {DESIRED[:10]} (version 8) failed: sha256 mismatch"
        )

    def test_a_timed_out_wait_says_what_it_was_waiting_for(self) -> None:
        assert "has not observed generation 3" in waiting_message(
            md(generation=3, observedGeneration=2)
        )
        progressing = md(
            phase="Progressing", observedGeneration=3, stable=STABLE_OLD, canary=CANARY_NEW
        )
        assert waiting_message(progressing) == f"phase Progressing, canary {DESIRED[:10]} at 50%"


class TestUndoTarget:
    HISTORY: ClassVar[list[dict[str, str]]] = [
        {"revision": "aaaa1111bbbb2222", "outcome": "Promoted"},
        {"revision": "cccc3333dddd4444", "outcome": "RolledBack"},
        {"revision": "aaaa9999eeee0000", "outcome": "Promoted"},
    ]
    STATUS: ClassVar[dict[str, Any]] = {
        "stable": {"revision": "ffff5555aaaa6666", "uri": "u"},
        "history": HISTORY,
    }

    @pytest.mark.parametrize(
        ("target", "revision"),
        [("1", "aaaa1111bbbb2222"), ("2", "cccc3333dddd4444"), ("3", "aaaa9999eeee0000")],
    )
    def test_an_index_counts_from_the_most_recent_history_entry(
        self, target: str, revision: str
    ) -> None:
        assert resolve_revision(self.STATUS, target) == revision

    @pytest.mark.parametrize(
        ("target", "revision"),
        [
            ("cccc", "cccc3333dddd4444"),
            ("aaaa1", "aaaa1111bbbb2222"),
            ("AAAA99", "aaaa9999eeee0000"),
            ("ffff5555", "ffff5555aaaa6666"),
            ("cccc3333dddd4444", "cccc3333dddd4444"),
        ],
    )
    def test_a_hash_prefix_names_a_revision_of_the_history_or_the_stable_one(
        self, target: str, revision: str
    ) -> None:
        assert resolve_revision(self.STATUS, target) == revision

    @pytest.mark.parametrize(
        ("target", "problem"),
        [
            ("0", "the history has 3 entries"),
            ("4", "the history has 3 entries"),
            ("aaaa", "matches several revisions"),
            ("abcd", "no such revision"),
            ("ab", "at least 4 hex characters"),
            ("zzzzzz", "at least 4 hex characters"),
        ],
    )
    def test_unknown_ambiguous_or_malformed_targets_are_usage_errors(
        self, target: str, problem: str
    ) -> None:
        with pytest.raises(UsageError, match=problem) as raised:
            resolve_revision(self.STATUS, target)
        assert raised.value.code == 3

    def test_an_empty_history_has_no_index(self) -> None:
        with pytest.raises(UsageError, match="has 0 entries"):
            resolve_revision({}, "1")
