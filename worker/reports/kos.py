"""A Key Object Selection document ("Of Interest") that points a viewer at the key images.

Viewers that know KOS open its references first; it names the key images and the source
slices they were made from, with the bundle as the device that chose them.
"""

from __future__ import annotations

from collections.abc import Sequence

from highdicom.ko import KeyObjectSelection, KeyObjectSelectionDocument
from pydicom.dataset import Dataset

from worker.reports import codes as rc
from worker.reports.identity import device_observer, disclaimer, header_kwargs, stamp_creation
from worker.reports.inputs import ReportInput
from worker.reports.uids import ResultUids

KOS_SERIES_NUMBER = 9903


def build_kos(
    inp: ReportInput, uids: ResultUids, key_images: Sequence[Dataset]
) -> KeyObjectSelectionDocument:
    """The KOS over ``key_images`` and their source slices.

    Raises
    ------
    ValueError
        If ``key_images`` is empty (there is nothing to select).
    """
    if not key_images:
        raise ValueError("key_images: a key object selection needs at least one image")
    sources: dict[str, Dataset] = {}
    for image in key_images:
        for ref in image.get("SourceImageSequence", []):
            header = inp.header(str(ref.ReferencedSOPInstanceUID))
            if header is not None:
                sources.setdefault(str(header.SOPInstanceUID), header)
    selected = [*key_images, *sources.values()]
    demo = f" {inp.demo_label}." if inp.demo_label else ""
    content = KeyObjectSelection(
        document_title=rc.KOS_TITLE,
        referenced_objects=selected,
        observer_device_context=device_observer(inp),
        description=f"Key images with the highest model scores. {disclaimer(inp)}{demo}",
    )
    kos = KeyObjectSelectionDocument(
        evidence=selected,  # the first, a key image, lends its patient and study modules
        content=content,
        series_instance_uid=uids.kos_series,
        series_number=KOS_SERIES_NUMBER,
        sop_instance_uid=uids.kos_instance,
        instance_number=1,
        **header_kwargs(inp, "key objects"),  # type: ignore[arg-type]
    )
    stamp_creation(kos, inp)
    return kos
