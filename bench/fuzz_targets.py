"""Fuzz targets: malformed inputs against a real ``triage listen`` and the worker's decoder.

Shared by ``python -m bench.fuzz`` (10,000+ inputs per target) and the small-count tests
(``tests/listener/test_fuzz_intake.py``, ``tests/worker/test_fuzz_decoding.py``). Each
target returns a :class:`TargetResult` of what was tried and what happened; the judging
(zero crashes, zero hangs, every refusal quarantined, the next clean study whole) is in
:meth:`TargetResult.problems`, so the bench and the tests hold the listener to the same
rules.

A *hang* is a connection the listener neither answers nor closes within the bound after
the fuzzer has stopped writing (half-closed its side): the listener must always notice a
peer that is gone. A *crash* is the listener process exiting, or the decoder's process
dying (a native decoder's segfault) or raising past :func:`worker.volume_loader.load_series`.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import resource
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian

from bench import fuzz_inputs as inputs
from bench.dicom_peers import Peer, send
from bench.fuzz_peer import (
    A_ASSOCIATE_AC,
    RawAssociation,
    ct_store_command,
)
from bench.hostile_peers import pdata

MiB = 1024 * 1024
CLOSE_BOUND_S = 5.0
"""Seconds the listener may take to close a connection after the fuzzer half-closed it."""


@dataclass
class TargetResult:
    """What one target tried and what came back."""

    target: str
    inputs: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    first_input: dict[str, int] = field(default_factory=dict)
    """The first input index of each outcome (to make that input again from the seed)."""
    mutations: Counter[str] = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)
    hangs: list[int] = field(default_factory=list)
    refused: int = 0
    stored: int = 0
    quarantined: int = 0
    quarantine_without_reason: int = 0
    unanswered_stores: list[int] = field(default_factory=list)
    peak_growth_mib: float | None = None
    peak_rss_mib: float | None = None
    clean_study_whole: bool | None = None
    seconds: float = 0.0

    def count(self, index: int, outcome: str) -> None:
        """One more input, and what became of it."""
        self.inputs += 1
        self.outcomes[outcome] += 1
        self.first_input.setdefault(outcome, index)

    def problems(self) -> list[str]:
        """Each broken promise, in words (empty when the target passed)."""
        found = []
        if self.crashes:
            found.append(f"{len(self.crashes)} crashes: {self.crashes[:5]}")
        if self.hangs:
            found.append(f"{len(self.hangs)} hangs (inputs {self.hangs[:10]})")
        if self.unanswered_stores:
            found.append(f"{len(self.unanswered_stores)} C-STOREs without exactly one answer")
        if self.refused != self.quarantined:
            found.append(f"{self.refused} refused but {self.quarantined} quarantined")
        if self.quarantine_without_reason:
            found.append(f"{self.quarantine_without_reason} quarantined without a reason")
        if self.clean_study_whole is False:
            found.append("the clean study after the run was not stored whole")
        return found

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcomes"] = dict(self.outcomes.most_common())
        data["mutations"] = dict(self.mutations.most_common())
        data["problems"] = self.problems()
        return data


# -- association requests --------------------------------------------------------------
def _one_association(port: int, data: bytes) -> str:
    """Send ``data`` on a fresh connection, stop writing; how the listener reacted."""
    try:
        conn = RawAssociation(port, timeout=CLOSE_BOUND_S)
    except OSError:
        return "connect failed"
    with conn:
        conn.send(data)
        conn.end_writes()
        try:
            pdu = conn.read_pdu(CLOSE_BOUND_S)
        except ConnectionError:
            return "closed"
        if pdu is None:
            return "hang"
        first = {2: "accepted", 3: "rejected", 7: "aborted"}.get(pdu[0], f"pdu {pdu[0]:#04x}")
        return first if conn.closed_within(CLOSE_BOUND_S) else "hang"


def fuzz_associations(peer: Peer, count: int, seed: int, threads: int = 4) -> TargetResult:
    """``count`` mutated A-ASSOCIATE-RQs (and garbage), each on its own connection."""
    result = TargetResult("association")
    started = time.monotonic()
    idle = peer.status_kib("VmRSS")

    def one(index: int) -> tuple[int, str, list[str]]:
        data, kinds = inputs.mutated_association(random.Random(f"{seed}:association:{index}"))
        return index, _one_association(peer.port, data), kinds

    with ThreadPoolExecutor(threads) as pool:
        for index, outcome, kinds in pool.map(one, range(count)):
            result.count(index, outcome)
            result.mutations.update(kinds)
            if outcome == "hang":
                result.hangs.append(index)
            if outcome == "connect failed" and not peer.alive():
                result.crashes.append(f"listener exited at input {index}")
                break
    result.peak_growth_mib = round((peer.status_kib("VmHWM") - idle) / 1024, 1)
    result.seconds = round(time.monotonic() - started, 1)
    return result


# -- command sets ---------------------------------------------------------------------
def _associated(port: int, timeout: float, patience: float = 60.0) -> RawAssociation | None:
    """An accepted association, retrying while the listener rejects for want of slots.

    pynetdicom's stock path counts every connection (even a dead one not yet noticed)
    against the association limit for up to the ACSE timeout, so after a burst of broken
    connections it rejects new ones for a while (the streaming path's gate does not).
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            conn = RawAssociation(port, timeout=timeout)
        except OSError:
            return None
        if conn.associate() == A_ASSOCIATE_AC:
            return conn
        conn.close()
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def _send_command(conn: RawAssociation, item: inputs.CommandInput, store_context: int) -> bool:
    is_store = item.dataset is not None
    context_id = (
        item.context_id if item.context_id is not None else (store_context if is_store else 9)
    )
    if item.split:
        pieces = [item.command[i : i + item.split] for i in range(0, len(item.command), item.split)]
        for index, piece in enumerate(pieces or [b""]):
            control = item.control if index == len(pieces) - 1 else 0x01
            if not conn.send(pdata(context_id, control, piece)):
                return False
    elif not conn.send(pdata(context_id, item.control, item.command)):
        return False
    if item.dataset is not None:
        return conn.send(pdata(context_id, 0x02, item.dataset))
    return True


def _one_command(port: int, item: inputs.CommandInput) -> str:
    conn = _associated(port, CLOSE_BOUND_S)
    if conn is None:
        return "connect failed"
    with conn:
        store_context = conn.context_for(ExplicitVRLittleEndian) or 1
        _send_command(conn, item, store_context)
        conn.send(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")  # A-RELEASE-RQ
        answer = conn.wait_answer(CLOSE_BOUND_S, responses=1 << 30)
        said = f"{len(answer.statuses)} responses, " if answer.statuses else ""
        if answer.released:
            return said + "released"
        if answer.aborted or answer.closed:
            return said + ("aborted" if answer.aborted else "closed")
        conn.end_writes()
        return said + ("closed at end of stream" if conn.closed_within(CLOSE_BOUND_S) else "hang")


def fuzz_commands(
    peer: Peer, count: int, seed: int, corpus: Sequence[inputs.BaseDataset], threads: int = 4
) -> TargetResult:
    """``count`` mutated C-STORE/C-ECHO command sets, each on its own association."""
    result = TargetResult("command")
    started = time.monotonic()
    idle = peer.status_kib("VmRSS")
    explicit = [b for b in corpus if b.syntax == ExplicitVRLittleEndian and len(b.data) < 64 * 1024]

    def one(index: int) -> tuple[int, str, tuple[str, ...]]:
        rng = random.Random(f"{seed}:command:{index}")
        base = rng.choice(explicit)
        uid = inputs.fresh_uid(index, seed)
        item = inputs.mutated_command(
            rng, ct_store_command(uid, index), inputs.with_uid(base.data, uid)
        )
        return index, _one_command(peer.port, item), item.kinds

    with ThreadPoolExecutor(threads) as pool:
        for index, outcome, kinds in pool.map(one, range(count)):
            result.count(index, outcome)
            result.mutations.update(kinds)
            if outcome.endswith("hang"):
                result.hangs.append(index)
            if outcome == "connect failed" and not peer.alive():
                result.crashes.append(f"listener exited at input {index}")
                break
    result.peak_growth_mib = round((peer.status_kib("VmHWM") - idle) / 1024, 1)
    result.seconds = round(time.monotonic() - started, 1)
    return result


# -- data sets in valid associations ----------------------------------------------------------
def fuzz_datasets(
    peer: Peer,
    count: int,
    seed: int,
    corpus: Sequence[inputs.BaseDataset],
    quarantine_dir: Path,
    threads: int = 2,
    answer_timeout: float = 30.0,
) -> TargetResult:
    """``count`` mutated data sets, each in a C-STORE on a valid association.

    Every C-STORE must get exactly one answer; every refusal must be in the quarantine
    with a reason; an association the listener aborts is replaced by a new one.
    """
    result = TargetResult("dataset")
    started = time.monotonic()
    idle = peer.status_kib("VmRSS")
    lock = threading.Lock()
    small = [b for b in corpus if len(b.data) <= 512 * 1024]
    quarantined_before = {p.name for p in quarantine_dir.glob("*.json")}

    def worker(indexes: range) -> None:
        conn: RawAssociation | None = None
        for index in indexes:
            rng = random.Random(f"{seed}:dataset:{index}")
            base, data, kinds = inputs.mutated_dataset(rng, small)
            uid = inputs.fresh_uid(index, seed)
            data = inputs.with_uid(data, uid)
            if conn is None:
                conn = _associated(peer.port, answer_timeout)
                if conn is None:
                    with lock:
                        result.crashes.append(f"no association accepted before input {index}")
                    return
            context_id = conn.context_for(base.syntax)
            assert context_id is not None, f"{base.syntax} not accepted"
            conn.send_message(context_id, ct_store_command(uid, index), data)
            answer = conn.wait_answer(answer_timeout)
            with lock:
                result.mutations.update(kinds)
                if len(answer.statuses) == 1:
                    status = answer.statuses[0]
                    result.count(index, f"0x{status:04X}")
                    if status == 0:
                        result.stored += 1
                    elif status & 0xF000 in (0xA000, 0xC000) or status == 0x0122:
                        result.refused += 1
                else:
                    outcome = (
                        "aborted" if answer.aborted else "closed" if answer.closed else "no answer"
                    )
                    result.count(index, outcome)
                    result.unanswered_stores.append(index)
                    if outcome == "no answer":
                        result.hangs.append(index)
            if len(answer.statuses) != 1:
                conn.close()
                conn = None
                if not peer.alive():
                    with lock:
                        result.crashes.append(f"listener exited at input {index}")
                    return
        if conn is not None:
            conn.release(answer_timeout)
            conn.close()

    chunks = [range(i, count, threads) for i in range(threads)]
    workers = [threading.Thread(target=worker, args=(chunk,)) for chunk in chunks]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    time.sleep(0.5)  # the quarantine JSON is written before the answer; audit after
    for reason_file in quarantine_dir.glob("*.json"):
        if reason_file.name in quarantined_before:
            continue
        result.quarantined += 1
        try:
            if not json.loads(reason_file.read_text()).get("reason"):
                result.quarantine_without_reason += 1
        except ValueError:
            result.quarantine_without_reason += 1
    result.peak_growth_mib = round((peer.status_kib("VmHWM") - idle) / 1024, 1)
    result.seconds = round(time.monotonic() - started, 1)
    return result


def clean_study_whole(peer: Peer, files: Sequence[Path], study_uid: str) -> bool:
    """A real ``storescu`` stores a clean study and every one of its files is spooled."""
    if not peer.alive():
        return False
    sent = send(peer.port, files, aet=peer.aet, timeout=120)
    spooled = list((peer.store_dir / study_uid).rglob("*.dcm"))
    return sent.returncode == 0 and len(spooled) == len(files)


# -- the worker's decoder ---------------------------------------------------------------
DECODER_MEMORY_LIMIT = 4 * 1024**3
"""Address-space cap of the decoding child: a bomb meets MemoryError, not the OOM killer."""


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (DECODER_MEMORY_LIMIT, DECODER_MEMORY_LIMIT))


def decode_batch(paths: Sequence[str]) -> tuple[list[str], float]:
    """Run the worker's :func:`load_series` on each file alone; outcomes and peak RSS (MiB).

    Runs in a child process: a decoder that segfaults kills the child, not the fuzzer.
    """
    from worker.volume_loader import load_series

    outcomes = []
    for path in paths:
        try:
            loaded = load_series({"1.2.3": Path(path)}, threads=1)
        except BaseException as exc:  # load_series promises never to raise for a non-empty series
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            outcomes.append(f"raised {type(exc).__name__}: {' '.join(str(exc).split())[:120]}")
            continue
        if loaded.datasets:
            outcomes.append("decoded")
        else:
            reason = loaded.dropped[0].reason.split(":")[0]
            outcomes.append(f"dropped: {reason}")
    return outcomes, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fuzz_decoding(
    count: int,
    seed: int,
    corpus: Sequence[inputs.BaseDataset],
    work_dir: Path,
    batch: int = 100,
    batch_timeout: float = 300.0,
    keep_crashes: Path | None = None,
) -> TargetResult:
    """``count`` mutated Part 10 files through the worker's decoding, in a child process."""
    result = TargetResult("decode")
    started = time.monotonic()
    work_dir.mkdir(parents=True, exist_ok=True)
    peak = 0.0
    index = 0
    while index < count:
        paths = []
        for i in range(index, min(count, index + batch)):
            rng = random.Random(f"{seed}:decode:{i}")
            base, data, kinds = inputs.mutated_dataset(rng, corpus)
            result.mutations.update(kinds)
            uid = inputs.fresh_uid(i, seed)
            path = work_dir / f"{i:06d}.dcm"
            path.write_bytes(inputs.part10(base, inputs.with_uid(data, uid), uid))
            paths.append(str(path))
        outcomes, batch_peak = _decode_isolated(paths, batch_timeout, result, keep_crashes)
        peak = max(peak, batch_peak)
        for name, outcome in zip(paths, outcomes, strict=True):
            result.count(
                int(Path(name).stem),
                outcome.split(":")[0] if outcome.startswith("dropped") else outcome,
            )
            if outcome.startswith("raised"):
                result.crashes.append(f"{Path(name).name}: {outcome}")
                _keep(name, keep_crashes)
            Path(name).unlink(missing_ok=True)
        index += batch
    result.peak_rss_mib = round(peak, 1)
    result.seconds = round(time.monotonic() - started, 1)
    return result


def _decode_isolated(
    paths: list[str], timeout: float, result: TargetResult, keep: Path | None
) -> tuple[list[str], float]:
    """Decode ``paths`` in a child; on a crash or hang, find the culprit file by file."""
    try:
        return _in_child(decode_batch, paths, timeout)
    except (BrokenProcessPool, TimeoutError):
        pass
    outcomes: list[str] = []
    peak = 0.0
    for path in paths:
        try:
            (outcome,), one_peak = _in_child(decode_batch, [path], timeout)
            peak = max(peak, one_peak)
        except BrokenProcessPool:
            outcome = "decoder process died"
            result.crashes.append(f"{Path(path).name}: decoder process died")
            _keep(path, keep)
        except TimeoutError:
            outcome = "hang"
            result.hangs.append(int(Path(path).stem))
            _keep(path, keep)
        outcomes.append(outcome)
    return outcomes, peak


def _in_child(
    function: Callable[[Sequence[str]], tuple[list[str], float]], paths: list[str], timeout: float
) -> tuple[list[str], float]:
    # forkserver, not fork: a child forked from a process with threads running (a test
    # suite's servers, the broker's) can inherit a held lock and hang at its first thread.
    pool = ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("forkserver"),
        initializer=_limit_memory,
    )
    try:
        return pool.submit(function, paths).result(timeout=timeout)
    finally:
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)


def _keep(path: str, keep: Path | None) -> None:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        (keep / Path(path).name).write_bytes(Path(path).read_bytes())


def wait_until_associable(peer: Peer, patience: float = 90.0) -> bool:
    """Whether the listener accepts an association again (released at once)."""
    conn = _associated(peer.port, CLOSE_BOUND_S, patience)
    if conn is None:
        return False
    with conn:
        conn.release(CLOSE_BOUND_S)
    return True
