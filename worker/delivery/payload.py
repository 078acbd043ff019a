"""The facts every non-DICOM message carries, in one shape: the webhook body and the HL7 source.

Built only from the outbox row's context (the stored prediction, the study, the document
UIDs), never from the live model, so every re-send of a delivery says exactly the same.
"""

from __future__ import annotations

from typing import Any

from db.outbox import DeliveryContext
from training.classes import DISCLAIMER_SYNTHETIC

TRIAGE_AID = "Triage aid that reorders a worklist; not a diagnosis."


def disclaimer(synthetic_demo: bool) -> str:
    """What every message says about itself (and, for the demo bundle, about its model)."""
    return f"{TRIAGE_AID} {DISCLAIMER_SYNTHETIC}." if synthetic_demo else TRIAGE_AID


def result_payload(ctx: DeliveryContext) -> dict[str, Any]:
    """The JSON a webhook receives (and the facts the HL7 message is built from).

    No patient name: the patient ID only as received, for matching at the receiver.
    """
    p = ctx.prediction
    findings = [
        {
            "finding": name,
            "probability": round(float(probability), 4),
            "flagged": bool(p["flags"].get(name, False)),
            "threshold": p["thresholds"].get(name),
        }
        for name, probability in p["probabilities"].items()
    ]
    return {
        "delivery_id": ctx.key,
        "study_instance_uid": ctx.study_instance_uid,
        "study_version": ctx.study_version,
        "accession_number": ctx.accession_number,
        "patient_id": ctx.patient_id,
        "priority": p["priority"],
        "assessed": p["assessed"],
        "reasons": p["reasons"],
        "findings": findings if p["assessed"] else [],
        "correction": ctx.correction,
        "model": {
            "name": p["bundle_name"],
            "version": p["bundle_version"],
            "sha256": p["bundle_sha256"],
            "synthetic_demo": p["synthetic_demo"],
        },
        "sr_sop_instance_uid": ctx.document_uids.get("sr"),
        "created_at": p["created_at"],
        "disclaimer": disclaimer(p["synthetic_demo"]),
    }
