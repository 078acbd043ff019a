"""Evaluation reports: JSON, a short Markdown summary, ROC curves and confusion matrices.

Why all four: the JSON feeds the bundle and automation, the Markdown is what a reviewer reads,
and the PNGs are what a clinical safety officer asks for. Matplotlib runs headless (Agg).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

logger = logging.getLogger(__name__)


def _fmt(value: float | None) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.3f}"
    )


def plot_roc(
    y_true: np.ndarray, y_prob: np.ndarray, class_names: Sequence[str], path: Path, title: str
) -> None:
    """One ROC curve per class with a defined AUC, on one figure."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for j, name in enumerate(class_names):
        known = ~np.isnan(y_true[:, j])
        y = y_true[known, j]
        if y.size == 0 or y.min() == y.max():
            continue
        fpr, tpr, _ = roc_curve(y, y_prob[known, j])
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(per_class: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """A grid of 2x2 confusion matrices at the operating thresholds."""
    names = list(per_class)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names, strict=False):
        cm = np.array(per_class[name]["confusion_matrix"])
        ax.axis("on")
        ax.imshow(cm, cmap="Blues")
        for (i, j), value in np.ndenumerate(cm):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=9)
        ax.set_xticks([0, 1], ["pred -", "pred +"], fontsize=7)
        ax.set_yticks([0, 1], ["true -", "true +"], fontsize=7)
        ax.set_title(f"{name} (t={per_class[name]['threshold']:.2f})", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown_summary(report: dict[str, Any], disclaimer: str | None = None) -> str:
    """A short table per level: AUC, sensitivity, specificity and F1 per class."""
    lines = [f"# {report.get('title', 'Evaluation report')}", ""]
    if disclaimer:
        lines += [f"**{disclaimer}**", ""]
    for level in ("study", "slice"):
        block = report.get(level)
        if not block:
            continue
        lines += [
            f"## {level.capitalize()} level (n = {block['n']})",
            "",
            f"Weighted log loss (RSNA weights, any = 2): **{_fmt(block['weighted_log_loss'])}**",
            "",
            "| class | positives | AUC | sensitivity | specificity | F1 | threshold |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, m in block["per_class"].items():
            lines.append(
                f"| {name} | {m['positives']} | {_fmt(m['auc'])} | {_fmt(m['recall'])} | "
                f"{_fmt(m['specificity'])} | {_fmt(m['f1'])} | {m['threshold']:.3f} |"
            )
        lines.append("")
    return "\n".join(lines)


def write_report(
    out_dir: Path,
    report: dict[str, Any],
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    class_names: Sequence[str],
    disclaimer: str | None = None,
) -> Path:
    """Write ``report.json``, ``summary.md``, ``roc_<level>.png`` and ``confusion_<level>.png``.

    Parameters
    ----------
    curves
        Level name to ``(y_true, y_prob)`` used for the ROC plots.

    Returns
    -------
    Path
        The JSON report.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.json"
    path.write_text(json.dumps(json_safe(report), indent=2) + "\n")
    (out_dir / "summary.md").write_text(markdown_summary(report, disclaimer))
    for level, (y_true, y_prob) in curves.items():
        if y_true.size:
            plot_roc(y_true, y_prob, class_names, out_dir / f"roc_{level}.png", f"ROC ({level})")
        if level in report:
            plot_confusion(
                report[level]["per_class"],
                out_dir / f"confusion_{level}.png",
                f"Confusion matrices ({level})",
            )
    logger.info("wrote report to %s", out_dir)
    return path


def json_safe(value: Any) -> Any:
    """Recursively turn numpy scalars into Python ones and NaN/inf into None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
