"""One error type for every way a provider can fail, so the signal can turn each into a stale reading."""

from __future__ import annotations


class ProviderError(Exception):
    """A provider call failed or answered something unusable.

    The message is shown to users (CR status, logs), so it must never contain a secret:
    it is built from our own words and HTTP status codes, never from response bodies or headers.
    `retryable` is False where retrying cannot help (a rejected key, a bad request).
    `retry_after_s` is the provider's own Retry-After (already bounded): no call before it passes.
    `status` is the HTTP status that caused it, where there was one: a provider tells a refused
    paid-tier endpoint (401/402/403 on one call while another succeeded) from a network fault.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        retry_after_s: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.status = status

    def __str__(self) -> str:
        return self.message
