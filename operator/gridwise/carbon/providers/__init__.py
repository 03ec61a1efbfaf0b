"""Carbon-intensity sources, one module each, all behind the `Provider` protocol."""

from gridwise.carbon.providers.base import Provider

__all__ = ["Provider"]
