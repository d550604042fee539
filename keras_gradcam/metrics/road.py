"""ROAD: RemOve And Debias, with noisy linear imputation.

Rong, Leemann, Borisov, Kasneci & Kasneci, "A Consistent and Efficient Evaluation Strategy
for Attribution Methods" (ICML 2022). Removing pixels by setting them to a constant leaks the
shape of the removed region to the model (the mask itself is informative), so that metrics
like deletion rank explanations inconsistently. ROAD replaces each removed pixel by the
weighted mean of its 8 neighbours (direct ones weigh 1/6, diagonal ones 1/12), solved for
all removed pixels at once as one sparse linear system, plus a little Gaussian noise, and
measures the model's confidence on the imputed images. Each metric returns one float64 value
per sample, shape `(n,)`; its `mean_*` twin the mean; `road_curve` the whole curves.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from keras_gradcam.inputs import check_batch_size
from keras_gradcam.metrics._checks import as_heatmaps, check_finite, mean
from keras_gradcam.metrics._scoring import check_images, scorer_for, target_classes

PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
_STENCIL = np.array([[1, 2, 1], [2, 0, 2], [1, 2, 1]], np.float32) / 12  # 1/12 and 1/6


@tf.function(reduce_retracing=True)
def _impute(images, removed, noise, tolerance, max_iterations):
    """Preconditioned conjugate gradients on the imputation system, all images and channels
    at once: `S_p x_p - sum_{q removed} w_q x_q = sum_{q kept} w_q x_q` for each removed `p`,
    `S_p` the weight of its neighbours inside the image. The system is symmetric positive
    definite unless every pixel is removed (then `x = 0`)."""
    kernel = tf.tile(tf.constant(_STENCIL)[:, :, None, None], [1, 1, tf.shape(images)[-1], 1])

    def stencil(x):  # zero padding: neighbours outside the image drop out
        return tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME")

    def total(x):
        return tf.reduce_sum(x, axis=[1, 2], keepdims=True)

    diagonal = stencil(tf.ones_like(images))
    inverse = removed * tf.math.divide_no_nan(1.0, diagonal)

    def apply(x):
        return removed * (diagonal * x - stencil(removed * x))

    rhs = removed * stencil(images * (1.0 - removed))
    goal = tolerance * tf.sqrt(total(rhs**2))
    residual = rhs
    z = inverse * residual
    x, direction, rz = tf.zeros_like(images), z, total(residual * z)

    def more(i, x, residual, direction, rz):
        return tf.logical_and(i < max_iterations,
                              tf.reduce_any(tf.sqrt(total(residual**2)) > goal))

    def step(i, x, residual, direction, rz):
        moved = apply(direction)
        alpha = tf.math.divide_no_nan(rz, total(direction * moved))
        x, residual = x + alpha * direction, residual - alpha * moved
        z = inverse * residual
        new = total(residual * z)
        return i + 1, x, residual, z + tf.math.divide_no_nan(new, rz) * direction, new

    _, x, *_ = tf.while_loop(more, step, (tf.constant(0), x, residual, direction, rz))
    return images * (1.0 - removed) + removed * (x + noise)


def noisy_linear_imputation(images, removed, *, noise=0.01, seed=0, tolerance=1e-5,
                            max_iterations=None) -> np.ndarray:
    """ROAD's noisy linear imputation: removed pixels become the weighted mean of their
    neighbours, plus Gaussian noise.

    Every removed pixel `p` satisfies `x_p = sum_q w_q x_q / sum_q w_q` over its neighbours `q`
    inside the image (weights 1/6 for the 4 direct, 1/12 for the 4 diagonal neighbours; kept
    neighbours enter with their values, removed ones as unknowns), for all channels. This
    sparse linear system is solved by conjugate gradients preconditioned by its diagonal (to a
    relative residual of `tolerance`), then `N(0, noise^2)` is added to the removed pixels
    only. A removed pixel inside a linear ramp gets the ramp's value. With every pixel
    removed there is nothing to interpolate: they become the noise alone.

    Args:
        images: float `(n, H, W, C)` (or `(n, H, W)`).
        removed: bool `(n, H, W)`, True where a pixel is removed (all its channels).
        noise: Standard deviation of the noise, in the images' units. Defaults to 0.01 (the
            ROAD code's default, for images scaled to about unit range).
        seed: Seed of the noise: sample `i` gets the noise of `numpy.random.default_rng(
            (seed, i))`, whatever the batch. Defaults to 0.
        tolerance: Relative residual at which the solver stops. Defaults to 1e-5.
        max_iterations: Solver iterations at most; `None`: `4 * (H + W)`.

    Returns:
        float32 like `images`.
    """
    x = np.asarray(images, np.float32)
    gray = x.ndim == 3
    x = x[..., None] if gray else x
    mask = np.asarray(removed)
    if x.ndim != 4 or mask.shape != x.shape[:3]:
        raise ValueError(
            "`images` must be (n, H, W, C) or (n, H, W) and `removed` bool (n, H, W) of the "
            f"same n, H, W. Received: images.shape={np.shape(images)}, "
            f"removed.shape={mask.shape}."
        )
    check_finite(x, "images")
    values = _noise(x.shape, noise, seed, np.arange(len(x)))
    out = _impute_arrays(x, mask, values, tolerance, max_iterations)
    return out[..., 0] if gray else out


def _noise(shape, noise, seed, keys) -> np.ndarray:
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.number)) or not (
            math.isfinite(noise) and noise >= 0):
        raise ValueError(f"`noise` must be a finite number >= 0. Received: noise={noise!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be an int >= 0. Received: seed={seed!r}.")
    return np.stack([
        np.random.default_rng((seed, *np.atleast_1d(key).tolist())).normal(0, noise, shape[1:])
        for key in keys
    ]).astype(np.float32)


def _impute_arrays(x, mask, values, tolerance, max_iterations) -> np.ndarray:
    limit = 4 * (x.shape[1] + x.shape[2]) if max_iterations is None else int(max_iterations)
    out = _impute(tf.constant(x), tf.constant(mask[..., None], tf.float32), tf.constant(values),
                  tf.constant(tolerance, tf.float32), tf.constant(limit))
    return out.numpy()


@dataclasses.dataclass
class RoadCurve:
    """What `road_curve` returns.

    Attributes:
        percentiles: float64 `(p,)`, the share of pixels removed, in percent.
        scores: float64 `(n, p)`, the target's probability on the imputed images.
        original: float64 `(n,)`, the target's probability on the intact images.
        changes: float64 `(n, p)`, `scores - original`.
    """

    percentiles: np.ndarray
    scores: np.ndarray
    original: np.ndarray
    changes: np.ndarray


def road_curve(model, images, heatmaps, targets=None, *, order="morf", percentiles=PERCENTILES,
               noise=0.01, seed=0, batch_size=32, output=0, activation="auto") -> RoadCurve:
    """ROAD's curve: the target's probability with a share of the pixels imputed.

    For each percentile `p`, the `round(p / 100 * H * W)` pixels ranked first by the map are
    removed and imputed with `noisy_linear_imputation`: the most relevant first
    (`order="morf"`: a faithful map makes the probability fall fast) or the least relevant
    first (`order="lerf"`: a faithful map keeps it). Ties are ranked in row-major order. The
    paper reports the accuracy of a model over a dataset; here the measure is each sample's
    probability of its target class (as for `deletion`), without retraining.

    Args:
        model: A Keras model taking one image input `(n, H, W, C)`.
        images: The images the maps explain, `(n, H, W, C)` (or `(n, H, W)`).
        heatmaps: Non-negative maps `(n, H, W)` at the images' size; only their order matters.
        targets: `None` (the top-1 class on each original image), an int, or one per sample.
        order: `"morf"` (most relevant first) or `"lerf"` (least relevant first).
        percentiles: Shares of pixels removed, in percent, each in [0, 100]. Defaults to
            10, 20, ..., 90 (the paper's).
        noise, seed: As for `noisy_linear_imputation` (sample `i` at percentile index `j`
            uses the seed `(seed, i, j)`).
        batch_size: Imputed images per compiled call. Defaults to 32.
        output: Index of the model output holding the class scores. Defaults to 0.
        activation: As in `average_drop`.

    Returns:
        A `RoadCurve`.

    Raises:
        ValueError: maps not `(n, H, W)`; images of another batch or size, or not finite;
            a bad `order`, percentile or `noise`; bad targets.
    """
    if order not in ("morf", "lerf"):
        raise ValueError(f"`order` must be 'morf' or 'lerf'. Received: order={order!r}.")
    shares = np.asarray(percentiles, np.float64).reshape(-1)
    if shares.size == 0 or not np.isfinite(shares).all() or (shares < 0).any() or (
            shares > 100).any():
        raise ValueError(f"`percentiles` must be numbers in [0, 100]. Received: {percentiles!r}.")
    maps = as_heatmaps(heatmaps)
    x = check_images(images, maps)
    scorer = scorer_for(model, output, activation)
    batch_size = check_batch_size(batch_size)
    original, ids = target_classes(scorer, x, targets, batch_size)
    n, height, width = maps.shape
    order_ = np.argsort(-maps.reshape(n, -1), axis=1, kind="stable")  # most relevant first
    ranks = np.empty_like(order_)
    np.put_along_axis(ranks, order_, np.arange(height * width)[None], axis=1)
    ranks = ranks.reshape(n, height, width)
    counts = np.round(shares / 100 * height * width).astype(np.int64)
    pairs = np.stack(np.meshgrid(np.arange(n), np.arange(len(shares)), indexing="ij"), -1)
    pairs = pairs.reshape(-1, 2)
    scores = np.empty(len(pairs), np.float64)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        sample, step = chunk[:, 0], chunk[:, 1]
        count = counts[step][:, None, None]
        removed = (ranks[sample] < count if order == "morf"
                   else ranks[sample] >= height * width - count)
        values = _noise(x[sample].shape, noise, seed, chunk)
        imputed = _impute_arrays(x[sample], removed, values, 1e-5, None)
        scores[start : start + len(chunk)] = scorer.probabilities(imputed, batch_size)[
            np.arange(len(chunk)), ids[sample]]
    scores = scores.reshape(n, len(shares))
    return RoadCurve(shares, scores, original, scores - original[:, None])


def road(model, images, heatmaps, targets=None, **kwargs) -> np.ndarray:
    """ROAD per sample: the mean change of the target's probability over the percentiles,
    float64 `(n,)` in [-1, 1].

    Takes the arguments of `road_curve` (`order="morf"`, `percentiles=(10, ..., 90)`,
    `noise=0.01`, `seed=0`, `batch_size=32`, `output=0`, `activation="auto"`). With
    `order="morf"` lower (a larger drop) is better; with `order="lerf"` higher (closer to 0)
    is better; pytorch-grad-cam's "ROAD combined" is `(lerf - morf) / 2`.
    """
    return road_curve(model, images, heatmaps, targets, **kwargs).changes.mean(axis=1)


def mean_road(model, images, heatmaps, targets=None, **kwargs) -> float:
    """The mean of `road` over the samples."""
    return mean(road(model, images, heatmaps, targets, **kwargs))
