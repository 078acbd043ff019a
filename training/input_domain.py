"""What a bundle's training inputs were: the acquisition ranges it covers and a summary of
what its image model saw, so the worker can refuse a study the model cannot judge.

Why: a model trained on one kind of input says nothing trustworthy about another. Cleared
triage devices state their input domain (CT, head, axial, slice thickness, coverage,
non-contrast) and answer "not assessed" outside it; ours does the same from the bundle's
own description instead of constants, so a retrained bundle carries its own limits.

Two parts, both in the bundle's ``config.json`` under ``input_domain``:

* ``adequacy``: header ranges (:class:`AdequacySpec`), checked before the model runs;
* ``embedding``: the mean and shrunk inverse covariance of the image model's pooled
  embeddings over training slices (in ``input_domain.safetensors``, covered by the
  manifest) and a cut-off. A study's domain score is the median over its slices of the
  Mahalanobis distance per dimension, ``sqrt(d^2 / D)``, which is about 1 for slices like
  the training ones. Embeddings rather than image statistics because they are what the
  model actually judges from: two images with the same HU histogram can still look nothing
  alike to the model (a phantom and a human head do), and the model is already run anyway.

A bundle without the section gets :data:`DEMO_ADEQUACY` and no embedding summary; the
worker then marks its predictions out of domain (it cannot tell), never silently in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.numpy import load_file, save_file

from training.preprocessing import preprocess_datasets

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from training.bundle import Bundle

logger = logging.getLogger(__name__)

SUMMARY_FILE = "input_domain.safetensors"
SHRINKAGE = 0.01
"""Share of the covariance replaced by its mean variance times identity before inversion.

Why: 96 embedding dimensions from a few thousand correlated slices (24 a study) give a
covariance with near-zero directions; inverting it raw makes tiny, meaningless deviations
in those directions dominate the distance. 10 % keeps the shape and bounds the inverse.
"""

DEFAULT_CUT_OFF = 1.2
"""Domain score above which a study is out of the bundle's domain.

Measured on the demo bundle (``training input-domain`` then ``python -m bench.domain_scores``),
retrained on varied phantoms (``training.phantom_variation`` family ``train``): 40 held-out
phantom studies of that family (another seed) score 0.45 to 0.98, phantoms as the tests write
them (family ``none``, 256 and 512 px) 0.45 to 0.60; every real scan scores higher: the GE
human head 2.39, the Philips physical phantom 2.11, ten RSNA slices 1.22 to 9.12 and five CT-ICH
slices 1.40 to 2.78. 1.2 lies in the gap, nearer the phantoms, because calling a real head
"in domain" is the costly mistake. The gap is narrow (0.98 to 1.22): the cut-off is a
property of one bundle, so a bundle trained on other data must measure its own.
"""


@dataclass(frozen=True)
class AdequacySpec:
    """Header ranges of the training inputs; a study outside any of them is not assessed.

    Ranges are inclusive ``[low, high]``; ``body_parts`` lists accepted BodyPartExamined
    values (an empty value is accepted: many scanners leave it blank).
    """

    modality: str = "CT"
    body_parts: tuple[str, ...] = ("HEAD", "BRAIN", "SKULL")
    max_tilt_degrees: float = 30.0
    slice_thickness_mm: tuple[float, float] = (4.0, 6.0)
    pixel_spacing_mm: tuple[float, float] = (0.4, 1.0)
    matrix: tuple[int, int] = (256, 512)
    min_coverage_mm: float = 90.0
    min_slices: int = 16
    reject_contrast: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdequacySpec:
        """Parse :meth:`to_dict` output; missing keys take the demo defaults.

        Raises
        ------
        ValueError
            Naming a key that is not a field, or a range whose low end exceeds its high end.
        """
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"input_domain.adequacy: unknown keys {sorted(unknown)}")
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        spec = cls(**values)
        for name in ("slice_thickness_mm", "pixel_spacing_mm", "matrix"):
            low, high = getattr(spec, name)
            if low > high:
                raise ValueError(f"input_domain.adequacy.{name}: {low} > {high}")
        return spec


DEMO_ADEQUACY = AdequacySpec()
"""What the demo bundle's phantoms covered (``training.demo.DEMO_DATA``).

