"""The `weir` client commands: apply, get, status, set-model, promote, abort, retry, undo, history.

Why it exists: CI pipelines and SREs drive rollouts from a shell, against a cluster (the
`kubernetes` client, standard kubeconfig discovery) or against `weir run` on a laptop (its
control API, `--local URL`). The commands are written once, against a narrow `Backend`
(`backend.py`); one implementation per place (`kube_backend.py`, `local_backend.py`). What is
shown and decided (tables, the status view, when a wait is over) is pure (`views.py`,
`state.py`), so it is tested without any server. Nothing here is imported until a command runs."""
