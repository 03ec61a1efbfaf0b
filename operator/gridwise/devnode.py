"""One real node (containerd + kubelet + kube-proxy + CoreDNS) beside the kwok GPU nodes.

kwok pods never run a process, so checkpoints, SIGTERM, grace periods, in-cluster API access
and pod-to-pod scrapes can only be proven on a real kubelet. `LocalControlPlane(real_node=True)`
starts this node; the facts it relies on (restrict_oom_score_adj, failCgroupV1, runc, a
non-loopback advertise address) are in the README section "A real node".

GPUs: the node advertises no `nvidia.com/gpu` by default. Trainer pods on it run on CPU and
must not request GPUs; they select the node with the label `gridwise.dev/node=real` (the kwok
GPU nodes would otherwise take them and never run them). A fake GPU capacity would let a pod
that requests a GPU schedule here and then run without one, which hides the very mismatch a
test should catch; `RealNode(fake_gpus=N)` patches one in for manifests that cannot change.

Machine-wide effects: the kubelet and kube-proxy own fixed ports, iptables chains, cgroups and
sysctls, so only one real node runs per machine. It holds an exclusive flock on
`~/.cache/gridwise/node.lock` for its lifetime; a second one waits. Everything it changes on the
host is recorded under `~/.cache/gridwise/node/run` and undone by `stop()`, or by the next
start after a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import ipaddress
import json
import logging
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

log = logging.getLogger("gridwise.devnode")

NODE_NAME = "gridwise-node"
NODE_LABEL = "gridwise.dev/node"  # value "real": manifests select the real node with it
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
CLUSTER_DOMAIN = "cluster.local"
CNI_NETWORK = "gridwise-node"
BRIDGE = "gwnode0"
IMAGE_DOMAIN = "gridwise.local"  # local-only image names, never pulled from a registry
DEB_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "iptables", "podman", "busybox-static")
INSTALL_HINT = "hack/install-node-deps.sh"
HOST_TOOLS = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "ip6tables": "iptables",
    "gcc": "gcc",
    "openssl": "openssl",
    "ip": "iproute2",
    "busybox": "busybox-static",
}
CNI_PLUGINS = ("bridge", "host-local", "loopback")
CNI_BIN = Path("/usr/lib/cni")
NODE_BINARIES = ("kubelet", "kube-proxy", "coredns")
# What the kubelet sets (setupKernelTunables) and what the node needs; restored on stop.
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.ipv4.conf.all.route_localnet",
)
SHARED_SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
)
# Host paths the kubelet or containerd hard-code. Removed on stop if they did not exist before;
# shared ones (CNI cache, netns dir) are only cleaned of our own entries.
KUBELET_HOST_DIRS = (Path("/var/lib/kubelet"), Path("/var/log/pods"), Path("/var/log/containers"))
SHARED_HOST_DIRS = (Path("/var/lib/cni"), Path("/var/run/netns"), Path("/run/containerd"))


class NodeError(RuntimeError):
    """The real node could not start; the message names the command that fixes it."""


def cache_root() -> Path:
    return Path(os.environ.get("GRIDWISE_CACHE") or Path.home() / ".cache" / "gridwise")


def node_ip() -> str:
    """The primary non-loopback IPv4 (the default route's interface): in-cluster clients need it."""
    out = subprocess.run(
        ["ip", "-4", "-o", "route", "show", "default"], capture_output=True, text=True, check=False
    ).stdout.split()
    dev = out[out.index("dev") + 1] if "dev" in out else None
    args = ["ip", "-4", "-o", "addr", "show", *(["dev", dev] if dev else []), "scope", "global"]
    for line in subprocess.run(args, capture_output=True, text=True, check=False).stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            addr = parts[parts.index("inet") + 1].split("/")[0]
            if not ipaddress.ip_address(addr).is_loopback:
                return addr
    raise NodeError("no non-loopback IPv4 address found (`ip -4 addr`); a real node needs one")


def service_ip(cidr: str, index: int) -> str:
    return str(ipaddress.ip_network(cidr)[index])


def check_host(bin_dir: Path) -> None:
    """Fails with the exact command to run when a package or a node binary is missing."""
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})
    missing += sorted(
        {"containernetworking-plugins" for p in CNI_PLUGINS if not (CNI_BIN / p).is_file()} - set(missing)
    )
    if missing:
        raise NodeError(
            f"the real node needs Debian packages {', '.join(missing)}: run `{INSTALL_HINT}` "
            f"(apt-get install -y {' '.join(DEB_PACKAGES)})"
        )
    absent = [b for b in NODE_BINARIES if not (bin_dir / b).is_file()]
    if absent:
        raise NodeError(
            f"{', '.join(absent)} not found in {bin_dir}: build them with `hack/build-control-plane.sh`"
        )
    if os.geteuid() != 0:
        raise NodeError("the real node runs kubelet and containerd, which need root")


