"""One login for both API clients: kubernetes_asyncio's configuration, handed to kopf as well.

kubernetes_asyncio loads the kubeconfig (every auth method it knows, exec credential plugins
included) or the in-cluster service account. kopf gets its `ConnectionInfo` from that same
configuration, so the two clients never disagree about who the operator is, nor about the route:
both reach the API server directly or through the kubeconfig's `proxy-url`, never through
`$HTTPS_PROXY` or `~/.netrc` (kopf's default, `direct_session`).

No key material is left on disk: kubernetes_asyncio writes `*-data` fields to temporary files
(Python's `ssl` loads certificates only from files), so they go to a private directory that is
deleted as soon as the client's TLS context is built; kopf gets the bytes themselves.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import kopf
from kubernetes_asyncio import client, config
from kubernetes_asyncio.config import kube_config

log = logging.getLogger(__name__)

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
EXEC_REFRESH_MARGIN = timedelta(seconds=60)  # re-run an exec plugin this long before its token expires
# Connections gridwise's own requests (Job changes, status writes) may hold open to the API server.
# Each is a TLS connection with its buffers; kopf's watches and Events have their own.
API_CONNECTIONS = 64
# Of those, what gridwise's requests through `Kube` leave free: the leader election shares the
# client, and its Lease renewals must not queue behind a zone wake's thousand Job patches.
RESERVED_CONNECTIONS = 4
READ_BUFSIZE = 2**21  # as kubernetes_asyncio sets it: a watch event may be as large as etcd allows


@dataclass(frozen=True)
class _Material:
    """A CA, certificate or key: the user's own file (kept as a path) or bytes read from our temp copy."""

    path: str | None = None
    data: bytes | None = None


def _take(path: str | None, scratch: Path) -> _Material:
    if not path:
        return _Material()
    if Path(path).resolve().is_relative_to(scratch.resolve()):
        return _Material(data=Path(path).read_bytes())
    return _Material(path=path)


def _forget_temp_files(scratch: Path) -> None:
    """kubernetes_asyncio caches temp file names by content; drop ours so a reload writes fresh ones."""
    cache: dict[str, str] = kube_config._temp_files
    for key, name in list(cache.items()):
        if Path(name).resolve().is_relative_to(scratch.resolve()):
            del cache[key]


def direct_session(api: client.ApiClient) -> None:
    """Gives `api` a session that ignores the environment's proxies and ~/.netrc, as kopf's does.

    kubernetes_asyncio's own session trusts the environment, so aiohttp looked up ~/.netrc and the
    proxy variables in a worker thread on every request: 7% of the operator's CPU in a 400-job zone
    wake (py-spy), for answers that do not change, on a route kopf's watches never took. The
    kubeconfig's proxy-url still applies (kubernetes_asyncio passes it with each request).
    """
    rest: Any = api.rest_client
    old: aiohttp.ClientSession = rest.pool_manager
    rest.pool_manager = aiohttp.ClientSession(
        connector=old.connector, trust_env=False, read_bufsize=READ_BUFSIZE
    )
    old.detach()  # the connector (pool and TLS context) now belongs to the new session


def request_slots() -> int:
    """How many of gridwise's own requests may be in flight at once (`Kube` queues the rest)."""
    return max(1, API_CONNECTIONS - RESERVED_CONNECTIONS)


def _split_authorization(header: str | None) -> tuple[str | None, str | None]:
    """ "Bearer abc" -> ("Bearer", "abc"); a bare token has no scheme (RFC 7235)."""
    if not header:
        return None, None
    scheme, sep, rest = header.partition(" ")
    return (scheme, rest) if sep else (None, scheme)


