"""Shared paths and readers for the deployment files under ``deploy/``."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

TRIAGE_TARGETS = ("listener", "web", "worker-cpu", "worker-gpu", "delivery")
"""The Dockerfile targets, one per pacs-triage service."""


@pytest.fixture(scope="session")
def deploy_dir() -> Path:
    return DEPLOY
