"""Fixtures for worker tests: a private Redis server, a worker process, a listener, a phantom.

Redis is a real ``redis-server`` on a free port owned by the test, so a test may stop and
restart it without disturbing anything else on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from db.engine import make_engine, make_session_factory
from db.models import Prediction, Study
from training.phantom import PhantomStudy, write_phantom_study
from triage.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PrivateRedis:
    """A redis-server process of the test's own; ``restart`` loses every queued message."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    redis = PrivateRedis(free_port())
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


def settings_env(settings: Settings) -> dict[str, str]:
    """The TRIAGE_* environment that makes a child process use ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    env.update(
        TRIAGE_VAR_DIR=str(settings.var_dir),
        TRIAGE_DATABASE_URL=settings.database.url.get_secret_value(),
        TRIAGE_BROKER_URL=settings.broker.url.get_secret_value(),
        TRIAGE_SPOOL_DIR=str(settings.spool.dir),
        TRIAGE_QUARANTINE_DIR=str(settings.spool.quarantine_dir),
        TRIAGE_MODEL_BUNDLE=str(settings.models.bundle),
        TRIAGE_TORCH_THREADS="2",
        TRIAGE_MAX_ATTEMPTS=str(settings.worker.max_attempts),
        TRIAGE_RECONCILE_AFTER_SECONDS=str(settings.worker.reconcile_after_seconds),
        TRIAGE_RECONCILE_INTERVAL_SECONDS=str(settings.worker.reconcile_interval_seconds),
        TRIAGE_TASK_TIME_LIMIT=str(settings.worker.task_time_limit),
        TRIAGE_VISIBILITY_TIMEOUT=str(settings.broker.visibility_timeout),
        PYTHONUNBUFFERED="1",
    )
    if settings.models.shadow_bundle is not None:
        env["TRIAGE_SHADOW_BUNDLE"] = str(settings.models.shadow_bundle)
    env.update(delivery_env(settings))
    return env


def delivery_env(settings: Settings) -> dict[str, str]:
    """The TRIAGE_* variables of the delivery section, so a child process delivers alike."""
    cfg = settings.delivery
    env = {
        "TRIAGE_DICOM_DESTINATIONS": ",".join(cfg.dicom_destinations),
        "TRIAGE_HL7_DESTINATIONS": ",".join(cfg.hl7_destinations),
        "TRIAGE_WEBHOOK_URLS": ",".join(cfg.webhook_urls),
        "TRIAGE_WEBHOOK_SECRET": cfg.webhook_secret.get_secret_value(),
        "TRIAGE_UPS_DESTINATIONS": ",".join(cfg.ups_destinations),
        "TRIAGE_DELIVERY_MAX_ATTEMPTS": str(cfg.max_attempts),
        "TRIAGE_DELIVERY_BACKOFF_SECONDS": str(cfg.backoff_seconds),
        "TRIAGE_DELIVERY_BACKOFF_MAX_SECONDS": str(cfg.backoff_max_seconds),
        "TRIAGE_DELIVERY_ACK_TIMEOUT": str(cfg.ack_timeout),
        "TRIAGE_DELIVERY_POLL_SECONDS": str(cfg.poll_seconds),
        "TRIAGE_KEY_IMAGES": str(cfg.key_images).lower(),
        "TRIAGE_KEY_IMAGE_COUNT": str(cfg.key_image_count),
    }
    if cfg.tls_ca is not None:
        env["TRIAGE_DICOM_DESTINATIONS_TLS_CA"] = str(cfg.tls_ca)
    return env


@contextmanager
def worker_process(
    settings: Settings,
    *,
    pool: str = "solo",
    reconcile: bool = False,
    log: Path,
    command: tuple[str, ...] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``triage worker`` (or ``triage <command>``) as a real process for the block."""
    args = [sys.executable, "-m", "triage.cli", "worker", "--pool", pool]
    args.append("--reconcile" if reconcile else "--no-reconcile")
    if command:
        args = [sys.executable, "-m", "triage.cli", *command]
    with open(log, "ab") as out:
        process = subprocess.Popen(
            args,
            env=settings_env(settings),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="session")
def lesion_studies(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., PhantomStudy]:
    """Phantom studies by (lesion, seed), written once per test session."""
    cache: dict[tuple[str, int], PhantomStudy] = {}
    root = tmp_path_factory.mktemp("phantoms")

    def get(lesion: str, seed: int = 7, slices: int = 32) -> PhantomStudy:
        key = (lesion, seed)
        if key not in cache:
            lesions = () if lesion == "none" else (lesion,)
            cache[key] = write_phantom_study(
                root / f"{lesion}-{seed}", slices=slices, lesions=lesions, seed=seed
            )
        return cache[key]

    return get


