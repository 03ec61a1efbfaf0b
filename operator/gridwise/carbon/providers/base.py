"""The interface every carbon-intensity source implements."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

import httpx

from gridwise.carbon.reading import IntensityPoint, ProviderResult
from gridwise.carbon.secrets import Secret


@runtime_checkable
class Provider(Protocol):
    """A source of current intensity and (maybe) a forecast, in gCO2/kWh.

    `fetch` raises ProviderError (or times out); CarbonSignal turns that into a stale reading.
    """

    @property
    def name(self) -> str: ...

    @property
    def zone(self) -> str: ...

    @property
    def signal_type(self) -> str:
        """'average' or 'marginal'."""
        ...

    @property
    def secrets(self) -> tuple[Secret, ...]:
        """Credentials in use, so messages can be scrubbed of them."""
        ...

    async def fetch(self) -> ProviderResult: ...

    def history(self, until: datetime, span: timedelta) -> tuple[IntensityPoint, ...]:
        """Past points the provider already holds (a replayed trace); live APIs return ()."""
        ...

    async def aclose(self) -> None: ...


class LiveApiProvider:
    """What every live HTTP API provider shares: no held history, and closing the client it owns."""

    _http: httpx.AsyncClient
    _owns_http: bool

    def history(self, until: datetime, span: timedelta) -> tuple[IntensityPoint, ...]:
        return ()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()
