"""The local runtime's kubelet: `weir serve` child processes for each revision's Deployment.

Why it exists: `weir run` must run the same Deployments the operator renders, with what a
kubelet gives them: the model fetched once per revision (with spec.monitoring.reference next to
it, as fetch-model does; sha256 checked; credentials from the
secrets folder, `weir_operator.local.secret_files`), one server process
per replica on a free 127.0.0.1 port, readiness from the server's own `/v2/health/ready`,
restarts with back-off when a server dies, and a drain on scale-down (out of the router first,
then SIGTERM, which lets the server finish what it is answering, then SIGKILL after its grace
period). It reports the world as the operator sees it on a cluster: a `RevisionState` per
revision and Pod-shaped dicts per server (so the probes and the analysis read them unchanged).

All of it runs in the runtime's event loop; `supervise()` is the only loop."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx

from weir_operator.control_access import TOKEN_ENV
from weir_operator.core.reconcile import RevisionState
from weir_operator.core.render import REVISION_LABEL
from weir_operator.core.status import timestamp
from weir_operator.local.podspec import ServerTemplate
from weir_operator.local.secret_files import MISSING_REASON, SecretMissing, signature, store_access
from weir_server.fetch import FetchError, fetch, fetch_reference

log = logging.getLogger("weir.run")

PR_SET_PDEATHSIG = 1
BACKOFF_START, BACKOFF_MAX = 1.0, 16.0
# A failed model fetch is tried again after 2, 4, 8 ... 60 s (each try is one attempt,
# bounded by fetch-model's timeouts), and at once when one of its secret files changes.
FETCH_BACKOFF_START, FETCH_BACKOFF_MAX = 2.0, 60.0
ROUTER_GRACE_SECONDS = 0.5  # out of the router before SIGTERM: requests already sent finish
SHUTDOWN_GRACE_SECONDS = 5.0
PROBE_TIMEOUT = httpx.Timeout(1.0, connect=0.5)
ServerState = Literal["starting", "running", "backoff", "draining"]


def _die_with_parent() -> None:
    """`preexec_fn`: the kernel sends SIGTERM to the server when `weir run` ends, even by
    SIGKILL, so no server outlives it (Linux; elsewhere the orderly shutdown has to do)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(eq=False)
class Server:
    """One replica: a `weir serve` process and what a kubelet would report about it."""

    name: str
    revision: str
    port: int
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    state: ServerState = "starting"
    ready: bool = False
    ready_changed_at: datetime = field(default_factory=_now)
    started_at: datetime | None = None
    restarts: int = 0
    last_exit: tuple[int, datetime] | None = None
    backoff_until: float = 0.0
    suspect_until: float = 0.0  # the router saw it fail: out of rotation until probed ready

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def set_ready(self, ready: bool) -> None:
        if ready != self.ready:
            self.ready, self.ready_changed_at = ready, _now()

    def routable(self, now: float) -> bool:
        return self.ready and self.state == "running" and now >= self.suspect_until

    def pod(self) -> dict[str, Any]:
        """The Pod object a kubelet would report for this server."""
        container: dict[str, Any] = {"name": "server", "restartCount": self.restarts}
        if self.state == "running" and self.started_at is not None:
            container["state"] = {"running": {"startedAt": timestamp(self.started_at)}}
        else:
            container["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
        if self.last_exit is not None:
            code, at = self.last_exit
            container["lastState"] = {"terminated": {"exitCode": code, "finishedAt": timestamp(at)}}
        ready = {
            "type": "Ready",
            "status": "True" if self.ready else "False",
            "lastTransitionTime": timestamp(self.ready_changed_at),
        }
        return {
            "metadata": {"name": self.name, "labels": {REVISION_LABEL: self.revision}},
            "spec": {"containers": [{"name": "server", "ports": [self._port()]}]},
            "status": {
                "podIP": "127.0.0.1",
                "conditions": [ready],
                "containerStatuses": [container],
            },
        }

    def _port(self) -> dict[str, Any]:
        return {"name": "http", "containerPort": self.port}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "revision": self.revision,
            "pid": self.pid,
            "port": self.port,
            "ready": self.ready,
            "restarts": self.restarts,
            "state": self.state,
        }


@dataclass(eq=False)
class RevisionServers:
    """The servers of one Deployment (one revision)."""

    deployment: str
    template: ServerTemplate
    wanted: int
    model_path: Path | None = None
    fetch_problem: tuple[str, str] | None = None
    fetch_retry_at: float = 0.0
    fetch_failures: int = 0
    fetch_secrets: tuple[tuple[str, int, int], ...] = ()  # the secret files at the last failure
    fetching: asyncio.Task[None] | None = None
    servers: list[Server] = field(default_factory=list)
    next_index: int = 0


