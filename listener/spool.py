"""Durable, atomic storage of received instances, and the quarantine for rejected ones.

An instance lies at ``<spool>/<study uid>/<series uid>/<sop instance uid>.dcm``; every
path component is a validated UID. Bytes go to a temporary file under ``<spool>/.incoming``
(written while the instance's fragments still arrive, see :class:`IncomingFile`), are
fsynced (unless the site turned that off), then renamed into place and the folder is
fsynced, so a crash leaves either the whole file or nothing under its final name, and
success is answered only once both the bytes and the name are on disk.

Why the strict order (and not "write, rename, fsync the file"): on a journalled ext4
(data=ordered) that shortcut is safe, because the commit the fsync forces logs the rename
only after the data blocks are written. This host's ``/`` is ext4 without a journal:
there the fsync still writes a freshly named file's folder (``ext4_sync_parent``), so the
name would be persisted, but nothing orders the data blocks before the new name, and a
crash could leave the final name on a short or stale file. The strict
order needs two syncs. What they cost here (bench/ingest.py's "spool alone" rows and
docs/ingest-performance.md): the cache flush itself ~30 us, the data writeback most of
the rest, ~0.4 ms for a 525 KB slice.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from triage.uids import require_uid

log = logging.getLogger(__name__)

_OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_IOV_MAX = 512  # buffers per writev call (Linux allows 1024)
_INCOMING = ".incoming"  # temporary files, one per instance being received
_WRITEBACK_STEP = 256 * 1024  # with fsync on, start writing back every this many bytes


class SpoolFullError(OSError):
    """The spool's file system is out of space (answered as 0xA700 Out of Resources)."""


@dataclass(frozen=True)
class SpooledFile:
    """Where an instance's bytes now lie and how many there are."""

    path: Path
    size: int


def _write_all(fd: int, parts: Sequence[bytes | memoryview]) -> int:
    """Write every part with as few ``writev`` calls as the kernel allows (no joining copy)."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    total = sum(len(v) for v in views)
    if len(views) == 1:
        written = os.write(fd, views[0])
        if written == total:
            return total
        views[0] = views[0][written:]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        while written and views:
            if written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][written:]
                written = 0
    return total


def _classified(exc: OSError) -> OSError:
    """``exc``, or a :class:`SpoolFullError` for running out of space."""
    if exc.errno in _OUT_OF_SPACE and not isinstance(exc, SpoolFullError):
        return SpoolFullError(exc.errno, f"spool out of space: {exc.strerror}")
    return exc


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range`` (Linux), or None where there is none."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], function)


_START_WRITEBACK = _sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2  # start writeback of dirty pages in the range, do not wait


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class IncomingFile:
    """An instance's bytes, written to a temporary file while its fragments still arrive.

    A CT slice arrives as four or five P-DATA PDUs; writing each as it lands (rather than
    all of them once the last is in) overlaps the file's creation and the copy into the
    page cache with the sender's transmission, so only the last fragment, the fsync and
    the rename remain between the last PDU and the response. With fsync on, writeback of
    each 256 KiB is started at once (``sync_file_range``, not waiting), so the fsync at
    the end mostly finds the data already on its way to the disk.

    The file lies in ``<spool>/.incoming`` (the final folder is known only once the
    header has been read) and :meth:`Spool.commit` renames it into place. Never raises
    from :meth:`write`: a failure (disk full) is kept and raised by :meth:`check` and
    :meth:`Spool.commit`, so the receive path can go on reading the instance.
    """

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self.path = spool.incoming_dir / f"{uuid.uuid4().hex}.tmp"
        self.size = 0
        self.error: OSError | None = None
        self._written_back = 0
        self.fd = -1
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            self.error = exc

    def write(self, parts: Sequence[bytes | memoryview]) -> None:
        """Append ``parts`` in order (after a failure, nothing more is written)."""
        if self.error is not None or self.fd < 0:
            return
        try:
            self.size += _write_all(self.fd, parts)
        except OSError as exc:
            self.error = exc
            return
        if self._spool.fsync and self.size - self._written_back >= _WRITEBACK_STEP:
            self._spool.start_writeback(self.fd, self._written_back, self.size)
            self._written_back = self.size

    def check(self) -> None:
        """Raise what made writing fail: :class:`SpoolFullError` when the disk is full."""
        if self.error is not None:
            raise _classified(self.error)

    def contents(self) -> bytes:
        """Everything written so far (for the rare paths that need the whole instance)."""
        if self.fd < 0:
            return b""
        return os.pread(self.fd, self.size, 0)

    def close(self) -> None:
        """Close the file, leaving it where it is."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def discard(self) -> None:
        """Close and remove the temporary file; harmless once committed or discarded."""
        with contextlib.suppress(OSError):
            self.close()
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


