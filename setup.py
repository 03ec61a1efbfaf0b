"""Console scripts, each shipped only with the package it runs.

Everything else is in pyproject.toml. The operator image is built without trainer-image/ and the
trainer image without operator/, so a static [project.scripts] table would give each image a command
that dies with ModuleNotFoundError. A full checkout (the dev install) gets both.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent

# command -> (module file that must be in the source tree, entry point)
SCRIPTS: dict[str, tuple[str, str]] = {
    "gridwise": ("operator/gridwise/cli.py", "gridwise.cli:main"),
    "gridwise-trainer": ("trainer-image/gridwise_trainer/cli.py", "gridwise_trainer.cli:main"),
}

setup(
    entry_points={
        "console_scripts": [
            f"{name} = {target}" for name, (source, target) in SCRIPTS.items() if (HERE / source).is_file()
        ]
    }
)