def _send_with_storescu(port: int, files: list[Path], options: tuple[str, ...] = ()) -> None:
    env = {**os.environ, "TCP_NODELAY": "1"}
    subprocess.run(
        ["/usr/bin/storescu", *options, "-aec", "TRIAGE", "127.0.0.1", str(port), *map(str, files)],
        check=True,
        env=env,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture
def send_study() -> Callable[..., None]:
    """Send files as the scanner would (DCMTK storescu, Nagle off)."""
    return _send_with_storescu


def predictions(settings: Settings) -> list[Prediction]:
    sessions = make_session_factory(make_engine(settings.database.url.get_secret_value()))
    with sessions() as session:
        return list(session.scalars(select(Prediction).order_by(Prediction.id)))


def study_states(settings: Settings) -> dict[str, str]:
    sessions = make_session_factory(make_engine(settings.database.url.get_secret_value()))
    with sessions() as session:
        return {s.study_instance_uid: s.state.value for s in session.scalars(select(Study))}


def prediction_count(settings: Settings) -> int:
    sessions = make_session_factory(make_engine(settings.database.url.get_secret_value()))
    with sessions() as session:
        return int(session.scalar(select(func.count(Prediction.id))) or 0)


@pytest.fixture
def copy_bundle(tmp_path: Path) -> Callable[[Path], Path]:
    def copy(src: Path) -> Path:
        target = tmp_path / f"bundle-{time.monotonic_ns()}"
        shutil.copytree(src, target)
        return target

    return copy


__all__: list[Any] = []


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained but complete bundle (tiny timm backbone, 64 px): for plumbing tests."""
    return _export_tiny(tmp_path_factory.mktemp("bundle") / "tiny", "tiny-untrained", "1")


def _export_tiny(out: Path, name: str, version: str) -> Path:
    import torch

    from training.bundle import export_bundle
    from training.classes import CLASS_NAMES
    from training.models import build_image_model, build_sequence_model
    from training.preprocessing import PreprocessSpec

    torch.manual_seed(0)
    image = build_image_model("test_resnet", len(CLASS_NAMES))
    sequence = build_sequence_model(
        "gru", image.num_features, len(CLASS_NAMES), hidden=16, dropout=0.0
    )
    export_bundle(
        out,
        image_model=image,
        sequence_model=sequence,
        image_arch="test_resnet",
        image_params={},
        sequence_arch="gru",
        sequence_params={"hidden": 16, "dropout": 0.0},
        class_names=CLASS_NAMES,
        preprocess=PreprocessSpec(size=64),
        thresholds={c: 0.5 for c in CLASS_NAMES},
        name=name,
        version=version,
        synthetic_demo=True,
    )
    _describe_tiny_domain(out)
    return out


TINY_ADEQUACY = {
    "slice_thickness_mm": [1.0, 10.0],
    "pixel_spacing_mm": [0.1, 2.0],
    "matrix": [64, 1024],
    "min_coverage_mm": 50.0,
    "min_slices": 8,
}
"""The tiny bundle's declared domain: wide enough for every phantom the worker tests send."""
TINY_CUT_OFF = 3.0


def _describe_tiny_domain(out: Path) -> None:
    """Give the tiny bundle an input domain: a summary of 8 phantom studies' embeddings."""
    from training.bundle import amend_bundle, load_bundle
    from training.input_domain import embed_series, read_folder, summarise, summary_files

    bundle = load_bundle(out)
    embedded = []
    for seed in range(8):
        folder = out.parent / "domain-phantoms" / str(seed)
        write_phantom_study(folder, slices=24, size=128, seed=500 + seed)
        embedded.append(embed_series(bundle, read_folder(folder)))
    summary = summarise(embedded, cut_off=TINY_CUT_OFF, source="8 phantom studies")
    meta, files = summary_files(summary)
    amend_bundle(
        out,
        config_updates={"input_domain": {"adequacy": TINY_ADEQUACY, "embedding": meta}},
        files=files,
    )


@pytest.fixture
def second_tiny_bundle(tmp_path: Path) -> Path:
    """Another bundle with a different sha256 (for the shadow model)."""
    return _export_tiny(tmp_path / "shadow", "tiny-shadow", "2")
