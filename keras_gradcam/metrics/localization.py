"""Localisation metrics: does the map point at the object?

Every function takes maps as the explainers return them, float `(n, H, W)` and non-negative,
and returns one float64 value per sample, shape `(n,)`. Its `mean_*` twin returns their mean.

Objects are bool masks `(n, H, W)` or boxes `(n, 4)` in pixel coordinates `(y0, x0, y1, x1)`,
start inclusive and end exclusive: the box covers `mask[y0:y1, x0:x1]`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_gradcam.metrics._checks import as_boxes, as_heatmaps, as_masks, mean


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
            shape, or boxes not finite or with y1 < y0 or x1 < x0.

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


PAPER_TOLERANCE = 15  # pixels, on the paper's 224x224 images


def pointing_game(
    heatmaps: Any, masks_or_boxes: Any, tolerance: float | None = None
) -> np.ndarray:
    """Whether each map's maximum falls on the object: 1.0 for a hit, 0.0 for a miss.

    The pointing game of Zhang et al., "Top-down Neural Attention by Excitation Backprop"
    (ECCV 2016): a hit when the map's highest pixel lies within `tolerance` pixels (Euclidean
    distance) of a pixel of the object. The paper's 15 pixels are for ImageNet-size
    (224x224) images, so the default scales them with the maps: `15 * max(H, W) / 224`
    (15 at 224, about 2.1 at 32x32, where 15 pixels would make nearly every map a hit). The
    maximum is the first one in row-major order when several pixels tie. A map without a
    maximum (all-zero or constant) is a miss.

    Args:
        heatmaps: Non-negative maps, float `(n, H, W)`.
        masks_or_boxes: The objects: bool masks `(n, H, W)` or boxes `(n, 4)` as
            `(y0, x0, y1, x1)`, start inclusive, end exclusive.
        tolerance: Largest distance in pixels from the maximum to the object for a hit
            (0: the maximum must be inside). Defaults to None: `15 * max(H, W) / 224`.

    Returns:
        float64 `(n,)` of 1.0 (hit) and 0.0 (miss).

    Raises:
        ValueError: as `energy_in_mask`, or a negative `tolerance`.
    """
    if tolerance is not None and (not np.isscalar(tolerance) or not tolerance >= 0):
        raise ValueError(
            "`tolerance` must be a non-negative number of pixels, or None for "
            f"15 * max(H, W) / 224. Received: tolerance={tolerance!r}."
        )
    maps = as_heatmaps(heatmaps)
    masks = as_masks(masks_or_boxes, maps.shape)
    n, height, width = maps.shape
    if tolerance is None:
        tolerance = PAPER_TOLERANCE * max(height, width) / 224
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


def mean_pointing_game(
    heatmaps: Any, masks_or_boxes: Any, tolerance: float | None = None
) -> float:
    """The pointing-game accuracy: the share of hits of `pointing_game` (same `tolerance`)."""
    return mean(pointing_game(heatmaps, masks_or_boxes, tolerance))


def box_from_heatmap(
    heatmaps: Any, threshold: float = 0.15, *, connectivity: int = 8
) -> np.ndarray:
    """The Grad-CAM paper's weakly-supervised bounding box of each map.

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization" (ICCV 2017, sec. 4.1), after Zhou et al.'s CAM (CVPR 2016): keep the pixels
    whose value is above `threshold` times the map's maximum (strictly greater), take the
    largest connected segment of them (most pixels; the first in row-major order on a tie), and
    return the tight box around it.

    Args:
        heatmaps: Non-negative maps, float `(n, H, W)`.
        threshold: Fraction of each map's maximum a pixel must exceed. Defaults to 0.15.
        connectivity: 8 (default; diagonal neighbours connect) or 4.

    Returns:
        int64 `(n, 4)` boxes `(y0, x0, y1, x1)`, start inclusive, end exclusive. An all-zero
        map gives the empty box `(0, 0, 0, 0)`.

    Raises:
        ValueError: maps not `(n, H, W)`, negative or not finite; `threshold` outside [0, 1);
            `connectivity` other than 4 or 8.
    """
    if not np.isscalar(threshold) or not 0 <= threshold < 1:
        raise ValueError(f"`threshold` must be in [0, 1). Received: threshold={threshold!r}.")
    if connectivity not in (4, 8):
        raise ValueError(
            f"`connectivity` must be 4 or 8. Received: connectivity={connectivity!r}."
        )
    maps = as_heatmaps(heatmaps)
    boxes = np.zeros((maps.shape[0], 4), np.int64)
    for i, heatmap in enumerate(maps):
        peak = heatmap.max()
        if peak > 0:
            boxes[i] = _largest_segment_box(heatmap > threshold * peak, connectivity == 8)
    return boxes


def _largest_segment_box(foreground: np.ndarray, diagonal: bool) -> tuple[int, int, int, int]:
    """Box of the largest connected segment, by union-find over the row runs of `foreground`."""
    padded = np.zeros((foreground.shape[0], foreground.shape[1] + 2), np.int8)
    padded[:, 1:-1] = foreground
    rows, edges = np.nonzero(np.diff(padded, axis=1))
    starts, ends, run_rows = edges[::2], edges[1::2], rows[::2]  # runs [start, end) per row
    parent = list(range(len(starts)))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    slack = 1 if diagonal else 0
    row_first = np.searchsorted(run_rows, np.arange(foreground.shape[0] + 1))
    for r in range(1, foreground.shape[0]):  # sweep the runs of rows r - 1 and r together
        a, a_end = int(row_first[r - 1]), int(row_first[r])
        b, b_end = a_end, int(row_first[r + 1])
        while a < a_end and b < b_end:
            if starts[a] < ends[b] + slack and starts[b] < ends[a] + slack:
                root_a, root_b = find(a), find(b)
                if root_a != root_b:
                    parent[max(root_a, root_b)] = min(root_a, root_b)
            if ends[a] < ends[b]:
                a += 1
            else:
                b += 1
    roots = np.array([find(a) for a in range(len(starts))])
    sizes = np.bincount(roots, weights=ends - starts)
    best = roots == int(np.argmax(sizes))
    return (
        int(run_rows[best].min()),
        int(starts[best].min()),
        int(run_rows[best].max()) + 1,
        int(ends[best].max()),
    )


def iou(boxes_a: Any, boxes_b: Any) -> np.ndarray:
    """Intersection over union of paired boxes.

    Boxes are `(y0, x0, y1, x1)` with exclusive ends, so a box's area is
    `(y1 - y0) * (x1 - x0)`. Two empty boxes (zero union) score 0.

    Args:
        boxes_a: `(n, 4)`.
        boxes_b: `(n, 4)`, paired row by row with `boxes_a`.

    Returns:
        float64 `(n,)` in [0, 1].

    Raises:
        ValueError: boxes not `(n, 4)`, empty, of different lengths, not finite, or with
            y1 < y0 or x1 < x0.
    """
    a = as_boxes(boxes_a, name="boxes_a")
    b = as_boxes(boxes_b, len(a), name="boxes_b")
    height = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    width = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = height * width
    union = _area(a) + _area(b) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def mean_iou(boxes_a: Any, boxes_b: Any) -> float:
    """The mean of `iou` over the pairs (a ValueError for zero pairs, never NaN)."""
    return mean(iou(boxes_a, boxes_b))


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def localization_accuracy(
    heatmaps: Any, true_boxes: Any, iou_threshold: float = 0.5, *, threshold: float = 0.15
) -> np.ndarray:
    """Whether the box drawn from each map matches the true box: 1.0 or 0.0.

    The Grad-CAM paper's weakly-supervised localisation (sec. 4.1), as in the ILSVRC
    localisation challenge: `box_from_heatmap(heatmaps, threshold)` counts as correct when its
    IoU with the true box is at least `iou_threshold`. Only the box is judged: the paper's
    top-1/top-5 localisation error also requires the right class, which you can check
    separately from the explainer's predictions (`cam.explain(...).predicted`).

    Args:
        heatmaps: Non-negative maps, float `(n, H, W)`.
        true_boxes: `(n, 4)` boxes `(y0, x0, y1, x1)`, start inclusive, end exclusive.
        iou_threshold: Smallest IoU counted as correct. Defaults to 0.5.
        threshold: Passed to `box_from_heatmap`. Defaults to 0.15.

    Returns:
        float64 `(n,)` of 1.0 (correct) and 0.0.

    Raises:
        ValueError: as `box_from_heatmap` and `iou`; `iou_threshold` outside [0, 1].
    """
    if not np.isscalar(iou_threshold) or not 0 <= iou_threshold <= 1:
        raise ValueError(
            f"`iou_threshold` must be in [0, 1]. Received: iou_threshold={iou_threshold!r}."
        )
    maps = as_heatmaps(heatmaps)
    truth = as_boxes(true_boxes, len(maps), name="true_boxes")
    overlap = iou(box_from_heatmap(maps, threshold), truth)
    return (overlap >= iou_threshold).astype(np.float64)


def mean_localization_accuracy(
    heatmaps: Any, true_boxes: Any, iou_threshold: float = 0.5, *, threshold: float = 0.15
) -> float:
    """The share of maps whose box is correct (see `localization_accuracy`)."""
    return mean(localization_accuracy(heatmaps, true_boxes, iou_threshold, threshold=threshold))
