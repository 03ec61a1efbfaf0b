"""Shared test wiring: the one cluster every cluster-bound test uses in a session.

The local control plane is started once per test session (whichever test directory asks
first) with fake GPU nodes and the CRDs installed. Without its binaries the tests fail,
naming the command that builds them. `--kubeconfig` targets any other cluster instead.

`real_cluster` is a second, separate control plane with one real kubelet node beside the kwok
GPU nodes (tests/node use it). It is separate so the kwok-only suite stays fast and needs no
root, containerd or iptables; it starts only when a test asks for it, and a missing package or
binary fails the test with the command that installs or builds it.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridwise.devcluster import Cluster, ControlPlaneError, GPUNodePool, LocalControlPlane
from gridwise.devnode import NodeError, check_host, host_leftovers


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kubeconfig",
        default=None,
        help="run the cluster tests against this cluster (kind, a real one) instead of starting the "
        "local control plane; also GRIDWISE_TEST_KUBECONFIG",
    )


REPO = Path(__file__).resolve().parents[1]
CRDS = REPO / "crds"
GPU_NODES = GPUNodePool(count=4, gpus_per_node=8)


def _install_crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/carbonawarejobs.gridwise.dev"
    )


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    external = request.config.getoption("--kubeconfig") or os.environ.get("GRIDWISE_TEST_KUBECONFIG")
    if external:
        target = Cluster(Path(external), None)
        _install_crds(target)
        yield target
        return
    try:
        cp = LocalControlPlane(workdir=tmp_path_factory.mktemp("controlplane"))
    except ControlPlaneError as exc:
        pytest.fail(str(exc), pytrace=False)
    cp.start()
    try:
        cp.wait_nodes_ready(cp.add_gpu_nodes(GPU_NODES))
        _install_crds(cp)
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalControlPlane]:
    """The local control plane plus one real node (containerd, kubelet, kube-proxy, CoreDNS)."""
    try:
        cp = LocalControlPlane(workdir=tmp_path_factory.mktemp("realnode-cp"), real_node=True)
        check_host(cp.bin_dir)
    except (ControlPlaneError, NodeError) as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        cp.start(timeout=180)
    except (ControlPlaneError, NodeError) as exc:
        pytest.fail(f"real node did not start: {exc}", pytrace=False)
    try:
        cp.wait_nodes_ready(cp.add_gpu_nodes(GPUNodePool(count=1, gpus_per_node=8)))
        _install_crds(cp)
        yield cp
    finally:
        cp.stop()
    # Teardown must leave the host as it found it (iptables, bridge, cgroups, netns, mounts, shims).
    left = host_leftovers()
    assert not left, f"the real node left these on the host: {left}"


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace per test, with its default ServiceAccount ready (pods need it)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    deadline = time.monotonic() + 30
    while cluster.kubectl("-n", name, "get", "serviceaccount", "default", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"default ServiceAccount never appeared in {name}")
        time.sleep(0.2)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
