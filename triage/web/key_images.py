"""The worklist's heat-map thumbnail: the top key image the worker rendered for a result.

The inference worker renders the Grad-CAM key images (highest-scoring slice first, as
instance number 1) into a Secondary Capture series and spools them with the SR under
:func:`triage.result_store.result_folder`. They exist when results are delivered
(``TRIAGE_DICOM_DESTINATIONS`` and friends with ``TRIAGE_KEY_IMAGES``); without them the
worklist shows the per-slice score curve (:mod:`triage.web.curve`) instead.

The thumbnail is decoded from the spooled DICOM file on request, so what the radiologist
sees in the worklist is exactly the image the PACS received.
"""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
from PIL import Image
from pydicom.uid import SecondaryCaptureImageStorage

from triage.result_store import result_folder
from triage.uids import InvalidUIDError

THUMBNAIL_PIXELS = 160


def top_key_image(spool: Path, study_uid: str, version: int, bundle_sha256: str) -> Path | None:
    """The spooled Secondary Capture with the lowest instance number (the top slice), if any."""
    try:
        folder = result_folder(spool, study_uid, version, bundle_sha256)
    except (InvalidUIDError, ValueError):
        return None
    if not folder.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for path in folder.glob("*.dcm"):
        header = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["SOPClassUID", "InstanceNumber"]
        )
        if header.get("SOPClassUID") != SecondaryCaptureImageStorage:
            continue
        number = int(header.get("InstanceNumber") or 0)
        if best is None or number < best[0]:
            best = (number, path)
    return best[1] if best else None


def thumbnail_png(path: Path, size: int = THUMBNAIL_PIXELS) -> bytes:
    """The key image scaled to fit ``size`` x ``size``, as PNG bytes."""
    pixels = pydicom.dcmread(path).pixel_array
    image = Image.fromarray(pixels)
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
