"""The commands, each a function of a `Backend`, output streams and a clock, returning its exit
code: 0 ok, 1 rolled back / failed / refused, 2 timed out, 3 usage error, not found or
unreachable (raised as `ClientError`s and reported by the caller)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

import yaml
from pydantic import ValidationError

from weir_operator.client.backend import (
    FAILED,
    OK,
    TIMED_OUT,
    Backend,
    ClientError,
    Manifest,
    Unreachable,
    UsageError,
)
from weir_operator.client.state import (
    DoneState,
    desired_revision,
    done_message,
    done_state,
    format_duration,
    resolve_revision,
    status_of,
    waiting_message,
)
from weir_operator.client.views import (
    STATUS_EVENTS,
    change_key,
    get_table,
    history_table,
    progress_line,
    status_record,
    status_view,
)
from weir_operator.core.spec import GROUP, ModelSource, MonitoringReference, describe_errors

STATUS_TIMEOUT = 15 * 60.0
REQUEST_TIMEOUT = 30.0
GUARDED_BY_CANARY = frozenset({"promote", "promote-full", "abort"})


@dataclass
class Clock:
    """Time, so that waits are tested without waiting."""

    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    wall: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def now(self) -> datetime:
        return self.wall()


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=False, default=str)


def _dump(value: Any, output: str) -> str:
    if output == "yaml":
        return yaml.safe_dump(value, sort_keys=False).rstrip("\n")
    return json.dumps(value, indent=2, default=str)


# -- apply, get, history ----------------------------------------------------------------------


def apply(backend: Backend, out: TextIO, documents: Sequence[Manifest]) -> int:
    """Create or update validated ModelDeployments, one line per object, as kubectl says it."""
    for applied in backend.apply(documents):
        print(f"modeldeployment.{GROUP}/{applied.name} {applied.result}", file=out)
    return OK


def get(
    backend: Backend,
    out: TextIO,
    err: TextIO,
    name: str | None = None,
    output: str = "table",
    clock: Clock | None = None,
) -> int:
    """`weir get [NAME]`: a table (`wide` adds columns), or the objects as JSON or YAML."""
    clock = clock or Clock()
    objects = [backend.get(name)] if name else backend.list_all()
    if output in ("json", "yaml"):
        value = objects[0] if name else {"apiVersion": "v1", "kind": "List", "items": objects}
        print(_dump(value, output), file=out)
        return OK
    if not objects:
        print(f"No ModelDeployments found in namespace {backend.namespace}.", file=err)
        return OK
    print(get_table(objects, clock.now(), wide=output == "wide"), file=out)
    return OK


def history(backend: Backend, out: TextIO, err: TextIO, name: str, output: str = "table") -> int:
    """`weir history NAME`: the finished rollouts, newest first (`#` is `undo --to-revision`)."""
    obj = backend.get(name)
    entries = status_of(obj).get("history") or []
    if output == "json":
        print(_json(entries), file=out)
    elif not entries:
        print(f"{name}: no finished rollout yet.", file=err)
    else:
        print(history_table(obj), file=out)
    return OK


# -- set-model ----------------------------------------------------------------------------------


def _validated(
    kind: type[ModelSource] | type[MonitoringReference], path: str, fields: dict[str, str | None]
) -> Manifest:
    """The fields given, validated as the API validates `path` (spec.model, ...)."""
    given = {key: value for key, value in fields.items() if value is not None}
    try:
        kind.model_validate(given)
    except ValidationError as error:
        problems = [f"{path}.{problem}" for problem in describe_errors(error)]
        raise UsageError(f"invalid {path.rsplit('.', 1)[-1]}: " + "; ".join(problems)) from None
    return given


def model_source(uri: str, sha256: str | None, version: str | None) -> Manifest:
    """The new spec.model's fields, validated as the API validates them."""
    return _validated(ModelSource, "spec.model", {"uri": uri, "sha256": sha256, "version": version})


def reference_source(uri: str | None, sha256: str | None) -> Manifest | None:
    """The new spec.monitoring.reference, validated as the API validates it; None without one."""
    if uri is None:
        if sha256 is not None:
            raise UsageError(
                "--reference-sha256 needs --reference-uri: the file whose sha256 it is"
            )
        return None
    return _validated(
        MonitoringReference, "spec.monitoring.reference", {"uri": uri, "sha256": sha256}
    )


