"""One error type for every way a provider can fail, so the signal can turn each into a stale reading."""

from __future__ import annotations


class ProviderError(Exception):
    """A provider call failed or answered something unusable.

    The message is shown to users (CR status, logs), so it must never contain a secret:
    it is built from our own words and HTTP status codes, never from response bodies or headers.
    `retryable` is False where retrying cannot help (a rejected key, a bad request).
    `retry_after_s` is the provider's own Retry-After (already bounded): no call before it passes.
    """

    def __init__(self, message: str, *, retryable: bool = True, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return self.message