They are CT, BodyPartExamined HEAD, untilted axial, 4, 5 or 6 mm slices
(``write_phantom_dataset`` draws one), 24 slices a study, so 92 to 138 mm of head; 256 x 256
at 0.98 mm. Pixel spacing and matrix are widened to 0.4 mm and 512 because preprocessing
crops to the head and resizes, and the phantom writer's own default is 512 at 0.49 mm; the
tilt limit is kept under series selection's 35 degrees. No phantom has contrast.
"""


@dataclass(frozen=True)
class EmbeddingSummary:
    """Mean and shrunk inverse covariance of training embeddings, and the score cut-off."""

    mean: np.ndarray
    precision: np.ndarray
    cut_off: float
    slices: int
    studies: int
    source: str

    def slice_scores(self, embeddings: np.ndarray) -> np.ndarray:
        """Mahalanobis distance per dimension of each row of ``embeddings`` (N, D)."""
        delta = np.asarray(embeddings, dtype=np.float64) - self.mean
        squared = np.einsum("nd,de,ne->n", delta, self.precision, delta)
        return np.sqrt(np.maximum(squared, 0.0) / self.mean.shape[0])

    def score(self, embeddings: np.ndarray) -> float:
        """A series' domain score: the median slice score (a few odd end slices don't count).

        Raises
        ------
        ValueError
            When ``embeddings`` is empty or of the wrong width.
        """
        if embeddings.ndim != 2 or embeddings.shape[0] == 0:
            raise ValueError("embeddings: need a non-empty (N, D) array")
        if embeddings.shape[1] != self.mean.shape[0]:
            raise ValueError(f"embeddings: width {embeddings.shape[1]} != {self.mean.shape[0]}")
        return float(np.median(self.slice_scores(embeddings)))


@dataclass(frozen=True)
class InputDomain:
    """A bundle's input domain: the adequacy ranges and (when present) the summary."""

    adequacy: AdequacySpec = field(default_factory=AdequacySpec)
    summary: EmbeddingSummary | None = None


def load_input_domain(config: Mapping[str, Any], bundle_dir: Path) -> InputDomain:
    """Read the ``input_domain`` section of a verified bundle (defaults when absent)."""
    section = config.get("input_domain") or {}
    adequacy = AdequacySpec.from_dict(section.get("adequacy", {}))
    meta = section.get("embedding")
    if not meta:
        return InputDomain(adequacy, None)
    arrays = load_file(str(Path(bundle_dir) / meta["file"]))
    summary = EmbeddingSummary(
        mean=arrays["mean"].astype(np.float64),
        precision=arrays["precision"].astype(np.float64),
        cut_off=float(meta["cut_off"]),
        slices=int(meta["slices"]),
        studies=int(meta["studies"]),
        source=str(meta.get("source", "")),
    )
    return InputDomain(adequacy, summary)


def embed_series(
    bundle: Bundle, datasets: Sequence[Dataset], *, batch_size: int = 16
) -> np.ndarray:
    """The image model's pooled embeddings (N, D) of one series, preprocessed as in the worker."""
    tensor, _ = preprocess_datasets(datasets, bundle.preprocess)
    return bundle.embed(tensor, batch_size=batch_size)


def summarise(
    studies: Iterable[np.ndarray], *, cut_off: float, source: str, shrinkage: float = SHRINKAGE
) -> EmbeddingSummary:
    """Mean and shrunk inverse covariance over every slice of ``studies`` (each (N, D)).

    Raises
    ------
    ValueError
        With fewer slices than twice the embedding width (the covariance would be noise).
    """
    blocks = [np.asarray(s, dtype=np.float64) for s in studies]
    stacked = np.concatenate(blocks)
    width = stacked.shape[1]
    if stacked.shape[0] < 2 * width:
        raise ValueError(f"{stacked.shape[0]} slices are too few for a {width}-wide summary")
    mean = stacked.mean(axis=0)
    cov = np.cov(stacked, rowvar=False)
    shrunk = (1 - shrinkage) * cov + shrinkage * (np.trace(cov) / width) * np.eye(width)
    return EmbeddingSummary(
        mean, np.linalg.inv(shrunk), float(cut_off), stacked.shape[0], len(blocks), source
    )


