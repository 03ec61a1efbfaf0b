"""The carbon signal: providers, their validation, the forecasters, and CarbonSignal."""

from gridwise.carbon.access import AccessError, AccessPolicy
from gridwise.carbon.errors import ProviderError
from gridwise.carbon.forecaster import SeasonalForecaster
from gridwise.carbon.providers.base import Provider
from gridwise.carbon.reading import SIGNAL_TYPES, IntensityPoint, ProviderResult, SignalReading
from gridwise.carbon.registry import PROVIDERS, build_provider, signal_type_for
from gridwise.carbon.signal import CarbonSignal

__all__ = [
    "PROVIDERS",
    "SIGNAL_TYPES",
    "AccessError",
    "AccessPolicy",
    "CarbonSignal",
    "IntensityPoint",
    "Provider",
    "ProviderError",
    "ProviderResult",
    "SeasonalForecaster",
    "SignalReading",
    "build_provider",
    "signal_type_for",
]
