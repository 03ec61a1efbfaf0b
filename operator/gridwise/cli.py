"""The `gridwise` command: run the operator, replay traces through the planner, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime

from gridwise import __version__
from gridwise.clock import Clock, ReplayClock, SystemClock, parse_utc
from gridwise.demo import add_parser as add_demo
from gridwise.k8s.drains import HOLD_S
from gridwise.simulate.cli import add_parser as add_simulate

EPILOG_OPERATOR = """\
examples:
  gridwise operator run                          # in a pod: in-cluster credentials, leader election
  gridwise operator run --kubeconfig ~/.kube/config --namespace ml
  # replay June 2022 at one hour per second against a test cluster:
  gridwise operator run --clock replay --clock-start 2022-06-01T00:00:00Z --clock-speed 3600 \\
      --tick-seconds 1 --no-leader-election

leader election: replicas campaign for a coordination.k8s.io Lease; one leads and acts, the others
stand by (all report Ready on /readyz; gridwise_operator_leader on /metrics says which one leads).
A leader that cannot renew for --renew-deadline-seconds (API server unreachable) stops acting and
campaigns again; the process keeps running. It exits 1 only if the Lease is forbidden (RBAC).

grid signal for trainers: GET /v1/signal/<namespace>/<name> on --http-port answers the reading the
operator decided on for that job. With --signal-url (the base URL pods reach this port at) every Job
built tells its trainer that URL in GRIDWISE_CARBON_URL.
"""

ENV_SIGNAL_URL = "GRIDWISE_SIGNAL_URL"


def _parse_start(text: str) -> datetime:
    try:
        return parse_utc(text)
    except (ValueError, OverflowError) as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time like 2022-06-01T00:00:00Z"
        ) from exc


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc


def _positive(text: str) -> float:
    value = _number(text)
    if not value > 0:  # NaN compares false both ways
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {value}")
    return value


def _signal_url(text: str) -> str:
    """An absolute http(s) URL without query or fragment: /v1/signal/<ns>/<name> is appended to it."""
    from urllib.parse import urlsplit

    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a base URL like http://gridwise.gridwise-system.svc:8080"
        )
    return text.strip().rstrip("/")


def build_clock(kind: str, start: datetime | None, speed: float, anchor: float | None = None) -> Clock:
    if kind == "system":
        return SystemClock()
    if start is None:
        raise SystemExit("gridwise: --clock replay needs --clock-start (the trace time to start at)")
    return ReplayClock(start, speed, anchor)


def _add_operator(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    op = sub.add_parser("operator", help="run the Kubernetes operator")
    opsub = op.add_subparsers(dest="operator_command", required=True)
    run = opsub.add_parser(
        "run",
        help="watch CarbonAwareJobs and pause, scale or resume their Jobs",
        description="Watches CarbonAwareJobs; pauses, scales or resumes their Jobs by grid carbon intensity.",
        epilog=EPILOG_OPERATOR,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    run.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; default: all)",
    )
    run.add_argument(
        "--tick-seconds",
        type=_positive,
        default=30.0,
        help=(
            "wall seconds between safety-net reconciles of a job (default 30); grid changes, planned"
            " changes and Job or pod events act at once, and with many jobs the net stretches to at"
            " most 20 reconciles a second in all"
        ),
    )
    run.add_argument(
        "--pause-write-hold-seconds",
        type=_non_negative,
        default=HOLD_S,
        help=(
            f"status writes and Events wait while pods of jobs just paused are still being stopped,"
            f" at most this long (default {HOLD_S:g}; 0: never): in a mass pause the cluster stops"
            " the pods first"
        ),
    )
    run.add_argument(
        "--clock", choices=["system", "replay"], default="system", help="time source (default system)"
    )
    run.add_argument("--clock-start", type=_parse_start, help="replay clock: the time it starts at")
    run.add_argument(
        "--clock-speed",
        type=_positive,
        default=1.0,
        help="replay clock: how much faster than real time (default 1)",
    )
    run.add_argument(
        "--clock-anchor",
        type=float,
        help="replay clock: Unix time at which it reads --clock-start (default: now)",
    )
    run.add_argument(
        "--signal-ttl-seconds",
        type=float,
        help="reuse a carbon reading this long, in clock time (default 300)",
    )
    run.add_argument(
        "--signal-min-interval-seconds",
        type=float,
        help="never ask a provider more often than this after a failure, in clock time (default 60)",
    )
    run.add_argument(
        "--http-port", type=int, default=8080, help="port for /healthz, /readyz, /metrics (default 8080)"
    )
    run.add_argument("--http-host", default="0.0.0.0", help="address to serve probes and metrics on")
    run.add_argument(
        "--signal-url",
        type=_signal_url,
        default=os.environ.get(ENV_SIGNAL_URL) or None,
        help="base URL pods reach --http-port at, e.g. http://gridwise.gridwise-system.svc:8080; "
        f"trainers then read the operator's reading from it (env {ENV_SIGNAL_URL}; default: not told)",
    )
    run.add_argument(
        "--no-leader-election", action="store_true", help="act without holding the Lease (one replica only!)"
    )
    run.add_argument("--lease-namespace", default="default", help="namespace of the leader-election Lease")
    run.add_argument("--lease-name", default="gridwise-operator", help="name of the leader-election Lease")
    run.add_argument("--identity", help="this replica's name in the Lease (default: hostname-pid)")
    run.add_argument(
        "--lease-duration-seconds",
        type=_positive,
        default=15.0,
        help="a standby takes over after the Lease went unrenewed this long, by its own clock (default 15)",
    )
    run.add_argument(
        "--renew-deadline-seconds",
        type=_positive,
        default=10.0,
        help="the leader stops acting when it could not renew for this long (default 10)",
    )
    run.add_argument(
        "--retry-period-seconds",
        type=_positive,
        default=2.0,
        help="time between renewals and between a standby's attempts (default 2)",
    )
    run.add_argument(
        "--trainer-metrics-port", type=int, default=9400, help="port of the trainers' /metrics (default 9400)"
    )
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def _run_operator(args: argparse.Namespace) -> int:
    from gridwise.k8s.lease import CannotLead, LeaseTiming
    from gridwise.k8s.runtime import OperatorConfig, run_operator

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        timing = LeaseTiming(
            lease_duration_s=args.lease_duration_seconds,
            renew_deadline_s=args.renew_deadline_seconds,
            retry_period_s=args.retry_period_seconds,
            attempt_timeout_s=min(5.0, args.renew_deadline_seconds / 2),
        )
    except ValueError as exc:
        raise SystemExit(f"gridwise: {exc}") from None
    config = OperatorConfig(
        kubeconfig=args.kubeconfig,
        namespaces=args.namespace,
        tick_seconds=args.tick_seconds,
        pause_write_hold_s=args.pause_write_hold_seconds,
        clock=build_clock(args.clock, args.clock_start, args.clock_speed, args.clock_anchor),
        http_host=args.http_host,
        http_port=args.http_port,
        leader_election=not args.no_leader_election,
        lease_namespace=args.lease_namespace,
        lease_name=args.lease_name,
        trainer_metrics_port=args.trainer_metrics_port,
        signal_base=args.signal_url,
        lease_timing=timing,
        handle_signals=True,
    )
    if args.identity:
        config.identity = args.identity
    if args.clock == "replay":
        # Signal caching is in the replayed time: refresh as often as the trace steps.
        config.signal_min_interval_s = 0.0
    if args.signal_ttl_seconds is not None:
        config.signal_ttl_s = args.signal_ttl_seconds
    if args.signal_min_interval_seconds is not None:
        config.signal_min_interval_s = args.signal_min_interval_seconds

    try:
        asyncio.run(run_operator(config))
    except CannotLead as exc:
        print(f"gridwise: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridwise",
        description="Run GPU training jobs when the electricity grid is clean.",
        epilog="Run `gridwise COMMAND --help` for each command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"gridwise {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_operator(sub)
    add_simulate(sub)
    add_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "operator":
        return _run_operator(args)
    if args.command == "simulate":
        from gridwise.simulate.cli import run as run_simulate

        return run_simulate(args)
    if args.command == "demo":
        from gridwise.demo import run as run_demo

        return run_demo(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