def summary_files(summary: EmbeddingSummary) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The config section and file bytes that store ``summary`` in a bundle."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / SUMMARY_FILE
        save_file(
            {
                "mean": summary.mean.astype(np.float32),
                "precision": summary.precision.astype(np.float32),
            },
            str(path),
        )
        payload = path.read_bytes()
    meta = {
        "file": SUMMARY_FILE,
        "score": "median over slices of sqrt(mahalanobis^2 / dims) of pooled embeddings",
        "cut_off": summary.cut_off,
        "slices": summary.slices,
        "studies": summary.studies,
        "source": summary.source,
        "shrinkage": SHRINKAGE,
    }
    return meta, {SUMMARY_FILE: payload}


def series_folders(root: Path) -> list[Path]:
    """Folders under ``root`` that hold ``.dcm`` files directly, sorted."""
    return sorted({p.parent for p in Path(root).rglob("*.dcm")})


def read_folder(folder: Path) -> list[Dataset]:
    """Every DICOM file of one series folder, decoded."""
    from pydicom import dcmread

    return [dcmread(p) for p in sorted(folder.glob("*.dcm"))]


@dataclass(frozen=True)
class DomainReport:
    """What :func:`describe_bundle_domain` wrote: the new sha256 and the phantom scores."""

    sha256: str
    summary: EmbeddingSummary
    held_out_scores: list[float]


def describe_bundle_domain(
    bundle_dir: Path,
    work: Path,
    *,
    studies: int,
    seed: int,
    slices: int,
    size: int,
    held_out_seed: int,
    cut_off: float,
    adequacy: AdequacySpec = DEMO_ADEQUACY,
    variation: str = "none",
) -> DomainReport:
    """Summarise a phantom-trained bundle's inputs with its own weights and write them in.

    Regenerates the first ``studies`` phantom studies of the training set (the phantom
    writer is deterministic per ``seed``), embeds every slice with the bundle's image
    model, stores mean and shrunk inverse covariance with ``cut_off`` and ``adequacy``,
    and re-hashes the bundle (:func:`training.bundle.amend_bundle`). Phantoms of
    ``held_out_seed`` are scored against the new summary so the cut-off can be checked.
    ``variation`` is the phantom family the bundle was trained on (the demo's ``train``).
    No retraining; the weights are not touched.
    """
    from training.bundle import amend_bundle, load_bundle
    from training.phantom import write_phantom_dataset

    bundle = load_bundle(bundle_dir)
    sets = {"train": seed, "held_out": held_out_seed}
    embedded: dict[str, list[np.ndarray]] = {}
    for name, set_seed in sets.items():
        root = Path(work) / f"phantoms-{variation}-{name}-seed{set_seed}-n{studies}"
        if not (root / "labels.csv").exists():
            write_phantom_dataset(
                root,
                studies=studies,
                seed=set_seed,
                slices=slices,
                size=size,
                variation=variation,
            )
        embedded[name] = [embed_series(bundle, read_folder(f)) for f in series_folders(root)]
    source = (
        f"phantoms seed {seed} ({variation} variation), first {studies} studies "
        f"({slices} slices, {size} px)"
    )
    summary = summarise(embedded["train"], cut_off=cut_off, source=source)
    meta, files = summary_files(summary)
    digest = amend_bundle(
        bundle_dir,
        config_updates={"input_domain": {"adequacy": adequacy.to_dict(), "embedding": meta}},
        files=files,
    )
    held_out = [summary.score(e) for e in embedded["held_out"]]
    logger.info(
        "input domain of %s: %d slices; held-out scores %s", bundle_dir, summary.slices, held_out
    )
    return DomainReport(digest, summary, held_out)
