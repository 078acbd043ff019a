"""Hook for the worklist's heat-map thumbnail (the top slice with its heat map).

Rendered key images (DICOM Secondary Capture files under the spool) are made by the
reports work, which is not part of this tree yet. Until it is, :func:`key_image_url`
answers None and the worklist shows the per-slice score curve (:mod:`triage.web.curve`).
When it lands, this function returns the URL of a route that serves the rendered PNG of
the study's key image (access-logged like every read of patient data).
"""

from __future__ import annotations


def key_image_url(study_id: int) -> str | None:
    """URL of the study's rendered key-image thumbnail, or None when none exists."""
    del study_id
    return None
