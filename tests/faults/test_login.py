"""The operator logs in through an exec credential plugin and leaves no key material on disk.

The kubeconfig's user runs a tiny plugin printing an ExecCredential with the test cluster's admin
token (as cloud providers' `aws eks get-token` or `gke-gcloud-auth-plugin` do). Both the operator's
own client and kopf must use it: the Job only appears if kopf (watch) and gridwise (create) both
authenticated.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest
import yaml

from gridwise.devcluster import ADMIN_TOKEN, Cluster
from tests.cluster.harness import caj_manifest, replay_trace, wait_for

from .conftest import Operators, job, leader_gauge, status

pytestmark = pytest.mark.cluster


def exec_kubeconfig(cluster: Cluster, tmp_path: Path, token: str) -> tuple[Path, Path]:
    runs = tmp_path / "plugin-runs"
    plugin = tmp_path / "token-plugin.py"
    plugin.write_text(
        f"""import json, os
with open({str(runs)!r}, "a") as f:
    f.write("run\\n")
api = json.loads(os.environ["KUBERNETES_EXEC_INFO"])["apiVersion"]
print(json.dumps({{"apiVersion": api, "kind": "ExecCredential", "status": {{"token": {token!r}}}}}))
"""
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    doc = yaml.safe_load(cluster.kubeconfig.read_text())
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin)],
            "interactiveMode": "Never",
        }
    }
    doc["users"] = [{"name": "via-exec", "user": user}]
    for ctx in doc["contexts"]:
        ctx["context"]["user"] = "via-exec"
    path = tmp_path / "exec.kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path, runs


def test_operator_logs_in_with_an_exec_plugin_and_leaves_no_key_files(
    cluster: Cluster, namespace: str, tmp_path: Path, operators: Operators
) -> None:
    kubeconfig, runs = exec_kubeconfig(cluster, tmp_path, ADMIN_TOKEN)
    scratch = tmp_path / "operator-tmp"
    scratch.mkdir()
    op = operators.start(kubeconfig=kubeconfig, leader_election=True, identity="exec-login",
                         extra_env={"TMPDIR": str(scratch)})  # fmt: skip
    wait_for("leadership (the Lease API accepted the plugin's token)", lambda: leader_gauge(op) == 1.0,
             log=op.log_tail)  # fmt: skip
    trace = replay_trace(tmp_path / "trace.csv", [100.0] * 48)
    cluster.kubectl("-n", namespace, "apply", "-f", "-",
                    input=caj_manifest("viaexec", trace=trace, policy={"type": "agnostic"}))  # fmt: skip
    wait_for("the Job", lambda: job(cluster, namespace, "viaexec"), log=op.log_tail)
    wait_for(
        "status", lambda: status(cluster, namespace, "viaexec").get("phase") == "Running", log=op.log_tail
    )
    assert runs.read_text().count("run") >= 1
    assert list(scratch.iterdir()) == [], "the login left files in the operator's temp dir"
    op.stop(sig_kill=True)  # even a hard kill leaves nothing behind: nothing was left to clean up
    assert list(scratch.iterdir()) == []


def test_a_token_the_api_server_rejects_is_a_clear_error(
    cluster: Cluster, namespace: str, tmp_path: Path, operators: Operators
) -> None:
    kubeconfig, _ = exec_kubeconfig(cluster, tmp_path, "not-a-valid-token")
    op = operators.start(kubeconfig=kubeconfig, leader_election=True, identity="bad-login",
                         wait_ready=False, extra_args=("--lease-duration-seconds", "3",
                                                       "--renew-deadline-seconds", "2",
                                                       "--retry-period-seconds", "0.5"))  # fmt: skip
    wait_for("the operator to give up", lambda: op.proc is not None and op.proc.poll() is not None,
             timeout=30, log=op.log_tail)  # fmt: skip
    assert op.proc is not None and op.proc.returncode == 1
    assert "HTTP 401" in op.log_tail(100) and "cannot take part in leader election" in op.log_tail(100)
