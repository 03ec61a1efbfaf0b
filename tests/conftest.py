"""Shared test wiring: which cluster the cluster-bound tests run against."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kubeconfig",
        default=None,
        help="run the cluster tests against this cluster (kind, a real one) instead of starting the "
        "local control plane; also GRIDWISE_TEST_KUBECONFIG",
    )
