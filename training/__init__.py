"""Offline training of the two-stage ICH / ischemic-stroke triage models.

The package trains a per-slice image model and a per-study sequence model, evaluates them and
exports a versioned bundle that the worker deploys. ``training.phantom``, ``training.classes``
and this ``__init__`` import no torch, so the DICOM listener (which only needs the phantom
generator in its tests) stays light.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
