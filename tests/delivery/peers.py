"""Real destinations on loopback for the delivery tests: each a real server the test owns.

* :class:`DcmtkStoreScp`: DCMTK ``storescp`` as a process, on a port chosen before it starts
  (so a test can send to it while it is down, then start it);
* :class:`PynetdicomScp`: a C-STORE and UPS (N-CREATE) SCP answering scripted statuses;
* :class:`MllpServer`: an HL7 MLLP listener answering scripted ACK codes (or silence);
* :class:`HookServer`: an ``http.server`` answering scripted HTTP statuses.

Every server records what it received, so tests assert on what the destination saw.
"""

from __future__ import annotations

import http.server
import os
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hl7
from hl7.client import CR, EB, SB
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import UnifiedProcedureStepPush  # type: ignore[attr-defined]

from tests.conftest import wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepts(port: int) -> bool:
    """Whether something accepts TCP connections on ``port`` of loopback now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def dcmtk_env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


@dataclass
class DcmtkStoreScp:
    """DCMTK ``storescp`` writing what it receives under ``folder``."""

    folder: Path
    port: int = field(default_factory=free_port)
    aet: str = "STORESCP"
    process: subprocess.Popen[bytes] | None = None

    @property
    def destination(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.port}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.folder.parent / f"storescp-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            ["storescp", "-aet", self.aet, "-od", str(self.folder), str(self.port)],
            env=dcmtk_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: accepts(self.port), what=f"storescp on {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def received(self) -> list[Dataset]:
        return [dcmread(p) for p in sorted(self.folder.iterdir()) if p.is_file()]


class PynetdicomScp:
    """A pynetdicom SCP for C-STORE and UPS Push whose answers the test scripts."""

    def __init__(
        self, aet: str = "SCRIPTED", store_status: int = 0x0000, ssl_context: Any = None
    ) -> None:
        self.aet = aet
        self.ssl_context = ssl_context
        self.port = free_port()
        self.store_status = store_status
        self.stored: list[Dataset] = []
        self.workitems: dict[str, Dataset] = {}
        self._ae = AE(ae_title=aet)
        self._ae.supported_contexts = AllStoragePresentationContexts
        self._ae.add_supported_context(UnifiedProcedureStepPush)
        self._server: Any = None

    @property
    def destination(self) -> str:
        tls = "+tls" if self.ssl_context is not None else ""
        return f"{self.aet}@127.0.0.1:{self.port}{tls}"

    def _on_store(self, event: Any) -> int:
        if self.store_status == 0x0000:
            self.stored.append(event.dataset)
        return self.store_status

    def _on_create(self, event: Any) -> tuple[int, Dataset | None]:
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid in self.workitems:
            return 0x0111, None  # Duplicate SOP Instance, as PS3.4 CC.2.5 says
        self.workitems[uid] = event.attribute_list
        return 0x0000, event.attribute_list

    def start(self) -> None:
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_N_CREATE, self._on_create)]
        self._server = self._ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=handlers,
            ssl_context=self.ssl_context,
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


class MllpServer:
    """An MLLP listener: answers each message with the next scripted code (None: silence)."""

    def __init__(self, replies: list[str | None]) -> None:
        self.replies = list(replies)
        self.messages: list[hl7.Message] = []
        self.acked: list[str] = []  # control ids answered AA
        self.port = free_port()
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def destination(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while EB + CR not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if EB + CR not in data:
                    continue
                text = data[data.index(SB) + 1 : data.index(EB + CR)].decode("utf-8")
                message = hl7.parse(text)
                self.messages.append(message)
                code = self.replies.pop(0) if self.replies else "AA"
                if code is None:
                    time.sleep(2)  # say nothing; the sender must time out
                    continue
                if code == "AA":
                    self.acked.append(str(message.segment("MSH")(10)))
                conn.sendall(SB + str(message.create_ack(code)).encode("utf-8") + EB + CR)


class _HookHandler(http.server.BaseHTTPRequestHandler):
    server: HookServer._Server

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        owner = self.server.owner
        status = owner.statuses.pop(0) if owner.statuses else 200
        owner.requests.append((dict(self.headers), body, status))
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"scripted answer")

    def log_message(self, format: str, *args: Any) -> None:
        return


class HookServer:
    """A real HTTP server answering each POST with the next scripted status."""

    class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        owner: HookServer

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        self._server = self._Server(("127.0.0.1", 0), _HookHandler)
        self._server.owner = self
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/triage"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def running(*servers: Any) -> Iterator[None]:
    for server in servers:
        server.start()
    try:
        yield
    finally:
        for server in servers:
            server.stop()
