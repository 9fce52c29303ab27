"""The Kubernetes shell: the kopf operator (`controller`), its API client (`kube`), its metrics,
its command line and the RBAC rules it needs. It implements the reconcile driver's port for a
real cluster."""