def set_model(
    backend: Backend,
    out: TextIO,
    name: str,
    uri: str,
    sha256: str | None = None,
    version: str | None = None,
    *,
    reference_uri: str | None = None,
    reference_sha256: str | None = None,
) -> int:
    """`weir set-model`: replace spec.model (its served name kept), and with `reference_uri`
    spec.monitoring.reference too, in one change; a rollout starts."""
    model = model_source(uri, sha256, version)
    reference = reference_source(reference_uri, reference_sha256)
    before = desired_revision(backend.get(name))
    updated = backend.set_model(name, model, reference)
    after = desired_revision(updated)
    label = f"{uri}" + (f" (version {version})" if version else "")
    if reference is not None:
        label += f" with the reference {reference['uri']}"
    if after is not None and after == before:
        print(
            f"{name}: spec.model already is {label}: revision {after[:10]}, nothing to roll out",
            file=out,
        )
    else:
        revision = after[:10] if after else "(invalid spec)"
        print(f"{name}: spec.model set to {label}: revision {revision}", file=out)
    return OK


# -- promote, abort, retry, undo ----------------------------------------------------------------


def _guard(status: dict[str, Any], action: str) -> str | None:
    """The revision a request is about, as the user saw it: a request is refused by Weir if the
    rollout has moved on to another revision meanwhile."""
    if action in GUARDED_BY_CANARY:
        canary = status.get("canary")
        return (
            str(canary["revision"]) if isinstance(canary, dict) and canary.get("revision") else None
        )
    if action == "retry":
        held = status.get("rolledBackRevision")
        return str(held) if held else None
    return None


def request(
    backend: Backend,
    out: TextIO,
    err: TextIO,
    name: str,
    action: str,
    *,
    to_revision: str | None = None,
    wait: bool = True,
    timeout: float = REQUEST_TIMEOUT,
    clock: Clock | None = None,
) -> int:
    """Post a request, then (unless `wait` is off) wait for Weir's answer in
    status.lastRequest: 0 if it was carried out, 1 if refused, 2 without an answer in time."""
    clock = clock or Clock()
    status = status_of(backend.get(name))
    revision = resolve_revision(status, to_revision) if to_revision else _guard(status, action)
    request_id = backend.request(name, action, revision)
    about = f" for revision {revision[:10]}" if revision else ""
    if not wait:
        print(f"{name}: {action} request {request_id} sent{about}", file=out)
        return OK
    deadline = clock.monotonic() + timeout
    warned: set[str] = set()
    while True:
        obj = _reread(backend, name, err, warned)
        last = status_of(obj).get("lastRequest") if obj is not None else None
        if isinstance(last, dict) and last.get("id") == request_id:
            said = f": {last['message']}" if last.get("message") else ""
            if last.get("accepted"):
                print(f"{name}: {action} accepted{said}", file=out)
                return OK
            print(f"weir: {name}: {action} refused{said}", file=err)
            return FAILED
        if clock.monotonic() >= deadline:
            print(
                f"weir: {name}: no answer to the {action} request {request_id} within "
                f"{format_duration(timeout)}; is the operator (or `weir run`) running?",
                file=err,
            )
            return TIMED_OUT
        clock.sleep(backend.poll_interval)


def _reread(backend: Backend, name: str, err: TextIO, warned: set[str]) -> Manifest | None:
    """The object again; None (after one warning) while the server cannot be reached."""
    try:
        return backend.get(name)
    except Unreachable as error:
        if error.message not in warned:
            warned.add(error.message)
            print(f"weir: {error.message}; still trying", file=err)
        return None


# -- status ---------------------------------------------------------------------------------------


class Display(Protocol):
    """How `status --watch` shows each update."""

    def show(self, obj: Manifest, result: str | None) -> None: ...

    def close(self) -> None: ...


def _events(backend: Backend, name: str) -> list[Manifest]:
    """The newest events, or none when they cannot be read (no right, no such endpoint)."""
    try:
        return backend.events(name, STATUS_EVENTS)
    except ClientError:
        return []


class TextBlocks:
    """Not a terminal: a new status block only when something changed."""

    def __init__(self, backend: Backend, out: TextIO, clock: Clock) -> None:
        self.backend, self.out, self.clock = backend, out, clock
        self.last: tuple[Any, ...] | None = None

    def show(self, obj: Manifest, result: str | None) -> None:
        key = change_key(obj)
        if key == self.last:
            return
        if self.last is not None:
            print(file=self.out)
        self.last = key
        events = _events(self.backend, str(obj["metadata"]["name"]))
        print(f"--- {self.clock.now():%H:%M:%S}", file=self.out)
        print(status_view(obj, self.clock.now(), events), file=self.out, flush=True)

    def close(self) -> None:
        pass


