"""Durable, atomic storage of received instances, and the quarantine for rejected ones.

An instance lies at ``<spool>/<study uid>/<series uid>/<sop instance uid>.dcm``; every
path component is a validated UID. Bytes go to a temporary file in the same folder,
are fsynced (unless the site turned that off), then renamed into place, so a crash
leaves either the whole file or nothing under its final name.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from listener.uids import require_uid

log = logging.getLogger(__name__)

_OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_IOV_MAX = 512  # buffers per writev call (Linux allows 1024)


class SpoolFullError(OSError):
    """The spool's file system is out of space (answered as 0xA700 Out of Resources)."""


@dataclass(frozen=True)
class SpooledFile:
    """Where an instance's bytes now lie and how many there are."""

    path: Path
    size: int


def _write_all(fd: int, parts: Sequence[bytes | memoryview]) -> None:
    """Write every part with as few ``writev`` calls as the kernel allows (no joining copy)."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        while written and views:
            if written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][written:]
                written = 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """The folder tree where received instances are kept until (and after) inference."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)
        self._known_dirs: set[Path] = set()

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        """The final path of an instance; raises InvalidUIDError for a bad UID."""
        return (
            self.root
            / require_uid(study_uid, "StudyInstanceUID")
            / require_uid(series_uid, "SeriesInstanceUID")
            / f"{require_uid(sop_uid, 'SOPInstanceUID')}.dcm"
        )

    def _ensure_dir(self, folder: Path) -> None:
        if folder in self._known_dirs:
            return
        created = not folder.is_dir()
        folder.mkdir(parents=True, exist_ok=True)
        if created and self.fsync:
            _fsync_dir(folder.parent)
            _fsync_dir(folder.parent.parent)
        self._known_dirs.add(folder)

    def write(
        self,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        data: bytes | memoryview | Sequence[bytes | memoryview],
    ) -> SpooledFile:
        """Atomically store ``data`` (one buffer, or parts written in order with ``writev``).

        Raises :class:`SpoolFullError` when the disk is full.
        """
        final = self.path_for(study_uid, series_uid, sop_uid)
        temp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
        parts = [data] if isinstance(data, bytes | memoryview) else list(data)
        size = sum(len(p) for p in parts)
        try:
            self._ensure_dir(final.parent)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                _write_all(fd, parts)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, final)
            if self.fsync:
                _fsync_dir(final.parent)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            if exc.errno in _OUT_OF_SPACE:
                raise SpoolFullError(exc.errno, f"spool out of space: {exc.strerror}") from None
            raise
        return SpooledFile(final, size)


class Quarantine:
    """Keeps the bytes of every rejected dataset beside a JSON file saying why."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def keep(self, data: bytes | memoryview, reason: str, context: dict[str, Any]) -> Path:
        """Store ``data`` under a generated name (never a received UID); return its path."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        name = f"{stamp}-{uuid.uuid4().hex[:12]}"
        target = self.root / f"{name}.dcm"
        try:
            with open(target, "wb") as fh:
                fh.write(data)
            with open(self.root / f"{name}.json", "w", encoding="utf-8") as fh:
                json.dump({"reason": reason, "at": stamp, **context}, fh, indent=1)
        except OSError:
            log.exception("could not write quarantine file %s", target)
        return target
