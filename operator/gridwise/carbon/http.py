"""The one place that talks HTTP, so every failure becomes a ProviderError with a safe message."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from gridwise.carbon.errors import ProviderError

DEFAULT_TIMEOUT_S = 10.0


def new_client(timeout_s: float = DEFAULT_TIMEOUT_S) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), follow_redirects=False)


async def get_json(
    client: httpx.AsyncClient,
    provider: str,
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    auth: httpx.BasicAuth | None = None,
) -> Any:
    """GET and decode JSON. Messages carry the status code and our own words only, never bodies or headers."""
    try:
        response = await client.get(url, params=params, headers=headers, auth=auth)
    except httpx.TimeoutException:
        raise ProviderError(f"{provider}: request timed out") from None
    except httpx.HTTPError as exc:
        raise ProviderError(f"{provider}: connection failed ({type(exc).__name__})") from None
    status = response.status_code
    if status in (401, 403):
        raise ProviderError(f"{provider}: credentials rejected (HTTP {status})", retryable=False)
    if status == 429:
        raise ProviderError(f"{provider}: rate limited by the provider (HTTP 429)")
    if status >= 500:
        raise ProviderError(f"{provider}: server error (HTTP {status})")
    if status >= 400:
        raise ProviderError(f"{provider}: request rejected (HTTP {status})", retryable=False)
    try:
        return json.loads(response.content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProviderError(f"{provider}: response is not valid JSON") from None


def parse_time(value: object, what: str) -> datetime:
    """ISO 8601 with an offset or Z; a naive time is taken as UTC (the APIs all speak UTC)."""
    if not isinstance(value, str):
        raise ProviderError(f"{what} is not a timestamp string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ProviderError(f"{what} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def field(obj: object, key: str, what: str) -> Any:
    """obj[key] where obj must be a JSON object: a wrong shape is a provider fault, not a KeyError."""
    if not isinstance(obj, dict):
        raise ProviderError(f"{what} is not a JSON object")
    if key not in obj:
        raise ProviderError(f"{what} lacks '{key}'")
    return obj[key]


def as_list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ProviderError(f"{what} is not a JSON list")
    return value
