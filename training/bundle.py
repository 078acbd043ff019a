"""Versioned model bundles: the one thing training hands to the worker.

Why: the worker must deploy exactly what was validated. A bundle is a folder holding the
weights of both stages (safetensors), a JSON config that names the architectures and their
hyperparameters, the preprocessing spec, class names, operating thresholds, metrics, a summary
of the training data and the creation time, and a manifest with a sha256 per file and one over
all of them. The loader refuses a bundle whose files do not match their hashes.

Worker API
----------
>>> bundle = load_bundle(path)                    # raises BundleIntegrityError on tampering
>>> bundle.name, bundle.version, bundle.sha256, bundle.synthetic_demo, bundle.disclaimer
>>> bundle.class_names, bundle.thresholds           # thresholds: study-level, per class
>>> spec = bundle.preprocess                         # training.preprocessing.PreprocessSpec
>>> x, order = preprocess_datasets(datasets, spec)   # from training.preprocessing
>>> pred = bundle.predict_volume(x)                  # or an (N, H, W) float32 HU array
>>> pred.study_probabilities["any"], pred.slice_probabilities[0]["subdural"]

``bundle.image_model(x) -> (embeddings, logits)`` and
``bundle.sequence_model(embeddings[None], logits[None]) -> (study_logits, slice_logits)`` are
there for callers that batch differently (see ``training.models``).

Files: ``config.json``, ``model.safetensors``, ``sha256.json`` (manifest) and optionally
report files (``report.json``, ``summary.md``, PNGs) and ``input_domain.safetensors`` (see
``training.input_domain``; added later with :func:`amend_bundle`), all covered by the manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from training.classes import CLASS_NAMES, DISCLAIMER_SYNTHETIC
from training.input_domain import InputDomain, load_input_domain
from training.models import ImageModel, SequenceModel, build_image_model, build_sequence_model
from training.preprocessing import PreprocessSpec, volume_to_tensor

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "sha256.json"
DEFAULT_DISCLAIMER = "triage aid — not a diagnosis; a radiologist reads every study"


class BundleIntegrityError(RuntimeError):
    """A bundle file is missing or does not match the sha256 recorded for it."""


class BundleFormatError(ValueError):
    """A bundle's config cannot be understood (unknown format or missing key)."""


@dataclass(frozen=True)
class VolumePrediction:
    """Probabilities for one ordered series: per study and per slice (same order as input)."""

    study_probabilities: dict[str, float]
    slice_probabilities: list[dict[str, float]]
    embeddings: np.ndarray | None = None  # (N, D) pooled image embeddings, for domain scores


