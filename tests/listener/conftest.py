"""Fixtures for the listener: phantom studies, a running listener, DCMTK peers, a DB reader.

The listener runs in-process on port 0 with a recording dispatcher (the seam to the
queue); the peers are the real DCMTK command-line tools, so nothing on the network is
mocked.

The receive path every listener here uses is the one ``TRIAGE_DICOM_FAST_PATH`` names
when pytest starts (default: the streaming path), so ``make test`` runs this suite once
per path. It is read at import, because the root conftest clears ``TRIAGE_*`` variables
for each test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydantic import TypeAdapter
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from db.engine import make_engine
from db.models import AuditEvent, Instance, Series, Study
from db.vocabulary import AuditEventType
from listener.service import ListenerService, start_listener
from training.phantom import PhantomStudy, write_phantom_study
from triage.settings import Settings

DICOM_FAST_PATH: bool = TypeAdapter(bool).validate_python(
    os.environ.get("TRIAGE_DICOM_FAST_PATH", "true")
)
"""The receive path of this run (parsed as the settings parse it)."""

DCMTK_BIN = Path("/usr/bin")
"""DCMTK's tools; pynetdicom installs its own ``storescu`` into the venv, which is not DCMTK."""


def dcmtk(tool: str) -> str:
    """The absolute path of a DCMTK tool."""
    path = DCMTK_BIN / tool
    if not path.exists():
        found = shutil.which(tool)
        assert found, f"DCMTK tool {tool} is not installed"
        return found
    return str(path)


def dcmtk_env() -> dict[str, str]:
    """Environment for DCMTK tools: TCP_NODELAY avoids a ~45 ms stall per instance."""
    return {**os.environ, "TCP_NODELAY": "1"}


# -- the receive path under test ---------------------------------------------------------
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Bounds only the streaming path enforces are not asked of pynetdicom's stock path."""
    if DICOM_FAST_PATH:
        return
    skip = pytest.mark.skip(
        reason="a bound of listener/fastpath; this run uses pynetdicom's stock receive path"
    )
    for item in items:
        if item.get_closest_marker("fastpath_only") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def dicom_fast_path() -> bool:
    """Whether this run's listeners use the streaming receive path (else pynetdicom's)."""
    return DICOM_FAST_PATH


@pytest.fixture
def make_settings(
    make_settings: Callable[..., Settings], dicom_fast_path: bool
) -> Callable[..., Settings]:
    """The root ``make_settings``, with this run's receive path unless a test names one."""

    def build(**overrides: Any) -> Settings:
        overrides.setdefault("dicom_fast_path", dicom_fast_path)
        return make_settings(**overrides)

    return build


# -- phantom studies, generated once per session ---------------------------------------
@pytest.fixture(scope="session")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., PhantomStudy]:
    """``phantoms(name, **kwargs)`` writes a phantom study once per session and reuses it."""
    cache: dict[str, PhantomStudy] = {}
    lock = threading.Lock()

    def get(name: str, **kwargs: Any) -> PhantomStudy:
        with lock:
            if name not in cache:
                folder = tmp_path_factory.mktemp(f"phantom-{name}")
                cache[name] = write_phantom_study(folder, **kwargs)
            return cache[name]

    return get


@pytest.fixture(scope="session")
def head_ct(phantoms: Callable[..., PhantomStudy]) -> PhantomStudy:
    """A 40-slice 512x512 head CT announcing 40 images in acquisition."""
    return phantoms("head40", slices=40, seed=0)


