"""UPS worklist delivery: one Unified Procedure Step per result (UPS Push, N-CREATE).

For sites whose reading worklist speaks UPS: the workitem names the study and carries the
triage priority (HIGH for critical, MEDIUM for urgent and not assessed, LOW for routine).
Its SOP Instance UID is derived from the delivery's stable id, so a re-send after a crash
creates nothing new: the SCP answers 0x0111 (duplicate) and that counts as delivered.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import UnifiedProcedureStepPush  # type: ignore[attr-defined]

from db.outbox import DeliveryContext
from triage.destinations import DicomDestination
from worker.delivery.outcome import RefusedError, RetryableError
from worker.delivery.payload import disclaimer

UPS_PRIORITY = {"critical": "HIGH", "urgent": "MEDIUM", "not_assessed": "MEDIUM", "routine": "LOW"}
CREATED = {0x0000, 0x0111}  # 0x0111: this workitem exists already (an earlier send arrived)


def workitem_uid(ctx: DeliveryContext) -> str:
    """The workitem's SOP Instance UID: the same for every send of this delivery."""
    return str(generate_uid(entropy_srcs=["pacs-triage ups", ctx.key]))


def build_workitem(ctx: DeliveryContext, *, now: datetime | None = None) -> Dataset:
    """The N-CREATE attribute list of the workitem (no patient name: the ID as received)."""
    p = ctx.prediction
    when = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ProcedureStepState = "SCHEDULED"
    ds.ScheduledProcedureStepPriority = UPS_PRIORITY.get(p["priority"], "MEDIUM")
    ds.ProcedureStepLabel = f"Head CT triage: {p['priority']}"[:64]
    ds.WorklistLabel = "AI triage"
    ds.ScheduledProcedureStepStartDateTime = when
    ds.InputReadinessState = "READY"
    ds.PatientName = ""
    ds.PatientID = ctx.patient_id or ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = ctx.study_instance_uid
    flagged = [name for name, on in p["flags"].items() if on]
    comment = (
        f"{p['priority']}; flagged: {', '.join(flagged) or 'none'}; "
        f"model {p['bundle_name']} {p['bundle_version']} sha256 {p['bundle_sha256'][:16]}; "
        f"{disclaimer(p['synthetic_demo'])}"
    )
    ds.CommentsOnTheScheduledProcedureStep = comment[:10240]
    ds.ScheduledWorkitemCodeSequence = []
    ds.ScheduledStationNameCodeSequence = []
    ds.ScheduledStationClassCodeSequence = []
    ds.ScheduledStationGeographicLocationCodeSequence = []
    ds.ScheduledHumanPerformersSequence = []
    ds.UnifiedProcedureStepPerformedProcedureSequence = []
    request = Dataset()
    request.StudyInstanceUID = ctx.study_instance_uid
    request.AccessionNumber = ctx.accession_number or ""
    request.RequestedProcedureID = ""
    request.RequestedProcedureDescription = "Head CT"
    request.RequestedProcedureCodeSequence = []
    request.IssuerOfAccessionNumberSequence = []
    ds.ReferencedRequestSequence = [request]
    ds.InputInformationSequence = []
    if ctx.document_uids.get("sr"):
        item = Dataset()
        item.StudyInstanceUID = ctx.study_instance_uid
        item.SeriesInstanceUID = ctx.document_uids.get("sr_series", "")
        referenced = Dataset()
        referenced.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.34"
        referenced.ReferencedSOPInstanceUID = ctx.document_uids["sr"]
        item.ReferencedSOPSequence = [referenced]
        item.TypeOfInstances = "DICOM"
        ds.InputInformationSequence = [item]
    return ds


def create_workitem(
    destination: DicomDestination,
    workitem: Dataset,
    uid: str,
    *,
    calling_aet: str,
    timeout: float,
) -> int:
    """N-CREATE ``workitem`` as ``uid``; returns the status (0x0000, or 0x0111 if it existed).

    Raises
    ------
    RetryableError
        No association, or no N-CREATE response.
    RefusedError
        Any other status (in hex).
    """
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    ae.add_requested_context(
        UnifiedProcedureStepPush, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    )
    try:
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    except OSError as exc:
        raise RetryableError(f"cannot connect to UPS {destination.key}: {exc}") from exc
    if not assoc.is_established:
        raise RetryableError(f"no association with UPS {destination.key}")
    try:
        status, _ = assoc.send_n_create(workitem, UnifiedProcedureStepPush, uid)
        if not status or "Status" not in status:
            raise RetryableError(f"no N-CREATE response from UPS {destination.key}")
        code = int(status.Status)
        if code not in CREATED:
            raise RefusedError(f"UPS {destination.key} refused the workitem: status 0x{code:04X}")
        assoc.release()
        return code
    finally:
        if assoc.is_established:
            assoc.abort()
