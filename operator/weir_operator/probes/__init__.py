"""The shells that measure for the core: the rollout's pre-traffic gates and analysis windows
(`rollout`), and Weir's own autoscaler's load (`autoscaler`, `loadmeter`). They talk to the
inference servers (HTTP) and hand plain values to the pure core; both the kopf operator and
`weir run` use them through the reconcile driver."""