@dataclass
class Bundle:
    """A loaded, verified bundle with both models built and in eval mode."""

    path: Path
    config: dict[str, Any]
    sha256: str
    preprocess: PreprocessSpec
    image_model: ImageModel
    sequence_model: SequenceModel
    class_names: tuple[str, ...] = field(default=())
    input_domain: InputDomain = field(default_factory=InputDomain)

    @property
    def name(self) -> str:
        return str(self.config["name"])

    @property
    def version(self) -> str:
        return str(self.config["version"])

    @property
    def created_at(self) -> str:
        return str(self.config["created_at"])

    @property
    def synthetic_demo(self) -> bool:
        return bool(self.config.get("synthetic_demo", False))

    @property
    def disclaimer(self) -> str:
        return str(self.config.get("disclaimer", DEFAULT_DISCLAIMER))

    @property
    def thresholds(self) -> dict[str, float]:
        """Study-level operating thresholds per class (target sensitivity on validation)."""
        return {k: float(v) for k, v in self.config["thresholds"].items()}

    @property
    def temperatures(self) -> dict[str, dict[str, float]]:
        """Per-class temperatures fitted on validation (``study`` and ``slice``); 1 if absent.

        The logits are divided by them before the sigmoid, so the probabilities shown are the
        calibrated ones the thresholds were chosen on.
        """
        saved = self.config.get("calibration", {}) or {}
        return {
            level: {n: float(saved.get(level, {}).get(n, 1.0)) for n in self.class_names}
            for level in ("study", "slice")
        }

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.config.get("metrics", {}))

    def predict_volume(
        self,
        slices: np.ndarray | torch.Tensor,
        batch_size: int = 16,
        device: str | torch.device = "cpu",
    ) -> VolumePrediction:
        """Score one series whose slices are already in patient-axis order.

        Parameters
        ----------
        slices
            ``(N, H, W)`` float32 HU, or an ``(N, 3, size, size)`` tensor already made by
            ``training.preprocessing`` with this bundle's spec.
        batch_size
            Slices per image-model forward pass (bounds memory).
        device
            Where to run; the models are moved there.
        """
        x = slices if isinstance(slices, torch.Tensor) and slices.ndim == 4 else None
        if x is None:
            x = volume_to_tensor(slices, self.preprocess)
        self.image_model.to(device)
        self.sequence_model.to(device)
        embeddings, logits = [], []
        with torch.inference_mode():
            for start in range(0, x.shape[0], batch_size):
                chunk = x[start : start + batch_size].to(device, memory_format=torch.channels_last)
                emb, log = self.image_model(chunk)
                embeddings.append(emb)
                logits.append(log)
            emb_all, log_all = torch.cat(embeddings)[None], torch.cat(logits)[None]
            study, refined = self.sequence_model(emb_all, log_all)
            temps = self.temperatures
            study_t = torch.tensor([temps["study"][n] for n in self.class_names])
            slice_t = torch.tensor([temps["slice"][n] for n in self.class_names])
            study_p = torch.sigmoid(study[0].float().cpu() / study_t).tolist()
            slice_p = torch.sigmoid(refined[0].float().cpu() / slice_t).tolist()
        names = self.class_names
        return VolumePrediction(
            study_probabilities=dict(zip(names, study_p, strict=True)),
            slice_probabilities=[dict(zip(names, row, strict=True)) for row in slice_p],
            embeddings=emb_all[0].float().cpu().numpy(),
        )

    def embed(
        self, x: torch.Tensor, batch_size: int = 16, device: str | torch.device = "cpu"
    ) -> np.ndarray:
        """Pooled image-model embeddings (N, D) of a preprocessed (N, 3, S, S) tensor.

        The image stage alone: what the domain check needs when a study is not to be judged.
        """
        self.image_model.to(device)
        rows = []
        with torch.inference_mode():
            for start in range(0, x.shape[0], batch_size):
                chunk = x[start : start + batch_size].to(device, memory_format=torch.channels_last)
                emb, _ = self.image_model(chunk)
                rows.append(emb.float().cpu().numpy())
        return np.concatenate(rows)


class BundleFitError(ValueError):
    """A bundle was not made for what the worker reads (head-CT series in Hounsfield units)."""


def head_ct_fit_problems(bundle: Bundle) -> list[str]:
    """Why ``bundle`` does not fit head-CT triage (empty when it does).

    The worker feeds DICOM CT series in HU and stores the project's finding classes
    (``training.classes.CLASS_NAMES``). A bundle trained on pictures (input kind ``image``)
    reads grey levels, not HU, and one trained on other classes (chest X-ray ``pneumonia``)
    answers a question the worklist does not ask; both would run without error and mean
    nothing, so they are refused by the worker and warned about by ``training predict``.
    """
    return config_fit_problems(bundle.config)


def config_fit_problems(config: Mapping[str, Any]) -> list[str]:
    """:func:`head_ct_fit_problems` on a bundle's ``config.json`` alone (no model is built)."""
    problems = []
    kind = str(config.get("preprocess", {}).get("input_kind", "ct"))
    class_names = tuple(config.get("class_names", ()))
    if kind != "ct":
        problems.append(f"input kind is {kind!r}, the worker reads CT in HU ('ct')")
    foreign = [n for n in class_names if n not in CLASS_NAMES]
    if foreign:
        problems.append(
            f"classes {foreign} are not head-CT findings (known: {', '.join(CLASS_NAMES)})"
        )
    if not class_names:
        problems.append("the bundle names no classes")
    return problems


def check_bundle_dir_fits(path: Path) -> None:
    """Verify a bundle folder's hashes and that it fits head-CT triage, without loading it.

    Why: the worker's parent process checks this before it forks its pool, so an unfit bundle
    stops the worker at start with one message instead of crashing every pool process.

    Raises
    ------
    BundleIntegrityError
        If a file does not match the manifest.
    BundleFitError
        If the bundle's input kind or classes do not fit head CT.
    """
    path = Path(path)
    verify_bundle(path)
    _refuse_unfit(json.loads((path / CONFIG_FILE).read_text()), path)


