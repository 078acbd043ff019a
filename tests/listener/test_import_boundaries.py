"""The listener stays small: it never loads the worker, training or the deep-learning stack.

The listener runs on the DICOM edge, often beside the PACS, with no GPU; importing torch
there would cost ~1 GB of memory and seconds of start-up for nothing. The queue contract
it shares with the worker lives in ``triage.queue`` for that reason.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("torch", "torchvision", "timm", "worker", "training")


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize(
    "path", sorted((ROOT / "listener").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_listener_module_names_no_worker_or_training_import(path: Path) -> None:
    assert not _imported_roots(path) & set(FORBIDDEN)


@pytest.mark.parametrize("module", ["listener.service", "triage.queue"])
def test_importing_the_listener_service_loads_no_heavy_package(module: str) -> None:
    code = (
        f"import json, sys; import {module}; "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert module.split(".")[0] in loaded  # the probe really imported something
    assert not loaded & set(FORBIDDEN), sorted(loaded & set(FORBIDDEN))
