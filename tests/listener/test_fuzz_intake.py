"""Malformed input against a real ``triage listen`` process (issue #14, hostile input).

The small-count version of ``bench/fuzz`` (which runs 10,000 inputs per target): mutated
association requests, command sets and data sets from real files, on this run's receive
path (``make test`` runs this module on both). The listener must never exit or leave a
connection hanging, must answer every C-STORE of a valid association exactly once,
must quarantine every data set it refuses with the reason, and must store the next clean
study whole. Hypothesis adds arbitrary bytes where a PDU is expected.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import fuzz_inputs, fuzz_targets
from bench.dicom_peers import Peer, start_triage
from bench.fuzz_peer import A_ASSOCIATE_AC, RawAssociation
from training.phantom import write_phantom_study

DATA = Path(__file__).resolve().parents[1] / "data"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzz_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def corpus(fuzz_work: Path) -> list[fuzz_inputs.BaseDataset]:
    phantom = write_phantom_study(fuzz_work / "phantom", slices=2, size=32, seed=9)
    return fuzz_inputs.load_corpus(sorted(DATA.glob("*.dcm")), phantom=phantom.files)


@pytest.fixture(scope="module")
def listener(fuzz_work: Path, dicom_fast_path: bool) -> Iterator[Peer]:
    """One ``triage listen`` process for the module, on this run's receive path."""
    peer = start_triage(
        fuzz_work / "listener",
        fsync=False,
        extra_env={
            "TRIAGE_DICOM_FAST_PATH": "true" if dicom_fast_path else "false",
            "TRIAGE_ASSOCIATION_REQUEST_TIMEOUT": "2",
            "TRIAGE_NETWORK_TIMEOUT": "10",
            "TRIAGE_ACSE_TIMEOUT": "5",  # the stock path frees its slots sooner
        },
    )
    yield peer
    peer.stop()


def _clean_study_after(peer: Peer, work: Path, seed: int) -> None:
    study = write_phantom_study(work / f"clean-{seed}", slices=3, size=32, seed=seed)
    assert fuzz_targets.wait_until_associable(peer)
    assert fuzz_targets.clean_study_whole(peer, study.files, study.study_uid)


def test_mutated_association_requests(listener: Peer, fuzz_work: Path) -> None:
    result = fuzz_targets.fuzz_associations(listener, 300, seed=21, threads=4)
    assert result.inputs == 300 and result.problems() == []
    assert listener.alive()
    assert {"aborted", "closed"} <= set(result.outcomes)
    _clean_study_after(listener, fuzz_work, 1)


def test_mutated_command_sets(
    listener: Peer, corpus: list[fuzz_inputs.BaseDataset], fuzz_work: Path
) -> None:
    result = fuzz_targets.fuzz_commands(listener, 200, seed=22, corpus=corpus, threads=4)
    assert result.inputs == 200 and result.problems() == []
    assert listener.alive()
    assert any("responses" in outcome for outcome in result.outcomes)
    _clean_study_after(listener, fuzz_work, 2)


def test_mutated_datasets_answered_once_and_refusals_quarantined(
    listener: Peer, corpus: list[fuzz_inputs.BaseDataset], fuzz_work: Path
) -> None:
    quarantine = fuzz_work / "listener" / "quarantine"
    result = fuzz_targets.fuzz_datasets(
        listener, 300, seed=23, corpus=corpus, quarantine_dir=quarantine
    )
    assert result.inputs == 300 and result.problems() == []
    assert result.stored + result.refused == 300
    assert result.refused > 100 and result.stored > 10
    assert result.quarantined == result.refused
    _clean_study_after(listener, fuzz_work, 3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=1024), pdu_type=st.sampled_from([0x01, 0x04, 0x05, 0x07, 0x0A]))
def test_arbitrary_pdu_bodies_after_an_association(
    listener: Peer, body: bytes, pdu_type: int
) -> None:
    """Any PDU body, declared with its true length, on an accepted association: the
    listener answers or closes, and closes once we stop writing."""
    with RawAssociation(listener.port, timeout=5) as conn:
        assert conn.associate() in (A_ASSOCIATE_AC, 0x03)
        conn.send(struct.pack(">BBL", pdu_type, 0, len(body)) + body)
        conn.end_writes()
        assert conn.closed_within(fuzz_targets.CLOSE_BOUND_S)
    assert listener.alive()