# -- the dispatch seam -------------------------------------------------------------------
@dataclass
class RecordingDispatcher:
    """Stands in for the queue: remembers each (study_id, study_uid, version) it is handed."""

    calls: list[tuple[int, str, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, study_id: int, study_uid: str, version: int) -> str:
        with self._lock:
            self.calls.append((study_id, study_uid, version))
            return f"task-{len(self.calls)}"

    def versions(self, study_uid: str) -> list[int]:
        """Versions dispatched for one study, in order."""
        with self._lock:
            return [version for _, uid, version in self.calls if uid == study_uid]


@pytest.fixture
def dispatcher() -> RecordingDispatcher:
    return RecordingDispatcher()


@pytest.fixture(scope="session")
def _stopping_listeners() -> Iterator[list[threading.Thread]]:
    """Listeners stop in the background (the SCP takes ~0.5 s); all are joined at the end."""
    threads: list[threading.Thread] = []
    yield threads
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "a listener did not stop"


@pytest.fixture
def run_listener(
    dispatcher: RecordingDispatcher, _stopping_listeners: list[threading.Thread]
) -> Iterator[Callable[[Settings], ListenerService]]:
    """``run_listener(settings)`` starts the listener on a free port; stopped at teardown."""
    started: list[ListenerService] = []

    def start(settings: Settings) -> ListenerService:
        service = start_listener(settings, dispatcher=dispatcher, port=0)
        started.append(service)
        return service

    yield start
    for service in started:
        stopping = threading.Thread(target=service.stop, name="stop-listener", daemon=True)
        stopping.start()
        _stopping_listeners.append(stopping)


# -- DCMTK peers -------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolRun:
    """A finished DCMTK command: exit code and combined output."""

    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_tool(args: Sequence[str], timeout: float = 60.0) -> ToolRun:
    """Run a DCMTK tool and capture what it printed."""
    proc = subprocess.run(
        list(args),
        env=dcmtk_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    return ToolRun(proc.returncode, proc.stdout)


@pytest.fixture
def dcmtk_run() -> Callable[..., ToolRun]:
    """``dcmtk_run("dcmcjpls", *args)`` runs any DCMTK tool by name."""

    def run(tool: str, *args: str | Path) -> ToolRun:
        return run_tool([dcmtk(tool), *(str(a) for a in args)])

    return run


@pytest.fixture
def reencode(dcmtk_run: Callable[..., ToolRun]) -> Callable[[Path, Sequence[str], Path], bytes]:
    """``reencode(source, ("dcmcjpls", "+el"), target)`` writes ``source`` re-encoded by a
    DCMTK tool; ``("pydicom", syntax)`` compresses with pydicom instead (DCMTK 3.6.7 has no
    JPEG 2000 encoder, pydicom's openjpeg plugin has). Returns the new file's bytes."""

    def convert(source: Path, converter: Sequence[str], target: Path) -> bytes:
        if converter[0] == "pydicom":
            dataset = pydicom.dcmread(source)
            dataset.compress(converter[1])
            dataset.save_as(target)
        else:
            result = dcmtk_run(converter[0], *converter[1:], source, target)
            assert result.ok, result.output
        return target.read_bytes()

    return convert


@pytest.fixture
def storescu() -> Callable[..., ToolRun]:
    """``storescu(port, files, aet=..., args=[...])`` sends with DCMTK's storescu."""

    def send(
        port: int,
        files: Sequence[Path],
        *,
        aet: str = "SCANNER1",
        called: str = "TRIAGE",
        args: Sequence[str] = (),
        host: str = "127.0.0.1",
    ) -> ToolRun:
        return run_tool(
            [
                dcmtk("storescu"),
                "-aet",
                aet,
                "-aec",
                called,
                *args,
                host,
                str(port),
                *(str(f) for f in files),
            ]
        )

    return send


@pytest.fixture
def echoscu() -> Callable[..., ToolRun]:
    """``echoscu(port, aet=..., args=[...])`` verifies with DCMTK's echoscu."""

    def echo(port: int, *, aet: str = "SCANNER1", args: Sequence[str] = ()) -> ToolRun:
        return run_tool(
            [dcmtk("echoscu"), "-aet", aet, "-aec", "TRIAGE", *args, "127.0.0.1", str(port)],
            timeout=30,
        )

    return echo


# -- reading what the listener recorded ----------------------------------------------------
class Recorded:
    """Read-only views of the listener's database, phrased as what an operator would ask."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def study(self, study_uid: str) -> Study | None:
        with Session(self.engine) as session:
            return session.scalars(
                select(Study).where(Study.study_instance_uid == study_uid)
            ).one_or_none()

    def state(self, study_uid: str) -> str | None:
        study = self.study(study_uid)
        return study.state.value if study else None

    def instances(self, study_uid: str) -> list[Instance]:
        with Session(self.engine) as session:
            return list(
                session.scalars(
                    select(Instance)
                    .join(Series, Instance.series_id == Series.id)
                    .join(Study, Series.study_id == Study.id)
                    .where(Study.study_instance_uid == study_uid)
                    .order_by(Instance.instance_number)
                )
            )

    def instance_count(self) -> int:
        with Session(self.engine) as session:
            return int(session.scalar(select(func.count(Instance.id))) or 0)

    def events(self, event_type: AuditEventType, study_uid: str | None = None) -> list[AuditEvent]:
        with Session(self.engine) as session:
            query = select(AuditEvent).where(AuditEvent.event_type == event_type)
            if study_uid is not None:
                query = query.where(AuditEvent.study_instance_uid == study_uid)
            return list(session.scalars(query.order_by(AuditEvent.id)))


@pytest.fixture
def recorded(database_url: str) -> Iterator[Recorded]:
    engine = make_engine(database_url)
    yield Recorded(engine)
    engine.dispose()


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs mounted for this test (we run as root in the test container)."""
    mount_point = tmp_path / "small-fs"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs for the disk-full test: {mounted.stderr}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
