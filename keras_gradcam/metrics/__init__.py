"""Metrics for explanations: localisation, faithfulness and sanity checks.

Convention: every metric `f(...)` returns one value per sample, a float64 numpy array `(n,)`,
and its twin `mean_f(...)` (same arguments) returns the mean over the samples as a float, like
xplique's `detailed_evaluate` / `evaluate` split.

Objects are bool masks `(n, H, W)` or boxes `(n, 4)` in pixel coordinates `(y0, x0, y1, x1)`,
start inclusive and end exclusive (the box covers `mask[y0:y1, x0:x1]`).
"""

from keras_gradcam.metrics.localization import (
    energy_in_mask,
    mean_energy_in_mask,
    mean_pointing_game,
    pointing_game,
)

__all__ = [
    "energy_in_mask",
    "mean_energy_in_mask",
    "mean_pointing_game",
    "pointing_game",
]
