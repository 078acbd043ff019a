"""Analytic head phantom in Hounsfield units, with optional labelled lesions.

Why analytic: the generator must be fast (a 40-slice study in well under two seconds), seeded,
and free of torch so the DICOM listener's tests can use it. Every structure is a closed-form
function of head coordinates, so a slice is a handful of vectorised numpy expressions.

Head frame (millimetres): ``u`` points to the patient's left, ``v`` posterior and ``w``
superior (DICOM LPS, before the head's own tilt). Depth below the inner table of the skull is
approximated from the normalised radius of the inner ellipsoid, which is what lets extra-axial
collections (epidural lens, subdural crescent) hug the skull.

Typical values follow clinical CT: air -1000 HU, scalp 20-40, bone 900-1400, white matter 28-33,
gray matter 6-9 HU above white, CSF 0-10, acute blood 50-85, acute infarct 12-18 HU below
white matter (about 15 HU against brain at ~35) with loss of the gray-white difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from training.classes import LESION_NAMES
from training.phantom_variation import Variation

MIN_LESION_AREA_MM2 = 60.0
"""A lesion counts as present in a slice when its cross-section covers at least this area."""


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Return the 3x3 rotation (head frame to patient frame) for angles in radians."""
    cz, sz = math.cos(yaw), math.sin(yaw)
    cy, sy = math.cos(pitch), math.sin(pitch)
    cx, sx = math.cos(roll), math.sin(roll)
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cy, -sy], [0.0, sy, cy]])
    ry = np.array([[cx, 0.0, sx], [0.0, 1.0, 0.0], [-sx, 0.0, cx]])
    return rz @ rx @ ry


def _angle_distance(phi: np.ndarray, centre: float) -> np.ndarray:
    """Absolute angular distance in radians, wrapped to [0, pi]."""
    turns = (phi - centre) * (0.5 / math.pi)
    return np.abs(turns - np.rint(turns)) * (2.0 * math.pi)


@dataclass
class _Frame:
    """Head-frame coordinates and derived fields of one slice; computed once, shared by all."""

    u: np.ndarray
    v: np.ndarray
    w: float | np.ndarray
    head: np.ndarray
    skull: np.ndarray
    brain: np.ndarray
    depth: np.ndarray
    rho: np.ndarray
    phi: np.ndarray
    radius: np.ndarray
    ventricles: np.ndarray
    sulci: np.ndarray


