"""The coded concepts our result documents use: one home, so the SR, the KOS and the tests agree.

Why a local coding scheme: DICOM and SNOMED CT name intracranial hemorrhage (SCT 1386000) and
the concepts of TID 1500, but the hemorrhage subtypes and ischemic stroke are given here in
the private scheme ``99PTRIAGE`` (declared in the Coding Scheme Identification Sequence of
every document) until their SNOMED CT codes have been checked against a terminology server;
a wrong standard code would be worse than an honest local one. The plain-English meaning
travels with every code, so a reader never needs the scheme to understand a finding.
"""

from __future__ import annotations

from typing import Final

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

LOCAL_SCHEME: Final[str] = "99PTRIAGE"
"""Designator of our private coding scheme (PS3.16 §8.2: private designators start with 99)."""


def local(value: str, meaning: str) -> CodedConcept:
    """A concept of :data:`LOCAL_SCHEME`."""
    return CodedConcept(value=value, scheme_designator=LOCAL_SCHEME, meaning=meaning)


def coding_schemes() -> list[CodingSchemeIdentificationItem]:
    """The Coding Scheme Identification items that declare :data:`LOCAL_SCHEME`."""
    return [
        CodingSchemeIdentificationItem(
            designator=LOCAL_SCHEME,
            name="pacs-triage result concepts",
            responsible_organization="pacs-triage",
        )
    ]


FINDINGS: Final[dict[str, CodedConcept]] = {
    "any": CodedConcept.from_code(codes.SCT.IntracranialHemorrhage),
    "epidural": local("EDH", "Epidural hemorrhage"),
    "intraparenchymal": local("IPH", "Intraparenchymal hemorrhage"),
    "intraventricular": local("IVH", "Intraventricular hemorrhage"),
    "subarachnoid": local("SAH", "Subarachnoid hemorrhage"),
    "subdural": local("SDH", "Subdural hemorrhage"),
    "ischemic": local("ISCH", "Ischemic stroke"),
}
"""The finding each bundle class name stands for (``training.classes.CLASS_NAMES``)."""


def finding(class_name: str) -> CodedConcept:
    """The coded finding of a bundle class; an unknown class gets a local code of its name.

    A bundle may add classes this table does not know: the report still names them (in
    the local scheme) rather than dropping a finding the model produced.
    """
    known = FINDINGS.get(class_name)
    if known is not None:
        return known
    # highdicom moves a value longer than 16 characters to Long Code Value by itself.
    return local(f"CLASS-{class_name.upper()}", class_name.replace("_", " ").capitalize())


def class_of(concept: CodedConcept) -> str | None:
    """The bundle class name a finding concept stands for (the inverse of :func:`finding`)."""
    for name, code in FINDINGS.items():
        if code == concept:
            return name
    if concept.scheme_designator == LOCAL_SCHEME and concept.value.startswith("CLASS-"):
        return concept.meaning.lower().replace(" ", "_")
    return None


PRESENT: Final = CodedConcept.from_code(codes.SCT.Present)
ABSENT: Final = CodedConcept.from_code(codes.SCT.Absent)
PROBABILITY: Final = CodedConcept.from_code(codes.DCM.Probability)
NO_UNITS: Final = CodedConcept.from_code(codes.UCUM.NoUnits)
PROCEDURE_CT_HEAD: Final = CodedConcept.from_code(codes.SCT.ComputedTomographyOfHead)
REPORT_TITLE: Final = CodedConcept.from_code(codes.DCM.ImagingMeasurementReport)
KOS_TITLE: Final = CodedConcept.from_code(codes.DCM.OfInterest)
COMMENT: Final = CodedConcept.from_code(codes.DCM.Comment)
QUALITATIVE_EVALUATIONS: Final = CodedConcept(
    value="C0034375", scheme_designator="UMLS", meaning="Qualitative Evaluations"
)
"""TID 1500 row 12: the report-level container of coded and text evaluations."""

ASSESSMENT: Final = local("ASSESSMENT", "Triage assessment")
ASSESSED: Final = local("ASSESSED", "Assessed")
NOT_ASSESSED: Final = local("NOT-ASSESSED", "Not assessed")
NOT_ASSESSED_REASON: Final = local("NOT-ASSESSED-REASON", "Reason not assessed")
TRIAGE_PRIORITY: Final = local("PRIORITY", "Triage priority")
OPERATING_THRESHOLD: Final = local("THRESHOLD", "Operating threshold")
DOMAIN_SCORE: Final = local("DOMAIN-SCORE", "Input domain score")
DISCLAIMER: Final = local("DISCLAIMER", "Triage aid disclaimer")
