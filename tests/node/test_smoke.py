"""The real node runs real pods: logs, in-cluster API with a ServiceAccount, DNS, pod-to-pod HTTP.

These are the capabilities the trainer tests rely on; each assertion fails loudly on a node
that only pretends (kwok) or a network that is half set up.
"""

from __future__ import annotations

import os

import pytest

from gridwise.devcluster import Cluster
from gridwise.devnode import NODE_LABEL, RealNode
from tests.node.conftest import apply, pod_manifest, wait_pod_phase, wait_ready

pytestmark = pytest.mark.node


def test_node_is_real_and_ready(cluster: Cluster, node: RealNode) -> None:
    out = cluster.kubectl("get", "node", node.name, "-o", "jsonpath={.metadata.labels}").stdout
    assert f'"{NODE_LABEL}":"real"' in out
    kubelet = cluster.kubectl(
        "get", "node", node.name, "-o", "jsonpath={.status.nodeInfo.containerRuntimeVersion}"
    )
    assert kubelet.stdout.startswith("containerd://")
    # No fake GPUs unless asked for: trainer pods here run on CPU.
    assert "nvidia.com/gpu" not in cluster.kubectl("get", "node", node.name, "-o", "json").stdout


def test_pod_runs_and_logs(cluster: Cluster, namespace: str, probe_image: str) -> None:
    apply(
        cluster,
        namespace,
        pod_manifest("hello", probe_image, ["sh", "-c", "echo hello from $(hostname); exit 3"]),
    )
    p = wait_pod_phase(cluster, namespace, "hello", {"Failed"})
    term = p["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 3  # a real process ran and its exit code came back
    assert cluster.kubectl("-n", namespace, "logs", "hello").stdout == "hello from hello\n"


def test_in_cluster_api_with_service_account(cluster: Cluster, namespace: str, probe_image: str) -> None:
    """The pod's token, the kube-root-ca.crt, the kubernetes Service and RBAC, all for real."""
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "read-pods"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "read-pods"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-pods"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
        },
    )
    script = (
        f"probe get https://kubernetes.default.svc/api/v1/namespaces/{namespace}/pods/api-client --sa"
        " && probe get https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/version --sa"
        f" && ! probe get https://kubernetes.default.svc/api/v1/namespaces/{namespace}/secrets --sa"
    )
    apply(cluster, namespace, pod_manifest("api-client", probe_image, ["sh", "-c", script]))
    wait_pod_phase(cluster, namespace, "api-client", {"Succeeded"}, timeout=90)
    logs = cluster.kubectl("-n", namespace, "logs", "api-client").stdout
    assert "200 OK" in logs and '"name": "api-client"' in logs.replace('":"', '": "')
    assert '"gitVersion"' in logs
    assert "403 Forbidden" in logs  # RBAC denies what the Role does not grant


def retried(cmd: str, attempts: int = 30) -> str:
    """`cmd` retried each second: a new Service reaches kube-proxy's rules and CoreDNS a moment later."""
    return f"(n=0; until {cmd}; do n=$((n+1)); [ $n -ge {attempts} ] && exit 1; sleep 1; done)"


def test_dns_and_pod_to_pod_http(cluster: Cluster, namespace: str, probe_image: str) -> None:
    server = pod_manifest(
        "web",
        probe_image,
        ["probe", "serve", "8080"],
        labels={"app": "web"},
        extra_spec={"hostname": "web-0", "subdomain": "web-headless"},
    )
    services = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web-headless"},
            "spec": {
                "clusterIP": "None",
                "selector": {"app": "web"},
                "ports": [{"port": 8080}],
                "publishNotReadyAddresses": True,
            },
        },
    ]
    apply(cluster, namespace, server, *services)
    wait_ready(cluster, namespace, "web")
    pod_ip = cluster.kubectl("-n", namespace, "get", "pod", "web", "-o", "jsonpath={.status.podIP}").stdout
    svc_ip = cluster.kubectl("-n", namespace, "get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}").stdout
    script = " && ".join(
        retried(cmd)
        for cmd in [
            f"probe get http://{pod_ip}:8080/",  # pod to pod over the bridge
            "probe get http://web/",  # short Service name: search path + ClusterIP via kube-proxy
            f"probe resolve web.{namespace}.svc.cluster.local",
            # torchrun's rendezvous address: <hostname>.<headless service>.<namespace>.svc
            f"probe resolve web-0.web-headless.{namespace}.svc",
            f"probe get http://web-0.web-headless.{namespace}.svc:8080/",
        ]
    )
    apply(cluster, namespace, pod_manifest("client", probe_image, ["sh", "-c", script]))
    wait_pod_phase(cluster, namespace, "client", {"Succeeded"}, timeout=90)
    logs = cluster.kubectl("-n", namespace, "logs", "client").stdout.splitlines()
    assert logs.count("hello from web-0") == 3, logs
    assert svc_ip in logs and logs.count(pod_ip) == 1, (logs, svc_ip, pod_ip)


def test_a_second_real_node_waits_for_the_machine_lock(
    node: RealNode, caplog: pytest.LogCaptureFixture
) -> None:
    """Only one real node per machine: another start waits on the flock, says why, then gives up."""
    from gridwise.devnode import NodeConfig, NodeError

    other = RealNode(
        server=node.server,
        ca=node.ca,
        admin_kubeconfig=node.admin_kubeconfig,
        bin_dir=node.bin_dir,
        address=node.address,
        config=NodeConfig(lock_timeout=1.5),
        root=node.root,
    )
    with caplog.at_level("WARNING", logger="gridwise.devnode"), pytest.raises(NodeError, match=r"node\.lock"):
        other._acquire_lock()
    assert "another real node holds" in caplog.text and f"pid {os.getpid()}" in caplog.text
