"""The client commands against a fake Backend and a fake clock: what they send, what they
print, and their exit codes (0 ok, 1 rolled back / failed / refused, 2 timed out, 3 usage
error, not found or unreachable). Parsing and error reporting go through the real `weir`
argument parser."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from weir_operator.cli import build_parser, main
from weir_operator.client import cli as client_cli
from weir_operator.client import commands
from weir_operator.client.backend import Applied, Manifest, NotFound, Refused, Unreachable
from weir_operator.client.commands import Clock, JsonLines, LiveView, TextBlocks, make_display
from weir_operator.core.render import revision_of
from weir_operator.core.spec import parse_model_deployment

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SHA = "ab" * 32


def md(version: str = "8", generation: int = 2, **status: Any) -> Manifest:
    obj: Manifest = {
        "apiVersion": "serving.weir.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": "iris",
            "namespace": "default",
            "generation": generation,
            "creationTimestamp": "2026-01-01T11:00:00Z",
        },
        "spec": {
            "model": {
                "uri": f"https://models.example.com/iris-{version}.onnx",
                "version": version,
                "name": "flowers",
            }
        },
    }
    if status:
        obj["status"] = status
    return obj


def rev(version: str) -> str:
    return revision_of(parse_model_deployment(md(version)).spec)


STABLE_7 = {"revision": rev("7"), "uri": "https://models.example.com/iris-7.onnx", "version": "7"}
STABLE_8 = {"revision": rev("8"), "uri": "https://models.example.com/iris-8.onnx", "version": "8"}
CANARY_8 = {**STABLE_8, "weight": 10, "setWeight": 10, "step": 0}
PROGRESSING = {
    "phase": "Progressing",
    "observedGeneration": 2,
    "stable": STABLE_7,
    "canary": CANARY_8,
}
HEALTHY = {"phase": "Healthy", "observedGeneration": 2, "stable": STABLE_8}
ROLLED_BACK = {
    "phase": "RolledBack",
    "observedGeneration": 2,
    "stable": STABLE_7,
    "rolledBackRevision": rev("8"),
    "history": [
        {
            "revision": rev("8"),
            "uri": "u",
            "outcome": "RolledBack",
            "at": "2026-01-01T11:59:00Z",
            "reason": "error rate 12% > 1%",
        }
    ],
}


class FakeBackend:
    """In memory. `statuses` are what successive reads show (the last one stays); `answers`
    maps a request action to what Weir answers (accepted, message), or None for no answer."""

    namespace = "default"
    poll_interval = 0.5

    def __init__(self, *objects: Manifest, statuses: Sequence[dict[str, Any]] = ()) -> None:
        self.objects = {o["metadata"]["name"]: copy.deepcopy(o) for o in objects}
        self.statuses = list(statuses)
        self.reads = 0
        self.requests: list[tuple[str, str, str | None]] = []
        self.models: list[tuple[str, Manifest]] = []
        self.applied: list[Manifest] = []
        self.answers: dict[str, tuple[bool, str] | None] = {}
        self.events_read = 0
        self.unreachable_reads = 0
        self.closed = False

    def _object(self, name: str) -> Manifest:
        if name not in self.objects:
            raise NotFound(f'modeldeployment "{name}" not found in namespace "default"')
        return self.objects[name]

    def list_all(self) -> list[Manifest]:
        return [copy.deepcopy(o) for _, o in sorted(self.objects.items())]

    def get(self, name: str) -> Manifest:
        obj = self._object(name)
        self.reads += 1
        if self.unreachable_reads:
            self.unreachable_reads -= 1
            raise Unreachable("cannot reach the Kubernetes API server https://k8s:6443: refused")
        if self.statuses:
            obj["status"] = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return copy.deepcopy(obj)

    def apply(self, documents: Sequence[Manifest]) -> list[Applied]:
        results = []
        for document in documents:
            name = document["metadata"]["name"]
            result = "configured" if name in self.objects else "created"
            self.objects[name] = copy.deepcopy(document)
            self.applied.append(document)
            results.append(Applied(name, result))
        return results

    def set_model(self, name: str, model: Manifest, reference: Manifest | None = None) -> Manifest:
        obj = self._object(name)
        self.models.append((name, model))
        kept = {"name": obj["spec"]["model"]["name"]} if obj["spec"]["model"].get("name") else {}
        obj["spec"]["model"] = {**model, **kept}
        if reference is not None:
            obj["spec"]["monitoring"] = {
                **obj["spec"].get("monitoring", {}),
                "reference": reference,
            }
        obj["metadata"]["generation"] += 1
        return copy.deepcopy(obj)

    def request(self, name: str, action: str, revision: str | None) -> str:
        obj = self._object(name)
        request_id = f"req-{len(self.requests) + 1}"
        self.requests.append((name, action, revision))
        answer = self.answers.get(action, (True, f"{action} done"))
        if answer is not None:
            accepted, message = answer
            record = {
                "id": request_id,
                "action": action,
                "at": "2026-01-01T12:00:00Z",
                "accepted": accepted,
                "message": message,
            }
            obj.setdefault("status", {})["lastRequest"] = record
            self.statuses = [{**s, "lastRequest": record} for s in self.statuses]
        return request_id

    def events(self, name: str, limit: int) -> list[Manifest]:
        self.events_read += 1
        return [
            {
                "at": "2026-01-01T11:59:50Z",
                "type": "Normal",
                "reason": "Promoted",
                "message": "revision is stable",
            }
        ]

    def close(self) -> None:
        self.closed = True


class FakeClock(Clock):
    """Time moves only when a command sleeps; `on_sleep` lets a test change the world then."""

    def __init__(self, on_sleep: Callable[[float], None] | None = None) -> None:
        self.time = 0.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep
        super().__init__(monotonic=lambda: self.time, sleep=self._sleep, wall=lambda: NOW)

    def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += seconds
        if self.on_sleep is not None:
            self.on_sleep(self.time)


def streams() -> tuple[io.StringIO, io.StringIO]:
    return io.StringIO(), io.StringIO()


# -- apply, get, history, set-model ---------------------------------------------------------------


def test_apply_prints_one_line_per_object() -> None:
    backend = FakeBackend(md())
    out, _ = streams()
    documents = [md("9"), {**md(), "metadata": {"name": "mnist", "namespace": "default"}}]
    assert commands.apply(backend, out, documents) == 0
    assert out.getvalue().splitlines() == [
        "modeldeployment.serving.weir.dev/iris configured",
        "modeldeployment.serving.weir.dev/mnist created",
    ]


def test_get_lists_shows_one_and_dumps_json_and_yaml() -> None:
    backend = FakeBackend(md(**HEALTHY))
    out, err = streams()
    assert commands.get(backend, out, err, clock=FakeClock()) == 0
    assert out.getvalue().splitlines()[1].split() == ["iris", "Healthy", "8", "-", "-", "-", "60m"]
    out, err = streams()
    assert commands.get(backend, out, err, "iris", "json") == 0
    assert json.loads(out.getvalue())["status"]["phase"] == "Healthy"
    out, err = streams()
    assert commands.get(backend, out, err, None, "yaml") == 0
    listed = yaml.safe_load(out.getvalue())
    assert listed["kind"] == "List"
    assert [o["metadata"]["name"] for o in listed["items"]] == ["iris"]
    with pytest.raises(NotFound):
        commands.get(backend, out, err, "nope")


def test_get_with_nothing_there_says_so_on_stderr() -> None:
    out, err = streams()
    assert commands.get(FakeBackend(), out, err) == 0
    assert out.getvalue() == ""
    assert err.getvalue() == "No ModelDeployments found in namespace default.\n"


def test_history_as_a_table_or_json() -> None:
    backend = FakeBackend(md(**ROLLED_BACK))
    out, err = streams()
    assert commands.history(backend, out, err, "iris") == 0
    assert out.getvalue().splitlines()[1].split()[:5] == [
        "1",
        rev("8")[:10],
        "-",
        "u",
        "RolledBack",
    ]
    out, err = streams()
    assert commands.history(backend, out, err, "iris", "json") == 0
    assert json.loads(out.getvalue())[0]["reason"] == "error rate 12% > 1%"
    out, err = streams()
    assert commands.history(FakeBackend(md()), out, err, "iris") == 0
    assert "no finished rollout yet" in err.getvalue()


def test_set_model_replaces_the_model_keeping_its_served_name() -> None:
    backend = FakeBackend(md("7"))
    out, _ = streams()
    assert (
        commands.set_model(backend, out, "iris", "https://models.example.com/iris-9.onnx", SHA, "9")
        == 0
    )
    assert backend.models == [
        ("iris", {"uri": "https://models.example.com/iris-9.onnx", "sha256": SHA, "version": "9"})
    ]
    assert backend.objects["iris"]["spec"]["model"]["name"] == "flowers"
    new = revision_of(parse_model_deployment(backend.objects["iris"]).spec)
    assert (
        out.getvalue()
        == f"iris: spec.model set to https://models.example.com/iris-9.onnx (version 9): revision {new[:10]}\n"
    )


def test_set_model_to_what_is_there_says_nothing_rolls_out() -> None:
    backend = FakeBackend(md("7"))
    out, _ = streams()
    commands.set_model(backend, out, "iris", "https://models.example.com/iris-7.onnx", None, "7")
    assert "nothing to roll out" in out.getvalue()


@pytest.mark.parametrize(
    ("uri", "sha256", "problem"),
    [
        ("ftp://x/m.onnx", None, "spec.model.uri: must be an https://"),
        ("https://x/m.onnx", "123", "spec.model.sha256: must be 64 hexadecimal"),
    ],
)
def test_set_model_validates_before_sending(uri: str, sha256: str | None, problem: str) -> None:
    backend = FakeBackend(md())
    with pytest.raises(commands.UsageError, match=problem):
        commands.set_model(backend, io.StringIO(), "iris", uri, sha256)
    assert backend.models == []


def test_set_model_with_a_reference_changes_both_in_one_revision() -> None:
    backend = FakeBackend(md("7"))
    before = revision_of(parse_model_deployment(backend.objects["iris"]).spec)
    generation = backend.objects["iris"]["metadata"]["generation"]
    out, _ = streams()
    reference = "https://models.example.com/iris-9.reference.json"
    assert (
        commands.set_model(
            backend,
            out,
            "iris",
            "https://models.example.com/iris-9.onnx",
            version="9",
            reference_uri=reference,
            reference_sha256=SHA,
        )
        == 0
    )
    spec = parse_model_deployment(backend.objects["iris"]).spec
    assert spec.monitoring is not None
    assert spec.monitoring.reference is not None
    assert (spec.monitoring.reference.uri, spec.monitoring.reference.sha256) == (reference, SHA)
    assert backend.objects["iris"]["metadata"]["generation"] == generation + 1, "one change"
    assert revision_of(spec) != before
    assert f"with the reference {reference}" in out.getvalue()


@pytest.mark.parametrize(
    ("reference_uri", "reference_sha256", "problem"),
    [
        ("ftp://x/r.json", None, "spec.monitoring.reference.uri: must be an https://"),
        ("https://x/r.json", "12", "spec.monitoring.reference.sha256: must be 64 hexadecimal"),
        (None, SHA, "--reference-sha256 needs --reference-uri"),
    ],
)
def test_set_model_validates_the_reference_before_sending(
    reference_uri: str | None, reference_sha256: str | None, problem: str
) -> None:
    backend = FakeBackend(md())
    with pytest.raises(commands.UsageError, match=problem):
        commands.set_model(
            backend,
            io.StringIO(),
            "iris",
            "https://x/m.onnx",
            reference_uri=reference_uri,
            reference_sha256=reference_sha256,
        )
    assert backend.models == []


# -- requests -------------------------------------------------------------------------------------


def test_promote_guards_with_the_canary_it_saw_and_reports_the_answer() -> None:
    backend = FakeBackend(md(**PROGRESSING))
    out, err = streams()
    assert commands.request(backend, out, err, "iris", "promote", clock=FakeClock()) == 0
    assert backend.requests == [("iris", "promote", rev("8"))]
    assert out.getvalue() == "iris: promote accepted: promote done\n"


@pytest.mark.parametrize(
    ("action", "status", "revision"),
    [
        ("promote-full", PROGRESSING, rev("8")),
        ("abort", PROGRESSING, rev("8")),
        ("retry", ROLLED_BACK, rev("8")),
        ("undo", HEALTHY, None),
        ("promote", HEALTHY, None),
    ],
)
def test_each_action_sends_the_revision_it_is_about(
    action: str, status: dict[str, Any], revision: str | None
) -> None:
    backend = FakeBackend(md(**status))
    assert commands.request(backend, *streams(), "iris", action, clock=FakeClock()) == 0
    assert backend.requests == [("iris", action, revision)]


def test_a_refused_request_exits_1_with_weirs_reason_on_stderr() -> None:
    backend = FakeBackend(md(**HEALTHY))
    backend.answers["promote"] = (False, "there is no canary to promote")
    out, err = streams()
    assert commands.request(backend, out, err, "iris", "promote", clock=FakeClock()) == 1
    assert out.getvalue() == ""
    assert err.getvalue() == "weir: iris: promote refused: there is no canary to promote\n"


def test_a_request_waits_for_its_own_id_then_times_out_with_exit_2() -> None:
    obj = md(**PROGRESSING)
    obj["status"]["lastRequest"] = {
        "id": "older",
        "action": "promote",
        "at": "x",
        "accepted": True,
        "message": "old",
    }
    backend = FakeBackend(obj)
    backend.answers["abort"] = None  # nobody answers
    clock = FakeClock()
    out, err = streams()
    assert commands.request(backend, out, err, "iris", "abort", timeout=30, clock=clock) == 2
    assert clock.time == pytest.approx(30)
    assert set(clock.sleeps) == {0.5}
    assert "no answer to the abort request req-1 within 30s" in err.getvalue()
    assert "is the operator (or `weir run`) running?" in err.getvalue()


def test_a_request_answered_later_is_reported() -> None:
    backend = FakeBackend(md(**PROGRESSING))
    backend.answers["abort"] = None

    def answer(now: float) -> None:
        if now >= 3:
            backend.objects["iris"]["status"]["lastRequest"] = {
                "id": "req-1",
                "action": "abort",
                "at": "x",
                "accepted": True,
                "message": "rolled back",
            }

    out, err = streams()
    assert commands.request(backend, out, err, "iris", "abort", clock=FakeClock(answer)) == 0
    assert out.getvalue() == "iris: abort accepted: rolled back\n"


def test_no_wait_only_sends() -> None:
    backend = FakeBackend(md(**PROGRESSING))
    backend.answers["promote"] = None
    out, err = streams()
    assert (
        commands.request(backend, out, err, "iris", "promote", wait=False, clock=FakeClock()) == 0
    )
    assert out.getvalue() == f"iris: promote request req-1 sent for revision {rev('8')[:10]}\n"
    assert backend.reads == 1


def test_undo_to_a_history_index_sends_its_full_revision() -> None:
    history = [
        {"revision": "1111aaaa2222bbbb", "uri": "u1", "outcome": "Promoted", "at": "x"},
        {"revision": "3333cccc4444dddd", "uri": "u2", "outcome": "Promoted", "at": "x"},
    ]
    backend = FakeBackend(md(**{**HEALTHY, "history": history}))
    assert (
        commands.request(backend, *streams(), "iris", "undo", to_revision="2", clock=FakeClock())
        == 0
    )
    assert backend.requests == [("iris", "undo", "3333cccc4444dddd")]
    with pytest.raises(commands.UsageError, match="the history has 2 entries"):
        commands.request(backend, *streams(), "iris", "undo", to_revision="3", clock=FakeClock())
    assert len(backend.requests) == 1  # nothing sent for a bad target


# -- status ---------------------------------------------------------------------------------------


def test_status_shows_the_view_with_events_or_one_json_line() -> None:
    backend = FakeBackend(md(**PROGRESSING))
    out, err = streams()
    assert commands.status(backend, out, err, "iris", clock=FakeClock()) == 0
    assert out.getvalue().startswith(
        "Name:       iris (namespace default)\nPhase:      Progressing\n"
    )
    assert "Events:" in out.getvalue()
    out, err = streams()
    assert commands.status(backend, out, err, "iris", output="json", clock=FakeClock()) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert (record["name"], record["generation"], record["desiredRevision"], record["phase"]) == (
        "iris",
        2,
        rev("8"),
        "Progressing",
    )


@pytest.mark.parametrize(
    ("timeline", "code", "message"),
    [
        (
            [
                {"observedGeneration": 1, "phase": "Healthy", "stable": STABLE_7},
                PROGRESSING,
                PROGRESSING,
                HEALTHY,
            ],
            0,
            f"iris: Healthy on revision {rev('8')[:10]} (version 8)",
        ),
        (
            [PROGRESSING, ROLLED_BACK],
            1,
            f"iris: revision {rev('8')[:10]} (version 8) was rolled back: error rate 12% > 1%",
        ),
        (
            [
                {
                    "phase": "Failed",
                    "observedGeneration": 2,
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "False",
                            "reason": "ModelFetchFailed",
                            "message": "404 from models.example.com",
                            "lastTransitionTime": "x",
                        }
                    ],
                }
            ],
            1,
            "failed: 404 from models.example.com",
        ),
        (
            [
                {
                    "observedGeneration": 1,
                    "phase": "RolledBack",
                    "stable": STABLE_7,
                    "rolledBackRevision": rev("8"),
                },
                HEALTHY,
            ],
            0,
            "(version 8)",
        ),  # an old generation's verdict is not this one's
    ],
)
def test_status_wait_ends_with_the_rollouts_verdict(
    timeline: list[dict[str, Any]], code: int, message: str
) -> None:
    backend = FakeBackend(md(), statuses=timeline)
    clock = FakeClock()
    out, err = streams()
    assert commands.status(backend, out, err, "iris", wait=True, clock=clock) == code
    assert out.getvalue().rstrip("\n").splitlines()[-1].endswith(message)
    assert out.getvalue().startswith("Name:")  # the final view, then the verdict
    assert clock.sleeps == [0.5] * (len(timeline) - 1)
    progress = err.getvalue().splitlines()
    assert all(line.startswith("weir status: iris: ") for line in progress), progress
    assert len(progress) <= len(timeline) - 1  # a line per change while it waits, no more


def test_status_wait_prints_a_line_each_time_the_rollout_moves_and_only_then() -> None:
    """CI systems kill a job that prints nothing for 10 minutes."""
    at_50 = {**PROGRESSING, "canary": {**CANARY_8, "weight": 50, "setWeight": 50, "step": 2}}
    passed = {**at_50, "lastAnalysis": {"verdict": "Pass", "at": "2026-01-01T12:00:00Z"}}
    timeline = [PROGRESSING, PROGRESSING, at_50, at_50, passed, HEALTHY]
    out, err = streams()
    code = commands.status(FakeBackend(md(), statuses=timeline), out, err, "iris", wait=True,
                           clock=FakeClock())  # fmt: skip
    assert code == 0
    assert err.getvalue().splitlines() == [
        "weir status: iris: Progressing, canary 8 at 10%, step 1/4 setWeight 10",
        "weir status: iris: Progressing, canary 8 at 50%, step 3/4 setWeight 50",
        "weir status: iris: Progressing, canary 8 at 50%, step 3/4 setWeight 50, "
        "last analysis Pass",
    ]


def test_status_wait_times_out_with_exit_2_and_says_what_it_waited_for() -> None:
    backend = FakeBackend(md(), statuses=[PROGRESSING])
    clock = FakeClock()
    out, err = streams()
    assert commands.status(backend, out, err, "iris", wait=True, timeout=90, clock=clock) == 2
    assert clock.time == pytest.approx(90)
    assert err.getvalue().splitlines() == [
        "weir status: iris: Progressing, canary 8 at 10%, step 1/4 setWeight 10",
        f"weir: timed out after 1m30s waiting for iris: phase Progressing, canary {rev('8')[:10]} at 10%",
    ]


def test_status_wait_defaults_to_15_minutes() -> None:
    clock = FakeClock()
    assert (
        commands.status(
            FakeBackend(md(), statuses=[PROGRESSING]), *streams(), "iris", wait=True, clock=clock
        )
        == 2
    )
    assert clock.time == pytest.approx(15 * 60)


def test_status_wait_json_prints_one_line_with_the_result() -> None:
    for timeline, result in (
        ([PROGRESSING, HEALTHY], "healthy"),
        ([ROLLED_BACK], "failed"),
        ([PROGRESSING], "timeout"),
    ):
        out, err = streams()
        commands.status(
            FakeBackend(md(), statuses=timeline),
            out,
            err,
            "iris",
            wait=True,
            timeout=5,
            output="json",
            clock=FakeClock(),
        )
        lines = out.getvalue().splitlines()
        assert len(lines) == 1, lines
        assert json.loads(lines[0])["result"] == result


def test_status_wait_rides_out_an_unreachable_server_with_one_warning() -> None:
    backend = FakeBackend(md(), statuses=[PROGRESSING, HEALTHY])
    backend.unreachable_reads = 0
    clock = FakeClock(lambda now: setattr(backend, "unreachable_reads", 3) if now == 0.5 else None)
    out, err = streams()
    assert commands.status(backend, out, err, "iris", wait=True, clock=clock) == 0
    assert err.getvalue().count("cannot reach the Kubernetes API server https://k8s:6443") == 1
    assert err.getvalue().rstrip().endswith("still trying")


def test_status_wait_on_a_missing_object_raises_not_found() -> None:
    with pytest.raises(NotFound):
        commands.status(FakeBackend(), *streams(), "iris", wait=True, clock=FakeClock())


def test_watch_json_prints_a_line_per_change_only() -> None:
    timeline = [
        PROGRESSING,
        PROGRESSING,
        {**PROGRESSING, "canary": {**CANARY_8, "weight": 50}},
        HEALTHY,
    ]
    out, err = streams()
    code = commands.status(
        FakeBackend(md(), statuses=timeline),
        out,
        err,
        "iris",
        watch=True,
        wait=True,
        output="json",
        clock=FakeClock(),
    )
    assert code == 0
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [
        (r["phase"], (r.get("canary") or {}).get("weight"), r.get("result")) for r in records
    ] == [
        ("Progressing", 10, None),
        ("Progressing", 50, None),
        ("Healthy", None, "healthy"),
    ]


def test_watch_without_a_terminal_prints_a_block_per_change() -> None:
    timeline = [
        PROGRESSING,
        PROGRESSING,
        PROGRESSING,
        {**PROGRESSING, "canary": {**CANARY_8, "weight": 50}},
    ]
    backend = FakeBackend(md(), statuses=timeline)
    out, err = streams()
    assert (
        commands.status(backend, out, err, "iris", watch=True, timeout=10, clock=FakeClock()) == 2
    )
    blocks = out.getvalue().split("--- 12:00:00\n")[1:]
    assert len(blocks) == 2
    assert "Weight:     10%" in blocks[0]
    assert "Weight:     50%" in blocks[1]
    assert backend.events_read == 2  # events are read only when something changed
    assert "timed out after 10s watching" in err.getvalue()


def test_watch_and_wait_print_the_verdict_after_the_last_block() -> None:
    out, err = streams()
    code = commands.status(
        FakeBackend(md(), statuses=[PROGRESSING, ROLLED_BACK]),
        out,
        err,
        "iris",
        watch=True,
        wait=True,
        clock=FakeClock(),
    )
    assert code == 1
    assert out.getvalue().count("--- 12:00:00") == 2
    assert out.getvalue().rstrip().splitlines()[-1].endswith("was rolled back: error rate 12% > 1%")


def test_a_terminal_gets_a_live_view() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    backend, clock = FakeBackend(md()), FakeClock()
    assert isinstance(make_display(backend, io.StringIO(), "text", clock), TextBlocks)
    assert isinstance(make_display(backend, Terminal(), "json", clock), JsonLines)
    terminal = Terminal()
    display = make_display(backend, terminal, "text", clock)
    assert isinstance(display, LiveView)
    display.show(md(**PROGRESSING), None)
    display.show(md(**HEALTHY), "healthy")
    display.close()
    assert "Phase:      Progressing" in terminal.getvalue()
    assert "Phase:      Healthy" in terminal.getvalue()


# -- the command line ------------------------------------------------------------------------------


def invoke(
    argv: list[str],
    backend: FakeBackend | None,
    monkeypatch: pytest.MonkeyPatch,
    environ: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    """`weir ARGV` through the real parser, with `backend` standing in for the cluster."""
    if backend is not None:
        monkeypatch.setattr(client_cli, "connect", lambda args, environ: backend)
    args = build_parser().parse_args(argv)
    out, err = streams()
    code = client_cli.run(args, out, err, environ or {})
    return code, out.getvalue(), err.getvalue()


def test_errors_are_one_line_on_stderr_with_their_exit_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, out, err = invoke(["status", "nope"], FakeBackend(), monkeypatch)
    assert (code, out) == (3, "")
    assert err == 'weir status: error: modeldeployment "nope" not found in namespace "default"\n'

    class Refusing(FakeBackend):
        def request(self, name: str, action: str, revision: str | None) -> str:
            raise Refused("https://k8s:6443 refused: 403 Forbidden: modeldeployments is forbidden")

    code, _, err = invoke(["abort", "iris"], Refusing(md()), monkeypatch)
    assert code == 1
    assert (
        err
        == "weir abort: error: https://k8s:6443 refused: 403 Forbidden: modeldeployments is forbidden\n"
    )

    class Down(FakeBackend):
        def list_all(self) -> list[Manifest]:
            raise Unreachable(
                "cannot reach the Kubernetes API server https://10.0.0.1:6443: timed out"
            )

    backend = Down()
    code, _, err = invoke(["get"], backend, monkeypatch)
    assert code == 3
    assert "https://10.0.0.1:6443" in err
    assert backend.closed


def test_apply_validates_every_file_before_connecting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(md()))
    bad = tmp_path / "bad.yaml"
    broken = md()
    broken["spec"]["replicas"] = "two"
    bad.write_text(yaml.safe_dump(broken))

    def refuse(args: Any, environ: Any) -> FakeBackend:
        raise AssertionError("connected although a manifest is invalid")

    monkeypatch.setattr(client_cli, "connect", refuse)
    code, out, err = invoke(["apply", "-f", str(good), "-f", str(bad)], None, monkeypatch)
    assert (code, out) == (3, "")
    assert err.splitlines() == [
        "weir apply: error: nothing applied: 1 problem in the manifests",
        f"  {bad} (document 1, iris): spec.replicas: Input should be a valid integer",
    ]


def test_apply_places_documents_in_the_namespace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "m.yaml"
    document = md()
    del document["metadata"]["namespace"]
    path.write_text(yaml.safe_dump(document))
    backend = FakeBackend()
    backend.namespace = "team"
    code, out, _ = invoke(["apply", "-f", str(path)], backend, monkeypatch)
    assert (code, out) == (0, "modeldeployment.serving.weir.dev/iris created\n")
    assert backend.applied[0]["metadata"]["namespace"] == "team"


@pytest.mark.parametrize(
    ("argv", "backend_status", "code"),
    [
        (["status", "iris", "--wait", "--timeout", "2s"], HEALTHY, 0),
        (["status", "iris", "--wait", "--timeout", "2s"], ROLLED_BACK, 1),
        (["status", "iris", "--wait", "--timeout", "0.2"], PROGRESSING, 2),
        (["status", "iris", "--wait", "--timeout", "soon"], HEALTHY, 3),
        (["promote", "iris", "--full"], PROGRESSING, 0),
        (["undo", "iris", "--to-revision", "9"], HEALTHY, 3),
        (["set-model", "iris", "--uri", "https://m/x.onnx", "--sha256", "bad"], HEALTHY, 3),
        (["get", "iris", "-o", "wide"], HEALTHY, 0),
        (["history", "iris", "-o", "json"], ROLLED_BACK, 0),
    ],
)
def test_exit_codes_through_the_parser(
    argv: list[str], backend_status: dict[str, Any], code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = FakeBackend(md(**backend_status))
    backend.poll_interval = 0.05  # real time: the parser's own clock
    assert invoke(argv, backend, monkeypatch)[0] == code


def test_promote_full_is_the_promote_full_action(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = FakeBackend(md(**PROGRESSING))
    invoke(["promote", "iris", "--full", "--no-wait"], backend, monkeypatch)
    assert backend.requests == [("iris", "promote-full", rev("8"))]


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["get", "--bogus"],
        ["get", "-o", "xml"],
        ["set-model", "iris"],
        ["apply"],
        ["undo"],
        ["status", "iris", "--wait", "extra"],
    ],
)
def test_usage_errors_exit_3(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 3
    assert "usage: weir" in capsys.readouterr().err


def test_the_place_is_local_when_asked_else_kubernetes(tmp_path: Path) -> None:
    from weir_operator.client.kube_backend import KubeBackend
    from weir_operator.client.local_backend import LocalBackend

    def connect(argv: list[str], environ: dict[str, str]) -> Any:
        return client_cli.connect(build_parser().parse_args(argv), environ)

    local = connect(["get", "--local", "127.0.0.1:8081"], {})
    assert isinstance(local, LocalBackend)
    assert local.url == "http://127.0.0.1:8081"
    assert connect(["get"], {"WEIR_LOCAL": "http://127.0.0.1:9"}).url == "http://127.0.0.1:9"
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "a",
                "clusters": [{"name": "c", "cluster": {"server": "https://k8s.example.com:6443"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "a", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}},
                    {"name": "b", "context": {"cluster": "c", "user": "u"}},
                ],
            }
        )
    )
    # an explicit kubeconfig wins over WEIR_LOCAL; the namespace comes from the context
    kube = connect(["get", "--kubeconfig", str(kubeconfig)], {"WEIR_LOCAL": "http://127.0.0.1:9"})
    assert isinstance(kube, KubeBackend)
    assert (kube.server, kube.namespace) == ("https://k8s.example.com:6443", "team-a")
    assert (
        connect(["get", "--context", "b"], {"KUBECONFIG": str(kubeconfig)}).namespace == "default"
    )
    assert connect(["get", "-n", "x"], {"KUBECONFIG": str(kubeconfig)}).namespace == "x"
    for argv, environ, problem in [
        (["get", "--local", "http://x", "--context", "a"], {}, "pick one"),
        (["get", "--local", "http://x", "-n", "prod"], {}, "only namespace 'default'"),
        (["get", "--context", "zzz"], {"KUBECONFIG": str(kubeconfig)}, "has no context 'zzz'"),
        (["get"], {"KUBECONFIG": str(tmp_path / "missing")}, "no such file"),
        (["get"], {"HOME": str(tmp_path)}, "no Kubernetes cluster configured"),
    ]:
        with pytest.raises(commands.ClientError, match=problem) as raised:
            connect(argv, environ)
        assert raised.value.code == 3
