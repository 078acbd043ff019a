"""Key images as a Secondary Capture series in the source study (highdicom ``SCImage``).

Each image is one rendered key slice (:class:`~worker.reports.inputs.KeyImage`): RGB
pixels of the heat-map over the brain window. The instance names the slice it was made
from (Source Image Sequence), says in Image Comments that it is a triage aid (and the demo
label when a synthetic bundle made it), and flags Burned In Annotation YES when text was
drawn into the pixels, so a viewer or an anonymiser knows what the pixels carry.
"""

from __future__ import annotations

from collections.abc import Sequence

from highdicom.sc import SCImage
from pydicom.dataset import Dataset
from pydicom.valuerep import DA, TM

from worker.reports.identity import content_datetime, disclaimer, header_kwargs, stamp_creation
from worker.reports.inputs import KeyImage, ReportInput
from worker.reports.uids import ResultUids

SC_SERIES_NUMBER = 9902

_AXIS_LETTERS = (("L", "R"), ("P", "A"), ("H", "F"))  # +x, -x; +y, -y; +z, -z (LPS)


def _direction_letter(cosines: Sequence[float]) -> str:
    """The patient direction (PS3.3 C.7.6.1.1.1) an image axis points to, by its main axis."""
    axis = max(range(3), key=lambda i: abs(float(cosines[i])))
    positive, negative = _AXIS_LETTERS[axis]
    return positive if float(cosines[axis]) >= 0 else negative


def patient_orientation(source: Dataset) -> tuple[str, str]:
    """Patient Orientation of a key image from its source slice (axial HFS: ``("L", "P")``)."""
    iop = source.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return ("L", "P")  # the axial default the model's input assumes
    return (_direction_letter(iop[:3]), _direction_letter(iop[3:]))


def image_comments(inp: ReportInput, key: KeyImage) -> str:
    """Image Comments: what the picture shows and what it is not."""
    demo = f" {inp.demo_label}." if inp.demo_label else ""
    return (
        f"Grad-CAM heat-map for {key.class_name} (slice probability {key.score:.3f}) "
        f"over the brain window the model saw. {disclaimer(inp)}{demo}"
    )


def build_key_image(
    inp: ReportInput, uids: ResultUids, index: int, key: KeyImage, source: Dataset
) -> SCImage:
    """The ``index``-th key image of the series, made from ``source`` (the slice it shows)."""
    image = SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=key.pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=uids.sc_series,
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=uids.sc_instance(index),
        instance_number=index + 1,
        pixel_spacing=key.pixel_spacing_mm,  # type: ignore[arg-type]  # mm are floats
        patient_orientation=patient_orientation(source),
        transfer_syntax_uid="1.2.840.10008.1.2.1",  # explicit VR little endian
        **header_kwargs(inp, "key images"),  # type: ignore[arg-type]
    )
    stamp_creation(image, inp)
    when = content_datetime(inp)
    image.DateOfSecondaryCapture = DA(when.date())
    image.TimeOfSecondaryCapture = TM(when.time())
    # General Series Laterality is Type 2C: a head is not a paired part, so present, empty.
    image.Laterality = source.get("Laterality", "")
    image.BurnedInAnnotation = "YES" if key.annotated else "NO"
    image.ImageComments = image_comments(inp, key)
    image.DerivationDescription = (
        f"Grad-CAM of {inp.bundle_name} {inp.bundle_version} for {key.class_name}"
    )[:1024]
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    image.SourceImageSequence = [reference]
    return image


def build_key_images(inp: ReportInput, uids: ResultUids) -> list[SCImage]:
    """One SC instance per key image of ``inp``, in order.

    Raises
    ------
    ValueError
        If a key image's source slice has no header in ``inp.headers``.
    """
    images = []
    for index, key in enumerate(inp.key_images):
        source = inp.header(key.source_sop_instance_uid)
        if source is None:
            raise ValueError(
                f"headers: key image {index} shows slice {key.source_sop_instance_uid}, "
                "which has no header"
            )
        images.append(build_key_image(inp, uids, index, key, source))
    return images
