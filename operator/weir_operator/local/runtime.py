"""`weir run`: the operator's core driving local processes instead of a cluster.

Why it exists: a newcomer must see a rollout work without a cluster, and the tests must prove
the rollout logic with real servers and real traffic. So this loop does exactly what the kopf
handlers do (observe, probe, `reconcile`, apply the plan, write the status) with local shells:
the `Store` instead of the API server, the `ServerPool` instead of Deployments and a kubelet,
the `TrafficProxy` instead of Services and HTTPRoutes. One reconcile per ModelDeployment every
`tick` seconds, which is also the analysis clock (as the operator's timer is).

Everything runs in one asyncio event loop: the reconcile loop, the pool's supervision, the
file watcher, the router and the control API (both uvicorn servers on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import logging
import re
import signal
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from weir_operator import control_access
from weir_operator.core import render
from weir_operator.core.reconcile import Observed, Plan, RevisionState
from weir_operator.core.render import REVISION_LABEL, RenderSettings
from weir_operator.core.requests import REQUEST_ANNOTATION
from weir_operator.core.rollout import restored_spec
from weir_operator.core.routers import RouterName
from weir_operator.core.spec import GROUP, KIND, ModelDeployment, SpecError, parse_model_deployment
from weir_operator.core.status import Condition, Event, ModelDeploymentStatus, condition
from weir_operator.core.status import timestamp as status_timestamp
from weir_operator.driver import ReconcileDriver, Superseded, World
from weir_operator.local.podspec import LaunchError, ignored_fields, server_template
from weir_operator.local.proxy import Route, TrafficProxy
from weir_operator.local.secret_files import default_secrets_dir
from weir_operator.local.servers import ServerPool
from weir_operator.local.state import StateDir
from weir_operator.local.store import NAMESPACE, Entry, Store
from weir_operator.probes.autoscaler import Autoscalers
from weir_operator.probes.rollout import RolloutProber

log = logging.getLogger("weir.run")
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
MANIFEST_CONDITION = "ManifestApplied"  # False while the object's file cannot be applied


@dataclass(frozen=True)
class RunSettings:
    paths: tuple[Path, ...]
    state_dir: Path
    secrets_dir: Path | None = None  # None: secret_files.default_secrets_dir(paths)
    port: int = 8080
    control_port: int = 8081
    host: str = "127.0.0.1"
    tick: float = 0.5
    watch_period: float = 1.0


def manifest_files(paths: Iterable[Path]) -> list[Path]:
    """The YAML files under the given files and folders (not recursive), sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix in MANIFEST_SUFFIXES)
        elif path.exists():
            found.append(path)
    return found


def read_manifests(path: Path) -> list[dict[str, Any]]:
    """The ModelDeployment documents of one file (documents of other kinds are skipped);
    raises ValueError with the file name when the YAML is broken, or when a document looks
    meant to be a ModelDeployment but is not one (a misspelled kind)."""
    try:
        documents = list(yaml.safe_load_all(path.read_text()))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from None
    found = []
    for number, document in enumerate(documents, 1):
        if not isinstance(document, dict):
            continue
        kind = document.get("kind")
        if kind == KIND:
            found.append(document)
            continue
        api_version = document.get("apiVersion")
        ours = isinstance(api_version, str) and api_version.startswith(GROUP + "/")
        similar = isinstance(kind, str) and (
            difflib.SequenceMatcher(None, kind.lower(), KIND.lower()).ratio() >= 0.75
        )
        if ours or similar:
            raise ValueError(
                f"{path}: document {number} has kind {kind!r}, not {KIND!r} "
                "(nothing in this file was applied)"
            )
    return found


