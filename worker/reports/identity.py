"""Who made a result document and how it must be labelled: shared by the SR, SC and KOS.

Every output names the model bundle (name, version, weights sha256), says it is a triage
aid, and when a phantom-trained bundle made it, says "synthetic demo — not for clinical
use"; the wording lives here once so the three documents cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime

from highdicom import ContentQualificationValues
from highdicom.sr import (
    AlgorithmIdentification,
    DeviceObserverIdentifyingAttributes,
    ObserverContext,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.valuerep import DA, DT, TM

from worker.reports.inputs import ReportInput
from worker.reports.uids import device_uid

MANUFACTURER = "pacs-triage"
CHARACTER_SET = "ISO_IR 192"  # UTF-8: the demo label carries an em dash
TRIAGE_AID_TEXT = (
    "Triage aid, not a diagnosis: an algorithm reordered the worklist; "
    "a radiologist reads every study."
)


def disclaimer(inp: ReportInput) -> str:
    """The triage-aid sentence with the model's identity."""
    return (
        f"{TRIAGE_AID_TEXT} Model {inp.bundle_name} {inp.bundle_version}, "
        f"weights sha256 {inp.bundle_sha256}."
    )


def algorithm(inp: ReportInput) -> AlgorithmIdentification:
    """TID 4019: the bundle by name and version, its weights hash as a parameter."""
    return AlgorithmIdentification(
        name=inp.bundle_name,
        version=inp.bundle_version,
        parameters=[f"weights sha256 {inp.bundle_sha256}"],
        manufacturer=MANUFACTURER,
    )


def device_observer(inp: ReportInput) -> ObserverContext:
    """TID 1002: the bundle as the device that made the observations."""
    return ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=device_uid(inp.bundle_sha256),
            name=inp.bundle_name,
            manufacturer_name=MANUFACTURER,
            model_name=f"{inp.bundle_name} {inp.bundle_version}",
            serial_number=inp.bundle_sha256,
        ),
    )


def series_description(inp: ReportInput, what: str) -> str:
    """Series Description (64 characters at most) that says what the series is."""
    demo = " SYNTHETIC DEMO" if inp.synthetic_demo else ""
    return f"AI triage {what} (not a diagnosis){demo}"[:64]


def qualification(inp: ReportInput) -> ContentQualificationValues:
    """RESEARCH for a synthetic demo bundle's output, PRODUCT otherwise."""
    if inp.synthetic_demo:
        return ContentQualificationValues.RESEARCH
    return ContentQualificationValues.PRODUCT


def content_datetime(inp: ReportInput) -> datetime:
    """Content date and time: the prediction's, so a rebuilt document is the same document."""
    return inp.created_at or datetime.now()


def header_kwargs(inp: ReportInput, what: str) -> dict[str, object]:
    """The equipment, series and content attributes every document gets from highdicom."""
    when = content_datetime(inp)
    return {
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": inp.bundle_name[:64],
        "software_versions": inp.bundle_version[:64],
        "device_serial_number": inp.bundle_sha256[:64],
        "series_description": series_description(inp, what),
        "content_date": when.date(),
        "content_time": when.time(),
        "content_qualification": qualification(inp),
        "specific_character_set": CHARACTER_SET,
    }


def stamp_creation(ds: Dataset, inp: ReportInput) -> None:
    """Instance Creation Date/Time from the prediction, when known.

    A document rebuilt for a re-send is the same instance (same UID); with its creation
    time (and highdicom's contribution time) taken from the prediction it is byte for
    byte the same file as well.
    """
    if inp.created_at is None:
        return
    ds.InstanceCreationDate = DA(inp.created_at.date())
    ds.InstanceCreationTime = TM(inp.created_at.time())
    for item in ds.get("ContributingEquipmentSequence", []):
        if item.get("ManufacturerModelName") == "highdicom":  # highdicom stamps "now"
            item.ContributionDateTime = DT(inp.created_at)
