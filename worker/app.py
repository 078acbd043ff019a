"""The worker's Celery app with its tasks registered: ``celery -A worker.app worker``.

The deployed bundle is loaded when each pool process starts (not on the first study), so
the first study after a restart does not pay the model load in its latency.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_process_init, worker_ready

from triage.queue import make_celery
from triage.settings import get_settings
from worker.runtime import get_runtime
from worker.tasks import register_tasks

log = logging.getLogger(__name__)

app = make_celery(get_settings())
register_tasks(app)


def preload_bundles() -> None:
    """Load the deployed (and shadow) bundle into this process."""
    runtime = get_runtime()
    runtime.bundle(runtime.settings.models.bundle)
    if runtime.settings.models.shadow_bundle is not None:
        runtime.bundle(runtime.settings.models.shadow_bundle)


def check_bundles_fit() -> None:
    """Refuse to start with a bundle made for pictures or for other findings.

    Run in the parent process before the pool forks (``triage worker``), so the worker stops
    with one message naming the bundle and what does not fit.

    Raises
    ------
    training.bundle.BundleFitError
        If the deployed or the shadow bundle does not fit head-CT triage.
    training.bundle.BundleIntegrityError
        If a bundle's files do not match its manifest.
    """
    from training.bundle import check_bundle_dir_fits

    settings = get_settings()
    for path in (settings.models.bundle, settings.models.shadow_bundle):
        if path is not None:
            check_bundle_dir_fits(path)


@worker_process_init.connect
def _preload_in_pool_process(**_: Any) -> None:
    preload_bundles()


@worker_ready.connect
def _preload_in_single_process(**_: Any) -> None:
    if app.conf.worker_pool in ("solo", "threads"):
        preload_bundles()
