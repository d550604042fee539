"""Pictures: colour-map heatmaps, overlay them on images, save PNGs, plot grids."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np


def to_unit_rgb(images) -> np.ndarray:
    """Images as float32 RGB in [0, 1], `(batch, H, W, 3)`.

    Accepts uint8 or float images (0-1 or 0-255), grayscale `(batch, H, W)` or `(batch, H, W, 1)`.
    """
    x = np.asarray(images)
    if x.ndim == 3 and x.shape[-1] not in (1, 3, 4):
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise ValueError(
            "`images` must be (batch, H, W), (batch, H, W, 1) or (batch, H, W, 3). "
            f"Received: images.shape={x.shape}."
        )
    x = x[..., :3].astype(np.float32)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    if np.asarray(images).dtype == np.uint8 or x.max(initial=0.0) > 1.0:
        x = x / 255.0
    return np.clip(x, 0.0, 1.0)


def displayable(inputs) -> np.ndarray:
    """Model inputs as drawable float32 RGB in [0, 1], `(batch, H, W, 3)`.

    Preprocessed inputs (any negative value, e.g. "caffe" or "tf" preprocessing) are min-max
    scaled per image first; other inputs go through `to_unit_rgb`.
    """
    x = np.asarray(inputs, np.float32)
    if x.ndim == 4 and x.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"Inputs with {x.shape[-1]} channels cannot be drawn directly; pass images to draw "
            f"on, (n, H, W[, 3]). Received: shape {x.shape}."
        )
    if x.size and x.min() < 0:
        axes = tuple(range(1, x.ndim))
        low, high = x.min(axis=axes, keepdims=True), x.max(axis=axes, keepdims=True)
        x = np.divide(x - low, high - low, out=np.zeros_like(x), where=high > low)
    return to_unit_rgb(x)


def resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize `(batch, h, w)` maps to `(batch, *size)`."""
    maps = np.asarray(maps, np.float32)
    if maps.shape[1:3] == tuple(size):
        return maps
    import tensorflow as tf

    return tf.image.resize(maps[..., None], size, method="bilinear").numpy()[..., 0]


def colorize(heatmaps, colormap: str = "jet") -> np.ndarray:
    """Colour `(batch, H, W)` maps in [0, 1] with a matplotlib colour map: float RGB in [0, 1]."""
    import matplotlib

    cmap = matplotlib.colormaps[colormap]
    return cmap(np.clip(np.asarray(heatmaps, np.float32), 0.0, 1.0))[..., :3].astype(np.float32)


def overlay(images, heatmaps, colormap: str = "jet", alpha: float = 0.4) -> np.ndarray:
    """Overlay heatmaps on images, following the Grad-CAM display steps; pictures of any method.

    Steps: image / 255; heatmap scaled to its maximum; resized to the image; coloured; added
    with weight `alpha`; the sum rescaled to [0, 255].

    The guided methods (`GuidedBackprop`, `GuidedGradCAM`) return images, not heatmaps: an
    `Explanation` with `kind == "image"`, or a `(batch, H, W, C)` array with 1 or 3 channels,
    is shown as it is (in [0, 1], zero gradient at 0.5; not blended with `images`), as
    `plot` shows it, so one `overlay` call draws every method in `kgc.METHODS`.

    Args:
        images: `(batch, H, W[, C])` or one `(H, W[, C])` image; uint8 or float (0-1 or 0-255),
            RGB or grayscale. Display images may be larger than the model input.
        heatmaps: `(batch, h, w)` or one `(h, w)` map, non-negative; an `Explanation`; or
            guided images `(batch, H, W, C)`.
        colormap: Name of a matplotlib colour map.
        alpha: Weight of the heatmap.

    Returns:
        uint8 RGB `(batch, H, W, 3)` (or `(H, W, 3)` for a single image); for guided images,
        at their own size.

    Raises:
        ValueError: maps not one per image, non-finite, or `(batch, K, h, w)` maps of several
            classes per image (overlay one class at a time: `heatmaps[:, k]`).
    """
    kind = getattr(heatmaps, "kind", None)
    heatmaps = np.asarray(getattr(heatmaps, "heatmaps", heatmaps), np.float32)
    if kind == "image" or kind is None and heatmaps.ndim == 4 and heatmaps.shape[-1] in (1, 3):
        if len(heatmaps) != len(np.asarray(images)):
            raise ValueError(
                "Guided images must be (batch, H, W, C) with one per image. Received: "
                f"shape {heatmaps.shape} for {len(np.asarray(images))} images."
            )
        return np.round(to_unit_rgb(np.clip(heatmaps, 0.0, 1.0)) * 255).astype(np.uint8)
    single = heatmaps.ndim == 2
    if single:
        heatmaps = heatmaps[None]
        images = np.asarray(images)[None]
    base = to_unit_rgb(images)
    if heatmaps.ndim == 4:
        raise ValueError(
            "`heatmaps` of shape (batch, K, h, w) hold several classes per image: overlay one "
            f"class at a time, e.g. `overlay(images, heatmaps[:, k])`. Received: "
            f"heatmaps.shape={heatmaps.shape}."
        )
    if heatmaps.ndim != 3 or len(heatmaps) != len(base):
        raise ValueError(
            "`heatmaps` must be (batch, h, w) with one map per image (or guided images "
            f"(batch, H, W, C)). Received: heatmaps.shape={heatmaps.shape} for {len(base)} "
            "images."
        )
    if not np.isfinite(heatmaps).all():
        raise ValueError("`heatmaps` contain NaN or infinite values.")
    peak = heatmaps.max(axis=(1, 2), keepdims=True)
    heatmaps = np.divide(heatmaps, peak, out=np.zeros_like(heatmaps), where=peak > 0)
    mixed = base + alpha * colorize(resize(heatmaps, base.shape[1:3]), colormap)
    low = mixed.min(axis=(1, 2, 3), keepdims=True)
    span = mixed.max(axis=(1, 2, 3), keepdims=True) - low
    mixed = np.divide(mixed - low, span, out=np.zeros_like(mixed), where=span > 0)
    out = np.round(mixed * 255.0).astype(np.uint8)
    return out[0] if single else out


