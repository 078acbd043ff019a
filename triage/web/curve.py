"""The worklist thumbnail: the per-slice score curve as a small inline SVG, top slice marked.

Drawn on the server from the stored slice scores, so it needs no image decoding and no
script. Where the worker spooled rendered key images (the top slice with its heat map, a
DICOM Secondary Capture, made when results are delivered), :mod:`triage.web.key_images`
shows that instead; otherwise this curve is the thumbnail.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD = 160, 44, 3


def slice_curve(slice_scores: Sequence[dict[str, Any]]) -> list[float]:
    """Per slice, the highest score of any class (0..1), in patient-axis order."""
    curve = []
    for entry in slice_scores:
        scores = entry.get("scores") or {}
        values = [float(v) for v in scores.values() if isinstance(v, int | float)]
        curve.append(max(values, default=0.0))
    return curve


class CurveCache:
    """Prediction id -> its drawn slice-curve thumbnail, kept by the app between requests.

    A stored prediction never changes (keyed inserts only), so its thumbnail never goes
    stale; decoding every row's slice scores (the largest JSON of a result) and drawing
    them on every worklist refresh would cost more than the rest of the page. Bounded,
    oldest entries dropped.
    """

    def __init__(self, size: int = 20_000) -> None:
        self._size = size
        self._curves: OrderedDict[int, Markup] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(
        self,
        prediction_ids: list[int],
        load: Callable[[list[int]], dict[int, list[Any]]],
    ) -> dict[int, Markup]:
        """Thumbnails of ``prediction_ids``; ``load`` reads the slice scores of those missing."""
        with self._lock:
            found = {i: self._curves[i] for i in prediction_ids if i in self._curves}
        missing = [i for i in prediction_ids if i not in found]
        if missing:
            loaded = {i: curve_svg(slice_curve(scores)) for i, scores in load(missing).items()}
            found.update(loaded)
            with self._lock:
                self._curves.update(loaded)
                while len(self._curves) > self._size:
                    self._curves.popitem(last=False)
        return found


def curve_svg(curve: Sequence[float], *, label: str = "") -> Markup:
    """An SVG polyline of a slice curve with the top slice as a dot (empty if no data)."""
    if not curve:
        return Markup("")
    step = (WIDTH - 2 * PAD) / max(1, len(curve) - 1)
    points = [
        (PAD + i * step, HEIGHT - PAD - min(1.0, max(0.0, v)) * (HEIGHT - 2 * PAD))
        for i, v in enumerate(curve)
    ]
    top = max(range(len(curve)), key=curve.__getitem__)
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    title = escape(f"{label}slice scores, top slice {top + 1} of {len(curve)}: {curve[top]:.2f}")
    return Markup(
        f'<svg class="curve" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{title}"><title>{title}</title>'
        f'<line class="curve-half" x1="{PAD}" x2="{WIDTH - PAD}" y1="{HEIGHT / 2:.1f}" '
        f'y2="{HEIGHT / 2:.1f}"/>'
        f'<polyline class="curve-line" points="{line}"/>'
        f'<circle class="curve-top" cx="{points[top][0]:.1f}" cy="{points[top][1]:.1f}" r="3"/>'
        "</svg>"
    )
