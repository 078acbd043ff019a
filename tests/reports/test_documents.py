"""What a result consists of, in the order it is sent."""

from __future__ import annotations

from training.bundle import Bundle
from worker.reports import build_result_documents

from .conftest import ReadStudy, report_input


def test_items_are_sr_then_key_images_then_kos(read_study: ReadStudy, demo_bundle: Bundle) -> None:
    docs = build_result_documents(report_input(read_study, demo_bundle))
    kinds = [kind for kind, _ in docs.items()]
    assert kinds == ["sr", "key-image", "key-image", "key-image", "kos"]
    assert [ds.SOPInstanceUID for _, ds in docs.items()][0] == docs.uids.sr_instance


def test_key_images_can_be_turned_off(read_study: ReadStudy, demo_bundle: Bundle) -> None:
    docs = build_result_documents(report_input(read_study, demo_bundle), key_images=False)
    assert [kind for kind, _ in docs.items()] == ["sr"]
