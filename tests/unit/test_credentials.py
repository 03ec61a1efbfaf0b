"""The operator's login: kubeconfig key material never stays on disk; exec credential plugins work.

The real API server accepts these credentials in tests/faults/test_login.py; here the loaded
configuration and kopf's ConnectionInfo are checked offline.
"""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from gridwise.k8s.credentials import Credentials


@pytest.fixture
def scratch_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temp dir, redirected: whatever a login writes there is visible to the test."""
    tmp = tmp_path / "systmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def _pki(tmp_path: Path) -> dict[str, bytes]:
    """A CA and a client certificate signed by it (openssl, as a cluster's PKI would be)."""
    d = tmp_path / "pki"
    d.mkdir()

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "1", "-subj", "/CN=test-ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr",
        "-subj", "/CN=admin/O=system:masters")  # fmt: skip
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "client.crt", "-days", "1")  # fmt: skip
    return {n: (d / n).read_bytes() for n in ("ca.crt", "client.crt", "client.key")}


def _kubeconfig(path: Path, user: Mapping[str, object], cluster: Mapping[str, object]) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443", **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u", "namespace": "ml"}}],
        "current-context": "ctx",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_embedded_keys_reach_both_clients_and_leave_no_file(tmp_path: Path, scratch_tmp: Path) -> None:
    pki = _pki(tmp_path)
    kc = _kubeconfig(
        tmp_path / "kubeconfig",
        {"client-certificate-data": _b64(pki["client.crt"]), "client-key-data": _b64(pki["client.key"])},
        {"certificate-authority-data": _b64(pki["ca.crt"])},
    )
    creds = await Credentials.load(str(kc))
    try:
        assert os.listdir(scratch_tmp) == [], "decoded key material was left in the temp dir"
        info = await creds.connection_info()
        assert info.server == "https://127.0.0.1:6443"
        assert info.ca_data == pki["ca.crt"] and info.ca_path is None
        assert info.certificate_data == pki["client.crt"] and info.private_key_data == pki["client.key"]
        assert info.default_namespace == "ml" and info.token is None
        info.as_ssl_context()  # kopf builds its TLS context from the bytes (its own temp files are brief)
        assert os.listdir(scratch_tmp) == []
        # Loading twice in one process (a re-login) must not reuse the deleted files.
        again = await Credentials.load(str(kc))
        await again.close()
        assert os.listdir(scratch_tmp) == []
    finally:
        await creds.close()


async def test_key_files_named_by_path_stay_paths(tmp_path: Path, scratch_tmp: Path) -> None:
    pki = _pki(tmp_path)
    kc = _kubeconfig(
        tmp_path / "kubeconfig",
        {"client-certificate": str(tmp_path / "pki" / "client.crt"), "client-key": "pki/client.key"},
        {"certificate-authority": str(tmp_path / "pki" / "ca.crt")},
    )
    creds = await Credentials.load(str(kc))
    try:
        info = await creds.connection_info()
        assert info.ca_path == str(tmp_path / "pki" / "ca.crt") and info.ca_data is None
        assert info.private_key_path == str(tmp_path / "pki" / "client.key")  # relative to the kubeconfig
        assert info.certificate_data is None and pki["client.key"]
        assert os.listdir(scratch_tmp) == []
    finally:
        await creds.close()


def _exec_plugin(tmp_path: Path, lifetime_s: float) -> tuple[Path, Path]:
    """A credential plugin that counts its runs and hands out token-1, token-2, ..."""
    counter = tmp_path / "runs"
    counter.write_text("0")
    script = tmp_path / "plugin.py"
    script.write_text(
        f"""import json, sys, datetime, os, pathlib
p = pathlib.Path({str(counter)!r})
n = int(p.read_text()) + 1
p.write_text(str(n))
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
exp = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds={lifetime_s})
print(json.dumps({{"apiVersion": info["apiVersion"], "kind": "ExecCredential",
  "status": {{"token": f"token-{{n}}", "expirationTimestamp": exp.strftime("%Y-%m-%dT%H:%M:%SZ")}}}}))
"""
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, counter


def _exec_user(script: Path) -> dict[str, object]:
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(script)],
            "interactiveMode": "Never",
        }
    }


