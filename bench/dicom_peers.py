"""DICOM peers for the benchmarks: a ``triage listen`` process, DCMTK ``storescp``, and senders.

Every peer is a real separate process, started the way an operator would start it, so the
figures include nothing that an in-process shortcut would hide. DCMTK tools always get
``TCP_NODELAY=1`` (without it Nagle's algorithm adds ~40 ms stalls to each DIMSE response).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TRIAGE_AE = "TRIAGE"


def dcmtk_env() -> dict[str, str]:
    """The environment for DCMTK tools (TCP_NODELAY on)."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def echo(port: int, *, aet: str = TRIAGE_AE, timeout: float = 10.0) -> bool:
    """True when a C-ECHO to ``port`` succeeds (DCMTK ``echoscu``)."""
    try:
        done = subprocess.run(
            ["echoscu", "-to", "5", "-ta", "5", "-aec", aet, "127.0.0.1", str(port)],
            env=dcmtk_env(),
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _wait_until_echo(proc: subprocess.Popen[bytes], port: int, aet: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"peer exited with {proc.returncode} before answering C-ECHO")
        if echo(port, aet=aet, timeout=5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"peer on port {port} did not answer C-ECHO within {timeout:.0f} s")


@dataclass
class Peer:
    """A started receiving process."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    aet: str
    store_dir: Path
    log_path: Path
    var_dir: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (from /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def status_kib(self, key: str) -> int:
        """A ``/proc/<pid>/status`` memory figure such as ``VmHWM`` or ``VmRSS``, in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
        raise KeyError(key)

    def mapped_files(self) -> set[str]:
        """Paths of the files the process has mapped (shared libraries among them)."""
        paths = set()
        for line in Path(f"/proc/{self.pid}/maps").read_text().splitlines():
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/"):
                paths.add(parts[5])
        return paths

    def stop(self) -> int:
        """Terminate (SIGTERM, then SIGKILL after 10 s) and return the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def start_triage(
    work_dir: Path,
    *,
    fsync: bool,
    max_pdu: int | None = None,
    python: str = sys.executable,
    extra_env: dict[str, str] | None = None,
    timeout: float = 60.0,
    cwd: str | Path = REPO_ROOT,
) -> Peer:
    """Start ``python -m triage.cli listen`` on a free port with its own var/spool/quarantine."""
    work_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "TRIAGE_VAR_DIR": str(work_dir / "var"),
            "TRIAGE_SPOOL_DIR": str(work_dir / "spool"),
            "TRIAGE_QUARANTINE_DIR": str(work_dir / "quarantine"),
            "TRIAGE_DICOM_PORT": str(port),
            "TRIAGE_DICOM_BIND": "127.0.0.1",
            "TRIAGE_SPOOL_FSYNC": "true" if fsync else "false",
        }
    )
    if max_pdu is not None:
        env["TRIAGE_MAX_PDU"] = str(max_pdu)
    env.update(extra_env or {})
    log_path = work_dir / "listener.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [python, "-m", "triage.cli", "listen"],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    peer = Peer("triage", proc, port, TRIAGE_AE, work_dir / "spool", log_path, work_dir / "var")
    try:
        _wait_until_echo(proc, port, TRIAGE_AE, timeout)
    except Exception:
        peer.stop()
        raise
    return peer


def start_storescp(work_dir: Path, *, max_pdu: int | None = None, timeout: float = 30.0) -> Peer:
    """Start DCMTK ``storescp`` (no fork) writing every instance under ``work_dir/store``."""
    store = work_dir / "store"
    store.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = ["storescp", "-aet", "STORESCP", "-od", str(store)]
    if max_pdu is not None:
        cmd += ["--max-pdu", str(max_pdu)]
    cmd.append(str(port))
    log_path = work_dir / "storescp.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=dcmtk_env(), stdout=log, stderr=subprocess.STDOUT)
    peer = Peer("storescp", proc, port, "STORESCP", store, log_path)
    try:
        _wait_until_echo(proc, port, "STORESCP", timeout)
    except Exception:
        peer.stop()
        raise
    return peer


@dataclass(frozen=True)
class SendResult:
    """One ``storescu`` run: exit code, wall seconds and its output."""

    returncode: int
    seconds: float
    output: str


def storescu_command(
    port: int, paths: Sequence[Path], *, aet: str, options: Sequence[str] = ()
) -> list[str]:
    """The ``storescu`` command line that sends ``paths`` over one association."""
    return [
        "storescu",
        "-aet",
        "BENCHSCU",
        "-aec",
        aet,
        *options,
        "127.0.0.1",
        str(port),
        *(str(p) for p in paths),
    ]


def send(
    port: int,
    paths: Sequence[Path],
    *,
    aet: str,
    options: Sequence[str] = (),
    timeout: float = 300.0,
) -> SendResult:
    """Send ``paths`` with one ``storescu`` (one association) and time it from spawn to exit."""
    cmd = storescu_command(port, paths, aet=aet, options=options)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=dcmtk_env(), capture_output=True, timeout=timeout)
    seconds = time.perf_counter() - start
    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    return SendResult(done.returncode, seconds, output)


def spawn_sender(
    port: int, paths: Sequence[Path], *, aet: str, options: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """Start a ``storescu`` without waiting (for concurrent senders)."""
    cmd = storescu_command(port, paths, aet=aet, options=options)
    return subprocess.Popen(cmd, env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (other engineers' jobs show up here)."""
    one, five, fifteen = os.getloadavg()
    return (round(one, 2), round(five, 2), round(fifteen, 2))
