"""Localisation metrics: does the map point at the object?

Every function takes maps as the explainers return them, float `(n, H, W)` and non-negative,
and returns one float64 value per sample, shape `(n,)`. Its `mean_*` twin returns their mean.

Objects are bool masks `(n, H, W)` or boxes `(n, 4)` in pixel coordinates `(y0, x0, y1, x1)`,
start inclusive and end exclusive: the box covers `mask[y0:y1, x0:x1]`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_gradcam.metrics._checks import as_heatmaps, as_masks, mean


def energy_in_mask(heatmaps: Any, masks_or_boxes: Any) -> np.ndarray:
    """Share of each map's mass that lies inside the object.

    The energy-based pointing game of Score-CAM (Wang et al., "Score-CAM: Score-Weighted
    Visual Explanations for Convolutional Neural Networks", CVPR-W 2020, sec. 5.2):
    `sum(map * mask) / sum(map)` per sample. The maps are used as given (they need not be
    normalised; scaling a map does not change its value). An all-zero map scores 0, never NaN.

    Args:
        heatmaps: Non-negative maps, float `(n, H, W)`.
        masks_or_boxes: The objects: bool masks `(n, H, W)` or boxes `(n, 4)` as
            `(y0, x0, y1, x1)`, start inclusive, end exclusive.

    Returns:
        float64 `(n,)` in [0, 1].

    Raises:
        ValueError: maps not `(n, H, W)`, negative or not finite; masks or boxes of another
            shape, or boxes with y1 < y0 or x1 < x0.

    Example:

    >>> maps = np.zeros((1, 4, 4)); maps[0, :2, :2] = 1.0
    >>> energy_in_mask(maps, np.array([[0, 0, 2, 4]]))
    array([1.])
    """
    maps = as_heatmaps(heatmaps).astype(np.float64)
    masks = as_masks(masks_or_boxes, maps.shape)
    total = maps.sum(axis=(1, 2))
    inside = (maps * masks).sum(axis=(1, 2))
    return np.divide(inside, total, out=np.zeros_like(total), where=total > 0)


def mean_energy_in_mask(heatmaps: Any, masks_or_boxes: Any) -> float:
    """The mean of `energy_in_mask` over the samples."""
    return mean(energy_in_mask(heatmaps, masks_or_boxes))


def pointing_game(heatmaps: Any, masks_or_boxes: Any, tolerance: float = 15) -> np.ndarray:
    """Whether each map's maximum falls on the object: 1.0 for a hit, 0.0 for a miss.

    The pointing game of Zhang et al., "Top-down Neural Attention by Excitation Backprop"
    (ECCV 2016): a hit when the map's highest pixel lies within `tolerance` pixels (Euclidean
    distance, 15 in the paper) of a pixel of the object. The maximum is the first one in
    row-major order when several pixels tie. A map without a maximum (all-zero or constant)
    is a miss. With small images, pass a smaller `tolerance` (0: the maximum must be inside).

    Args:
        heatmaps: Non-negative maps, float `(n, H, W)`.
        masks_or_boxes: The objects: bool masks `(n, H, W)` or boxes `(n, 4)` as
            `(y0, x0, y1, x1)`, start inclusive, end exclusive.
        tolerance: Largest distance in pixels from the maximum to the object for a hit.
            Defaults to 15.

    Returns:
        float64 `(n,)` of 1.0 (hit) and 0.0 (miss).

    Raises:
        ValueError: as `energy_in_mask`, or a negative `tolerance`.
    """
    if not np.isscalar(tolerance) or not tolerance >= 0:
        raise ValueError(
            "`tolerance` must be a non-negative number of pixels. "
            f"Received: tolerance={tolerance!r}."
        )
    maps = as_heatmaps(heatmaps)
    masks = as_masks(masks_or_boxes, maps.shape)
    n, _, width = maps.shape
    flat = maps.reshape(n, -1)
    peak = flat.argmax(axis=1)
    informative = flat.max(axis=1) > flat.min(axis=1)
    hits = np.zeros((n,), np.float64)
    for i in np.flatnonzero(informative):
        py, px = divmod(int(peak[i]), width)
        if masks[i, py, px]:
            hits[i] = 1.0
        elif tolerance > 0:
            ys, xs = np.nonzero(masks[i])
            if ys.size and ((ys - py) ** 2 + (xs - px) ** 2).min() <= tolerance**2:
                hits[i] = 1.0
    return hits


def mean_pointing_game(heatmaps: Any, masks_or_boxes: Any, tolerance: float = 15) -> float:
    """The pointing-game accuracy: the share of hits of `pointing_game`."""
    return mean(pointing_game(heatmaps, masks_or_boxes, tolerance))
