"""The worklist's heat-map thumbnail: the spooled top key image, served as PNG and audited."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from sqlalchemy import select

from db.models import Prediction, Study
from db.vocabulary import AuditEventType, WebRole
from tests.web.conftest import WebRig
from tests.web.seed import add_study
from tests.web.signin import sign_in
from triage.result_store import result_folder


def _secondary_capture(folder: Path, number: int, colour: tuple[int, int, int]) -> None:
    """A small RGB Secondary Capture as the worker spools key images (instance 1 = top)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = number
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.full((64, 64, 3), colour, dtype=np.uint8).tobytes()
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)


def _seed_with_key_images(web: WebRig) -> tuple[int, int]:
    with_key = web.seed(lambda s: add_study(s).id)
    without_key = web.seed(lambda s: add_study(s).id)
    with web.sessions() as session:
        study = session.get(Study, with_key)
        assert study is not None
        prediction = session.scalars(
            select(Prediction).where(Prediction.study_id == with_key)
        ).one()
        folder = result_folder(
            web.settings.spool.dir,
            study.study_instance_uid,
            prediction.study_version,
            prediction.bundle_sha256,
        )
    _secondary_capture(folder, 2, (0, 0, 255))
    _secondary_capture(folder, 1, (255, 0, 0))  # the top slice: red
    return with_key, without_key


def test_key_image_thumbnail_is_the_top_slice_and_each_read_is_audited(web: WebRig) -> None:
    with_key, without_key = _seed_with_key_images(web)
    with web.client(WebRole.RADIOLOGIST) as client:
        before = max([e.id for e in web.audit_rows()], default=0)
        response = client.get(f"/studies/{with_key}/key-image.png")
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(response.content)).convert("RGB")
        assert image.getpixel((10, 10)) == (255, 0, 0)
        rows = web.audit_rows(before)
        assert [(r.event_type, r.detail["action"]) for r in rows] == [
            (AuditEventType.STUDY_VIEWED, "key image")
        ]
        assert client.get(f"/studies/{without_key}/key-image.png").status_code == 404


def test_key_image_needs_a_sign_in(web: WebRig) -> None:
    with_key, _ = _seed_with_key_images(web)
    with web.client() as anonymous:
        response = anonymous.get(f"/studies/{with_key}/key-image.png", follow_redirects=False)
    assert response.status_code in (303, 401)


def test_worklist_shows_the_key_image_where_one_was_spooled(web: WebRig) -> None:
    with_key, without_key = _seed_with_key_images(web)
    with web.client() as browser:
        sign_in(browser, web.tokens[WebRole.RADIOLOGIST])
        html = browser.get("/worklist").text
    assert f'src="/studies/{with_key}/key-image.png"' in html
    assert f"/studies/{without_key}/key-image.png" not in html