class Credentials:
    """The operator's identity: an `ApiClient` for gridwise's own calls and a kopf `ConnectionInfo`."""

    def __init__(
        self,
        cfg: client.Configuration,
        *,
        ca: _Material,
        cert: _Material,
        key: _Material,
        namespace: str | None,
        loader: kube_config.KubeConfigLoader | None = None,
    ) -> None:
        self.configuration = cfg
        self._ca, self._cert, self._key = ca, cert, key
        self.default_namespace = namespace
        self._loader = loader
        self._api: client.ApiClient | None = None
        if loader is not None and "exec" in (loader._user or {}):
            cfg.refresh_api_key_hook = self._refresh_exec

    @classmethod
    async def load(cls, kubeconfig: str | None = None) -> Credentials:
        """In-cluster when `kubeconfig` is None and a service account is mounted, else the kubeconfig."""
        if kubeconfig is None and (SERVICE_ACCOUNT / "token").exists():
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            ns_file = SERVICE_ACCOUNT / "namespace"
            ns = ns_file.read_text().strip() if ns_file.exists() else None
            ca = _Material(path=cfg.ssl_ca_cert)
            return cls(cfg, ca=ca, cert=_Material(), key=_Material(), namespace=ns)
        scratch = Path(tempfile.mkdtemp(prefix="gridwise-kube-"))  # 0700, only this process reads it
        try:
            cfg = client.Configuration()
            loader = await config.load_kube_config(
                config_file=kubeconfig,
                client_configuration=cfg,
                persist_config=False,
                temp_file_path=str(scratch),
            )
            creds = cls(
                cfg,
                ca=_take(cfg.ssl_ca_cert, scratch),
                cert=_take(cfg.cert_file, scratch),
                key=_take(cfg.key_file, scratch),
                namespace=(loader.current_context or {}).get("context", {}).get("namespace"),
                loader=loader,
            )
            creds.api_client()  # the TLS context reads the temp files now, before they go
            return creds
        finally:
            _forget_temp_files(scratch)
            shutil.rmtree(scratch, ignore_errors=True)

    def api_client(self) -> client.ApiClient:
        """The kubernetes_asyncio client (built once: its TLS context is made from the key material)."""
        if self._api is None:
            self.configuration.connection_pool_maxsize = API_CONNECTIONS
            self._api = client.ApiClient(self.configuration)
            direct_session(self._api)
        return self._api

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

    def _exec_expiry(self) -> datetime | None:
        expiry = getattr(self._loader, "exec_plugin_expiry", None)
        if expiry is None:
            return None
        return expiry if expiry.tzinfo else expiry.replace(tzinfo=UTC)  # type: ignore[no-any-return]

    async def _refresh_exec(self, cfg: client.Configuration) -> None:
        """Re-runs the exec plugin shortly before its token expires (never on every request)."""
        expiry = self._exec_expiry()
        if self._loader is None or expiry is None or datetime.now(UTC) < expiry - EXEC_REFRESH_MARGIN:
            return
        del self._loader.exec_plugin_expiry  # the loader itself would wait for the exact expiry
        await self._loader.load_from_exec_plugin()
        cfg.api_key["BearerToken"] = self._loader.token
        log.info("kube login: refreshed the exec credential (valid until %s)", self._exec_expiry())

    async def connection_info(self) -> kopf.ConnectionInfo:
        """kopf's credentials from the same configuration; called by kopf at start and after a 401."""
        cfg = self.configuration
        header: Any = await cfg.get_api_key_with_prefix("BearerToken")  # runs the refresh hook
        scheme, token = _split_authorization(header)
        expiry = self._exec_expiry()
        assert cfg.host is not None
        return kopf.ConnectionInfo(
            server=cfg.host,
            ca_path=self._ca.path,
            ca_data=self._ca.data,
            insecure=not cfg.verify_ssl,
            username=cfg.username or None,
            password=cfg.password or None,
            scheme=scheme or None,
            token=token or None,
            certificate_path=self._cert.path,
            certificate_data=self._cert.data,
            private_key_path=self._key.path,
            private_key_data=self._key.data,
            default_namespace=self.default_namespace,
            proxy_url=cfg.proxy or None,
            expiration=expiry - EXEC_REFRESH_MARGIN if expiry else None,
        )
