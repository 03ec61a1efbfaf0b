"""kubernetes_asyncio without importing its ~1,600 generated classes up front.

Why: `kubernetes_asyncio.client`'s `__init__` imports every API and model class, about 30 MiB
resident, and kopf imports it whenever the package is installed. The operator sends and reads raw
JSON (`_preload_content=False`), so it uses the configuration, the REST client and four API
classes. `install()` puts package shells in `sys.modules` before anything imports the package:
each class then loads from its own module the first time it is asked for, by name, so everything
the full package offers stays reachable and only what is used is loaded.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import re
import sys
import types
from pathlib import Path
from typing import Any

PACKAGE = "kubernetes_asyncio"
CLIENT = f"{PACKAGE}.client"
MODELS = f"{CLIENT}.models"
APIS = f"{CLIENT}.api"
# Names the real `client/__init__.py` exports from modules other than `api/` and `models/`.
_CLIENT_NAMES = {
    "ApiClient": "api_client",
    "Configuration": "configuration",
    "OpenApiException": "exceptions",
    "ApiTypeError": "exceptions",
    "ApiValueError": "exceptions",
    "ApiKeyError": "exceptions",
    "ApiAttributeError": "exceptions",
    "ApiException": "exceptions",
}


def module_name(class_name: str) -> str:
    """The generated module of a class: `V1ObjectMeta` -> `v1_object_meta`, `CoreV1Api` -> `core_v1_api`."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", class_name)
    return re.sub(r"([a-z\d])([A-Z])", r"\1_\2", name).lower()


def _load(shell: types.ModuleType, name: str, module: str) -> Any:
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise  # the class's module exists but needs something missing: say so
        raise AttributeError(f"module {shell.__name__!r} has no attribute {name!r}") from None
    try:
        value = getattr(found, name)
    except AttributeError:
        raise AttributeError(f"module {shell.__name__!r} has no attribute {name!r}") from None
    setattr(shell, name, value)  # the next lookup is a plain attribute
    return value


def _client_attribute(name: str) -> Any:
    shell = sys.modules[CLIENT]
    if name.startswith("__"):
        raise AttributeError(name)
    if name in _CLIENT_NAMES:
        return _load(shell, name, f"{CLIENT}.{_CLIENT_NAMES[name]}")
    if name.endswith("Api"):
        return _load(shell, name, f"{APIS}.{module_name(name)}")
    return _load(shell, name, f"{MODELS}.{module_name(name)}")


def _model_attribute(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    return _load(sys.modules[MODELS], name, f"{MODELS}.{module_name(name)}")


def _shell(name: str, path: Path, attribute: Any = None) -> types.ModuleType:
    shell = types.ModuleType(name, f"{name}, loaded class by class (gridwise.k8s.lazy_client)")
    shell.__path__ = [str(path)]
    shell.__package__ = name
    shell.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    shell.__spec__.submodule_search_locations = shell.__path__
    if attribute is not None:
        shell.__getattr__ = attribute  # type: ignore[method-assign]  # PEP 562
    sys.modules[name] = shell
    return shell


def install() -> bool:
    """Shells for the package; False (and nothing done) once anything has imported it for real."""
    if PACKAGE in sys.modules:
        return False
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return False
    root = Path(next(iter(spec.submodule_search_locations)))
    package = _shell(PACKAGE, root)
    package.__version__ = importlib.metadata.version(PACKAGE)  # type: ignore[attr-defined]
    client = _shell(CLIENT, root / "client", _client_attribute)
    client.models = _shell(MODELS, root / "client" / "models", _model_attribute)  # type: ignore[attr-defined]
    client.api = _shell(APIS, root / "client" / "api")  # type: ignore[attr-defined]
    package.client = client  # type: ignore[attr-defined]
    return True
