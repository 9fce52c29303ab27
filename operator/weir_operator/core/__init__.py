"""The pure core of Weir: what a ModelDeployment means and what to do about it.

No I/O here, and an import contract (`make lint`, `.importlinter`) keeps it so: no kopf, no
kubernetes, no httpx, no asyncio, no shell of Weir's. Every function takes what was observed
and returns what to do, so every rule is unit-tested without a cluster, a server or a clock.
docs/architecture.md shows how the shells around it drive it."""
