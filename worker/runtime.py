"""Per-process resources of a worker: settings, database sessions, loaded bundles, device.

Built lazily once per process (after Celery forks its pool), never at import, so importing
the task module is cheap and a forked child never inherits a parent's database connection.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, make_session_factory
from triage.settings import Settings, get_settings

if TYPE_CHECKING:
    from training.bundle import Bundle

log = logging.getLogger(__name__)


def choose_device(setting: str) -> str:
    """``auto`` means CUDA when present, else CPU."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


@dataclass
class WorkerRuntime:
    """What one worker process holds: built once, shared by its tasks."""

    settings: Settings
    sessions: sessionmaker[Session]
    device: str
    _bundles: dict[Path, Bundle] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def bundle(self, path: Path) -> Bundle:
        """Load (and verify) a bundle once per process.

        Raises
        ------
        training.bundle.BundleFitError
            If the bundle reads pictures rather than CT, or predicts classes that are not
            head-CT findings: the worker refuses to start with it rather than score studies
            with a model made for something else.
        """
        from training.bundle import check_head_ct_fit, load_bundle

        resolved = Path(path).resolve()
        with self._lock:
            if resolved not in self._bundles:
                bundle = load_bundle(resolved)
                check_head_ct_fit(bundle)
                bundle.image_model.to(self.device).eval()
                bundle.sequence_model.to(self.device).eval()
                self._bundles[resolved] = bundle
                log.info(
                    "loaded bundle %s %s (sha256 %s) on %s%s",
                    bundle.name,
                    bundle.version,
                    bundle.sha256[:12],
                    self.device,
                    " - SYNTHETIC DEMO, NOT FOR CLINICAL USE" if bundle.synthetic_demo else "",
                )
            return self._bundles[resolved]

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerRuntime:
        """Build a runtime (engine, device, torch threads) for ``settings``."""
        import torch

        if settings.worker.torch_threads:
            torch.set_num_threads(settings.worker.torch_threads)
        engine = make_engine(settings.database.url.get_secret_value())
        return cls(
            settings, make_session_factory(engine), choose_device(settings.worker.inference_device)
        )

    @property
    def batch_size(self) -> int:
        """Slices per model batch: the setting on CPU; on a GPU, sized to its memory.

        About 64 MiB of activations per slice is a generous bound for the 2D backbones a
        bundle names at their input sizes, so an 80 GB card takes ~1,000 slices a batch
        (a whole thin-slice head CT in one pass); never below the setting.
        """
        if self.device.startswith("cuda"):
            import torch

            total = torch.cuda.get_device_properties(torch.device(self.device)).total_memory
            return max(self.settings.worker.batch_size, min(1024, total // (64 << 20)))
        return self.settings.worker.batch_size


_runtime: dict[int, WorkerRuntime] = {}
_runtime_lock = threading.Lock()


def get_runtime() -> WorkerRuntime:
    """This process's runtime (rebuilt in a forked child, keyed by pid)."""
    pid = os.getpid()
    with _runtime_lock:
        if pid not in _runtime:
            _runtime[pid] = WorkerRuntime.from_settings(get_settings())
        return _runtime[pid]
