"""The result as a DICOM Comprehensive 3D SR following TID 1500 (Measurement Report).

In the spirit of IHE AI Results: one measurement group per finding the bundle knows (each
hemorrhage subtype, any hemorrhage, ischemic stroke) holding the probability as a
measurement, the operating threshold, and present/absent at that threshold as a
qualitative evaluation; the bundle as device observer and algorithm (name, version,
weights sha256); the series read and the highest-scoring slices in the image library and
as each present finding's source images. A report-level "Qualitative Evaluations"
container says in words that this is a triage aid, whether the study was assessed and, if
not, why; a study not assessed claims no finding at all.

Everything is built with highdicom, whose constructors refuse an invalid tree.
"""

from __future__ import annotations

from highdicom.sr import (
    CodeContentItem,
    CodedConcept,
    Comprehensive3DSR,
    ContainerContentItem,
    ContentSequence,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    QualitativeEvaluation,
    RelationshipTypeValues,
    SourceImageForMeasurementGroup,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from worker.reports import codes as rc
from worker.reports.headers import describable, study_reference
from worker.reports.identity import (
    algorithm,
    device_observer,
    disclaimer,
    header_kwargs,
    stamp_creation,
)
from worker.reports.inputs import ReportInput
from worker.reports.key_slices import top_slices_for_class
from worker.reports.uids import ResultUids

SR_SERIES_NUMBER = 9901


def reported_probability(value: float) -> float:
    """The probability as the report states it (six decimals, like the stored slice scores)."""
    return round(float(value), 6)


def _observation_context(inp: ReportInput) -> ObservationContext:
    return ObservationContext(observer_device_context=device_observer(inp))


def _tracking(uids: ResultUids, what: str) -> TrackingIdentifier:
    return TrackingIdentifier(
        uid=generate_uid(entropy_srcs=[uids.sr_instance, "tracking", what]),
        identifier=f"triage {what}",
    )


def _finding_group(
    inp: ReportInput, uids: ResultUids, class_name: str
) -> MeasurementsAndQualitativeEvaluations:
    concept = rc.finding(class_name)
    present = bool(inp.flags[class_name])
    sources = None
    if present and inp.slice_scores:
        top = top_slices_for_class(inp.slice_scores, class_name, inp.key_slice_count)
        sources = [
            SourceImageForMeasurementGroup.from_source_image(_required_header(inp, s))
            for s in (k.sop_instance_uid for k in top)
        ]
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(uids, class_name),
        finding_type=concept,
        algorithm_id=algorithm(inp),
        measurements=[
            Measurement(
                name=rc.PROBABILITY,
                value=reported_probability(inp.probabilities[class_name]),
                unit=rc.NO_UNITS,
            ),
            Measurement(
                name=rc.OPERATING_THRESHOLD,
                value=reported_probability(inp.thresholds[class_name]),
                unit=rc.NO_UNITS,
            ),
        ],
        qualitative_evaluations=[
            QualitativeEvaluation(name=concept, value=rc.PRESENT if present else rc.ABSENT)
        ],
        source_images=sources,
    )


def _not_assessed_group(
    inp: ReportInput, uids: ResultUids
) -> MeasurementsAndQualitativeEvaluations:
    # TID 1500 needs one group; this one claims no finding, only that none was judged.
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(uids, "assessment"),
        algorithm_id=algorithm(inp),
        qualitative_evaluations=[QualitativeEvaluation(name=rc.ASSESSMENT, value=rc.NOT_ASSESSED)],
    )


def _required_header(inp: ReportInput, sop_instance_uid: str) -> Dataset:
    header = inp.header(sop_instance_uid)
    if header is None:
        raise ValueError(
            f"headers: key slice {sop_instance_uid} has no header "
            "(load the headers worker.reports.key_slices.key_slice_uids names)"
        )
    return header


def statements(inp: ReportInput) -> list[tuple[CodedConcept, str]]:
    """The report-level text items, in order: disclaimer, demo label, priority, reasons."""
    items = [
        (
            rc.DISCLAIMER,
            disclaimer(inp),
        )
    ]
    if inp.demo_label:
        items.append((rc.DISCLAIMER, inp.demo_label))
    items.append((rc.TRIAGE_PRIORITY, inp.priority))
    if inp.domain_score is not None:
        where = "within" if inp.in_domain else "outside"
        items.append(
            (rc.DOMAIN_SCORE, f"{inp.domain_score:.3f} ({where} the training images' domain)")
        )
    items.extend((rc.NOT_ASSESSED_REASON, reason) for reason in inp.reasons)
    return items


def _evaluations(inp: ReportInput) -> ContainerContentItem:
    container = ContainerContentItem(
        name=rc.QUALITATIVE_EVALUATIONS, relationship_type=RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = ContentSequence(
        [
            CodeContentItem(
                name=rc.ASSESSMENT,
                value=rc.ASSESSED if inp.assessed else rc.NOT_ASSESSED,
                relationship_type=RelationshipTypeValues.CONTAINS,
            ),
            *(
                TextContentItem(
                    name=name, value=text, relationship_type=RelationshipTypeValues.CONTAINS
                )
                for name, text in statements(inp)
            ),
        ]
    )
    return container


def _library_images(inp: ReportInput) -> list[Dataset]:
    """The series read (its first header) and, for an assessed study, every key slice."""
    chosen: dict[str, Dataset] = {}
    if inp.series_instance_uid is not None:
        first = next(
            ds for ds in inp.headers if str(ds.SeriesInstanceUID) == inp.series_instance_uid
        )
        chosen[str(first.SOPInstanceUID)] = first
    if inp.assessed and inp.slice_scores:
        for name in inp.class_names:
            if inp.flags.get(name):
                for key in top_slices_for_class(inp.slice_scores, name, inp.key_slice_count):
                    chosen.setdefault(
                        key.sop_instance_uid, _required_header(inp, key.sop_instance_uid)
                    )
    return [ds for ds in chosen.values() if describable(ds)]


def build_sr(inp: ReportInput, uids: ResultUids) -> Comprehensive3DSR:
    """The SR document of ``inp`` with the UIDs of ``uids``.

    Raises
    ------
    ValueError
        If a key slice the report names has no header in ``inp.headers``.
    """
    if inp.assessed:
        groups = [_finding_group(inp, uids, name) for name in inp.class_names]
    else:
        groups = [_not_assessed_group(inp, uids)]
    library = _library_images(inp)
    report = MeasurementReport(
        observation_context=_observation_context(inp),
        procedure_reported=rc.PROCEDURE_CT_HEAD,
        imaging_measurements=groups,
        title=rc.REPORT_TITLE,
        referenced_images=library or None,
    )
    report[0].ContentSequence.append(_evaluations(inp))
    reference = study_reference(inp.headers[0])
    evidence = [
        reference,
        *(ds for ds in inp.headers if ds.SOPInstanceUID != reference.SOPInstanceUID),
    ]
    sr = Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=uids.sr_series,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uids.sr_instance,
        instance_number=1,
        is_complete=True,
        is_final=False,  # preliminary: no person verified it
        previous_versions=[inp.predecessor.as_dataset()] if inp.predecessor else None,
        record_evidence=True,
        coding_schemes=rc.coding_schemes(),
        **header_kwargs(inp, "result"),  # type: ignore[arg-type]
    )
    stamp_creation(sr, inp)
    return sr
