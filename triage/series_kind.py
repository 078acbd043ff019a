"""What kind of CT series this is: words the listener and the worker must agree on.

The listener lets only series the model could read decide when a study is complete; the
worker picks the one series it reads. Both must call the same series a localizer or a
sharp (bone, lung) reconstruction, or a study could complete while the very series the
worker would read is still arriving. So the vocabulary lives here, in neither service.
"""

from __future__ import annotations

import re

LOCALIZER_TYPES = frozenset({"LOCALIZER", "SCOUT", "TOPOGRAM"})
"""Image Type values of a planning image (scout, surview, topogram)."""

SHARP_KERNEL_WORDS = ("BONE", "LUNG", "SHARP", "EDGE", "DETAIL", "ULTRA", "HIGH")
"""Kernel names containing one of these are bone or sharp reconstructions (GE BONE, BONEPLUS,
LUNG, EDGE, DETAIL; Philips and others spelling it out)."""
SIEMENS_KERNEL = re.compile(r"^[A-Z][A-Za-z]?(\d{2})")
"""Siemens kernels are a letter or two and a sharpness: H31s, Hr38 are brain, H60s, Hr64 bone;
50 and above counts as sharp."""
CANON_KERNEL = re.compile(r"^FC(\d{2})$")
"""Canon/Toshiba FC kernels: FC2x brain, FC3x and FC8x bone and sharp."""
PHILIPS_SHARP = frozenset({"D", "E", "YC", "YD", "YE", "L"})
"""Philips single-letter kernels used for bone (UB, UC and B are brain)."""


def _is_sharp_name(value: str) -> bool:
    name = value.strip().upper()
    if any(word in name for word in SHARP_KERNEL_WORDS) or name in PHILIPS_SHARP:
        return True
    canon = CANON_KERNEL.match(name)
    if canon:
        return int(canon.group(1)) >= 30
    siemens = SIEMENS_KERNEL.match(value.strip())
    return siemens is not None and int(siemens.group(1)) >= 50


def is_sharp_kernel(kernel: str | None) -> bool:
    """Whether Convolution Kernel (any of its values) names a bone or other sharp reconstruction.

    Unknown or missing kernels count as soft: a name we do not know then decides completion
    (which only delays it) and may be read (the adequacy and domain checks still apply).
    """
    if not kernel:
        return False
    return any(_is_sharp_name(value) for value in kernel.split("\\") if value.strip())


def parse_orientation(text: str | None) -> tuple[float, ...] | None:
    """A stored ``a\\b\\c\\d\\e\\f`` Image Orientation (Patient), or None if it is not one."""
    if not text:
        return None
    try:
        values = tuple(float(v) for v in text.split("\\"))
    except ValueError:
        return None
    return values if len(values) == 6 else None
