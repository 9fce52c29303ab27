"""Fixtures: a `WeirEmulator` served over HTTP on the test's event loop, ways to talk to it, the
operator process, and a stand-in for the Deployment controller the emulator does not have.

The emulator runs on the test's event loop: tests must await (`asyncio.to_thread` for the sync
`kubernetes` client, `asyncio.create_subprocess_exec` or polling with `eventually` around a
subprocess), never block it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import kubernetes
import pytest
import pytest_asyncio

from tests.support.emulator import EmulatorApi, WeirEmulator, serve, write_kubeconfig
from tests.support.operator_process import Operator

DEPLOYMENTS = "apps/v1/deployments"


@pytest_asyncio.fixture
async def emulator(request: pytest.FixtureRequest) -> AsyncIterator[WeirEmulator]:
    """A fresh emulator per test, every resource of `RESOURCES` declared. Options as for kmock's
    own fixture: ``@pytest.mark.kmock(strict=True)`` on a test, class or module."""
    options = {}
    for marker in reversed(list(request.node.iter_markers("kmock"))):
        options.update(marker.kwargs)
    async with serve(**options) as emulator:
        yield emulator


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_emulator() -> AsyncIterator[WeirEmulator]:
    """One emulator for a module; its tests need `pytest.mark.asyncio(loop_scope="module")`."""
    async with serve() as emulator:
        yield emulator


@pytest.fixture
def emulator_url(emulator: WeirEmulator) -> str:
    return str(emulator.url).rstrip("/")


@pytest.fixture
def kubeconfig(tmp_path: Path, emulator_url: str) -> Path:
    """A kubeconfig file for the emulator (plain HTTP, dummy token, namespace "default")."""
    return write_kubeconfig(tmp_path / "kubeconfig", emulator_url)


@pytest.fixture
def k8s_client(kubeconfig: Path) -> Iterator[kubernetes.client.ApiClient]:
    """A `kubernetes` ApiClient for the emulator; call its APIs through `asyncio.to_thread`."""
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    yield client
    client.close()


@pytest.fixture
def emulator_api(emulator: WeirEmulator) -> EmulatorApi:
    """Async create/get/list/patch/delete over the emulator's HTTP API."""
    return EmulatorApi(emulator)


@pytest_asyncio.fixture
async def operator(kubeconfig: Path, tmp_path: Path) -> AsyncIterator[Operator]:
    """The real operator process (`weir operator --interval 1`) against the test's emulator."""
    running = Operator(kubeconfig, tmp_path / "operator.log")
    yield running
    await running.stop()
    print(running.log()[-8000:])  # shown by pytest only when the test failed


@pytest_asyncio.fixture
async def deployment_controller(emulator_api: EmulatorApi) -> AsyncIterator[None]:
    """Plays the Deployment controller (the emulator has none): every Deployment's replicas (1
    when unset, as the API server defaults) become ready a moment after they are asked for."""

    async def run() -> None:
        while True:
            for deployment in await emulator_api.list(DEPLOYMENTS, "default"):
                wanted = deployment["spec"].get("replicas", 1)
                if (deployment.get("status") or {}).get("readyReplicas") != wanted:
                    counts = ("replicas", "readyReplicas", "updatedReplicas", "availableReplicas")
                    await emulator_api.patch(
                        DEPLOYMENTS,
                        "default",
                        deployment["metadata"]["name"],
                        {"status": dict.fromkeys(counts, wanted)},
                        subresource="status",
                    )
            await asyncio.sleep(0.2)

    task = asyncio.create_task(run())
    yield
    task.cancel()