def save_png(path: str | os.PathLike, image) -> str:
    """Write one uint8 (or [0, 1] float) RGB/grayscale image to a PNG file. Returns the path.

    Raises:
        ValueError: `image` not `(H, W)` or `(H, W, C)`, or holding NaN or infinite values
            (nothing is written).
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(
            f"`image` must be (H, W) or (H, W, C). Received: image.shape={image.shape}."
        )
    if image.dtype.kind in "fc" and not np.isfinite(image).all():
        raise ValueError(
            "`image` contains NaN or infinite values, which a PNG cannot show. Received: "
            f"{int((~np.isfinite(image)).sum())} of {image.size} values. Fix them first, "
            "e.g. `np.nan_to_num(image)` if they stand for 0."
        )
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.dtype != np.uint8:
        image = np.round(np.clip(image.astype(np.float32), 0.0, 1.0) * 255).astype(np.uint8)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # Written under a temporary name and renamed: an interrupted write leaves no half PNG.
    partial = f"{path}.{os.getpid()}.partial"
    try:
        with open(partial, "wb") as file:
            file.write(png_bytes(image, compress_level=6))
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return path


def png_bytes(image: np.ndarray, compress_level: int = 1) -> bytes:
    """uint8 RGB `(H, W, 3)` or grayscale `(H, W)` as PNG bytes (Pillow)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(
        buffer, format="PNG", compress_level=compress_level
    )
    return buffer.getvalue()


GAP = 2  # pixels between panels and grid cells
GAP_VALUE = 32  # dark grey: a white line reads as part of a bright overlay, a dark one does not


def side_by_side(panels: list[np.ndarray], gap_value: int = GAP_VALUE) -> np.ndarray:
    """uint8 `(H, W, 3)` panels side by side, `GAP` pixels of `gap_value` apart."""
    height = panels[0].shape[0]
    gap = np.full((height, GAP, 3), gap_value, np.uint8)
    parts = [part for i, panel in enumerate(panels) for part in ((gap, panel) if i else (panel,))]
    return np.concatenate(parts, axis=1)


