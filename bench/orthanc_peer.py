"""Orthanc as the hospital PACS, for tests and benchmarks: started with a config of its own.

The Debian ``Orthanc`` binary runs on free loopback ports with its storage in a folder the
caller owns; our listener is registered as the DICOM modality ``triage``, so a test can make
Orthanc send a study to us (``POST /modalities/triage/store``) as a PACS would, and read
back over REST what we stored into it. No authentication on loopback.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.dicom_peers import dcmtk_env, free_port

MODALITY = "triage"


@dataclass
class Orthanc:
    """A running Orthanc: its DICOM port and AE title, its REST base URL."""

    process: subprocess.Popen[bytes]
    dicom_port: int
    http_port: int
    aet: str
    folder: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def destination(self) -> str:
        """Our ``TRIAGE_DICOM_DESTINATIONS`` entry for it."""
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    def rest(self, method: str, path: str, body: bytes | str | None = None) -> Any:
        """One REST call; returns the decoded JSON answer."""
        data = body.encode() if isinstance(body, str) else body
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read()
        return json.loads(text) if text else None

    def upload(self, files: list[Path]) -> str:
        """Store files over REST; returns the Orthanc ID of their study."""
        study = ""
        for path in files:
            study = self.rest("POST", "/instances", path.read_bytes())["ParentStudy"]
        return study

    def send_to_triage(self, orthanc_study_id: str) -> None:
        """Make Orthanc C-STORE the study to our listener (blocks until it is sent)."""
        self.rest("POST", f"/modalities/{MODALITY}/store", orthanc_study_id)

    def study_id(self, study_uid: str) -> str | None:
        """Orthanc's ID of a study by its Study Instance UID, if it holds it."""
        found = self.rest("POST", "/tools/lookup", study_uid)  # [{"ID":..., "Type": "Study", ...}]
        return next((item["ID"] for item in found if item["Type"] == "Study"), None)

    def sop_classes(self, orthanc_study_id: str) -> dict[str, list[str]]:
        """SOP Class UID -> SOP Instance UIDs of every instance in the study."""
        found: dict[str, list[str]] = {}
        for instance in self.rest("GET", f"/studies/{orthanc_study_id}/instances"):
            tags = self.rest("GET", f"/instances/{instance['ID']}/simplified-tags")
            found.setdefault(tags["SOPClassUID"], []).append(tags["SOPInstanceUID"])
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_orthanc(folder: Path, *, triage_port: int, aet: str = "ORTHANC") -> Orthanc:
    """Start Orthanc with storage under ``folder``; ``triage`` names our listener's port."""
    folder.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "pacs-triage-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowEcho": True,
        "UnknownSopClassAccepted": True,
        "DicomModalities": {MODALITY: ["TRIAGE", "127.0.0.1", triage_port]},
        "StableAge": 1,
        "HttpVerbose": False,
        "Plugins": [],
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=1))
    log = open(folder / "orthanc.log", "ab")  # noqa: SIM115 - owned by the process
    process = subprocess.Popen(
        ["Orthanc", str(path)], env=dcmtk_env(), stdout=log, stderr=subprocess.STDOUT
    )
    orthanc = Orthanc(process, dicom_port, http_port, aet, folder)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited: see {folder / 'orthanc.log'}")
        try:
            orthanc.rest("GET", "/system")
            return orthanc
        except OSError:
            time.sleep(0.1)
    orthanc.stop()
    raise RuntimeError("Orthanc did not answer within 30 s")
