"""HL7 v2.5.1 ORU^R01 of a result, built with python-hl7, sent over MLLP.

Built segment by segment through the library's containers (no string concatenation of
segments): MSH, PID (the patient ID only as received, never a name), OBR with the
accession, one OBX per finding (probability, abnormal flag), then the priority, the model
identity (name, version, sha256), the SR's UID and the disclaimer. Result status ``F``, or
``C`` when an earlier version's result already reached this receiver.

The message control id is the delivery's stable id, so a re-send after a crash between the
receiver's ACK and our commit is recognisably the same message. MSA-1 ``AA`` with our
control id in MSA-2 means sent; ``AE``/``AR``, a foreign ACK or silence mean retry.
"""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime

import hl7
from hl7.client import CR, EB, SB

from db.outbox import DeliveryContext
from triage.destinations import Hl7Destination
from worker.delivery.outcome import RetryableError
from worker.delivery.payload import result_payload

VERSION = "2.5.1"
# OBR-5 / OBR-27 priority: S = stat, A = ASAP, R = routine.
PRIORITY_CODES = {"critical": "S", "urgent": "A", "routine": "R", "not_assessed": "R"}
CODING = "L"  # local coding system for our observation identifiers


def _escaped(message: hl7.Message, text: str) -> str:
    """``text`` with HL7 delimiters escaped; other characters kept (the message is UTF-8)."""
    return message.escape(text) if any(c in text for c in "|^~\\&") else text


def control_id(ctx: DeliveryContext) -> str:
    """MSH-10 (at most 20 characters): the delivery's stable id."""
    return ctx.key[:20]


def build_oru(
    ctx: DeliveryContext, *, sending_application: str, now: datetime | None = None
) -> hl7.Message:
    """The ORU^R01 for one delivery (see the module docstring for its content)."""
    facts = result_payload(ctx)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    status = "C" if ctx.correction else "F"
    message = hl7.Message(separator="\r", sequence=[])

    def segment(name: str, fields: dict[int, str | tuple[str, ...]]) -> None:
        seg = message.create_segment([message.create_field([name])])
        if name == "MSH":
            seg.assign_field("|", 1)
            seg.assign_field("^~\\&", 2)
        for number, value in sorted(fields.items()):
            if isinstance(value, tuple):
                for component, part in enumerate(value, start=1):
                    seg.assign_field(_escaped(message, part), number, 1, component)
            else:
                seg.assign_field(_escaped(message, value), number)
        message.append(seg)

    segment(
        "MSH",
        {
            3: sending_application,
            7: stamp,
            9: ("ORU", "R01", "ORU_R01"),
            10: control_id(ctx),
            11: "P",
            12: VERSION,
            18: "UNICODE UTF-8",
        },
    )
    segment("PID", {1: "1", 3: facts["patient_id"] or ""})
    priority_code = PRIORITY_CODES.get(facts["priority"], "R")
    accession = facts["accession_number"] or ""
    segment(
        "OBR",
        {
            1: "1",
            3: accession,
            4: ("HEADCT-TRIAGE", "Head CT AI triage", CODING),
            5: priority_code,
            7: stamp,
            18: accession,
            22: stamp,
            25: status,
        },
    )
    set_id = 0

    def obx(kind: str, code: str, label: str, value: str, **extra: str) -> None:
        nonlocal set_id
        set_id += 1
        fields: dict[int, str | tuple[str, ...]] = {
            1: str(set_id),
            2: kind,
            3: (code, label, CODING),
            5: value,
            11: status,
        }
        if "units" in extra:
            fields[6] = ("1", extra["units"], "UCUM")
        if "flag" in extra:
            fields[8] = extra["flag"]
        if "range" in extra:
            fields[7] = extra["range"]
        segment("OBX", fields)

    for finding in facts["findings"]:
        name = finding["finding"]
        threshold = finding["threshold"]
        obx(
            "NM",
            name.upper(),
            f"{name} probability",
            f"{finding['probability']:.4f}",
            units="probability",
            flag="A" if finding["flagged"] else "N",
            **({"range": f"<{threshold:g}"} if threshold is not None else {}),
        )
    if not facts["assessed"]:
        obx("TX", "NOT_ASSESSED", "Not assessed", "; ".join(facts["reasons"]) or "not assessed")
    obx("ST", "PRIORITY", "Triage priority", facts["priority"])
    model = facts["model"]
    obx("ST", "MODEL_NAME", "Model name", model["name"])
    obx("ST", "MODEL_VERSION", "Model version", model["version"])
    obx("ST", "MODEL_SHA256", "Model weights sha256", model["sha256"])
    if facts["sr_sop_instance_uid"]:
        obx("ST", "SR_UID", "Structured report SOP Instance UID", facts["sr_sop_instance_uid"])
    obx("ST", "STUDY_UID", "Study Instance UID", facts["study_instance_uid"])
    obx("TX", "DISCLAIMER", "Disclaimer", facts["disclaimer"])
    return message


def read_frame(sock: socket.socket, deadline: float) -> bytes:
    """One MLLP frame's payload from ``sock``; raises RetryableError past ``deadline``."""
    data = b""
    while EB + CR not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RetryableError("no HL7 ACK in time")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError as exc:
            raise RetryableError("no HL7 ACK in time") from exc
        if not chunk:
            raise RetryableError("HL7 receiver closed the connection without an ACK")
        data += chunk
    start = data.find(SB)
    return data[start + 1 : data.index(EB + CR)]


def frame(message: hl7.Message) -> bytes:
    """MLLP framing: <VT> message <FS><CR>."""
    return SB + str(message).encode("utf-8") + EB + CR


def send_oru(destination: Hl7Destination, message: hl7.Message, *, timeout: float) -> str:
    """Send ``message`` and wait for its ACK; returns the ACK code (``AA``).

    Raises
    ------
    RetryableError
        No connection, no ACK in time, a foreign ACK, or AE/AR.
    """
    expected = str(message.segment("MSH")(10))
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection(
            (destination.host, destination.port), timeout=timeout
        ) as sock:
            sock.sendall(frame(message))
            reply = read_frame(sock, deadline)
    except OSError as exc:
        raise RetryableError(f"HL7 {destination.key}: {exc}") from exc
    try:
        ack = hl7.parse(reply.decode("utf-8", errors="replace"))
        msa = ack.segment("MSA")
    except (hl7.ParseException, KeyError, IndexError) as exc:
        raise RetryableError(f"HL7 {destination.key}: unreadable ACK") from exc
    code, acked = str(msa(1)), str(msa(2))
    if acked != expected:
        raise RetryableError(f"HL7 {destination.key}: ACK for {acked!r}, not {expected!r}")
    if code not in ("AA", "CA"):
        text = str(msa(3)) if len(msa) > 3 else ""
        raise RetryableError(f"HL7 {destination.key}: {code}{' ' + text if text else ''}")
    return code