class LocalRuntime:
    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.state = StateDir(settings.state_dir)
        self.store = Store(self.state)
        secrets_dir = settings.secrets_dir or default_secrets_dir(settings.paths)
        self.pool = ServerPool(settings.state_dir, secrets_dir=secrets_dir)
        self.routes: dict[str, Route] = {}
        self.router = TrafficProxy(self.routes, on_failure=self.pool.suspect)
        self.driver: ReconcileDriver | None = None
        self.render = RenderSettings()
        self._deployments: dict[str, dict[str, dict[str, Any]]] = {}  # md -> name -> manifest
        # Deployments whose pods can never start here (a model source weir run cannot fetch).
        self._unstartable: dict[str, tuple[str, str]] = {}  # name -> (reason, message)
        self._ignored: dict[str, list[str]] = {}  # name -> the spec fields weir run ignores
        self._file_signature: tuple[tuple[str, float, int], ...] | None = None
        self._file_errors: dict[str, str] = {}
        self._stop = asyncio.Event()
        self.started = asyncio.Event()

    # -- life cycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until `stop()` (or SIGINT/SIGTERM when run from the CLI); then stop the router,
        then every server. StateError (before anything starts) when the state folder is
        locked by another `weir run` or holds a file that cannot be read."""
        self.state.open()
        try:
            await self._run()
        finally:
            self.state.close()

    async def _run(self) -> None:
        from weir_operator.local.control import create_control_app

        prober = RolloutProber()
        self.driver = ReconcileDriver(prober, Autoscalers(prober.providers.direct), self.render)
        for name in self.store.load():
            self._resume(name)
        self.sync_files()
        settings = self.settings
        token = control_access.new_token()
        control_access.publish(token, self.state.token, settings.host, settings.control_port)
        router = _server(self.router, settings.host, settings.port)
        control = _server(create_control_app(self, token), settings.host, settings.control_port)
        tasks: list[asyncio.Task[Any]] = [
            asyncio.create_task(_listen(router, "router"), name="router"),
            asyncio.create_task(_listen(control, "control API"), name="control"),
            asyncio.create_task(self.pool.supervise(), name="servers"),
            asyncio.create_task(self._reconcile_loop(), name="reconcile"),
            asyncio.create_task(self._watch_loop(), name="watch"),
        ]
        stopped = asyncio.create_task(self._stop.wait())
        try:
            while not (router.started and control.started) and not stopped.done():
                _raise_if_failed(tasks)
                await asyncio.sleep(0.05)
            self.started.set()
            await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
            _raise_if_failed(tasks)
        finally:
            stopped.cancel()
            router.should_exit = control.should_exit = True
            for task in tasks[2:]:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.pool.stop()
            await self.router.aclose()
            await self.driver.aclose()
            control_access.withdraw(token, settings.host, settings.control_port)

    def stop(self) -> None:
        self._stop.set()

    def _resume(self, name: str) -> None:
        """Bring back what `weir run` keeps for an object besides its status: its Deployments
        (on a cluster they outlive the operator; here the stable's cannot be rendered again
        from a spec that now names the canary) and the autoscaler's windows."""
        memory = self.store.entry(name).memory
        assert self.driver is not None
        self.driver.autoscalers.recall(NAMESPACE, name, memory.get("autoscaler") or {})
        deployments = memory.get("deployments")
        for manifest in (deployments or {}).values() if isinstance(deployments, dict) else ():
            self._run_deployment(name, manifest, int(manifest["spec"]["replicas"]))
        log.info("%s: resumed from %s", name, self.state.object_path(name))

    # -- files --------------------------------------------------------------------------------

    def sync_files(self) -> None:
        """Apply the watched files when any of them changed (like `kubectl apply --prune` on
        each edit). A file that is broken, or that suddenly holds no ModelDeployment (an empty
        or truncated save), changes nothing: its objects keep their last good spec, and the
        problem shows in their status (condition ManifestApplied) and in the log. An object is
        deleted only when its file is gone, or when the file still holds ModelDeployments but
        no longer this one."""
        files = manifest_files(self.settings.paths)
        signature = tuple(_signature(p) for p in files)
        if signature == self._file_signature:
            return
        self._file_signature = signature
        seen: set[str] = set()
        broken: set[str] = set()
        for path in files:
            source = str(path)
            try:
                names = self._apply_file(path)
            except (SpecError, ValueError, OSError) as error:
                broken.add(source)
                message = str(error)
                if self._file_errors.get(source) != message:
                    log.error("%s (nothing changed)", message)
                    self._file_errors[source] = message
                continue
            seen |= names
            if self._file_errors.pop(source, None) is not None:
                log.info("%s: applied again", path)
        for name in self.store.names():
            source = self.store.entry(name).source
            if source != "api" and source not in broken and name not in seen:
                log.info("%s: deleted (its manifest is gone from %s)", name, source)
                self.delete(name)

    def _apply_file(self, path: Path) -> set[str]:
        """Apply the ModelDeployments of one file; their names. A document that is not valid
        changes nothing when its object exists (ValueError: it keeps its last good spec); a new
        one is kept as Failed (InvalidSpec), as an operator keeps an object it cannot parse."""
        source = str(path)
        documents = read_manifests(path)
        if not documents:
            held = [n for n in self.store.names() if self.store.entry(n).source == source]
            if held:
                raise ValueError(
                    f"{path}: holds no ModelDeployment now (an empty or truncated save?); "
                    f"keeping {', '.join(held)} as it was. To remove it, delete the file or "
                    f"run `weir delete {held[0]}`"
                )
            return set()
        names = [str((d.get("metadata") or {}).get("name", "")) for d in documents]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"{path}: {', '.join(twice)} is defined more than once")
        problems: list[str] = []
        for document, name in zip(documents, names, strict=True):
            try:
                md = parse_model_deployment(document, source)
            except SpecError as error:
                if name and name not in self.store.names() and _is_name(name):
                    # New and invalid: kept, so that its status says why (Failed, InvalidSpec).
                    self.store.hold_invalid(document, source, error.problems)
                    log.error("%s (%s is Failed: InvalidSpec)", error, name)
                    continue
                problems.append(str(error))
                continue
            result = self.store.apply(document, source, md)
            if result != "unchanged":
                log.info("%s: %s from %s", md.name, result, path)
                self._say_ignored(md)
        if problems:
            raise ValueError("\n".join(problems))
        return set(names)

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.watch_period)
            self.sync_files()

    def delete(self, name: str) -> None:
        parsed = self.store.entry(name).parsed
        self.store.delete(name)
        for deployment in self._deployments.pop(name, {}):
            self._unstartable.pop(deployment, None)
            self.pool.retire(deployment)
        if parsed is not None:
            self.routes.pop(parsed.model_name, None)
        if self.driver is not None:
            self.driver.forget(NAMESPACE, name)

    # -- reconcile ----------------------------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        while True:
            for name in self.store.names():
                try:
                    await self.reconcile(name)
                except Exception:  # one object's failure must not stop the others
                    log.exception("%s: reconcile failed", name)
            await asyncio.sleep(self.settings.tick)

    async def reconcile(self, name: str) -> None:
        """One reconcile of one object, by the reconcile driver the operator uses too."""
        entry = self.store.entry(name)
        old = ModelDeploymentStatus.model_validate(entry.object.get("status") or {})
        assert self.driver is not None, "made when run() starts"
        md = entry.parsed
        if md is None:
            generation = entry.object["metadata"]["generation"]
            invalid = self.driver.invalid(old, entry.problems, generation)
            self._write_status(name, entry.source, old, invalid)
            return
        request = entry.object["metadata"]["annotations"].get(REQUEST_ANNOTATION)
        try:
            plan = await self.driver.reconcile(LocalPort(self, entry), md, old, request)
        except Superseded:
            return
        status = self._write_status(name, entry.source, old, plan.status, self.model_url(md))
        self._route(md, status)

    def _write_status(
        self,
        name: str,
        source: str,
        old: ModelDeploymentStatus,
        new: ModelDeploymentStatus,
        url: str | None = None,
    ) -> ModelDeploymentStatus:
        """The status as the store keeps it, with what the local shells add (the router's URL,
        the file's condition) and what they remember across restarts."""
        update: dict[str, Any] = {"conditions": self._with_manifest_condition(source, old, new)}
        if url is not None:
            update["url"] = url
        status = new.model_copy(update=update)
        assert self.driver is not None
        memory = {
            "autoscaler": self.driver.autoscalers.remember(NAMESPACE, name),
            "deployments": self._deployments.get(name, {}),
        }
        dumped = status.model_dump(by_alias=True, exclude_none=True, mode="json")
        self.store.set_status(name, dumped, memory)
        return status

    def _with_manifest_condition(
        self, source: str, old: ModelDeploymentStatus, new: ModelDeploymentStatus
    ) -> list[Condition]:
        """The conditions, with ManifestApplied False while the object's file is broken (its
        last good spec keeps running): `weir status` shows what `weir run`'s log says."""
        conditions = [c for c in new.conditions if c.type != MANIFEST_CONDITION]
        problem = self._file_errors.get(source)
        if problem is None:
            return conditions
        at = status_timestamp(_now())
        generation = new.observed_generation
        message = f"{problem}; serving the last good spec (generation {generation})"
        kept = condition(old.conditions, MANIFEST_CONDITION, False, "ManifestInvalid", message,
                         at, generation)  # fmt: skip
        return [*conditions, kept]

    def servers_of(self, name: str) -> list[dict[str, Any]]:
        return self.pool.describe(set(self._deployments.get(name, {})))

    def model_url(self, md: ModelDeployment) -> str:
        return f"http://{self.settings.host}:{self.settings.port}/v2/models/{md.model_name}"

    def _state(self, md: ModelDeployment, deployment: str) -> RevisionState | None:
        state = self.pool.state(deployment)
        manifest = self._deployments[md.name][deployment]
        problem = self._unstartable.get(deployment)
        if problem is not None:
            revision = manifest["metadata"]["labels"][REVISION_LABEL]
            return RevisionState(
                revision, deployment, manifest["spec"].get("replicas"), problem=problem
            )
        return state

    def _apply(self, md: ModelDeployment, plan: Plan) -> None:
        mine = self._deployments[md.name]
        for child in plan.apply:
            if child["kind"] == "ConfigMap" and child["metadata"]["name"] == (
                render.shadow_config_name(md)
            ):
                self._write_mirror(md, child["data"][render.MIRROR_FILE])
                continue
            if child["kind"] != "Deployment":
                continue  # Services, PDBs, HPAs, HTTPRoutes: the router does their work here
            name = child["metadata"]["name"]
            replicas = _replicas(md, child)
            if render.is_role_patch(child):
                if name in mine:
                    mine[name]["spec"]["replicas"] = replicas
                    self.pool.scale(name, replicas)
                continue
            if name in mine and mine[name]["spec"]["template"] == child["spec"]["template"]:
                mine[name]["spec"]["replicas"] = replicas
                self.pool.scale(name, replicas)
                continue
            self._run_deployment(md.name, child, replicas)
        for kind, name in plan.delete:
            if kind == "Deployment" and name in mine:
                del mine[name]
                self._unstartable.pop(name, None)
                self.pool.retire(name)
        if plan.restore is not None:
            restored = plan.restore
            self.store.clear_request(md.name)
            self.store.patch_spec(md.name, restored_spec(md.spec, restored))

    def mirror_path(self, md_name: str) -> Path:
        """The file a ModelDeployment's servers read what to mirror from (its shadow
        ConfigMap on a cluster)."""
        return self.settings.state_dir / "shadow" / f"{md_name}.json"

    def _write_mirror(self, md: ModelDeployment, text: str) -> None:
        """The shadow ConfigMap's file, with the `<md>-canary` Service a cluster would have
        replaced by a ready canary server's address (nothing is mirrored until one is)."""
        document = json.loads(text)
        if document.get("percent", 0) > 0:
            canary = render.deployment_name(md, str(document.get("revision", "")))
            ready = self.pool.endpoints(canary)
            document.pop("tls", None)  # weir run's servers speak plain HTTP on 127.0.0.1
            if ready:
                document["url"] = f"http://127.0.0.1:{ready[0].port}"
            else:
                document = {"percent": 0}
        wanted = json.dumps(document, sort_keys=True) + "\n"
        path = self.mirror_path(md.name)
        try:
            if path.read_text() == wanted:
                return
        except OSError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_suffix(".tmp")
        aside.write_text(wanted)
        aside.replace(path)

    def _run_deployment(self, md_name: str, child: dict[str, Any], replicas: int) -> None:
        """Start (or replace) the servers of one Deployment, kept as the manifest it ran."""
        name = child["metadata"]["name"]
        manifest = {**child, "spec": {**child["spec"], "replicas": replicas}}
        try:
            template = server_template(child, mirror_file=self.mirror_path(md_name))
        except LaunchError as error:
            self._unstartable[name] = ("UnsupportedModelSource", str(error))
        else:
            self._unstartable.pop(name, None)
            self.pool.ensure(name, template, replicas)
        self._deployments.setdefault(md_name, {})[name] = manifest

    def _route(self, md: ModelDeployment, status: ModelDeploymentStatus) -> None:
        if status.stable is None:
            return
        stable = render.deployment_name(md, status.stable.revision)
        route = self.routes.get(md.model_name)
        if route is None or route.stable != status.stable.revision:
            route = Route(
                md.model_name, status.stable.revision, lambda: self.pool.endpoints(stable)
            )
            self.routes[md.model_name] = route
        canary = status.canary
        if canary is None:
            route.canary, route.weight = None, 0
            route.canary_endpoints = list
        elif route.canary != canary.revision:
            name = render.deployment_name(md, canary.revision)
            route.canary, route.weight = canary.revision, canary.weight
            route.canary_endpoints = lambda: self.pool.endpoints(name)
        else:
            route.weight = canary.weight

    def _say_ignored(self, md: ModelDeployment) -> None:
        """Once per set of fields: what of the spec weir run does not use (an event, so that
        `weir status` shows it, and a log line)."""
        ignored = ignored_fields(md.spec)
        if not ignored or self._ignored.get(md.name) == ignored:
            return
        self._ignored[md.name] = ignored
        message = f"weir run ignores {', '.join(ignored)}: they apply on a cluster only"
        self._event(md.name, Event("Normal", "IgnoredLocally", message))

    def _event(self, name: str, event: Event) -> None:
        self.store.record(name, event)
        level = logging.WARNING if event.type == "Warning" else logging.INFO
        log.log(level, "%s: %s: %s", name, event.reason, event.message)