# -- certificates -----------------------------------------------------------------------------
def _openssl(*args: str, stdin: str | None = None) -> None:
    proc = subprocess.run(["openssl", *args], input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NodeError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path


def make_ca(directory: Path, name: str = "gridwise-local-ca") -> Cert:
    directory.mkdir(parents=True, exist_ok=True)
    ca = Cert(directory / "ca.crt", directory / "ca.key")
    if not ca.cert.exists():
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(ca.key))
        _openssl(
            "req", "-x509", "-new", "-key", str(ca.key), "-out", str(ca.cert), "-days", "30",
            "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        )  # fmt: skip
    return ca


def issue_cert(
    ca: Cert,
    directory: Path,
    name: str,
    *,
    cn: str,
    orgs: Sequence[str] = (),
    ips: Sequence[str] = (),
    dns: Sequence[str] = (),
    server: bool = False,
    client: bool = True,
) -> Cert:
    """A leaf cert signed by `ca`: client certs carry the identity (CN user, O groups)."""
    out = Cert(directory / f"{name}.crt", directory / f"{name}.key")
    subj = "/" + "/".join([*(f"O={o}" for o in orgs), f"CN={cn}"])
    usages = [u for u, on in (("serverAuth", server), ("clientAuth", client)) if on]
    ext = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={','.join(usages)}",
    ]
    sans = [f"IP:{i}" for i in ips] + [f"DNS:{d}" for d in dns]
    if sans:
        ext.append(f"subjectAltName={','.join(sans)}")
    extfile = directory / f"{name}.ext"
    extfile.write_text("\n".join(ext) + "\n")
    csr = directory / f"{name}.csr"
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(out.key))
    _openssl("req", "-new", "-key", str(out.key), "-out", str(csr), "-subj", subj)
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial", "-out", str(out.cert), "-days", "30", "-extfile", str(extfile),
    )  # fmt: skip
    csr.unlink()
    return out


def cert_kubeconfig(path: Path, server: str, ca: Path, cert: Cert, user: str) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [
            {"name": user, "user": {"client-certificate": str(cert.cert), "client-key": str(cert.key)}}
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


# -- images without a registry ------------------------------------------------------------------
def normalize_ref(ref: str) -> str:
    """The name containerd stores an image under (docker.io/library/ prefix, :latest tag)."""
    name, _, digest = ref.partition("@")
    first = name.split("/", 1)[0]
    if "/" not in name or not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name if '/' in name else 'library/' + name}"
    if not digest and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return f"{name}@{digest}" if digest else name


def _tar_add(tar: tarfile.TarFile, name: str, *, data: bytes | None = None, mode: int = 0o644,
             kind: bytes = tarfile.REGTYPE, link: str = "") -> None:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.linkname = link
    info.size = len(data) if data is not None else 0
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def scratch_image_archive(
    ref: str,
    dest: Path,
    files: Mapping[str, Path | bytes],
    *,
    entrypoint: Sequence[str],
    symlinks: Mapping[str, str] | None = None,
    env: Sequence[str] = ("PATH=/bin",),
) -> Path:
    """A one-layer FROM-scratch image as a `docker save` archive, byte-for-byte reproducible."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        dirs = sorted({str(Path(p).parent).lstrip("/") for p in [*files, *(symlinks or {})]} - {""})
        for d in ["tmp", *dirs]:
            _tar_add(tar, d + "/", kind=tarfile.DIRTYPE, mode=0o1777 if d == "tmp" else 0o755)
        for path, src in sorted(files.items()):
            data = src if isinstance(src, bytes) else src.read_bytes()
            _tar_add(tar, path.lstrip("/"), data=data, mode=0o755)
        for path, target in sorted((symlinks or {}).items()):
            _tar_add(tar, path.lstrip("/"), kind=tarfile.SYMTYPE, link=target, mode=0o777)
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": list(entrypoint), "Env": list(env), "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "gridwise.devnode.scratch_image_archive"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": ["layer.tar"]}]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w") as out:
        _tar_add(out, "layer.tar", data=layer_bytes)
        _tar_add(out, config_name, data=config_bytes)
        _tar_add(out, "manifest.json", data=json.dumps(manifest).encode())
    return dest


def scratch_ref(
    name: str,
    files: Mapping[str, Path | bytes],
    *,
    entrypoint: Sequence[str],
    symlinks: Mapping[str, str] | None = None,
) -> str:
    """`gridwise.local/<name>:<content hash>`: the same inputs give the same tag, so imports are reused."""
    parts: list[bytes | Path | str] = [json.dumps([list(entrypoint), sorted((symlinks or {}).items())])]
    for path, src in sorted(files.items()):
        parts += [path, src]
    return f"{IMAGE_DOMAIN}/{name}:{content_tag(*parts)}"


def content_tag(*parts: bytes | Path | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.read_bytes() if isinstance(p, Path) else p.encode() if isinstance(p, str) else p)
    return h.hexdigest()[:12]


def build_pause_binary(dest: Path, source: Path | None = None) -> Path:
    """pause from the kubernetes module source, `gcc -Os -static` (the sandbox's init)."""
    src = source or kubernetes_module_dir() / "build" / "pause" / "linux" / "pause.c"
    if dest.is_file() and dest.stat().st_mtime >= src.stat().st_mtime:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["gcc", "-Os", "-static", "-Wall", "-Werror", "-DVERSION=gridwise", "-o", str(dest), str(src)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise NodeError(f"gcc failed to build pause from {src}: {proc.stderr.strip()}")
    subprocess.run(["strip", str(dest)], check=False, capture_output=True)
    return dest


def kubernetes_module_dir() -> Path:
    """k8s.io/kubernetes in the Go module cache (hack/build-control-plane.sh downloaded it)."""
    env = Path(__file__).resolve().parents[2] / "hack" / "versions.env"
    version = "v1.35.4"
    if env.is_file():
        for line in env.read_text().splitlines():
            if line.startswith("KUBERNETES_VERSION="):
                version = line.split("=", 1)[1].strip()
    modcache = subprocess.run(
        ["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=False
    ).stdout.strip() if shutil.which("go") else ""  # fmt: skip
    cand = Path(modcache or Path.home() / "go" / "pkg" / "mod") / "k8s.io" / f"kubernetes@{version}"
    if not cand.is_dir():
        raise NodeError(f"{cand} missing: run `hack/build-control-plane.sh` (it downloads the module)")
    return cand


LOCAL_STORAGE_CLASS = "gridwise-local"


def build_local_volume(
    namespace: str, claim: str, host_dir: Path, *, size: str = "1Gi"
) -> list[dict[str, Any]]:
    """A no-provisioner StorageClass, a local PV on the real node pre-bound to `namespace/claim`,
    and the claim: checkpoints that survive the pod, as on a cluster with local disks."""
    pv = f"{namespace}-{claim}"
    return [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": LOCAL_STORAGE_CLASS},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer",
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": LOCAL_STORAGE_CLASS,
                "local": {"path": str(host_dir)},
                "claimRef": {"namespace": namespace, "name": claim},
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": NODE_LABEL, "operator": "In", "values": ["real"]}]}
                        ]
                    }
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": LOCAL_STORAGE_CLASS,
                "volumeName": pv,
                "resources": {"requests": {"storage": size}},
            },
        },
    ]