async def test_an_exec_plugin_token_reaches_kopf_with_its_expiry(tmp_path: Path, scratch_tmp: Path) -> None:
    script, runs = _exec_plugin(tmp_path, lifetime_s=3600)
    kc = _kubeconfig(tmp_path / "kubeconfig", _exec_user(script), {"insecure-skip-tls-verify": True})
    creds = await Credentials.load(str(kc))
    try:
        info = await creds.connection_info()
        assert info.token == "token-1" and info.scheme == "Bearer" and info.insecure
        assert info.expiration is not None
        now = datetime.now(UTC)
        assert now + timedelta(minutes=55) < info.expiration < now + timedelta(hours=1)
        for _ in range(5):  # a valid token is reused: the plugin is not run per request
            assert await creds.configuration.get_api_key_with_prefix("BearerToken") == "Bearer token-1"
        assert runs.read_text() == "1"
    finally:
        await creds.close()


async def test_an_expiring_exec_token_is_refreshed(tmp_path: Path, scratch_tmp: Path) -> None:
    script, runs = _exec_plugin(tmp_path, lifetime_s=30)  # inside the 60 s refresh margin
    kc = _kubeconfig(tmp_path / "kubeconfig", _exec_user(script), {"insecure-skip-tls-verify": True})
    creds = await Credentials.load(str(kc))
    try:
        assert await creds.configuration.get_api_key_with_prefix("BearerToken") == "Bearer token-2"
        info = await creds.connection_info()
        assert info.token == "token-3" and runs.read_text() == "3"
    finally:
        await creds.close()


async def test_a_broken_exec_plugin_fails_with_its_message(tmp_path: Path, scratch_tmp: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text("import sys\nprint('no credentials for you', file=sys.stderr)\nsys.exit(3)\n")
    kc = _kubeconfig(tmp_path / "kubeconfig", _exec_user(script), {"insecure-skip-tls-verify": True})
    with pytest.raises(Exception, match="no credentials for you"):
        await Credentials.load(str(kc))
    assert os.listdir(scratch_tmp) == []


async def test_api_calls_go_direct_or_through_the_kubeconfigs_proxy_never_the_environments(
    tmp_path: Path, scratch_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$HTTP_PROXY is not the route to the API server (kopf's watches ignore it too); proxy-url is."""
    from aiohttp import web

    from gridwise.devcluster import free_port
    from gridwise.k8s.kube import Kube

    seen: list[tuple[str, str]] = []

    async def serve(name: str) -> tuple[web.AppRunner, int]:
        async def answer(request: web.Request) -> web.Response:
            seen.append((name, request.path))
            return web.json_response({"kind": "Job", "metadata": {"name": "train"}})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    api, api_port = await serve("api")
    proxy, proxy_port = await serve("proxy")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        for route, cluster in (
            ("api", {}),
            ("proxy", {"proxy-url": f"http://127.0.0.1:{proxy_port}"}),
        ):
            kc = _kubeconfig(tmp_path / f"kubeconfig-{route}", {"token": "abc"}, cluster)
            doc = yaml.safe_load(kc.read_text())
            doc["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{api_port}"
            kc.write_text(yaml.safe_dump(doc))
            creds = await Credentials.load(str(kc))
            try:
                job = await Kube(creds.api_client()).get_job("ml", "train")
                assert job is not None and job["metadata"]["name"] == "train"
                assert seen[-1] == (route, "/apis/batch/v1/namespaces/ml/jobs/train")
                info = await creds.connection_info()
                assert info.proxy_url == (cluster.get("proxy-url") or None) and not info.trust_env
            finally:
                await creds.close()
    finally:
        await api.cleanup()
        await proxy.cleanup()