def check_head_ct_fit(bundle: Bundle) -> None:
    """Raise :class:`BundleFitError` when :func:`head_ct_fit_problems` finds anything."""
    _refuse_unfit(bundle.config, bundle.path)


def _refuse_unfit(config: Mapping[str, Any], path: Path) -> None:
    problems = config_fit_problems(config)
    if problems:
        raise BundleFitError(
            f"bundle {config.get('name')} {config.get('version')} at {path} does not fit "
            "head-CT triage: " + "; ".join(problems)
        )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _overall_sha256(files: Mapping[str, str]) -> str:
    lines = "".join(f"{digest}  {name}\n" for name, digest in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def export_bundle(
    out_dir: Path,
    *,
    image_model: ImageModel,
    sequence_model: SequenceModel,
    image_arch: str,
    image_params: dict[str, Any],
    sequence_arch: str,
    sequence_params: dict[str, Any],
    class_names: tuple[str, ...] | list[str],
    preprocess: PreprocessSpec,
    thresholds: dict[str, float],
    name: str,
    version: str,
    synthetic_demo: bool = False,
    metrics: dict[str, Any] | None = None,
    training_data: dict[str, Any] | None = None,
    hyperparameters: dict[str, Any] | None = None,
    extra_files: Mapping[str, bytes] | None = None,
    calibration: Mapping[str, Mapping[str, float]] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> str:
    """Write a bundle folder and return its overall sha256.

    Files the folder already holds from an earlier export are replaced; other files are left
    alone but are not part of the manifest, so the loader ignores them.

    Raises
    ------
    ValueError
        If a threshold names a class the models do not predict, or a name is empty.
    """
    class_names = tuple(class_names)
    if not name or not version:
        raise ValueError("name and version must not be empty")
    unknown = set(thresholds) - set(class_names)
    if unknown:
        raise ValueError(f"thresholds: classes {sorted(unknown)} are not in class_names")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    old_manifest = out_dir / MANIFEST_FILE
    if old_manifest.exists():
        for old in json.loads(old_manifest.read_text()).get("files", {}):
            (out_dir / old).unlink(missing_ok=True)
    tensors = {f"image.{k}": v for k, v in image_model.state_dict().items()}
    tensors |= {f"sequence.{k}": v for k, v in sequence_model.state_dict().items()}
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    save_file(tensors, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    config = {
        "format": BUNDLE_FORMAT,
        "name": name,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "synthetic_demo": synthetic_demo,
        "disclaimer": DISCLAIMER_SYNTHETIC if synthetic_demo else DEFAULT_DISCLAIMER,
        "class_names": list(class_names),
        "thresholds": {k: float(v) for k, v in thresholds.items()},
        "preprocess": preprocess.to_dict(),
        "image_model": {"arch": image_arch, "params": image_params},
        "sequence_model": {
            "arch": sequence_arch,
            "embed_dim": image_model.num_features,
            "params": sequence_params,
        },
        "calibration": {k: dict(v) for k, v in (calibration or {}).items()},
        "provenance": dict(provenance or {}),
        "hyperparameters": hyperparameters or {},
        "metrics": metrics or {},
        "training_data": training_data or {},
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=False) + "\n")
    for file_name, payload in (extra_files or {}).items():
        (out_dir / file_name).write_bytes(payload)
    names = [CONFIG_FILE, WEIGHTS_FILE, *(extra_files or {})]
    files = {n: _file_sha256(out_dir / n) for n in names}
    overall = _overall_sha256(files)
    manifest = {"algorithm": "sha256", "files": files, "sha256": overall}
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    logger.info("exported bundle %s %s to %s (sha256 %s)", name, version, out_dir, overall)
    return overall


def amend_bundle(
    path: Path, *, config_updates: Mapping[str, Any], files: Mapping[str, bytes]
) -> str:
    """Add top-level config keys and files to a verified bundle; re-hash; return the sha256.

    Why: describing a bundle better (its input domain) must not need retraining, and must
    not loosen the guarantee that every file is hashed. The weights are left byte for byte.

    Raises
    ------
    BundleIntegrityError
        If the bundle does not verify before the change.
    ValueError
        If an update would replace a key the models are rebuilt from, or a file name is the
        config, weights or manifest.
    """
    path = Path(path)
    verify_bundle(path)
    protected = {"format", "class_names", "preprocess", "image_model", "sequence_model"}
    if protected & set(config_updates):
        raise ValueError(
            f"config_updates: may not change {sorted(protected & set(config_updates))}"
        )
    if {CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE} & set(files):
        raise ValueError("files: may not replace the config, weights or manifest")
    config = json.loads((path / CONFIG_FILE).read_text())
    config.update(config_updates)
    (path / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=False) + "\n")
    for file_name, payload in files.items():
        (path / file_name).write_bytes(payload)
    listed = dict(json.loads((path / MANIFEST_FILE).read_text())["files"])
    names = sorted(set(listed) | set(files))
    digests = {n: _file_sha256(path / n) for n in names}
    overall = _overall_sha256(digests)
    manifest = {"algorithm": "sha256", "files": digests, "sha256": overall}
    (path / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    logger.info("amended bundle %s (sha256 %s)", path, overall)
    return overall


def verify_bundle(path: Path) -> str:
    """Check every file in the manifest against its sha256 and return the overall digest.

    Raises
    ------
    BundleIntegrityError
        Naming the file that is missing or whose content changed, or when the manifest itself
        is missing, unreadable or inconsistent.
    """
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text())
        files: dict[str, str] = dict(manifest["files"])
        recorded = str(manifest["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleIntegrityError(f"{manifest_path}: missing or unreadable manifest") from exc
    for required in (CONFIG_FILE, WEIGHTS_FILE):
        if required not in files:
            raise BundleIntegrityError(f"{path / required}: not covered by the manifest")
    for file_name, expected in files.items():
        target = path / file_name
        if not target.is_file():
            raise BundleIntegrityError(f"{target}: listed in the manifest but missing")
        actual = _file_sha256(target)
        if actual != expected:
            raise BundleIntegrityError(
                f"{target}: sha256 {actual} does not match the manifest ({expected}); "
                "the bundle was modified after export and is refused"
            )
    if _overall_sha256(files) != recorded:
        raise BundleIntegrityError(f"{manifest_path}: overall sha256 does not match its files")
    return recorded


def load_bundle(path: Path | str, *, device: str | torch.device = "cpu") -> Bundle:
    """Verify a bundle, rebuild both models from its config and load the weights.

    Raises
    ------
    BundleIntegrityError
        If any file does not match the manifest.
    BundleFormatError
        If the config is of an unknown format or lacks a required key.
    """
    path = Path(path)
    digest = verify_bundle(path)
    config = json.loads((path / CONFIG_FILE).read_text())
    if config.get("format") != BUNDLE_FORMAT:
        raise BundleFormatError(f"{path / CONFIG_FILE}: unknown format {config.get('format')!r}")
    try:
        class_names = tuple(config["class_names"])
        spec = PreprocessSpec.from_dict(config["preprocess"])
        image_cfg, seq_cfg = config["image_model"], config["sequence_model"]
        image_model = build_image_model(image_cfg["arch"], len(class_names), **image_cfg["params"])
        sequence_model = build_sequence_model(
            seq_cfg["arch"], int(seq_cfg["embed_dim"]), len(class_names), **seq_cfg["params"]
        )
        for key in ("name", "version", "created_at", "thresholds"):
            config[key]  # noqa: B018 - presence check
        input_domain = load_input_domain(config, path)
    except (KeyError, ValueError, TypeError) as exc:
        raise BundleFormatError(f"{path / CONFIG_FILE}: bad or missing key: {exc}") from exc
    tensors = load_file(str(path / WEIGHTS_FILE), device="cpu")
    image_state = {k[6:]: v for k, v in tensors.items() if k.startswith("image.")}
    seq_state = {k[9:]: v for k, v in tensors.items() if k.startswith("sequence.")}
    image_model.load_state_dict(image_state)
    sequence_model.load_state_dict(seq_state)
    # channels_last: ~1.4x faster CPU convolutions; outputs are unchanged.
    image_model.to(device).to(memory_format=torch.channels_last).eval()
    sequence_model.to(device).eval()
    logger.info("loaded bundle %s %s (sha256 %s)", config["name"], config["version"], digest)
    return Bundle(
        path, config, digest, spec, image_model, sequence_model, class_names, input_domain
    )