class LocalPort:
    """The driver's port in `weir run`: children are the runtime's Deployments and server
    processes, a plan is applied to them, events go to the store and the log."""

    router: RouterName = "local"

    def __init__(self, runtime: LocalRuntime, entry: Entry) -> None:
        self.runtime = runtime
        self.entry = entry

    async def observe(self, md: ModelDeployment) -> World:
        runtime = self.runtime
        mine = runtime._deployments.setdefault(md.name, {})
        states = (runtime._state(md, d) for d in mine)
        observed = Observed(
            revisions={state.revision: state for state in states if state is not None},
            children=frozenset(("Deployment", d) for d in mine),
        )
        return World(observed, runtime.pool.pods(set(mine)))

    async def apply(self, md: ModelDeployment, plan: Plan) -> None:
        if md.name not in self.runtime.store.names() or (
            self.runtime.store.entry(md.name) is not self.entry
        ):
            raise Superseded(md.name)  # deleted or replaced while it was measured
        self.runtime._apply(md, plan)

    def post(self, md: ModelDeployment, events: Sequence[Event]) -> None:
        for event in events:
            self.runtime._event(md.name, event)


def _is_name(name: str) -> bool:
    return re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) is not None and len(name) <= 45


def _signature(path: Path) -> tuple[str, float, int]:
    try:
        stat = path.stat()
    except OSError:
        return (str(path), -1.0, -1)
    return (str(path), stat.st_mtime, stat.st_size)


def _replicas(md: ModelDeployment, child: dict[str, Any]) -> int:
    """Replicas to run; None in a rendered Deployment means an HPA would decide (cpu
    autoscaling), which `weir run` does not have: it runs the minimum."""
    replicas = (child.get("spec") or {}).get("replicas")
    if replicas is not None:
        return int(replicas)
    autoscaling = md.spec.autoscaling
    return autoscaling.min_replicas if autoscaling is not None else md.spec.replicas


def _now() -> datetime:
    return datetime.now(UTC)


def _raise_if_failed(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _listen(server: uvicorn.Server, what: str) -> None:
    config = server.config
    try:
        await server.serve()
    except SystemExit:  # uvicorn's answer to a port it cannot bind
        raise OSError(
            f"the {what} cannot listen on {config.host}:{config.port} (in use?)"
        ) from None


def _server(app: Any, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    return _QuietServer(config)


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signals to `weir run` (it stops the servers in order)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def install_signal_handlers(runtime: LocalRuntime) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, runtime.stop)