def built_image_ref(kind: str, repo: Path | None = None) -> str:
    """The ref of the `kind` image ("trainer", "operator") from `$GRIDWISE_<KIND>_IMAGE`, else from
    `hack/build-images.sh`, which builds (or reuses, by content hash) the images and prints their refs.
    """
    ref = os.environ.get(f"GRIDWISE_{kind.upper()}_IMAGE", "").strip()
    if ref:
        return ref
    root = repo or Path(__file__).resolve().parents[2]
    script = root / "hack" / "build-images.sh"
    if not script.is_file():
        raise NodeError(
            f"the {kind} image is needed: build it with `hack/build-images.sh` or set "
            f"GRIDWISE_{kind.upper()}_IMAGE to a podman image ref"
        )
    proc = subprocess.run([str(script), kind], capture_output=True, text=True, check=False, cwd=root)
    if proc.returncode != 0:
        raise NodeError(f"hack/build-images.sh failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    refs = [w for w in proc.stdout.split() if kind in w.rsplit("/", 1)[-1] and ":" in w]
    if not refs:
        raise NodeError(f"hack/build-images.sh printed no {kind} image ref:\n{proc.stdout}")
    return refs[-1]


# -- the node --------------------------------------------------------------------------------------
@dataclass
class NodeConfig:
    name: str = NODE_NAME
    pod_cidr: str = POD_CIDR
    service_cidr: str = SERVICE_CIDR
    fake_gpus: int = 0
    dns: bool = True
    lock_timeout: float = 1800.0
    extra_labels: dict[str, str] = field(default_factory=dict)

    @property
    def dns_ip(self) -> str:
        return service_ip(self.service_cidr, 10)


class RealNode:
    """Runs containerd, kubelet, kube-proxy and CoreDNS for one control plane (see module doc)."""

    def __init__(
        self,
        *,
        server: str,
        ca: Cert,
        admin_kubeconfig: Path,
        bin_dir: Path,
        address: str,
        config: NodeConfig | None = None,
        root: Path | None = None,
    ) -> None:
        self.server = server
        self.ca = ca
        self.admin_kubeconfig = admin_kubeconfig
        self.bin_dir = bin_dir
        self.address = address
        self.config = config or NodeConfig()
        self.root = root or cache_root() / "node"
        self.run = self.root / "run"  # wiped each start: per-run state, sockets, kubelet dir
        self.images_dir = self.root / "images"
        self.containerd_root = self.root / "containerd"  # persists: imported images are reused
        self.sock = self.run / "containerd.sock"
        self.lock_path = self.root.parent / "node.lock"
        self._lock: IO[str] | None = None
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.logdir = self.root / "logs"  # the last run's logs, kept after stop for post-mortems

    # -- public ------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.name

    def start(self, timeout: float = 120.0) -> RealNode:
        check_host(self.bin_dir)
        self._acquire_lock()
        try:
            self.cleanup_host()
            self.run.mkdir(parents=True)
            shutil.rmtree(self.logdir, ignore_errors=True)
            self.logdir.mkdir()
            self._record_host_state()
            self._set_sysctls()
            self._start_containerd()
            self._remove_all_containers()  # a crashed run's containers are still in the metadata
            self.ensure_base_images()
            self._write_cni()
            self._start_kubelet(timeout)
            self._start_kube_proxy()
            if self.config.fake_gpus:
                self._advertise_gpus(self.config.fake_gpus)
            if self.config.dns:
                self._deploy_coredns(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Pods first, then kube-proxy, kubelet, containerd; then every host change is undone."""
        if self._lock is None:
            return
        try:
            if self._running("kubelet"):
                self._drain_pods()
            for name in ("kube-proxy", "kubelet"):
                self._stop_proc(name)
            if self._running("containerd"):
                self._remove_all_containers()
            self._stop_proc("containerd")
            self.cleanup_host()
        finally:
            self._release_lock()

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        kubectl = self.bin_dir / "kubectl"
        proc = subprocess.run(
            [str(kubectl), "--kubeconfig", str(self.admin_kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise NodeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def ctr(self, *args: str, stdin: IO[bytes] | None = None, check: bool = True) -> str:
        proc = subprocess.run(
            ["ctr", "-a", str(self.sock), "-n", "k8s.io", *args],
            stdin=stdin,
            capture_output=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)} failed: {proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout.decode(errors="replace")

    def has_image(self, ref: str) -> bool:
        return normalize_ref(ref) in self.ctr("images", "ls", "-q").split()

    def import_archive(self, archive: Path) -> None:
        with archive.open("rb") as f:
            self.ctr("images", "import", "--no-unpack=false", "-", stdin=f)

    def load_image(self, ref: str) -> str:
        """Makes a podman-built image available to pods (`imagePullPolicy: Never`); skips if present.

        `hack/build-images.sh` tags images by content, so an existing tag means the same bytes.
        """
        if self.has_image(ref):
            return normalize_ref(ref)
        if shutil.which("podman") is None:
            raise NodeError(f"podman not found: run `{INSTALL_HINT}`")
        exists = subprocess.run(["podman", "image", "exists", ref], check=False)
        if exists.returncode != 0:
            raise NodeError(f"image {ref} is not in podman's store: build it with `hack/build-images.sh`")
        t0 = time.monotonic()
        save = subprocess.Popen(["podman", "save", "--format", "docker-archive", ref], stdout=subprocess.PIPE)
        assert save.stdout is not None
        try:
            self.ctr("images", "import", "-", stdin=save.stdout)
        finally:
            save.stdout.close()
            rc = save.wait()
        if rc != 0:
            raise NodeError(f"podman save {ref} failed with exit code {rc}")
        if not self.has_image(ref):
            raise NodeError(f"imported {ref} but containerd does not list it as {normalize_ref(ref)}")
        log.info("loaded %s into the node in %.1fs", ref, time.monotonic() - t0)
        return normalize_ref(ref)

    def load_scratch_image(
        self,
        name: str,
        files: Mapping[str, Path | bytes],
        *,
        entrypoint: Sequence[str],
        symlinks: Mapping[str, str] | None = None,
    ) -> str:
        """A FROM-scratch image named by its content; built and imported only when missing."""
        ref = scratch_ref(name, files, entrypoint=entrypoint, symlinks=symlinks)
        if not self.has_image(ref):
            archive = self.images_dir / f"{name}.tar"
            scratch_image_archive(ref, archive, files, entrypoint=entrypoint, symlinks=symlinks)
            self.import_archive(archive)
            archive.unlink()
        return ref

    def busybox_image(self, extra: Mapping[str, Path] | None = None, name: str = "busybox") -> str:
        """Debian's static busybox with its applets linked in /bin (plus `extra` files)."""
        busybox = Path(shutil.which("busybox") or "/bin/busybox").resolve()
        applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True)
        links = {f"/bin/{a}": "busybox" for a in applets.stdout.split() if a != "busybox"}
        files: dict[str, Path | bytes] = {"/bin/busybox": busybox, **(extra or {})}
        return self.load_scratch_image(name, files, entrypoint=["/bin/sh"], symlinks=links)

    def ensure_base_images(self) -> None:
        self.load_scratch_image("pause", self._pause_files(), entrypoint=["/pause"])
        if self.config.dns:
            self.coredns_ref = self.load_scratch_image(
                "coredns", {"/coredns": self.bin_dir / "coredns"}, entrypoint=["/coredns"]
            )

    def _pause_files(self) -> dict[str, Path | bytes]:
        return {"/pause": build_pause_binary(self.images_dir / "pause")}

    # -- lock ----------------------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        f = self.lock_path.open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            log.warning(
                "another real node holds %s (%s); only one may run per machine, waiting up to %.0fs",
                self.lock_path,
                holder,
                self.config.lock_timeout,
            )
            deadline = time.monotonic() + self.config.lock_timeout
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        f.close()
                        raise NodeError(
                            f"timed out waiting for {self.lock_path} held by {holder}; "
                            "stop the other real node (tests, demo) first"
                        ) from None
                    time.sleep(1)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}\n")
        f.flush()
        self._lock = f

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.truncate(0)
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    # -- processes -------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        logf = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        self._procs.append((name, proc))
        pids = self.run / "pids.json"
        known = json.loads(pids.read_text()) if pids.exists() else {}
        known[name] = proc.pid
        pids.write_text(json.dumps(known))
        time.sleep(0.3)
        if proc.poll() is not None:
            raise NodeError(f"{name} exited at once (code {proc.returncode}); see {self.logdir / name}.log")
        return proc

    def _running(self, name: str) -> bool:
        return any(n == name and p.poll() is None for n, p in self._procs)

    def _stop_proc(self, name: str, timeout: float = 15.0) -> None:
        for n, proc in list(self._procs):
            if n != name:
                continue
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self._procs.remove((n, proc))

    def _wait(self, what: str, probe: Any, timeout: float, proc: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc and not self._running(proc):
                raise NodeError(f"{proc} died while waiting for {what}; see {self.logdir / proc}.log")
            if probe():
                return
            time.sleep(0.3)
        raise NodeError(f"timed out after {timeout:.0f}s waiting for {what}; logs in {self.logdir}")

    # -- containerd --------------------------------------------------------------------------------
    def _start_containerd(self) -> None:
        # Every sandbox runs the locally built pause image, imported right after containerd starts.
        sandbox = scratch_ref("pause", self._pause_files(), entrypoint=["/pause"])
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        conf = self.run / "containerd.toml"
        conf.write_text(
            f"""version = 2
root = "{self.containerd_root}"
state = "{self.run / "containerd-state"}"
[grpc]
  address = "{self.sock}"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.root / "opt"}"
[{cri}]
  sandbox_image = "{sandbox}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  BinaryName = "{shutil.which("runc") or "runc"}"
[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{self.run / "cni"}"
"""
        )
        self._spawn("containerd", ["containerd", "--config", str(conf), "--log-level", "warn"])
        self._wait(
            "containerd",
            lambda: self.sock.exists() and self.ctr("version", check=False) != "",
            30,
            proc="containerd",
        )

    def _write_cni(self) -> None:
        conf_dir = self.run / "cni"
        conf_dir.mkdir(exist_ok=True)
        gateway = service_ip(self.config.pod_cidr, 1)
        conflist = {
            "cniVersion": "1.0.0",
            "name": CNI_NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.config.pod_cidr, "gateway": gateway}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.run / "cni-ipam"),
                    },
                },
            ],
        }
        (conf_dir / "10-gridwise.conflist").write_text(json.dumps(conflist, indent=2))

    # -- kubelet -----------------------------------------------------------------------------------
    def _node_certs(self) -> tuple[Cert, Cert, Cert]:
        pki = self.run / "pki"
        pki.mkdir(exist_ok=True)
        ca_cert = self.ca
        kubelet_client = issue_cert(
            ca_cert, pki, "kubelet-client", cn=f"system:node:{self.name}", orgs=["system:nodes"]
        )
        kubelet_serving = issue_cert(
            ca_cert, pki, "kubelet-serving", cn=self.name, ips=[self.address], dns=[self.name],
            server=True, client=False,
        )  # fmt: skip
        proxy = issue_cert(ca_cert, pki, "kube-proxy", cn="system:kube-proxy")
        return kubelet_client, kubelet_serving, proxy

    def _start_kubelet(self, timeout: float) -> None:
        client, serving, proxy = self._node_certs()
        self._proxy_cert = proxy
        kubeconfig = cert_kubeconfig(
            self.run / "kubelet.kubeconfig", self.server, self.ca.cert, client, "kubelet"
        )
        hard_nofile = 20000
        with contextlib.suppress(ValueError, OSError):
            import resource

            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            hard_nofile = min(1_000_000, hard) if hard > 0 else hard_nofile
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,  # v1.35 refuses cgroup v1 otherwise; this VM is cgroup v1 hybrid
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.sock}",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.ca.cert)},
            },
            "authorization": {"mode": "Webhook"},
            "address": self.address,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "tlsCertFile": str(serving.cert),
            "tlsPrivateKeyFile": str(serving.key),
            "maxOpenFiles": hard_nofile,
            "podLogsDir": str(self.run / "pod-logs"),
            "clusterDNS": [self.config.dns_ip] if self.config.dns else [],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": "/etc/resolv.conf",
            "serializeImagePulls": False,
            # Imported images cannot be pulled again: never garbage-collect them, never evict on disk.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
            },
            "registerNode": True,
            "staticPodPath": "",
            "nodeStatusUpdateFrequency": "5s",
            "shutdownGracePeriod": "0s",
        }
        conf = self.run / "kubelet.yaml"
        conf.write_text(yaml.safe_dump(config))
        labels = {NODE_LABEL: "real", **self.config.extra_labels}
        self._spawn(
            "kubelet",
            [
                str(self.bin_dir / "kubelet"),
                f"--config={conf}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.run / 'kubelet'}",
                f"--cert-dir={self.run / 'kubelet-pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.address}",
                f"--node-labels={','.join(f'{k}={v}' for k, v in labels.items())}",
                "--v=1",
            ],
        )

        def ready() -> bool:
            out = self.kubectl(
                "get", "node", self.name, "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False,
            )  # fmt: skip
            return out.strip() == "True"

        self._wait(f"node {self.name} Ready", ready, timeout, proc="kubelet")

    def _start_kube_proxy(self) -> None:
        kubeconfig = cert_kubeconfig(
            self.run / "kube-proxy.kubeconfig", self.server, self.ca.cert, self._proxy_cert, "kube-proxy"
        )
        from gridwise.devcluster import free_port

        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "mode": "iptables",
            "clusterCIDR": self.config.pod_cidr,
            "hostnameOverride": self.name,
            "bindAddress": self.address,
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # Leave the host's conntrack table alone.
            "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "iptables": {"localhostNodePorts": False, "syncPeriod": "30s", "minSyncPeriod": "0s"},
        }
        conf = self.run / "kube-proxy.yaml"
        conf.write_text(yaml.safe_dump(config))
        self._spawn("kube-proxy", [str(self.bin_dir / "kube-proxy"), f"--config={conf}", "--v=1"])
        # The kubernetes Service must route before any in-cluster client (CoreDNS) starts.
        self._wait(
            "kube-proxy's service rules",
            lambda: "KUBE-SERVICES" in _run(["iptables", "-t", "nat", "-S", "KUBE-SERVICES"]),
            60,
            proc="kube-proxy",
        )

    def _advertise_gpus(self, count: int) -> None:
        patch = [{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": str(count)}]
        self.kubectl(
            "patch", "node", self.name, "--subresource=status", "--type=json", "-p", json.dumps(patch)
        )

    # -- CoreDNS ------------------------------------------------------------------------------------
    def _deploy_coredns(self, timeout: float) -> None:
        self.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(self._coredns_manifests()))
        self.kubectl(
            "-n", "kube-system", "rollout", "status", "deployment/coredns", f"--timeout={int(timeout)}s"
        )

    def _coredns_manifests(self) -> list[dict[str, Any]]:
        labels = {"k8s-app": "kube-dns"}
        corefile = (
            f".:53 {{\n    errors\n    ready :8181\n    health :8080\n"
            f"    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{\n"
            "        pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n        ttl 5\n    }\n"
            "    cache 5\n    loop\n}\n"
        )
        ns = "kube-system"
        return [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": ns}},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "gridwise:coredns"},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["endpoints", "services", "pods", "namespaces"],
                        "verbs": ["list", "watch"],
                    },
                    {
                        "apiGroups": ["discovery.k8s.io"],
                        "resources": ["endpointslices"],
                        "verbs": ["list", "watch"],
                    },
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "gridwise:coredns"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "gridwise:coredns",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": ns}],
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "coredns", "namespace": ns},
                "data": {"Corefile": corefile},
            },
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "coredns", "namespace": ns, "labels": labels},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "serviceAccountName": "coredns",
                            "dnsPolicy": "Default",
                            "nodeSelector": {NODE_LABEL: "real"},
                            "terminationGracePeriodSeconds": 1,
                            "containers": [
                                {
                                    "name": "coredns",
                                    "image": self.coredns_ref,
                                    "imagePullPolicy": "Never",
                                    "args": ["-conf", "/etc/coredns/Corefile"],
                                    "ports": [
                                        {"containerPort": 53, "protocol": "UDP", "name": "dns"},
                                        {"containerPort": 53, "protocol": "TCP", "name": "dns-tcp"},
                                    ],
                                    "readinessProbe": {
                                        "httpGet": {"path": "/ready", "port": 8181},
                                        "periodSeconds": 1,
                                    },
                                    "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns"}],
                                }
                            ],
                            "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                        },
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "kube-dns", "namespace": ns, "labels": labels},
                "spec": {
                    "clusterIP": self.config.dns_ip,
                    "selector": labels,
                    "ports": [
                        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    ],
                },
            },
        ]

    # -- teardown ----------------------------------------------------------------------------------
    def _drain_pods(self, timeout: float = 60.0) -> None:
        """Cordon, then delete every pod on the node with its grace period, and wait until gone."""
        self.kubectl("cordon", self.name, check=False)
        selector = f"--field-selector=spec.nodeName={self.name}"
        self.kubectl("delete", "pods", "--all-namespaces", selector, "--wait=false", check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = self.kubectl("get", "pods", "--all-namespaces", selector, "-o", "name", check=False)
            if not left.strip():
                break
            time.sleep(0.5)
        else:
            log.warning("pods still on %s after %.0fs; forcing", self.name, timeout)
            # A Job's pods keep batch.kubernetes.io/job-tracking until the Job controller has counted
            # them; once their Job is gone that can take for ever, and a forced delete then waits on it.
            listing = 'jsonpath={range .items[*]}{.metadata.namespace} {.metadata.name}{"\\n"}{end}'
            for line in self.kubectl(
                "get", "pods", "--all-namespaces", selector, "-o", listing, check=False
            ).splitlines():
                ns, _, name = line.partition(" ")
                if name:
                    unfinalize = '[{"op": "remove", "path": "/metadata/finalizers"}]'
                    self.kubectl("-n", ns, "patch", "pod", name, "--type=json", "-p", unfinalize, check=False)
            self.kubectl(
                "delete", "pods", "--all-namespaces", selector, "--grace-period=0", "--force", "--wait=false",
                check=False,
            )  # fmt: skip
        # The kubelet stops sandboxes (CNI DEL) a moment after the API object is gone.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self._running("containerd"):
            if not self.ctr("tasks", "ls", "-q", check=False).strip():
                break
            time.sleep(0.5)

    def _remove_all_containers(self) -> None:
        """Containers and sandboxes go with the run; images (and their unpacked layers) stay."""
        ids = self.ctr("containers", "ls", "-q", check=False).split()
        for cid in ids:
            self.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False)
            self.ctr("tasks", "delete", "-f", cid, check=False)
            self.ctr("containers", "delete", cid, check=False)

    def _record_host_state(self) -> None:
        state = {
            "sysctls": {k: _read_sysctl(k) for k in SYSCTLS},
            "absent_dirs": [str(d) for d in (*KUBELET_HOST_DIRS, *SHARED_HOST_DIRS) if not d.exists()],
        }
        (self.root / "host-state.json").write_text(json.dumps(state, indent=2))

    def _set_sysctls(self) -> None:
        _write_sysctl("net.ipv4.ip_forward", "1")
        _write_sysctl("net.bridge.bridge-nf-call-iptables", "1")

    def cleanup_host(self) -> None:
        """Undo everything a node (this one, or a crashed earlier one) did to the host. Idempotent."""
        self._kill_leftovers()
        _unmount_under([self.run, self.containerd_root, Path("/var/lib/kubelet")])
        for netns in _our_netns(self.config.pod_cidr):
            _run(["ip", "netns", "delete", netns])
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            _run(["ip", "link", "delete", BRIDGE])
        _cleanup_iptables(self.bin_dir / "kube-proxy")
        _remove_cgroups("kubepods")
        state_file = self.root / "host-state.json"
        if state_file.exists():
            state = json.loads(state_file.read_text())
            for key, value in state.get("sysctls", {}).items():
                current = _read_sysctl(key)
                if value is None or current == value:
                    continue
                if key in SHARED_SYSCTLS and _other_container_networks():
                    # podman (netavark) may have turned forwarding on meanwhile and still needs it.
                    log.info("leaving %s=%s: another container network on this host uses it", key, current)
                    continue
                log.info("restoring %s=%s (was %s)", key, value, current)
                _write_sysctl(key, value)
            absent = {Path(p) for p in state.get("absent_dirs", [])}
            for d in KUBELET_HOST_DIRS:
                if d in absent:
                    shutil.rmtree(d, ignore_errors=True)
            _clean_shared_dirs(absent)
            state_file.unlink()
        if self.run.exists():
            shutil.rmtree(self.run, ignore_errors=True)

    def _kill_leftovers(self) -> None:
        pids_file = self.run / "pids.json"
        if pids_file.exists():
            for name, pid in json.loads(pids_file.read_text()).items():
                if _cmdline(pid) and (name in _cmdline(pid) or "containerd" in _cmdline(pid)):
                    _kill(pid)
        # containerd shims outlive containerd; theirs carry our socket path.
        for pid in _pids():
            cmd = _cmdline(pid)
            if "containerd-shim" in cmd and str(self.sock) in cmd:
                _kill(pid)
        for _ in range(20):
            left = _cgroup_pids("kubepods")
            if not left:
                break
            for pid in left:
                _kill(pid)
            time.sleep(0.2)


