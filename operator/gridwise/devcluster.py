"""A real local Kubernetes control plane without Docker, for the tests and the demo.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake GPU
nodes) run as child processes on loopback. The binaries come from
`hack/build-control-plane.sh`, which builds them once into a versioned cache.
With `real_node=True` the apiserver binds and advertises the machine's non-loopback address
(pods reach it through the `kubernetes` Service) and one real node joins (`devnode`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from gridwise.devnode import Cert, NodeConfig, RealNode, issue_cert, make_ca, node_ip, service_ip

BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
)
BUILD_HINT = "hack/build-control-plane.sh"
ADMIN_TOKEN = "gridwise-admin-token"  # loopback-only cluster that lives as long as a test session
# A second identity, so an audit log can tell the operator's requests from the test's own.
OPERATOR_TOKEN = "gridwise-operator-token"
OPERATOR_USER = "gridwise-operator"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
POD_CIDR = "127.64.0.0/16"
NODE_IP = "127.63.0.1"


class ControlPlaneError(RuntimeError):
    """The local control plane could not be found or started; the message says how to fix it."""


def _repo_root() -> Path | None:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "hack" / "build-control-plane.sh").is_file():
            return parent
    return None


def find_binaries(bin_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the control-plane binaries are, or an error naming the command that builds them."""
    candidates: list[Path] = []
    if bin_dir is not None:
        candidates.append(Path(bin_dir))
    if env := os.environ.get("GRIDWISE_CONTROLPLANE_BIN"):
        candidates.append(Path(env))
    root = _repo_root()
    if root is not None:
        script = root / "hack" / "build-control-plane.sh"
        probe = subprocess.run(
            ["bash", str(script), "--print-if-built"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0 and probe.stdout.strip():
            candidates.append(Path(probe.stdout.strip()))
    for cand in candidates:
        if all((cand / b).is_file() and os.access(cand / b, os.X_OK) for b in BINARIES):
            return cand
    where = ", ".join(str(c) for c in candidates) or "nowhere (GRIDWISE_CONTROLPLANE_BIN is unset)"
    raise ControlPlaneError(
        f"control-plane binaries not found (looked in {where}). Build them once with `{BUILD_HINT}` "
        "(about 30-60 minutes on 2 cores; cached under ~/.cache/gridwise), or point KUBECONFIG at a cluster."
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class GPUNodePool:
    """Fake kwok nodes that advertise `nvidia.com/gpu` capacity."""

    count: int = 2
    gpus_per_node: int = 8
    name_prefix: str = "kwok-gpu"
    labels: dict[str, str] = field(
        default_factory=lambda: {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    )


def build_gpu_node(name: str, gpus: int, labels: dict[str, str]) -> dict[str, object]:
    """A Node manifest that kwok manages and the scheduler sees as a GPU machine."""
    capacity = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                **labels,
            },
        },
        "spec": {"taints": []},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


class Cluster:
    """Any cluster reached through a kubeconfig: the local control plane, kind, or a real one."""

    def __init__(self, kubeconfig: Path, bin_dir: Path | None) -> None:
        self.kubeconfig = kubeconfig
        self.bin = bin_dir

    def tool(self, name: str) -> str:
        if self.bin is not None and (self.bin / name).is_file():
            return str(self.bin / name)
        found = shutil.which(name)
        if found is None:
            raise ControlPlaneError(f"{name} not found: build it with `{BUILD_HINT}` or put it on PATH")
        return found

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Runs kubectl against this cluster; the error carries stderr so a failing test shows why."""
        proc = subprocess.run(
            [self.tool("kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def add_gpu_nodes(self, pool: GPUNodePool) -> list[str]:
        names = [f"{pool.name_prefix}-{i}" for i in range(pool.count)]
        docs = [build_gpu_node(n, pool.gpus_per_node, pool.labels) for n in names]
        self.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(docs))
        return names

    def wait_nodes_ready(self, names: Sequence[str], timeout: float = 60.0) -> None:
        self.kubectl(
            "wait", "--for=condition=Ready", f"--timeout={int(timeout)}s", *[f"node/{n}" for n in names]
        )

    def kubeconfig_for_service_account(self, namespace: str, account: str, dest: Path) -> Path:
        """A kubeconfig that acts as a ServiceAccount (a TokenRequest token): proves RBAC for real."""
        token = self.kubectl("-n", namespace, "create", "token", account, "--duration=2h").stdout.strip()
        doc = yaml.safe_load(self.kubeconfig.read_text())
        ctx_name = doc["current-context"]
        ctx = next(c for c in doc["contexts"] if c["name"] == ctx_name)
        doc["users"] = [{"name": account, "user": {"token": token}}]
        ctx["context"]["user"] = account
        doc["contexts"] = [ctx]
        dest.write_text(yaml.safe_dump(doc))
        dest.chmod(0o600)
        return dest

    def env(self) -> dict[str, str]:
        """Environment for child tools (kubectl, helm) that should talk to this cluster."""
        path = os.environ.get("PATH", "")
        if self.bin is not None:
            path = f"{self.bin}{os.pathsep}{path}"
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": path}


class LocalControlPlane(Cluster):
    """Starts and stops the control plane; `kubeconfig` is ready once `start()` returns."""

    def __init__(
        self,
        workdir: Path | None = None,
        bin_dir: Path | None = None,
        log_to: Path | None = None,
        *,
        audit: bool = False,
        real_node: bool = False,
        node_config: NodeConfig | None = None,
    ):
        """`audit=True` logs every API request (user, verb, resource) to `audit_log`, for benchmarks.

        `real_node=True` adds one real kubelet node (see `gridwise.devnode`) beside the kwok nodes.
        """
        self.audit = audit
        self.real_node = real_node
        self.node_config = node_config or NodeConfig()
        self.node: RealNode | None = None
        self.bin_dir = find_binaries(bin_dir)
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="gridwise-cp-"))
        self.logdir = log_to or self.workdir / "logs"
        super().__init__(self.workdir / "kubeconfig", self.bin_dir)
        self.port = free_port()
        # A real node's pods reach the API through the `kubernetes` Service, whose endpoint is the
        # advertise address: it must not be loopback, and the apiserver must listen there.
        self.address = node_ip() if real_node else "127.0.0.1"
        self.service_cidr = self.node_config.service_cidr if real_node else "10.0.0.0/24"
        self.server = f"https://{self.address}:{self.port}"
        self.ca: Cert | None = None
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    # -- lifecycle ---------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> LocalControlPlane:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logdir.mkdir(parents=True, exist_ok=True)
        try:
            self._write_credentials()
            self._start_etcd()
            self._start_apiserver()
            self._wait_ready(timeout)
            self._write_kubeconfig()
            self._start_controllers()
            self._start_kwok()
            if self.real_node:
                self._start_node(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        # The real node goes first, while the apiserver can still tell the kubelet to stop its pods.
        if self.node is not None:
            self.node.stop()
            self.node = None
        # Stateless parts die at once; the apiserver closes before etcd (stopping both together
        # can hang the apiserver on its etcd watches).
        for name, proc in reversed(self._procs):
            if proc.poll() is None and name not in ("etcd", "kube-apiserver"):
                proc.kill()
        for name in ("kube-apiserver", "etcd"):
            for n, proc in self._procs:
                if n != name or proc.poll() is not None:
                    continue
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for _, proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._procs.clear()
        if self._owns_workdir and not os.environ.get("GRIDWISE_KEEP_CLUSTER_DIR"):
            shutil.rmtree(self.workdir / "etcd", ignore_errors=True)

    def __enter__(self) -> LocalControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) each running part has used so far: what a burst cost the cluster."""
        tick = os.sysconf("SC_CLK_TCK")
        out: dict[str, float] = {}
        for name, proc in self._procs:
            try:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # exited meanwhile
                continue
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
        return out

    # -- faults (tests/faults) --------------------------------------------------------
    def _end(self, name: str) -> None:
        for i, (n, proc) in enumerate(self._procs):
            if n == name:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                del self._procs[i]
                return
        raise ControlPlaneError(f"{name} is not running")

    def stop_apiserver(self) -> None:
        """Stops kube-apiserver (SIGTERM, then SIGKILL): every client sees refused connections."""
        self._end("kube-apiserver")

    def start_apiserver(self, timeout: float = 60.0) -> None:
        """Starts it again on the same port, certificates and etcd: clients reconnect as they are.

        The controllers and kwok are restarted too: their informers back off for up to ~90 s after
        an outage (measured here), which would leave later tests without a working Job controller.
        """
        if any(name == "kube-apiserver" for name, _ in self._procs):
            raise ControlPlaneError("kube-apiserver is already running")
        self._start_apiserver()
        self._wait_ready(timeout)
        for name in ("kwok", "kube-scheduler", "kube-controller-manager"):
            self._end(name)
        self._start_controllers()
        self._start_kwok()

    # -- internals -----------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen([str(self.bin_dir / name), *args], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._procs.append((name, proc))
        time.sleep(0.2)
        if proc.poll() is not None:
            raise ControlPlaneError(
                f"{name} exited at once (code {proc.returncode}); see {self.logdir / name}.log"
            )

    def _write_credentials(self) -> None:
        key = self.workdir / "sa.key"
        if not key.exists():
            subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
            subprocess.run(
                ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(self.workdir / "sa.pub")],
                check=True,
                capture_output=True,
            )
        if self.real_node:
            # Own CA: the serving cert needs SANs for the Service IP and the node address, and the
            # kubelet and kube-proxy authenticate with client certs it signs.
            pki = self.workdir / "pki"
            self.ca = make_ca(pki)
            first_service_ip = service_ip(self.service_cidr, 1)
            self.serving = issue_cert(
                self.ca, pki, "apiserver", cn="kube-apiserver",
                ips=[self.address, first_service_ip, "127.0.0.1"],
                dns=["kubernetes", "kubernetes.default", "kubernetes.default.svc",
                     "kubernetes.default.svc.cluster.local", "localhost"],
                server=True, client=False,
            )  # fmt: skip
            self.kubelet_client = issue_cert(
                self.ca, pki, "apiserver-kubelet-client", cn="kube-apiserver-kubelet-client",
                orgs=["system:masters"],
            )  # fmt: skip
        (self.workdir / "tokens.csv").write_text(
            f'{ADMIN_TOKEN},gridwise-admin,1,"system:masters"\n'
            f'{OPERATOR_TOKEN},{OPERATOR_USER},2,"system:masters"\n'
        )

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn(
            "etcd",
            [
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=4294967296",
                "--log-level=warn",
            ],
        )

    def _start_apiserver(self) -> None:
        certs = self.workdir / "certs"
        certs.mkdir(exist_ok=True)
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={self.etcd_url}",
                f"--cert-dir={certs}",
                f"--secure-port={self.port}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--service-cluster-ip-range={self.service_cidr}",
                "--allow-privileged=true",
                *self._node_flags(),
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                f"--service-account-issuer={self.server}/",
                f"--service-account-key-file={self.workdir / 'sa.pub'}",
                f"--service-account-signing-key-file={self.workdir / 'sa.key'}",
                "--enable-priority-and-fairness=false",
                "--max-requests-inflight=2000",
                "--max-mutating-requests-inflight=1000",
                "--event-ttl=2h",
                "--v=1",
                *self._audit_flags(),
            ],
        )

    def _node_flags(self) -> list[str]:
        if not self.real_node:
            return ["--authorization-mode=RBAC"]
        assert self.ca is not None
        return [
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--client-ca-file={self.ca.cert}",
            f"--tls-cert-file={self.serving.cert}",
            f"--tls-private-key-file={self.serving.key}",
            f"--kubelet-client-certificate={self.kubelet_client.cert}",
            f"--kubelet-client-key={self.kubelet_client.key}",
            f"--kubelet-certificate-authority={self.ca.cert}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
        ]

    def _ca_file(self) -> Path:
        return self.ca.cert if self.ca is not None else self.workdir / "certs" / "apiserver.crt"

    def _start_node(self, timeout: float) -> None:
        assert self.ca is not None
        self.node = RealNode(
            server=self.server,
            ca=self.ca,
            admin_kubeconfig=self.kubeconfig,
            bin_dir=self.bin_dir,
            address=self.address,
            config=self.node_config,
        )
        self.node.start(timeout)

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def _audit_flags(self) -> list[str]:
        if not self.audit:
            return []
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n"
            "rules:\n  - level: Metadata\n"
        )
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=batch",
        ]

    def operator_kubeconfig(self) -> Path:
        """A kubeconfig with the operator's own identity (for audit counts); admin rights."""
        doc = yaml.safe_load(self.kubeconfig.read_text())
        doc["users"] = [{"name": OPERATOR_USER, "user": {"token": OPERATOR_TOKEN}}]
        doc["contexts"][0]["context"]["user"] = OPERATOR_USER
        path = self.workdir / "operator.kubeconfig"
        path.write_text(yaml.safe_dump(doc))
        path.chmod(0o600)
        return path

    def _wait_ready(self, timeout: float) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        req = urllib.request.Request(
            f"{self.server}/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            for name, proc in self._procs:
                if proc.poll() is not None:
                    raise ControlPlaneError(
                        f"{name} died (code {proc.returncode}); see {self.logdir / name}.log"
                    )
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.3)
        raise ControlPlaneError(f"kube-apiserver not ready after {timeout:.0f}s ({last}); see {self.logdir}")

    def _write_kubeconfig(self) -> None:
        ca = self._ca_file()
        cluster: dict[str, object] = {"server": self.server}
        if ca.exists():
            cluster["certificate-authority"] = str(ca)
        else:  # pragma: no cover - the apiserver always writes its self-signed pair here
            cluster["insecure-skip-tls-verify"] = True
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "gridwise-local", "cluster": cluster}],
            "users": [{"name": "gridwise-admin", "user": {"token": ADMIN_TOKEN}}],
            "contexts": [
                {"name": "gridwise-local", "context": {"cluster": "gridwise-local", "user": "gridwise-admin"}}
            ],
            "current-context": "gridwise-local",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def _start_controllers(self) -> None:
        kc = str(self.kubeconfig)
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--service-account-private-key-file={self.workdir / 'sa.key'}",
                f"--root-ca-file={self._ca_file()}",
                "--use-service-account-credentials=false",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route",
                "--concurrent-job-syncs=20",
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
                "--v=1",
            ],
        )

    def _start_kwok(self) -> None:
        stages = self.workdir / "kwok-stages.yaml"
        stages.write_text(resources.files("gridwise").joinpath("data", "kwok-stages.yaml").read_text())
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--config={stages}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                # Fake pod and node IPs on loopback: anything that connects to a pod (the
                # operator's progress scrape) stays on this machine, and a test can serve there.
                f"--cidr={POD_CIDR}",
                f"--node-ip={NODE_IP}",
                f"--server-address=127.0.0.1:{free_port()}",
            ],
        )


@contextlib.contextmanager
def running_control_plane(
    gpu_nodes: GPUNodePool | None = None, *, real_node: bool = False
) -> Iterator[LocalControlPlane]:
    """Context manager used by the demo: a cluster with fake GPU nodes, torn down on exit."""
    with LocalControlPlane(real_node=real_node) as cp:
        if gpu_nodes is not None and gpu_nodes.count:
            cp.wait_nodes_ready(cp.add_gpu_nodes(gpu_nodes))
        yield cp
