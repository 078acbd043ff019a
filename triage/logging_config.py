"""Logging for entry points only: one line per record, study UID and task id when given.

Modules log with ``logging.getLogger(__name__)`` and pass ``extra={"study_uid": ...}``;
patient names are never passed, so they never reach a log.
"""

from __future__ import annotations

import logging


class _ContextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [
            f"{key}={getattr(record, key)}"
            for key in ("study_uid", "task_id")
            if hasattr(record, key)
        ]
        return f"{line} [{' '.join(extras)}]" if extras else line


def configure_logging(level: str = "INFO") -> None:
    """Configure the root logger once, at process start."""
    handler = logging.StreamHandler()
    handler.setFormatter(_ContextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
