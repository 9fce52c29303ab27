"""`weir operator`: run the kopf operator (standard kubeconfig discovery)."""

from __future__ import annotations

import argparse
import logging
import random
import sys


def add_operator_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "operator",
        help="run the Kubernetes operator (in-cluster, KUBECONFIG or ~/.kube/config)",
        description="Reconcile ModelDeployments into inference servers.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    parser.add_argument(
        "--server-image", default="weir:0.1.0", help="image of the inference servers"
    )
    parser.add_argument(
        "--metrics-port", type=int, default=9090, help="Prometheus /metrics port; 0 = off"
    )
    parser.add_argument(
        "--liveness-port", type=int, default=8081, help="kopf's /healthz port; 0 = off"
    )
    parser.add_argument(
        "--interval", type=float, default=5.0, help="seconds between convergence checks"
    )
    parser.add_argument(
        "--require-sha256",
        action="store_true",
        help="serve only models whose spec.model.sha256 is set (and monitoring references "
        "whose spec.monitoring.reference.sha256 is); any other ModelDeployment is Failed "
        "(InvalidSpec) and its serving stable is left as it is",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.set_defaults(handler=run_operator)


def run_operator(args: argparse.Namespace) -> int:
    import kopf
    import kubernetes
    from prometheus_client import start_http_server

    from weir_operator.cluster.controller import OperatorContext, create_registry
    from weir_operator.cluster.kube import Kube
    from weir_operator.cluster.metrics import OperatorMetrics
    from weir_operator.core.policy import Policy
    from weir_operator.core.render import RenderSettings
    from weir_server.accesslog import configure_logging

    configure_logging(args.log_level)
    if args.log_level != "debug":  # kopf logs every timer tick of every object at info
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per scrape and probe
    try:
        kubernetes.config.load_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException as error:
        print(f"weir operator: error: no Kubernetes cluster to talk to: {error}", file=sys.stderr)
        return 1
    metrics = OperatorMetrics()
    if args.metrics_port:
        start_http_server(args.metrics_port, registry=metrics.registry)
    context = OperatorContext(
        kube=Kube(),
        metrics=metrics,
        render=RenderSettings(server_image=args.server_image),
        policy=Policy(require_sha256=args.require_sha256),
        exact_namespaces=bool(args.namespace) and not any("*" in n for n in args.namespace),
    )
    registry = create_registry(interval=args.interval)
    liveness = f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None
    logging.getLogger("weir.operator").info(
        "watching %s", ", ".join(args.namespace) if args.namespace else "all namespaces"
    )
    kopf.run(
        registry=registry,
        # Replicas of equal priority would all pause when peering is on; a random priority lets
        # one lead while the others stand by (a tie only delays the choice to the next check).
        priority=random.randint(1, 2**31 - 1),
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=liveness,
        memo=kopf.Memo(context=context),
    )
    return 0
