"""The operator loads kubernetes_asyncio class by class: nothing it offers goes missing."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from gridwise.k8s.lazy_client import _CLIENT_NAMES, module_name

OPERATOR = Path(__file__).resolve().parents[2] / "operator"


def _exports(init: Path) -> list[tuple[str, str]]:
    """(module, class) for each `from kubernetes_asyncio.client.<module> import <class>` line."""
    found = []
    for line in init.read_text().splitlines():
        m = re.match(r"from kubernetes_asyncio\.client\.(\S+) import (.+)$", line.strip())
        if m:
            found += [(m.group(1), name.strip()) for name in m.group(2).split(",")]
    return found


def test_every_name_the_real_client_exports_is_found_in_its_own_module() -> None:
    spec = importlib.util.find_spec("kubernetes_asyncio")
    assert spec is not None and spec.submodule_search_locations
    root = Path(next(iter(spec.submodule_search_locations)))
    exports = _exports(root / "client" / "__init__.py") + _exports(root / "client" / "models" / "__init__.py")
    assert len(exports) > 1000  # the generated package: every API and model class
    wrong = [
        (module, name)
        for module, name in exports
        if (
            module.rsplit(".", 1)[-1] != module_name(name)
            if module.startswith(("api.", "models."))
            else _CLIENT_NAMES.get(name) != module
        )
    ]
    assert wrong == []


def _run(code: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(OPERATOR), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_the_operator_runtime_and_kopf_load_a_handful_of_modules_not_the_package() -> None:
    got = _run(
        "import json, sys, gridwise.k8s.runtime, kopf\n"
        "from kopf._cogs.helpers import thirdparty\n"
        "from kubernetes_asyncio import client\n"
        "from kubernetes_asyncio.client.exceptions import ApiException\n"
        "mods = [m for m in sys.modules if m.startswith('kubernetes_asyncio.client.models.')]\n"
        "print(json.dumps({'models': len(mods),"
        " 'kopf_meta': thirdparty.V1ObjectMetaAsync.__module__,"
        " 'same_exception': client.ApiException is ApiException,"
        " 'pod': client.V1Pod.__module__, 'api': client.BatchV1Api.__module__,"
        " 'csi': client.models.V1CSIDriver.__module__}))"
    )
    # kopf's optional import of V1ObjectMeta and V1OwnerReference, before anything is asked for.
    assert got["models"] == 2
    assert got["kopf_meta"] == "kubernetes_asyncio.client.models.v1_object_meta"
    assert got["same_exception"] is True
    assert got["pod"] == "kubernetes_asyncio.client.models.v1_pod"
    assert got["api"] == "kubernetes_asyncio.client.api.batch_v1_api"
    assert got["csi"] == "kubernetes_asyncio.client.models.v1_csi_driver"


def test_a_name_the_package_lacks_is_an_attribute_error_and_kopf_first_means_the_full_package() -> None:
    got = _run(
        "import json, sys\n"
        "import gridwise.k8s\n"
        "from kubernetes_asyncio import client\n"
        "try:\n"
        "    client.V1NoSuchThing\n"
        "    missing = 'found'\n"
        "except AttributeError as exc:\n"
        "    missing = str(exc)\n"
        "print(json.dumps({'missing': missing}))"
    )
    assert got["missing"] == "module 'kubernetes_asyncio.client' has no attribute 'V1NoSuchThing'"
    # Imported for real first (kopf before gridwise): the shells stand aside, nothing breaks.
    got = _run(
        "import json, sys, kopf, kubernetes_asyncio\n"
        "from gridwise.k8s import lazy_client\n"
        "import gridwise.k8s.runtime\n"
        "mods = [m for m in sys.modules if m.startswith('kubernetes_asyncio.client.models.')]\n"
        "print(json.dumps({'again': lazy_client.install(), 'models': len(mods)}))"
    )
    assert got["again"] is False and int(str(got["models"])) > 500