class Spool:
    """The folder tree where received instances are kept until (and after) inference."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self.fsync = fsync
        self.incoming_dir = self.root / _INCOMING
        self.incoming_dir.mkdir(parents=True, exist_ok=True)
        self._known_dirs: set[Path] = set()
        self._writeback_works = _START_WRITEBACK is not None

    def start_writeback(self, fd: int, start: int, end: int) -> bool:
        """Ask the kernel to start writing ``[start, end)`` of ``fd`` to disk, without waiting.

        Only a head start for the fsync that follows; turned off for good where the call
        fails (a file system or kernel without it).
        """
        if not self._writeback_works or _START_WRITEBACK is None:
            return False
        if _START_WRITEBACK(fd, start, end - start, _SYNC_FILE_RANGE_WRITE) != 0:
            self._writeback_works = False
            return False
        return True

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        """The final path of an instance; raises InvalidUIDError for a bad UID."""
        study = require_uid(study_uid, "StudyInstanceUID")
        series = require_uid(series_uid, "SeriesInstanceUID")
        sop = require_uid(sop_uid, "SOPInstanceUID")
        return Path(f"{self.root}/{study}/{series}/{sop}.dcm")  # one parse, not three joins

    def _ensure_dir(self, folder: Path) -> None:
        if folder in self._known_dirs:
            return
        created = not folder.is_dir()
        folder.mkdir(parents=True, exist_ok=True)
        if created and self.fsync:
            _fsync_dir(folder.parent)
            _fsync_dir(folder.parent.parent)
        self._known_dirs.add(folder)

    def begin(self) -> IncomingFile:
        """A new temporary file to write an arriving instance into; :meth:`commit` it."""
        return IncomingFile(self)

    def commit(
        self, incoming: IncomingFile, study_uid: str, series_uid: str, sop_uid: str
    ) -> SpooledFile:
        """Make ``incoming`` durable (fsync on) and rename it to its final path.

        The strict order: the file's fsync (bytes and inode), the rename, the folder's
        fsync (the name). Raises :class:`SpoolFullError` when the disk filled up while it
        was written, InvalidUIDError for a bad UID; the temporary file is removed on any
        failure.
        """
        try:
            final = self.path_for(study_uid, series_uid, sop_uid)
            incoming.check()
            if self.fsync:
                os.fsync(incoming.fd)
            incoming.close()
            self._ensure_dir(final.parent)
            os.replace(incoming.path, final)
            if self.fsync:
                _fsync_dir(final.parent)
        except OSError as exc:
            incoming.discard()
            raise _classified(exc) from None
        except BaseException:
            incoming.discard()
            raise
        return SpooledFile(final, incoming.size)

    def write(
        self,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        data: bytes | memoryview | Sequence[bytes | memoryview],
    ) -> SpooledFile:
        """Atomically store ``data`` (one buffer, or parts written in order with ``writev``).

        Raises :class:`SpoolFullError` when the disk is full, InvalidUIDError for a bad UID
        (before anything is written).
        """
        self.path_for(study_uid, series_uid, sop_uid)
        incoming = self.begin()
        incoming.write([data] if isinstance(data, bytes | memoryview) else list(data))
        return self.commit(incoming, study_uid, series_uid, sop_uid)


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
