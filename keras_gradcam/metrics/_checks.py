"""Input checks shared by the metrics: heatmaps, masks or boxes, per-sample vs mean."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_heatmaps(heatmaps: Any, name: str = "heatmaps") -> np.ndarray:
    """`heatmaps` as float32 `(n, H, W)`, finite and non-negative; drops a trailing 1-channel."""
    maps = np.asarray(heatmaps, dtype=np.float32)
    if maps.ndim == 4 and maps.shape[-1] == 1:
        maps = maps[..., 0]
    if maps.ndim != 3:
        raise ValueError(
            f"`{name}` must be a batch of 2D maps of shape (n, height, width), as the explainers "
            f"return them. Received: {name}.shape={maps.shape}."
            + (" Add a batch axis, e.g. `heatmaps[None]`." if maps.ndim == 2 else "")
        )
    if maps.shape[0] == 0:
        raise ValueError(f"`{name}` is empty. Received: {name}.shape={maps.shape}.")
    check_finite(maps, name)
    if (maps < 0).any():
        raise ValueError(
            f"`{name}` must be non-negative (CAM maps after the ReLU). Received a minimum of "
            f"{float(maps.min())}. Clip them first, e.g. `np.maximum(heatmaps, 0)`."
        )
    return maps


def check_finite(array: np.ndarray, name: str) -> None:
    """A ValueError naming `name` and its first sample holding NaN or infinite values, if any."""
    finite = np.isfinite(array)
    if finite.all():
        return
    if array.ndim == 0:
        received = f"{name}={array.item()!r}"
    else:
        i = int(np.argmin(finite.reshape(len(array), -1).all(axis=1)))
        received = (
            f"{name}[{i}]={array[i].tolist()}" if array.ndim <= 2
            else f"non-finite values in {name}[{i}]"
        )
    raise ValueError(
        f"`{name}` contain NaN or infinite values. Received: {received}. "
        "Pass finite values (drop or repair those samples)."
    )


def as_boxes(boxes: Any, n: int | None = None, name: str = "boxes") -> np.ndarray:
    """`boxes` as float64 `(n, 4)` rows `(y0, x0, y1, x1)`: non-empty, finite and ordered."""
    array = np.asarray(boxes)
    if array.dtype.kind not in "iuf" or array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(
            f"`{name}` must be numbers of shape (n, 4), rows (y0, x0, y1, x1). "
            f"Received: {name}.shape={array.shape} with dtype {array.dtype}."
        )
    if n is not None and array.shape[0] != n:
        raise ValueError(
            f"`{name}` must hold one box per heatmap: expected shape ({n}, 4). "
            f"Received: {name}.shape={array.shape}."
        )
    if array.shape[0] == 0:
        raise ValueError(
            f"`{name}` is empty. Received: {name}.shape={array.shape}. Pass at least one box."
        )
    array = array.astype(np.float64)
    check_finite(array, name)
    bad = (array[:, 2] < array[:, 0]) | (array[:, 3] < array[:, 1])
    if bad.any():
        raise ValueError(
            f"`{name}` rows must be (y0, x0, y1, x1) with y1 >= y0 and x1 >= x0. "
            f"Received: {name}[{int(np.argmax(bad))}]={array[bad][0].tolist()}."
        )
    return array


def as_masks(masks_or_boxes: Any, shape: tuple[int, int, int], name: str = "masks_or_boxes"):
    """Bool masks `shape == (n, H, W)` from bool/0-1 masks `(n, H, W)` or boxes `(n, 4)`.

    Boxes are pixel coordinates `(y0, x0, y1, x1)`, start inclusive and end exclusive
    (`mask[y0:y1, x0:x1]`), clipped to the image; fractional coordinates cover every pixel
    they touch (floor of the start, ceiling of the end).
    """
    n, height, width = shape
    array = np.asarray(masks_or_boxes)
    if array.ndim == 2 and array.shape[1] == 4 and array.shape != (height, width):
        boxes = as_boxes(array, n, name)
        rows, cols = np.arange(height), np.arange(width)
        y0, x0 = np.floor(boxes[:, 0]), np.floor(boxes[:, 1])
        y1, x1 = np.ceil(boxes[:, 2]), np.ceil(boxes[:, 3])
        inside_rows = (rows >= y0[:, None]) & (rows < y1[:, None])
        inside_cols = (cols >= x0[:, None]) & (cols < x1[:, None])
        return inside_rows[:, :, None] & inside_cols[:, None, :]
    if array.shape != shape:
        raise ValueError(
            f"`{name}` must be bool masks of shape {shape} (the heatmaps' shape) or boxes of "
            f"shape ({n}, 4). Received: {name}.shape={array.shape}."
        )
    if array.dtype != bool:
        if array.dtype.kind not in "iuf" or not np.isin(array, (0, 1)).all():
            raise ValueError(
                f"`{name}` masks must be bool (or only 0 and 1). Received: dtype {array.dtype}"
                + (f" with values in [{array.min()}, {array.max()}]." if array.size else ".")
            )
        array = array.astype(bool)
    return array


def mean(values: np.ndarray) -> float:
    """The mean of per-sample values as a Python float."""
    return float(np.mean(values))
