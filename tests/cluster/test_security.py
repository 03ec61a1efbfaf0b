"""Hostile CarbonAwareJobs against the real operator and API server: no key leaves where it belongs.

The operator runs with its own provider credentials and an allow-list naming one "attacker" URL (a local
HTTP server that records everything it receives). Tenants then try every route to those credentials and
to the operator's files. The test reads back what a tenant can see (status, Events) and the operator's
log, and what the attacker received.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridwise.devcluster import Cluster
from tests.cluster.harness import REPLAY_START, OperatorProcess, caj_manifest, get_json, wait_for

pytestmark = pytest.mark.cluster

OPERATOR_KEY = "opkey-EM-5f2b9c1e77"
OPERATOR_WT_USER = "opuser-WT-81aa"
OPERATOR_WT_PASS = "oppass-WT-c0ffee42"
OPERATOR_FILE_SECRET = "opfile-SECRET-9d8c7b"
TENANT_KEY = "tenant-EM-key-3141"


@dataclass
class Recorder:
    url: str = ""
    seen: list[str] = field(default_factory=list)  # path + all headers of every request

    def text(self) -> str:
        return "\n".join(self.seen)


@pytest.fixture
def attacker() -> Iterator[Recorder]:
    rec = Recorder()

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            rec.seen.append(self.path + "\n" + str(self.headers))
            # Answers as an upstream that echoes the request's credentials in an error body.
            body = f"rejected {self.headers.get('auth-token')} {self.headers.get('Authorization')}".encode()
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()


def _secret(cluster: Cluster, ns: str, name: str, data: dict[str, str]) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))


def _stale_message(cluster: Cluster, ns: str, name: str) -> str | None:
    st = get_json(cluster, ns, "caj", name).get("status") or {}
    for c in st.get("conditions") or []:
        if c["type"] == "CarbonSignalStale" and c["status"] == "True":
            return str(c.get("message", ""))
    return None


def test_hostile_manifests_never_get_or_show_a_key(
    cluster: Cluster, namespace: str, tmp_path: Path, attacker: Recorder
) -> None:
    op_file = tmp_path / "operator-only" / "token"  # outside the operator's trace directory
    op_file.parent.mkdir()
    op_file.write_text(OPERATOR_FILE_SECRET)
    op_dir = tmp_path / "operator"  # the harness makes the log's directory the trace directory
    op_dir.mkdir()
    trace = op_dir / "unused.csv"  # caj_manifest wants a path; every job here sets its own carbon
    op = OperatorProcess(
        cluster.kubeconfig,
        op_dir / "operator.log",
        clock_start=REPLAY_START,
        speed=600.0,
        extra_args=["--namespace", namespace, "--log-level", "DEBUG"],
        lease_namespace=namespace,
        extra_env={
            "ELECTRICITYMAPS_API_KEY": OPERATOR_KEY,
            "WATTTIME_USERNAME": OPERATOR_WT_USER,
            "WATTTIME_PASSWORD": OPERATOR_WT_PASS,
            "GRIDWISE_CARBON_ALLOWED_URLS": attacker.url,
        },
    )
    _secret(cluster, namespace, "file-trick", {"ELECTRICITYMAPS_API_KEY_FILE": str(op_file)})
    _secret(cluster, namespace, "tenant-own", {"ELECTRICITYMAPS_API_KEY": TENANT_KEY})
    em = {"provider": "electricitymaps", "zone": "DE"}
    jobs: dict[str, tuple[dict[str, Any], str]] = {
        # baseURL not on the allow-list: refused before any connection.
        "unlisted": ({**em, "baseURL": "http://127.0.0.1:1/steal"}, "not on the operator's allow-list"),
        # allow-listed, but no Secret of its own: the operator's keys are not lent out.
        "borrow-em": ({**em, "baseURL": attacker.url}, "only sent to https://api.electricitymap.org"),
        "borrow-wt": (
            {"provider": "watttime", "zone": "CAISO_NORTH", "baseURL": attacker.url},
            "only sent to https://api.watttime.org",
        ),
        # its Secret points the operator at the operator's own file.
        "file-trick": (
            {**em, "baseURL": attacker.url, "secretRef": {"name": "file-trick"}},
            "ELECTRICITYMAPS_API_KEY_FILE",
        ),
        # the operator's files as a trace.
        "passwd": ({"provider": "trace", "zone": "X", "tracePath": "/etc/passwd"}, "not a trace file"),
        "op-file": ({"provider": "trace", "zone": "X", "tracePath": str(op_file)}, "not a trace file"),
        # its own key to an allow-listed URL is fine; the echoed key must not reach status.
        "own-key": (
            {**em, "baseURL": attacker.url, "secretRef": {"name": "tenant-own"}},
            "credentials rejected",
        ),
    }
    op.start()
    try:
        for name, (carbon, _) in jobs.items():
            manifest = caj_manifest(name, trace=trace, policy={"type": "forecast"}, carbon=carbon)
            cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
        for name, (_, expect) in jobs.items():
            message = wait_for(
                f"{name}: a CarbonSignalStale condition",
                lambda n=name: _stale_message(cluster, namespace, n),  # type: ignore[misc]
                timeout=90,
                log=op.log_tail,
            )
            assert expect in message, f"{name}: {message}"
    finally:
        op.stop()

    bodies = [get_json(cluster, namespace, "caj", n) for n in jobs]
    for body in bodies:
        # status.acceptedSpec is the tenant's own spec, verbatim (what a refused later edit falls back
        # to): it may name the path the tenant wrote, and nothing the operator found.
        accepted = (body.get("status") or {}).pop("acceptedSpec", None)
        assert accepted is None or json.loads(accepted) == body["spec"], accepted
    statuses = json.dumps([b.get("status") for b in bodies])
    events = cluster.kubectl("-n", namespace, "get", "events", "-o", "json").stdout
    log = op.log_path.read_text(errors="replace")
    operator_secrets = (OPERATOR_KEY, OPERATOR_WT_USER, OPERATOR_WT_PASS, OPERATOR_FILE_SECRET)
    for secret in operator_secrets:
        assert secret not in attacker.text(), f"the attacker received {secret}"
        assert secret not in statuses and secret not in events and secret not in log, secret
    tenant_b64 = base64.b64encode(TENANT_KEY.encode()).decode()
    for where, text in (("status", statuses), ("events", events), ("log", log)):
        assert TENANT_KEY not in text, f"the tenant's key appears in {where}"
        assert tenant_b64 not in text, f"the tenant's Secret data appears in {where}"
        assert str(op_file.parent) not in text or where == "log", f"an operator path appears in {where}"
    # Only the tenant's own key ever reached the attacker (the "own-key" job); nothing else connected.
    assert attacker.seen and all(TENANT_KEY in r for r in attacker.seen), attacker.text()
