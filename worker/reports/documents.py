"""All documents of one result: the SR, and for an assessed study the key images and KOS.

Pure: no database, no network, no model. The worker (or the delivery) renders key images
while it holds the model (:mod:`worker.reports.key_images`) and passes them in the input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from worker.reports.headers import completed_all
from worker.reports.inputs import ReportInput
from worker.reports.kos import build_kos
from worker.reports.secondary_capture import build_key_images
from worker.reports.sr import build_sr
from worker.reports.uids import ResultUids, result_uids


@dataclass(frozen=True)
class ResultDocuments:
    """The documents of one result for one kind of destination, with their UIDs."""

    sr: Dataset
    uids: ResultUids
    key_images: list[Dataset] = field(default_factory=list)
    kos: Dataset | None = None

    def items(self) -> Iterator[tuple[str, Dataset]]:
        """Each document with a short kind label (``sr``, ``key-image``, ``kos``), send order.

        The SR first (it is the result), then the key images, then the KOS that points at
        them, so a PACS never holds a selection of images it has not received.
        """
        yield "sr", self.sr
        for image in self.key_images:
            yield "key-image", image
        if self.kos is not None:
            yield "kos", self.kos


def build_result_documents(inp: ReportInput, *, key_images: bool = True) -> ResultDocuments:
    """Build the SR and, when ``key_images`` and the input holds rendered images, SC + KOS.

    A study that was not assessed gets its SR only (it says why); it has no key images.

    Raises
    ------
    ValueError
        If a slice the documents name has no header in ``inp.headers``.
    """
    inp = dataclasses.replace(inp, headers=completed_all(inp.headers))
    uids = result_uids(
        inp.study_instance_uid, inp.study_version, inp.bundle_sha256, inp.destination_kind
    )
    sr = build_sr(inp, uids)
    if not (key_images and inp.assessed and inp.key_images):
        return ResultDocuments(sr=sr, uids=uids)
    images = build_key_images(inp, uids)
    return ResultDocuments(
        sr=sr, uids=uids, key_images=list(images), kos=build_kos(inp, uids, images)
    )