# -- host helpers ---------------------------------------------------------------------------------
def _run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.stdout


def _read_sysctl(key: str) -> str | None:
    path = Path("/proc/sys") / key.replace(".", "/")
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _write_sysctl(key: str, value: str) -> None:
    path = Path("/proc/sys") / key.replace(".", "/")
    try:
        path.write_text(value + "\n")
    except OSError as exc:
        log.warning("could not set %s=%s: %s", key, value, exc)


def _pids() -> Iterator[int]:
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            yield int(d.name)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _cgroup_roots() -> list[Path]:
    roots = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        if fields[sep + 1] in ("cgroup", "cgroup2"):
            roots.append(Path(fields[4]))
    return roots


def _cgroup_pids(top: str) -> set[int]:
    found: set[int] = set()
    for root in _cgroup_roots():
        base = root / top
        if not base.is_dir():
            continue
        for procs in base.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                found.update(int(p) for p in procs.read_text().split())
    return found


def _remove_cgroups(top: str) -> None:
    for root in _cgroup_roots():
        base = root / top
        if not base.is_dir():
            continue
        dirs = sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for d in [*dirs, base]:
            with contextlib.suppress(OSError):
                d.rmdir()


def _unmount_under(prefixes: Sequence[Path]) -> None:
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == str(p) or point.startswith(f"{p}/") for p in prefixes):
            mounts.append(point)
    for point in sorted(set(mounts), key=lambda m: m.count("/"), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _our_netns(pod_cidr: str) -> list[str]:
    """CRI network namespaces whose pod address is in our pod CIDR (podman's are left alone)."""
    netns_dir = Path("/var/run/netns")
    if not netns_dir.is_dir():
        return []
    net = ipaddress.ip_network(pod_cidr)
    ours = []
    for ns in netns_dir.iterdir():
        if not ns.name.startswith("cni-"):
            continue
        out = _run(["ip", "netns", "exec", ns.name, "ip", "-4", "-o", "addr", "show"])
        addrs = [p.split("/")[0] for line in out.splitlines() for p in line.split()[3:4]]
        empty = not [a for a in addrs if a != "127.0.0.1"]
        if empty or any(ipaddress.ip_address(a) in net for a in addrs if a != "127.0.0.1"):
            # An empty CRI netns is a sandbox whose CNI DEL already ran: also ours to remove.
            ours.append(ns.name)
    return ours


def _cleanup_iptables(kube_proxy: Path) -> None:
    if kube_proxy.is_file():
        subprocess.run([str(kube_proxy), "--cleanup", "--v=0"], capture_output=True, check=False, timeout=60)
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            rules = _run([tool, "-t", table, "-S"]).splitlines()
            # kube-proxy and kubelet chains are all KUBE-*; the bridge plugin's masquerade rules
            # carry our network name in their comment (podman's CNI rules carry its own).
            ours = [r for r in rules if r.startswith("-A ") and (" -j KUBE-" in r or CNI_NETWORK in r)]
            cni_chains = {r.split(" -j ")[1].split()[0] for r in ours if " -j CNI-" in r}
            for rule in ours:
                chain = rule.split()[1]
                if chain.startswith("KUBE-") or chain in cni_chains:
                    continue  # flushed below
                _run_rule(tool, table, "-D" + rule[2:])
            chains = [r.split()[1] for r in rules if r.startswith("-N ")]
            targets = [c for c in chains if c.startswith("KUBE-") or c in cni_chains]
            for c in targets:
                _run([tool, "-t", table, "-F", c])
            for c in targets:
                _run([tool, "-t", table, "-X", c])


def _run_rule(tool: str, table: str, rule: str) -> None:
    import shlex

    subprocess.run([tool, "-t", table, *shlex.split(rule)], capture_output=True, check=False)


def host_leftovers(pod_cidr: str = POD_CIDR) -> list[str]:
    """What a stopped node would have left behind on the host (empty after a clean teardown)."""
    found = []
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            rules = _run([tool, "-t", table, "-S"])
            found += [
                f"{tool} -t {table}: {r}" for r in rules.splitlines() if "KUBE-" in r or CNI_NETWORK in r
            ]
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        found.append(f"bridge {BRIDGE}")
    found += [f"cgroup {root / 'kubepods'}" for root in _cgroup_roots() if (root / "kubepods").exists()]
    found += [f"netns {n}" for n in _our_netns(pod_cidr)]
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if "/gridwise/node/" in point or point.startswith("/var/lib/kubelet"):
            found.append(f"mount {point}")
    found += [
        f"process {pid}"
        for pid in _pids()
        if "containerd-shim" in _cmdline(pid) and "gridwise" in _cmdline(pid)
    ]
    return found


def _other_container_networks() -> bool:
    """podman's netavark or CNI networks: they rely on forwarding too."""
    links = _run(["ip", "-o", "link", "show"])
    if any(n in links for n in ("podman", "cni-podman", "netavark")):
        return True
    return "NETAVARK" in _run(["iptables", "-S"]) + _run(["iptables", "-t", "nat", "-S"])


def _clean_shared_dirs(absent: set[Path]) -> None:
    cni = Path("/var/lib/cni")
    if cni.is_dir():
        for f in cni.rglob("*"):
            if f.is_file() and CNI_NETWORK in f.name:
                f.unlink()
        shutil.rmtree(cni / "networks" / CNI_NETWORK, ignore_errors=True)
    netns = Path("/var/run/netns")
    if netns in absent and netns.is_dir() and not any(netns.iterdir()):
        # `ip netns`/containerd made it a shared bind mount of itself; undo that before removing it.
        for point in {str(netns), str(netns.resolve())}:
            subprocess.run(["umount", point], capture_output=True, check=False)
    for d in SHARED_HOST_DIRS:
        if d in absent and d.is_dir():
            # Only if nothing else (podman, another runtime) put entries there meanwhile.
            with contextlib.suppress(OSError):
                for sub in sorted(d.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                    if sub.is_dir() and not sub.is_symlink():
                        sub.rmdir()
                d.rmdir()
