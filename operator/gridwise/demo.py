"""`gridwise demo`: the operator on a local cluster, replaying a real grid trace at high speed."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub.add_parser("demo", help="run the operator on a local cluster against a replayed real trace")


def run(args: argparse.Namespace) -> int:
    raise SystemExit("gridwise demo: not built yet")
