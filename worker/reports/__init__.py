"""Result documents for the PACS: TID 1500 SR, key-image Secondary Captures and a KOS.

The public API the worker and the delivery use::

    from worker.reports import ReportInput, build_result_documents, write_documents
    docs = build_result_documents(inp)          # pure: no DB, no network, no model
    for kind, ds in docs.items(): ...           # "sr", "key-image", "kos"
    write_documents(docs, folder)               # Part 10 files named by SOP Instance UID

Key images are rendered while the model is loaded (:mod:`worker.reports.key_images`,
which imports torch); everything imported here is light.
"""

from worker.reports.documents import ResultDocuments, build_result_documents
from worker.reports.inputs import (
    DocumentRef,
    KeyImage,
    ReportInput,
    not_assessed_input,
    report_input_from_prediction,
)
from worker.reports.key_slices import KeySlice, key_images_slices, key_slice_uids
from worker.reports.uids import ResultUids, result_uids
from worker.reports.writing import write_documents

__all__ = [
    "DocumentRef",
    "KeyImage",
    "KeySlice",
    "ReportInput",
    "ResultDocuments",
    "ResultUids",
    "build_result_documents",
    "key_images_slices",
    "key_slice_uids",
    "not_assessed_input",
    "report_input_from_prediction",
    "result_uids",
    "write_documents",
]