def grid_shape(n: int) -> tuple[int, int]:
    """`(rows, cols)` of a near-square grid of `n` pictures: `ceil(sqrt(n))` columns."""
    cols = max(1, math.ceil(math.sqrt(n)))
    return -(-n // cols), cols


def grid(pictures: np.ndarray, gap_value: int = GAP_VALUE) -> np.ndarray:
    """uint8 `(n, H, W, 3)` pictures in a near-square grid, `GAP` pixels of `gap_value` apart
    (empty cells too)."""
    n, height, width, _ = pictures.shape
    rows, cols = grid_shape(n)
    out = np.full(
        (rows * height + (rows - 1) * GAP, cols * width + (cols - 1) * GAP, 3), gap_value,
        np.uint8,
    )
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = r * (height + GAP), c * (width + GAP)
        out[y : y + height, x : x + width] = pictures[i]
    return out


def draw(images, heatmaps=None, colormap: str = "jet", alpha: float = 0.4) -> np.ndarray:
    """uint8 RGB pictures `(batch, H, W, 3)` of explanations, whatever the method.

    `overlay`'s pictures (heatmaps overlaid, guided images as they are); with
    `heatmaps=None`, the images themselves. An `Explanation` of several classes per image
    (maps `(batch, K, h, w)`) gives `batch * K` pictures, image by image, its K classes in
    order.
    """
    if heatmaps is None:
        return np.round(to_unit_rgb(images) * 255).astype(np.uint8)
    k = classes_per_image(heatmaps)
    if k:
        images = np.repeat(np.asarray(images), k, axis=0)
        maps = np.asarray(heatmaps.heatmaps)
        heatmaps = maps.reshape(-1, *maps.shape[2:])
    return overlay(images, heatmaps, colormap, alpha)


def classes_per_image(explanation) -> int | None:
    """K for an `Explanation` of several classes per image (maps `(batch, K, ...)`), else
    None."""
    present = getattr(explanation, "present", None)
    return None if present is None else int(np.shape(present)[1])


def plot(images, heatmaps=None, titles: Sequence[str] | None = None, cols: int | None = None,
         colormap: str = "jet", alpha: float = 0.4, size: float = 2.5):
    """A grid of overlays (or plain images when `heatmaps` is None) as a matplotlib Figure.

    Args:
        images: `(batch, H, W[, C])` images.
        heatmaps: `(batch, h, w)` maps, guided images `(batch, H, W, C)`, an `Explanation`,
            or None. An `Explanation` of several classes per image (`(batch, K, h, w)`) is
            drawn one row per image, one column per class.
        titles: One title per picture.
        cols: Number of columns. Defaults to 4 (K for several classes per image).
        colormap, alpha: As in `overlay`.
        size: Size of one cell in inches.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    from matplotlib.figure import Figure

    pictures = draw(images, heatmaps, colormap, alpha)
    n = len(pictures)
    cols = max(1, min(cols or classes_per_image(heatmaps) or 4, n))
    rows = -(-n // cols)
    figure = Figure(figsize=(cols * size, rows * size), layout="constrained")
    for i in range(rows * cols):
        axis = figure.add_subplot(rows, cols, i + 1)
        axis.axis("off")
        if i < n:
            axis.imshow(pictures[i])
            if titles is not None and i < len(titles):
                axis.set_title(str(titles[i]), fontsize=9)
    return figure


def draw_concepts(images, maps, colormap: str = "tab10", alpha: float = 0.6) -> np.ndarray:
    """uint8 RGB pictures `(batch, H, W, 3)` of concept maps (Deep Feature Factorization).

    Each pixel takes the colour of its strongest concept `j = argmax_k m_k` (colour `j` of the
    matplotlib colour map, cycling), weighed by that concept's value `s = m_j` (each map scaled
    to its maximum first): `picture = (1 - alpha s) image + alpha s colour_j`.

    Args:
        images: `(batch, H, W[, C])` images, as for `overlay`.
        maps: `(batch, k, h, w)` non-negative concept maps (`Factorization.maps`).
        colormap: A matplotlib colour map; qualitative ones ("tab10", "tab20") suit best.
        alpha: Weight of the colours.
    """
    import matplotlib

    maps = np.asarray(maps, np.float32)
    base = to_unit_rgb(images)
    if maps.ndim != 4 or len(maps) != len(base) or not np.isfinite(maps).all():
        raise ValueError(
            "`maps` must be finite concept maps (batch, k, h, w), one batch row per image. "
            f"Received: maps.shape={maps.shape} for {len(base)} images."
        )
    batch, k = maps.shape[:2]
    maps = resize(maps.reshape(batch * k, *maps.shape[2:]), base.shape[1:3])
    maps = maps.reshape(batch, k, *base.shape[1:3])
    peak = maps.max(axis=(2, 3), keepdims=True)
    maps = np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)
    cmap = matplotlib.colormaps[colormap]
    steps = np.arange(k) % cmap.N if cmap.N < 256 else np.linspace(0, 1, k)
    colours = cmap(steps)[:, :3].astype(np.float32)
    strength = np.clip(maps.max(axis=1), 0.0, 1.0)[..., None] * alpha
    mixed = (1 - strength) * base + strength * colours[maps.argmax(axis=1)]
    return np.round(np.clip(mixed, 0.0, 1.0) * 255).astype(np.uint8)
