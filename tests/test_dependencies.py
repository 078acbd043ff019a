"""Every declared dependency is used: imported by the code, or named here with its reason.

A dependency nobody imports still costs install time, image size and security updates,
and makes a reader think the project already does what that library is for.
"""

from __future__ import annotations

import ast
import re
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("listener", "worker", "training", "db", "triage", "bench")

USED_WITHOUT_IMPORT = {
    "psycopg": "PostgreSQL driver, loaded by SQLAlchemy from postgresql+psycopg:// URLs",
    "redis": "Redis client, loaded by Kombu from redis:// broker URLs",
    "torchvision": "required by timm's models and transforms",
    "pylibjpeg": "pydicom decoder plugin",
    "pylibjpeg-libjpeg": "pydicom decoder plugin (JPEG)",
    "pylibjpeg-openjpeg": "pydicom decoder and encoder plugin (JPEG 2000)",
    "pylibjpeg-rle": "pydicom decoder plugin (RLE)",
    "pyjpegls": "pydicom decoder plugin (JPEG-LS through CharLS)",
    "python-multipart": "form parser FastAPI loads for Form() parameters (sign-in, acknowledge)",
}


def _declared() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [re.split(r"[<>=\[;\s]", spec, maxsplit=1)[0] for spec in project["dependencies"]]


def _imported_modules() -> set[str]:
    roots: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    roots.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    roots.add(node.module.split(".")[0])
    return roots


def test_every_declared_dependency_is_imported_or_has_a_reason() -> None:
    distributions = packages_distributions()
    imported_by = {
        dist.lower().replace("_", "-")
        for module in _imported_modules()
        for dist in distributions.get(module, [])
    }
    unused = [
        name
        for name in _declared()
        if name.lower().replace("_", "-") not in imported_by and name not in USED_WITHOUT_IMPORT
    ]
    assert unused == []