class ServerPool:
    """Every local server, by Deployment name."""

    def __init__(
        self, state_dir: Path, python: str = sys.executable, secrets_dir: Path | None = None
    ) -> None:
        self._dir = state_dir
        self._python = python
        self._secrets_dir = secrets_dir if secrets_dir is not None else state_dir / "secrets"
        self._revisions: dict[str, RevisionServers] = {}
        self._client = httpx.AsyncClient(timeout=PROBE_TIMEOUT)
        self._stopping: set[asyncio.Task[None]] = set()
        self.changed = asyncio.Event()  # set when a server's readiness or life changed

    # -- what the runtime asks for --------------------------------------------------------

    def ensure(self, deployment: str, template: ServerTemplate, replicas: int) -> None:
        """Run `replicas` servers of this Deployment (its template is fixed at creation)."""
        found = self._revisions.get(deployment)
        if found is None or found.template != template:
            if found is not None:
                self.retire(deployment)
            self._revisions[deployment] = RevisionServers(deployment, template, replicas)
        else:
            found.wanted = replicas

    def scale(self, deployment: str, replicas: int) -> None:
        found = self._revisions.get(deployment)
        if found is not None:
            found.wanted = replicas

    def retire(self, deployment: str) -> None:
        """Drain and stop every server of a Deployment that was deleted."""
        found = self._revisions.pop(deployment, None)
        if found is None:
            return
        if found.fetching is not None:
            found.fetching.cancel()
        for server in found.servers:
            self._drain(server, found.template.graceful_seconds)

    def deployments(self) -> set[str]:
        return set(self._revisions)

    # -- what the runtime reads -----------------------------------------------------------

    def state(self, deployment: str) -> RevisionState | None:
        found = self._revisions.get(deployment)
        if found is None:
            return None
        live = [s for s in found.servers if s.state != "draining"]
        ready = sum(1 for s in live if s.ready)
        return RevisionState(
            revision=found.template.revision,
            name=deployment,
            replicas=found.wanted,
            ready_replicas=ready,
            updated_replicas=len(live),
            problem=self._problem(found),
        )

    def pods(self, deployments: set[str]) -> list[Mapping[str, Any]]:
        return [
            s.pod()
            for d in deployments
            if d in self._revisions
            for s in self._revisions[d].servers
            if s.state != "draining"
        ]

    def endpoints(self, deployment: str) -> list[Server]:
        found = self._revisions.get(deployment)
        if found is None:
            return []
        now = time.monotonic()
        return [s for s in found.servers if s.routable(now)]

    def describe(self, deployments: set[str]) -> list[dict[str, Any]]:
        return [
            s.describe()
            for d in sorted(deployments)
            if d in self._revisions
            for s in self._revisions[d].servers
        ]

    def suspect(self, server: Server, seconds: float = 2.0) -> None:
        """The router could not talk to this server: keep it out until it answers a probe."""
        server.suspect_until = time.monotonic() + seconds
        server.set_ready(False)
        self.changed.set()

    # -- the loop -------------------------------------------------------------------------

    async def supervise(self, period: float = 0.25) -> None:
        while True:
            await self.step()
            await asyncio.sleep(period)

    async def step(self) -> None:
        """Converge once: fetch models, start, probe, reap and restart, scale down."""
        for found in list(self._revisions.values()):
            if found.model_path is None:
                self._fetch(found)
                continue
            live = [s for s in found.servers if s.state != "draining"]
            for server in live[found.wanted :]:
                self._drain(server, found.template.graceful_seconds)
            found.servers = [s for s in found.servers if s.state != "draining"]
            while len(found.servers) < found.wanted:
                found.servers.append(self._new_server(found))
            await asyncio.gather(*(self._step_server(found, s) for s in found.servers))

    async def stop(self) -> None:
        """Stop every server now (SIGTERM, SIGKILL after a few seconds) and wait for them."""
        for deployment in list(self._revisions):
            found = self._revisions.pop(deployment)
            if found.fetching is not None:
                found.fetching.cancel()
            for server in found.servers:
                self._drain(server, SHUTDOWN_GRACE_SECONDS, router_grace=0.0)
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
        await self._client.aclose()

    # -- internals ------------------------------------------------------------------------

    def _problem(self, found: RevisionServers) -> tuple[str, str] | None:
        """ModelFetchFailed, or CrashLoopBackOff for a server that died more than once (one
        restart is the analysis' business, where failureThreshold debounces it)."""
        if found.fetch_problem is not None:
            return found.fetch_problem
        for server in found.servers:
            if server.state == "backoff" and server.last_exit is not None and server.restarts > 1:
                return "CrashLoopBackOff", f"server {server.name} {_exit_text(server)}"
        return None

    def _fetch(self, found: RevisionServers) -> None:
        if found.fetching is not None:
            return
        source = found.template.source
        if time.monotonic() < found.fetch_retry_at and (
            not source.secrets or signature(source, self._secrets_dir) == found.fetch_secrets
        ):
            return
        dest = self._dir / "models" / found.template.revision / "model.onnx"

        def failed(reason: str, error: Exception) -> None:
            found.fetch_problem = (reason, str(error))
            found.fetch_failures += 1
            delay = min(FETCH_BACKOFF_START * 2 ** (found.fetch_failures - 1), FETCH_BACKOFF_MAX)
            found.fetch_retry_at = time.monotonic() + delay
            found.fetch_secrets = signature(source, self._secrets_dir)
            log.warning(
                "%s: cannot fetch the model: %s (trying again in %.0f s)",
                found.deployment,
                error,
                delay,
            )

        async def run() -> None:
            try:
                access = store_access(source, self._secrets_dir)
                digest = await asyncio.to_thread(
                    fetch, source.uri, dest, source.sha256, attempts=1, log=log.info, access=access
                )
                if source.reference_uri is not None:  # spec.monitoring.reference, next to it
                    await asyncio.to_thread(
                        fetch_reference,
                        source.reference_uri,
                        dest,
                        digest,
                        source.reference_sha256,
                        attempts=1,
                        log=log.info,
                        access=access,
                    )
            except SecretMissing as error:
                failed(MISSING_REASON, error)
            except (FetchError, OSError) as error:
                failed("ModelFetchFailed", error)
            else:
                found.model_path, found.fetch_problem, found.fetch_failures = dest, None, 0
            finally:
                found.fetching = None
                self.changed.set()

        found.fetching = asyncio.get_running_loop().create_task(run())

    def _new_server(self, found: RevisionServers) -> Server:
        name = f"{found.deployment}-{found.next_index}"
        found.next_index += 1
        logs = self._dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return Server(name, found.template.revision, free_port(), logs / f"{name}.log")

    async def _step_server(self, found: RevisionServers, server: Server) -> None:
        process = server.process
        if process is not None and process.returncode is not None:
            code = process.returncode
            server.process = None
            server.last_exit = (code if code >= 0 else 128 - code, _now())
            server.restarts += 1
            delay = min(BACKOFF_START * 2 ** (server.restarts - 1), BACKOFF_MAX)
            server.state, server.backoff_until = "backoff", time.monotonic() + delay
            server.set_ready(False)
            self.changed.set()
            log.warning(
                "%s exited with code %s; restarting in %.0f s",
                server.name,
                server.last_exit[0],
                delay,
            )
            return
        if server.process is None:
            if time.monotonic() >= server.backoff_until:
                await self._launch(found, server)
            return
        ready = await self._probe(server)
        if ready and server.state == "starting":
            server.state = "running"
        if ready and time.monotonic() < server.suspect_until:
            server.suspect_until = 0.0
        if ready != server.ready:
            server.set_ready(ready)
            self.changed.set()

    async def _launch(self, found: RevisionServers, server: Server) -> None:
        assert found.model_path is not None
        template = found.template
        argv = template.argv(found.model_path, server.port)
        inherited = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
        env = {**inherited, **dict(template.env), "WEIR_REVISION": template.revision}
        with server.log_path.open("ab") as output:
            server.process = await asyncio.create_subprocess_exec(
                self._python,
                "-m",
                "weir_operator.cli",
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C reaches `weir run`, which stops servers in order
                preexec_fn=_die_with_parent,
            )
        server.state, server.started_at = "starting", _now()

    async def _probe(self, server: Server) -> bool:
        try:
            response = await self._client.get(f"http://127.0.0.1:{server.port}/v2/health/ready")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def _drain(
        self, server: Server, grace: float, router_grace: float = ROUTER_GRACE_SECONDS
    ) -> None:
        server.state = "draining"
        server.set_ready(False)
        self.changed.set()
        process = server.process
        if process is None or process.returncode is not None:
            return

        async def stop() -> None:
            await asyncio.sleep(router_grace)
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace + 1.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()

        task = asyncio.get_running_loop().create_task(stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)


def _exit_text(server: Server) -> str:
    """How a server ended, in words: its exit code or signal, its last words, its restarts."""
    assert server.last_exit is not None
    code = server.last_exit[0]
    if code > 128 and code - 128 in signal.valid_signals():
        how = f"was killed by {signal.Signals(code - 128).name}"
    else:
        tail = _last_words(server.log_path)
        how = f"exited with code {code}" + (f": {tail}" if tail else "")
    return f"{how} ({server.restarts} restarts)"


def _last_words(path: Path, limit: int = 8192) -> str:
    """The last line of a server's log that is not an access log line."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            lines = handle.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    said = [line for line in lines if line.strip() and '"weir.access"' not in line]
    return said[-1][:300] if said else ""
