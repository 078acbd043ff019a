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

from training.calibration import expected_calibration_error, reliability  # noqa: E402

logger = logging.getLogger(__name__)

CLASS_COLOURS: dict[str, str] = {
    "any": "#222222",
    "epidural": "#d62728",
    "intraparenchymal": "#1f77b4",
    "intraventricular": "#2ca02c",
    "subarachnoid": "#9467bd",
    "subdural": "#ff7f0e",
    "ischemic": "#17becf",
}
"""Fixed colour per project class, the same in every plot."""
_SPARE_COLOURS = ("#e377c2", "#8c564b", "#bcbd22", "#7f7f7f", "#393b79", "#637939")


def _fmt(value: float | None) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.3f}"
    )


def class_colour(name: str, class_names: Sequence[str] = ()) -> str:
    """The one colour of a class in every plot (ROC, reliability, confusion titles).

    The project's classes have fixed colours (``any`` black-ish so it stands out); other
    classes (a hospital's own folders) take the next free colour by their position.
    """
    if name in CLASS_COLOURS:
        return CLASS_COLOURS[name]
    others = [n for n in class_names if n not in CLASS_COLOURS] or [name]
    index = others.index(name) if name in others else 0
    return _SPARE_COLOURS[index % len(_SPARE_COLOURS)]


def _curves(
    y_true: np.ndarray, y_prob: np.ndarray, class_names: Sequence[str]
) -> list[tuple[int, str, np.ndarray, np.ndarray]]:
    out = []
    for j, name in enumerate(class_names):
        known = ~np.isnan(y_true[:, j])
        y = y_true[known, j]
        if y.size == 0:
            continue
        out.append((j, name, y, y_prob[known, j]))
    return out


def _unit_square(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    """Square [0, 1] axes with a small margin, so lines on the edges stay visible."""
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    ax.set_aspect("equal")
    ax.grid(color="0.9", linewidth=0.6, zorder=0)


def plot_roc(
    y_true: np.ndarray, y_prob: np.ndarray, class_names: Sequence[str], path: Path, title: str
) -> None:
    """One ROC curve per class with a defined AUC, AUC in the legend, each in its colour.

    The axes run a little beyond [0, 1] and the curves are drawn above the frame, so a
    perfect curve (AUC = 1) along the left and top edges stays visible.
    """
    fig, ax = plt.subplots(figsize=(5.8, 5.2))
    drawn = 0
    for _, name, y, p in _curves(y_true, y_prob, class_names):
        if y.min() == y.max():
            continue
        fpr, tpr, _ = roc_curve(y, p)
        auc = float(np.trapezoid(tpr, fpr))
        ax.plot(
            fpr,
            tpr,
            color=class_colour(name, class_names),
            # Narrower for each later class: curves that coincide (several at AUC = 1)
            # show as nested stripes instead of hiding one another.
            linewidth=max(0.8, 3.6 - 0.45 * drawn),
            alpha=0.9,
            label=f"{name} (AUC {auc:.3f}, n+={int(y.sum())})",
            zorder=3,
            clip_on=False,
        )
        drawn += 1
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1.0, zorder=1)
    _unit_square(ax, "1 - specificity", "sensitivity", title)
    if drawn:
        ax.legend(loc="lower right", fontsize=7, framealpha=0.9)
    else:
        ax.text(0.5, 0.5, "no class has both labels", ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(
    y_true: np.ndarray, y_prob: np.ndarray, class_names: Sequence[str], path: Path, title: str
) -> None:
    """Reliability diagram: observed frequency against mean predicted probability per bin,
    one line per class in its colour, ECE in the legend (bin counts when there is one class)."""
    fig, ax = plt.subplots(figsize=(5.8, 5.2))
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1.0, label="perfectly calibrated")
    curves = _curves(y_true, y_prob, class_names)
    for _, name, y, p in curves:
        mean_p, freq, counts = reliability(y, p)
        filled = counts > 0
        if len(curves) == 1:  # one class: say how many items each point stands for
            for x, f, n in zip(mean_p[filled], freq[filled], counts[filled], strict=True):
                below = -10 if f > 0.5 else 6  # inside the frame, off the tick labels
                ax.annotate(
                    f"n={n}", (x, f), textcoords="offset points", xytext=(3, below), fontsize=7
                )
        ece = expected_calibration_error(y, p)
        colour = class_colour(name, class_names)
        ax.plot(
            mean_p[filled],
            freq[filled],
            color=colour,
            marker="o",
            linewidth=1.5,
            markersize=4,
            label=f"{name} (ECE {ece:.3f})" if ece is not None else name,
            clip_on=False,
            zorder=3,
        )
    _unit_square(ax, "mean predicted probability", "observed frequency", title)
    ax.legend(loc="upper left", fontsize=7, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(per_class: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """A grid of 2x2 confusion matrices at the operating thresholds, annotated with counts
    and row percentages; text is white on dark cells and black on light ones."""
    names = list(per_class)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names, strict=False):
        cm = np.array(per_class[name]["confusion_matrix"], dtype=float)
        labelled = per_class[name]["n"] > 0
        share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.axis("on")
        ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        for (i, j), value in np.ndenumerate(cm):
            colour = "white" if share[i, j] > 0.55 else "black"
            ax.text(
                j,
                i,
                f"{int(value)}\n{share[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=9,
                color=colour,
                fontweight="bold",
            )
        ax.set_xticks([0, 1], ["pred -", "pred +"], fontsize=7)
        ax.set_yticks([0, 1], ["true -", "true +"], fontsize=7)
        ax.set_title(
            f"{name} (t={per_class[name]['threshold']:.2f})" + ("" if labelled else " - no labels"),
            fontsize=8,
            color=class_colour(name, names),
        )
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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
            "| class | positives | AUC | sensitivity | specificity | F1 | ECE | threshold |",
            "|---|---|---|---|---|---|---|---|",
        ]
        ece = block.get("ece") or {}
        for name, m in block["per_class"].items():
            lines.append(
                f"| {name} | {m['positives']} | {_fmt(m['auc'])} | {_fmt(m['recall'])} | "
                f"{_fmt(m['specificity'])} | {_fmt(m['f1'])} | {_fmt(ece.get(name))} | "
                f"{m['threshold']:.3f} |"
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
    """Write ``report.json``, ``summary.md``, ``roc_<level>.png``, ``reliability_<level>.png``
    and ``confusion_<level>.png``.

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
            plot_reliability(
                y_true,
                y_prob,
                class_names,
                out_dir / f"reliability_{level}.png",
                f"Reliability ({level})",
            )
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
