"""Where a result's documents lie in the spool: one home for the layout.

The inference worker writes each result's SR, key images and KOS under
``<spool>/results/<study UID>/v<version>-<sha12>``; the delivery worker sends them from
there and the web app shows the top key image as the worklist thumbnail. Both sides name
the folder through :func:`result_folder`, so the layout cannot drift between them, and
the web app need not import the worker (and torch) to find it.
"""

from __future__ import annotations

import re
from pathlib import Path

from triage.uids import require_uid


def result_folder(spool: Path, study_uid: str, version: int, bundle_sha256: str) -> Path:
    """``<spool>/results/<study UID>/v<version>-<sha12>``; the UID is checked before use."""
    require_uid(study_uid, "Study Instance UID")
    if not re.fullmatch(r"[0-9a-f]{12,64}", bundle_sha256):
        raise ValueError("bundle_sha256: not a hex digest")
    return spool / "results" / study_uid / f"v{int(version)}-{bundle_sha256[:12]}"