@dataclass
class PhantomHead:
    """One synthetic head: anatomy and lesion parameters drawn once from a seeded generator.

    Parameters
    ----------
    rng
        Source of every random choice, so a seed reproduces the head exactly.
    lesions
        Lesion class names to draw (see ``training.classes.LESION_NAMES``).

    Raises
    ------
    ValueError
        If a lesion name is not a drawable class.
    """

    rng: np.random.Generator
    lesions: tuple[str, ...] = ()
    params: dict[str, dict[str, float]] = field(init=False, default_factory=dict)
    shape: tuple[float, float, float, float] = field(init=False, default=(0.0, 0.0, 0.0, 0.0))
    cupping: float = field(init=False, default=0.0)
    distractors: tuple[tuple[float, float, float, float, float], ...] = field(
        init=False, default=()
    )

    def __post_init__(self) -> None:
        unknown = [name for name in self.lesions if name not in LESION_NAMES]
        if unknown:
            raise ValueError(f"lesions: unknown lesion name(s) {unknown}; use {LESION_NAMES}")
        rng = self.rng
        scale = rng.uniform(0.88, 1.06)
        self.outer = np.array([72.0, 92.0, 96.0]) * scale * rng.uniform(0.96, 1.04, 3)
        self.scalp = rng.uniform(3.0, 5.0)
        self.skull_mm = rng.uniform(5.0, 8.0)
        self.skull_axes = self.outer - self.scalp
        self.inner = self.skull_axes - self.skull_mm
        self.centre = np.array([rng.uniform(-12, 12), rng.uniform(-12, 12), 0.0])
        deg = math.pi / 180.0
        self.rot = _rotation(
            rng.uniform(-12, 12) * deg, rng.uniform(-10, 10) * deg, rng.uniform(-5, 5) * deg
        )
        self.noise = rng.uniform(3.0, 6.0)
        self.white = rng.uniform(28.0, 33.0)
        self.gray = self.white + rng.uniform(6.0, 9.0)
        self.bone = rng.uniform(900.0, 1400.0)
        self.n_sulci = int(rng.integers(22, 32))
        self.sulcus_phase = rng.uniform(0.0, 2.0 * math.pi)
        self.vent_axes = np.array([6.0, 24.0, 13.0]) * scale * rng.uniform(0.85, 1.25)
        self.vent_centre = np.array([9.0 * scale, rng.uniform(-4, 4), rng.uniform(8, 18)])
        for name in self.lesions:
            self.params[name] = getattr(self, f"_sample_{name}")()
        if "epidural" in self.params and "subdural" in self.params:
            # Put them on opposite sides: one merged extra-axial collection has no subtype.
            opposite = self.params["subdural"]["phi"] + math.pi + rng.uniform(-0.5, 0.5)
            self.params["epidural"]["phi"] = (opposite + math.pi) % (2 * math.pi) - math.pi

    def vary(self, variation: Variation) -> None:
        """Apply one study's nuisance variation (``training.phantom_variation``) to this head.

        Skull outline harmonics, extra gantry tilt, ventricle size, lesion contrast against
        white matter, beam-hardening cupping and bright distractors; the noise is left to the
        caller (its texture is added after partial volume and streaks), so it is set to 0.
        """
        self.shape = variation.shape
        self.rot = _rotation(0.0, variation.tilt_rad, 0.0) @ self.rot
        self.vent_axes = self.vent_axes * variation.ventricles
        self.cupping = variation.cupping_hu
        self.distractors = variation.distractors
        self.noise = 0.0
        for name, p in self.params.items():
            if "hu" in p:  # blood: contrast against white matter, kept within 45-100 HU
                p["hu"] = float(
                    np.clip(
                        self.white + (p["hu"] - self.white) * variation.lesion_contrast, 45, 100
                    )
                )
            if name == "ischemic":
                p["drop"] = float(np.clip(p["drop"] * variation.lesion_contrast, 8.0, 22.0))

    # -- lesion parameters -------------------------------------------------------------------
    def _sample_epidural(self) -> dict[str, float]:
        r = self.rng
        return {
            "phi": r.uniform(-math.pi, math.pi),
            "half_span": r.uniform(0.3, 0.5),
            "w": r.uniform(0, 45),
            "half_height": r.uniform(18, 28),
            "thickness": r.uniform(12, 20),
            "hu": r.uniform(60, 85),
        }

    def _sample_subdural(self) -> dict[str, float]:
        r = self.rng
        return {
            "phi": r.uniform(-math.pi, math.pi),
            "half_span": r.uniform(0.9, 1.4),
            "w": r.uniform(5, 40),
            "half_height": r.uniform(30, 45),
            "thickness": r.uniform(4, 9),
            "hu": r.uniform(50, 75),
        }

    def _sample_intraparenchymal(self) -> dict[str, float]:
        r = self.rng
        ang = r.uniform(-math.pi, math.pi)
        rho = r.uniform(0.2, 0.6)
        return {
            "u": rho * self.inner[0] * math.cos(ang),
            "v": rho * self.inner[1] * math.sin(ang),
            "w": r.uniform(-5, 40),
            "ru": r.uniform(8, 17),
            "rv": r.uniform(8, 17),
            "rw": r.uniform(8, 15),
            "hu": r.uniform(60, 80),
            "edema": r.uniform(4, 8),
        }

    def _sample_intraventricular(self) -> dict[str, float]:
        r = self.rng
        return {
            "level": r.uniform(-0.3, 0.3),
            "sides": float(r.integers(0, 3)),
            "hu": r.uniform(55, 75),
        }

    def _sample_subarachnoid(self) -> dict[str, float]:
        r = self.rng
        return {
            "phi": r.uniform(-math.pi, math.pi),
            "half_span": r.uniform(1.0, math.pi),
            "w_low": r.uniform(-35, -10),
            "w_high": r.uniform(25, 55),
            "hu": r.uniform(55, 75),
        }

    def _sample_ischemic(self) -> dict[str, float]:
        r = self.rng
        side = 0.0 if r.random() < 0.5 else math.pi  # left or right lateral direction
        low = r.uniform(-10, 15)
        return {
            "phi": side + r.uniform(-0.35, 0.35),
            "half_span": r.uniform(0.45, 0.7),
            "w_low": low,
            "w_high": low + r.uniform(30, 50),
            "rho_min": r.uniform(0.3, 0.5),
            "drop": r.uniform(12, 18),
        }

    # -- rendering ---------------------------------------------------------------------------
    def _coords(
        self, x: np.ndarray, y: np.ndarray, z: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Map a slice's patient grid (x row vector, y column vector) into the head frame."""
        rt = self.rot.T
        dx, dy = x - np.float32(self.centre[0]), y - np.float32(self.centre[1])
        dz = z - float(self.centre[2])
        u = float(rt[0, 0]) * dx + float(rt[0, 1]) * dy + float(rt[0, 2] * dz)
        v = float(rt[1, 0]) * dx + float(rt[1, 1]) * dy + float(rt[1, 2] * dz)
        w = float(rt[2, 0]) * dx + float(rt[2, 1]) * dy + float(rt[2, 2] * dz)
        return u, v, w

    def _frame(self, x: np.ndarray, y: np.ndarray, z: float) -> _Frame:
        """Head-frame coordinates and the anatomy masks every structure needs."""
        u, v, w = self._coords(x, y, z)
        su, sv = self._outline(u, v)

        def r2(axes: np.ndarray, cu: float = 0.0, cv: float = 0.0, cw: float = 0.0) -> np.ndarray:
            return ((u - cu) / axes[0]) ** 2 + ((v - cv) / axes[1]) ** 2 + ((w - cw) / axes[2]) ** 2

        def shell(axes: np.ndarray) -> np.ndarray:  # skull and brain follow the outline
            return (su / axes[0]) ** 2 + (sv / axes[1]) ** 2 + (w / axes[2]) ** 2

        ri2 = shell(self.inner)
        rho = np.sqrt(ri2)
        brain = ri2 <= 1.0
        depth = (1.0 - rho) * float(np.mean(self.inner[:2]))
        phi = np.arctan2(sv / self.inner[1], su / self.inner[0])
        radius = np.sqrt(u * u + v * v)
        vc, va = self.vent_centre, self.vent_axes
        ventricles = (r2(va, vc[0], vc[1], vc[2]) <= 1.0) | (r2(va, -vc[0], vc[1], vc[2]) <= 1.0)
        period = 2.0 * math.pi / self.n_sulci
        wiggle = self.sulcus_phase + 0.2 * np.sin(w / 9.0)
        turns = (phi - wiggle) * (1.0 / period)
        frac = turns - np.floor(turns)
        sulci = (np.abs(frac - 0.5) * period * radius < 1.1) & (depth < 13.0) & brain
        return _Frame(
            u,
            v,
            w,
            shell(self.outer) <= 1.0,
            shell(self.skull_axes) <= 1.0,
            brain,
            depth,
            rho,
            phi,
            radius,
            ventricles & brain,
            sulci,
        )

    def _outline(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Head-frame ``u, v`` scaled by the skull outline's radial harmonics (if any)."""
        a2, p2, a3, p3 = self.shape
        if a2 == 0.0 and a3 == 0.0:
            return u, v
        angle = np.arctan2(v, u)
        k = 1.0 + a2 * np.cos(2.0 * angle + p2) + a3 * np.cos(3.0 * angle + p3)
        return u / k, v / k

    def render(self, x: np.ndarray, y: np.ndarray, z: float) -> tuple[np.ndarray, dict[str, int]]:
        """Render one axial slice in HU and say which lesions it shows.

        Parameters
        ----------
        x, y
            Patient coordinates of pixel centres: ``x`` shaped (1, W), ``y`` shaped (H, 1).
        z
            Patient z of the slice plane.

        Returns
        -------
        tuple[np.ndarray, dict[str, int]]
            HU image (float32, with noise) and 0/1 per requested lesion for this slice.
        """
        full = np.full((y.shape[0], x.shape[1]), -1000.0, dtype=np.float32)
        self.pixel_area = float(abs((x[0, 1] - x[0, 0]) * (y[1, 0] - y[0, 0])))
        rows, cols = self._head_box(x, y, z)
        labels: dict[str, int] = dict.fromkeys(self.params, 0)
        if rows.stop > rows.start and cols.stop > cols.start:
            full[rows, cols], labels = self._render_box(x[:, cols], y[rows, :], z)
        full += self.rng.standard_normal(full.shape, dtype=np.float32) * np.float32(self.noise)
        return full, labels

    def _head_box(self, x: np.ndarray, y: np.ndarray, z: float) -> tuple[slice, slice]:
        """Rows and columns that can hold the head in this slice, found on a coarse grid.

        Why: most of a CT matrix is air; rendering only the head's box halves the cost.
        """
        step = 8
        u, v, w = self._coords(x[:, ::step], y[::step, :], z)
        margin = 1.0 + 2.0 * step * float(abs(x[0, 1] - x[0, 0])) / float(np.min(self.outer))
        margin *= 1.0 + abs(self.shape[0]) + abs(self.shape[2])
        inside = (
            (u / self.outer[0]) ** 2 + (v / self.outer[1]) ** 2 + (w / self.outer[2]) ** 2
        ) <= margin**2
        if not inside.any():
            return slice(0, 0), slice(0, 0)
        r = np.flatnonzero(inside.any(axis=1))
        c = np.flatnonzero(inside.any(axis=0))
        height, width = y.shape[0], x.shape[1]
        return (
            slice(max(0, (r[0] - 1) * step), min(height, (r[-1] + 2) * step)),
            slice(max(0, (c[0] - 1) * step), min(width, (c[-1] + 2) * step)),
        )

    def _render_box(
        self, x: np.ndarray, y: np.ndarray, z: float
    ) -> tuple[np.ndarray, dict[str, int]]:
        """Render the noiseless HU of a box of the slice, and the lesion labels."""
        f = self._frame(x, y, z)
        shape = f.u.shape
        hu = np.full(shape, -1000.0, dtype=np.float32)
        hu[f.head] = 30.0
        hu[f.skull] = self.bone
        hu[f.brain] = self.white
        hu[f.brain & (f.depth < 3.5)] = self.gray
        hu[f.brain & (f.depth < 1.0)] = 8.0
        hu[f.sulci] = 7.0
        cistern = f.brain & (np.abs(f.radius - 13.0) < 2.5) & (np.abs(f.w + 22.0) < 8.0)
        hu[cistern] = 7.0
        hu[f.ventricles] = 5.0
        if self.cupping:  # beam hardening: the centre of the brain reads darker
            hu[f.brain] -= np.float32(self.cupping) * (1.0 - f.rho[f.brain] ** 2)
        for du, dv, dw, radius, value in self.distractors:  # calcifications, never labelled
            d2 = (
                (f.u - du * self.inner[0]) ** 2
                + (f.v - dv * self.inner[1]) ** 2
                + (f.w - dw * self.inner[2]) ** 2
            )
            hu[f.brain & (d2 <= radius * radius)] = value
        pixel_area = float(self.pixel_area)
        labels: dict[str, int] = {}
        for name in (
            "ischemic",
            "intraparenchymal",
            "intraventricular",
            "subarachnoid",
            "subdural",
            "epidural",
        ):
            if name not in self.params:
                continue
            mask, value = getattr(self, f"_draw_{name}")(f, self.params[name], cistern)
            hu[mask] = value if np.isscalar(value) else value[mask]
            labels[name] = int(mask.sum() * pixel_area >= MIN_LESION_AREA_MM2)
        return hu, labels

    # -- lesion drawing: each returns (mask, HU value) -----------------------------------------
    def _extra_axial(self, f: _Frame, p: dict[str, float], lens: bool) -> np.ndarray:
        da = _angle_distance(f.phi, p["phi"]) / p["half_span"]
        dw = (f.w - p["w"]) / p["half_height"]
        if lens:  # biconvex: thickness falls off quadratically, sharp margins
            profile = 1.0 - da**2 - dw**2
        else:  # crescent: broad and thin, tapering smoothly along the skull
            profile = np.cos(0.5 * math.pi * np.clip(da, 0, 1)) * np.cos(
                0.5 * math.pi * np.clip(np.abs(dw), 0, 1)
            )
            profile = np.where((da < 1) & (np.abs(dw) < 1), profile, 0.0)
        return f.brain & (f.depth < p["thickness"] * np.clip(profile, 0.0, None))

    def _draw_epidural(self, f: _Frame, p: dict[str, float], _c: np.ndarray) -> tuple:
        return self._extra_axial(f, p, lens=True), p["hu"]

    def _draw_subdural(self, f: _Frame, p: dict[str, float], _c: np.ndarray) -> tuple:
        return self._extra_axial(f, p, lens=False), p["hu"]

    def _draw_intraparenchymal(self, f: _Frame, p: dict[str, float], _c: np.ndarray) -> tuple:
        r = np.sqrt(
            ((f.u - p["u"]) / p["ru"]) ** 2
            + ((f.v - p["v"]) / p["rv"]) ** 2
            + ((f.w - p["w"]) / p["rw"]) ** 2
        )
        core = f.brain & (r <= 1.0)
        edema = f.brain & (r > 1.0) & (r <= 1.3) & ~f.ventricles
        # The edema ring is drawn here too, but only the hematoma core is labelled.
        values = np.where(core, np.float32(p["hu"]), np.float32(self.white - p["edema"]))
        return core | edema, values if edema.any() else p["hu"]

    def _draw_intraventricular(self, f: _Frame, p: dict[str, float], _c: np.ndarray) -> tuple:
        level = self.vent_centre[1] + p["level"] * self.vent_axes[1]
        side = int(p["sides"])
        sided = f.ventricles if side == 0 else (f.u > 0) == (side == 1)
        return f.ventricles & sided & (f.v > level), p["hu"]

    def _draw_subarachnoid(self, f: _Frame, p: dict[str, float], cistern: np.ndarray) -> tuple:
        region = (_angle_distance(f.phi, p["phi"]) < p["half_span"]) & (f.w > p["w_low"])
        region &= f.w < p["w_high"]
        spaces = f.sulci | (f.brain & (f.depth < 1.5)) | cistern
        return spaces & region, p["hu"]

    def _draw_ischemic(self, f: _Frame, p: dict[str, float], _c: np.ndarray) -> tuple:
        mask = f.brain & (_angle_distance(f.phi, p["phi"]) < p["half_span"])
        mask &= (f.rho > p["rho_min"]) & (f.w > p["w_low"]) & (f.w < p["w_high"])
        mask &= ~f.sulci & ~f.ventricles & (f.depth >= 1.0)
        return mask, self.white - p["drop"]