class JsonLines:
    """`-o json`: one JSON line per change (with the result once a wait is over)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.last: tuple[Any, ...] | None = None

    def show(self, obj: Manifest, result: str | None) -> None:
        key = (*change_key(obj), result)
        if key == self.last:
            return
        self.last = key
        print(_json(status_record(obj, result)), file=self.out, flush=True)

    def close(self) -> None:
        pass


class LiveView:
    """A terminal: the view redrawn in place (rich Live), ages ticking."""

    def __init__(self, backend: Backend, out: TextIO, clock: Clock) -> None:
        from rich.console import Console
        from rich.live import Live

        self.backend, self.clock = backend, clock
        self.last: tuple[Any, ...] | None = None
        self.events: list[Manifest] = []
        self.live = Live(console=Console(file=out), auto_refresh=False, transient=False)
        self.live.start()

    def show(self, obj: Manifest, result: str | None) -> None:
        from rich.text import Text

        key = change_key(obj)
        if key != self.last:
            self.last = key
            self.events = _events(self.backend, str(obj["metadata"]["name"]))
        self.live.update(Text(status_view(obj, self.clock.now(), self.events)), refresh=True)

    def close(self) -> None:
        self.live.stop()


def make_display(backend: Backend, out: TextIO, output: str, clock: Clock) -> Display:
    if output == "json":
        return JsonLines(out)
    if out.isatty():
        return LiveView(backend, out, clock)
    return TextBlocks(backend, out, clock)


def status(
    backend: Backend,
    out: TextIO,
    err: TextIO,
    name: str,
    *,
    output: str = "text",
    watch: bool = False,
    wait: bool = False,
    timeout: float | None = None,
    clock: Clock | None = None,
    display: Display | None = None,
) -> int:
    """`weir status NAME [--watch] [--wait]`. Waiting ends 0 when the spec's revision is
    Healthy, 1 when it was rolled back or failed, 2 at the timeout."""
    clock = clock or Clock()
    obj = backend.get(name)
    if not watch and not wait:
        if output == "json":
            print(_json(status_record(obj)), file=out)
        else:
            print(status_view(obj, clock.now(), _events(backend, name)), file=out)
        return OK
    if wait and timeout is None:
        timeout = STATUS_TIMEOUT
    deadline = None if timeout is None else clock.monotonic() + timeout
    if watch and display is None:
        display = make_display(backend, out, output, clock)
    warned: set[str] = set()
    last_progress = ""
    try:
        while True:
            state = done_state(obj) if wait else None
            if display is not None:
                display.show(obj, state if wait else None)
            elif state is None and (line := progress_line(obj)) != last_progress:
                last_progress = line
                print(f"weir status: {line}", file=err, flush=True)
            if state is not None:
                return _finish(obj, state, out, output, clock, shown=display is not None)
            if deadline is not None and clock.monotonic() >= deadline:
                return _timed_out(obj, out, err, output, clock, display, wait, timeout)
            clock.sleep(backend.poll_interval)
            obj = _reread(backend, name, err, warned) or obj
    finally:
        if display is not None:
            display.close()


def _finish(
    obj: Manifest, state: DoneState, out: TextIO, output: str, clock: Clock, *, shown: bool
) -> int:
    code = OK if state == "healthy" else FAILED
    if output == "json":
        if not shown:
            print(_json(status_record(obj, state)), file=out)
        return code
    if not shown:
        print(status_view(obj, clock.now()), file=out)
    print(done_message(obj, state), file=out)
    return code


def _timed_out(
    obj: Manifest,
    out: TextIO,
    err: TextIO,
    output: str,
    clock: Clock,
    display: Display | None,
    wait: bool,
    timeout: float | None,
) -> int:
    if output == "json":
        if display is not None:
            display.show(obj, "timeout")
        else:
            print(_json(status_record(obj, "timeout")), file=out)
    elif display is None:
        print(status_view(obj, clock.now()), file=out)
    doing = f"waiting for {obj['metadata']['name']}" if wait else "watching"
    print(
        f"weir: timed out after {format_duration(timeout or 0)} {doing}: {waiting_message(obj)}",
        file=err,
    )
    return TIMED_OUT
