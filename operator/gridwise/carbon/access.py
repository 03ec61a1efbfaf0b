"""What a CarbonAwareJob may make the operator touch: which URLs, which files, whose credentials.

A CarbonAwareJob is written by a tenant; the operator runs with its own credentials and file system.
Everything here keeps the two apart:
- a `baseURL` override must be named by the operator's allow-list (checked before any connection, so a
  job cannot probe internal services), and the operator's own keys go only to a provider's official
  endpoint;
- a job's `secretRef` Secret supplies values only (no `_FILE` indirection into the operator's disk);
- `tracePath` resolves (symlinks included) into the packaged traces or an operator-configured directory,
  must be a regular file and is size-capped.

Errors are `AccessError`s whose message is safe to show the tenant (status, Events): it never quotes a
file's content, an operator path or the operator's configuration.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

# Operator-level settings (environment of the operator process; the chart sets them from values).
ALLOWED_URLS_ENV: Final = "GRIDWISE_CARBON_ALLOWED_URLS"
TRACE_DIRS_ENV: Final = "GRIDWISE_TRACE_DIRS"
MAX_TRACE_BYTES: Final = 8 * 1024 * 1024  # a year of hourly data is ~1 MB, a month of 5-min forecasts ~3 MB


class AccessError(ValueError):
    """A job asked for something the operator refuses; `public_message` is safe for status and Events.

    `reason` is a CamelCase word for a condition reason. Subclassing ValueError keeps callers that treat
    a bad provider spec as a ValueError working; `str()` is the public message.
    """

    def __init__(self, reason: str, public_message: str) -> None:
        super().__init__(public_message)
        self.reason = reason
        self.public_message = public_message

    def __str__(self) -> str:
        return self.public_message


def normalize_url(url: str) -> str:
    """scheme://host[:port][/path] in a canonical form, so an allow-list entry matches one origin+path.

    Userinfo, queries and fragments are refused: they have no business in a provider base URL and would
    let a job smuggle credentials or confuse matching.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise AccessError("BaseURLInvalid", "spec.carbon.baseURL is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise AccessError(
            "BaseURLInvalid", "spec.carbon.baseURL must be an http:// or https:// URL with a host"
        )
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise AccessError("BaseURLInvalid", "spec.carbon.baseURL must not carry user info (user:pass@)")
    if parts.query or parts.fragment:
        raise AccessError("BaseURLInvalid", "spec.carbon.baseURL must not have a query or fragment")
    default_port = 443 if scheme == "https" else 80
    netloc = parts.hostname.lower() + (f":{port}" if port is not None and port != default_port else "")
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def packaged_traces_dir() -> Path:
    with resources.as_file(resources.files("gridwise").joinpath("data", "traces")) as path:
        return Path(path)


@dataclass(frozen=True)
class AccessPolicy:
    """The operator's limits on what a job's `spec.carbon` may point at."""

    allowed_urls: frozenset[str] = frozenset()
    trace_dirs: tuple[Path, ...] = ()
    max_trace_bytes: int = MAX_TRACE_BYTES
    include_packaged_traces: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AccessPolicy:
        """GRIDWISE_CARBON_ALLOWED_URLS: comma/space separated URLs; GRIDWISE_TRACE_DIRS: os.pathsep list."""
        urls = {u for u in env.get(ALLOWED_URLS_ENV, "").replace(",", " ").split() if u}
        dirs = tuple(Path(d) for d in env.get(TRACE_DIRS_ENV, "").split(os.pathsep) if d.strip())
        return cls.create(allowed_urls=urls, trace_dirs=dirs)

    @classmethod
    def create(
        cls,
        *,
        allowed_urls: Iterable[str] = (),
        trace_dirs: Iterable[Path | str] = (),
        max_trace_bytes: int = MAX_TRACE_BYTES,
        include_packaged_traces: bool = True,
    ) -> AccessPolicy:
        """Normalizes the allow-list; an unusable entry is an operator misconfiguration and fails loudly."""
        normalized: set[str] = set()
        for url in allowed_urls:
            try:
                normalized.add(normalize_url(url))
            except AccessError as exc:
                raise ValueError(f"{ALLOWED_URLS_ENV}: entry {url!r} is unusable: {exc}") from None
        dirs = tuple(Path(os.path.realpath(d)) for d in trace_dirs)
        return cls(frozenset(normalized), dirs, max_trace_bytes, include_packaged_traces)

    def check_base_url(self, url: object) -> str:
        """The normalized URL if the allow-list names it; refused before any connection is made."""
        if not isinstance(url, str) or not url:
            raise AccessError("BaseURLInvalid", "spec.carbon.baseURL must be a non-empty string")
        normalized = normalize_url(url)
        if normalized not in self.allowed_urls:
            raise AccessError(
                "BaseURLNotAllowed",
                "spec.carbon.baseURL is not on the operator's allow-list of provider URLs "
                f"({ALLOWED_URLS_ENV} / chart value carbon.allowedBaseURLs); nothing was sent to it",
            )
        return normalized

    def roots(self) -> tuple[Path, ...]:
        packaged = (Path(os.path.realpath(packaged_traces_dir())),) if self.include_packaged_traces else ()
        return packaged + self.trace_dirs

    def resolve_trace(self, requested: object) -> Path:
        """The real path of an allowed trace file. Relative names are looked up in each root in turn.

        The message never says whether a path outside the roots exists, and never names a root.
        """
        if not isinstance(requested, str) or not requested or "\x00" in requested:
            raise AccessError("TraceNotAllowed", "spec.carbon.tracePath must be a non-empty path")
        roots = self.roots()
        candidates = [Path(requested)] if os.path.isabs(requested) else [root / requested for root in roots]
        refused = AccessError(
            "TraceNotAllowed",
            "spec.carbon.tracePath is not a trace file the operator serves: use a packaged trace name "
            "or a file in the operator's trace directories "
            f"({TRACE_DIRS_ENV} / chart value carbon.traceDirs)",
        )
        for candidate in candidates:
            real = Path(os.path.realpath(candidate))
            if not any(real == root or root in real.parents for root in roots):
                continue
            try:
                info = os.stat(real)
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode):
                raise AccessError("TraceNotAllowed", "spec.carbon.tracePath is not a regular file")
            if info.st_size > self.max_trace_bytes:
                raise AccessError(
                    "TraceTooLarge",
                    f"spec.carbon.tracePath is larger than the {self.max_trace_bytes // (1024 * 1024)} MiB "
                    "the operator reads",
                )
            return real
        raise refused


def credentials_from_secret(secret: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """Values a job's own Secret gives for `names`; `<NAME>_FILE` keys are refused, not followed.

    A tenant's Secret that pointed the operator at a file would read the operator's disk (its token,
    its mounted keys) and send the content wherever the job's baseURL points.
    """
    out: dict[str, str] = {}
    for name in names:
        if f"{name}_FILE" in secret:
            raise AccessError(
                "SecretFileIndirection",
                f"the job's Secret sets {name}_FILE: file indirection is only for operator-level "
                f"credentials; put the value itself under {name}",
            )
        value = secret.get(name, "")
        if value.strip():
            out[name] = value.strip()
    return out
