"""Weir's operator side: the `weir` command line and (as issues land) the ModelDeployment
API, the rollout engine and the kopf operator."""
