"""The one place that talks HTTP, so every failure becomes a ProviderError with a safe message."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from gridwise.carbon.errors import ProviderError
from gridwise.clock import parse_utc

DEFAULT_TIMEOUT_S = 10.0
# A provider answer is tens of kB (48 h of half-hours, a day of 5-min points); 2 MiB is generous.
MAX_BODY_BYTES = 2 * 1024 * 1024
# Longest Retry-After honoured; a provider asking for more is retried after this.
MAX_RETRY_AFTER_S = 3600.0
MIN_YEAR, MAX_YEAR = 2000, 2200


def new_client(timeout_s: float = DEFAULT_TIMEOUT_S) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), follow_redirects=False)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After (seconds or an HTTP date) as seconds in [0, MAX_RETRY_AFTER_S]; None if unusable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(delta, 0.0), MAX_RETRY_AFTER_S)


async def _read_capped(response: httpx.Response, provider: str, limit: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ProviderError(f"{provider}: response larger than {limit // 1024} KiB; not read")
    if response.is_stream_consumed:  # a transport that handed over a body already in memory
        if len(response.content) > limit:
            raise ProviderError(f"{provider}: response larger than {limit // 1024} KiB; aborted")
        return response.content
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > limit:
            raise ProviderError(f"{provider}: response larger than {limit // 1024} KiB; aborted")
        chunks.append(chunk)
    return b"".join(chunks)


async def get_json(
    client: httpx.AsyncClient,
    provider: str,
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    auth: httpx.BasicAuth | None = None,
    max_bytes: int = MAX_BODY_BYTES,
    total_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Any:
    """GET and decode JSON within a size cap and a total time cap (connect, headers and a slow body).

    Messages carry the status code and our own words only, never bodies or headers. Only URLs the
    registry accepted (official endpoints or the operator's allow-list) ever reach this function.
    """
    try:
        async with asyncio.timeout(total_timeout_s):
            request = client.build_request(
                "GET", url, params=params, headers={**(headers or {}), "Accept-Encoding": "identity"}
            )
            response = await client.send(request, auth=auth, stream=True)
            try:
                status = response.status_code
                if status == 429:
                    raise ProviderError(
                        f"{provider}: rate limited by the provider (HTTP 429)",
                        retry_after_s=retry_after_seconds(response.headers.get("retry-after")),
                        status=status,
                    )
                body = await _read_capped(response, provider, max_bytes) if status < 300 else b""
            finally:
                await response.aclose()
    except TimeoutError:
        raise ProviderError(f"{provider}: no complete answer within {total_timeout_s:g} s") from None
    except httpx.TimeoutException:
        raise ProviderError(f"{provider}: request timed out") from None
    except httpx.HTTPError as exc:
        raise ProviderError(f"{provider}: connection failed ({type(exc).__name__})") from None
    if status in (401, 403):
        raise ProviderError(
            f"{provider}: credentials rejected (HTTP {status})", retryable=False, status=status
        )
    if status >= 500:
        raise ProviderError(f"{provider}: server error (HTTP {status})", status=status)
    if status >= 300:
        raise ProviderError(f"{provider}: request rejected (HTTP {status})", retryable=False, status=status)
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ProviderError(f"{provider}: response is not valid JSON") from None


def parse_time(value: object, what: str) -> datetime:
    """ISO 8601 with an offset or Z; a naive time is taken as UTC (the APIs all speak UTC)."""
    if not isinstance(value, str):
        raise ProviderError(f"{what} is not a timestamp string")
    try:
        parsed = parse_utc(value)
    except (ValueError, OverflowError):
        raise ProviderError(f"{what} is not an ISO 8601 timestamp") from None
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:  # also keeps `when + step` from overflowing
        raise ProviderError(f"{what} is outside the years {MIN_YEAR}..{MAX_YEAR}")
    return parsed


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
