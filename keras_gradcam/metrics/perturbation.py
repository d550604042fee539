"""RISE's deletion and insertion metrics: the model's confidence as pixels go or come.

Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of Black-box Models"
(BMVC 2018, sec. 4.1). Each metric returns one float64 value per sample, shape `(n,)`; its
`mean_*` twin the mean; `*_curve` the whole curves. The model runs in compiled batches of
`batch_size` perturbed images: memory stays bounded whatever the number of samples and steps.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from keras_gradcam.inputs import check_batch_size
from keras_gradcam.metrics._checks import as_heatmaps, check_finite, mean
from keras_gradcam.metrics._scoring import (
    check_images,
    scorer_for,
    target_classes,
)


@dataclasses.dataclass
class PerturbationCurve:
    """What `deletion_curve` and `insertion_curve` return.

    Attributes:
        fractions: float64 `(steps + 1,)`, the share of pixels removed (deletion) or added
            (insertion) at each step, from 0 to 1.
        scores: float64 `(n, steps + 1)`, the target's probability at each step.
        areas: float64 `(n,)`, the area under each curve (trapezoid rule over `fractions`).
    """

    fractions: np.ndarray
    scores: np.ndarray
    areas: np.ndarray


def _curve(model, images, heatmaps, targets, steps, baseline, batch_size, output, activation,
           insert) -> PerturbationCurve:
    maps = as_heatmaps(heatmaps)
    x = check_images(images, maps)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"`steps` must be a positive int. Received: steps={steps!r}.")
    scorer = scorer_for(model, output, activation)
    batch_size = check_batch_size(batch_size)
    _, ids = target_classes(scorer, x, targets, batch_size)
    n, height, width = maps.shape
    order = np.argsort(-maps.reshape(n, -1), axis=1, kind="stable")  # most salient first
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(height * width)[None], axis=1)
    ranks = ranks.reshape(n, height, width).astype(np.int32)
    cutoffs = np.round(np.linspace(0, height * width, steps + 1)).astype(np.int32)
    baselines = _baselines(baseline, x)
    scores = scorer.curves(x, ranks, cutoffs, baselines, ids, insert, batch_size)
    fractions = cutoffs / (height * width)
    areas = ((scores[:, 1:] + scores[:, :-1]) / 2 * np.diff(fractions)).sum(axis=1)
    return PerturbationCurve(fractions=fractions, scores=scores, areas=areas)


def _baselines(baseline, images: np.ndarray) -> np.ndarray:
    if isinstance(baseline, str):
        if baseline != "blur":
            raise ValueError(
                f"`baseline` must be a number, an array or 'blur'. Received: {baseline!r}."
            )
        return gaussian_blur(images)
    try:
        values = np.asarray(baseline, np.float32)
        broadcast = np.broadcast_to(values, images.shape)
    except ValueError:
        raise ValueError(
            f"`baseline` must broadcast to the images' shape {images.shape}. "
            f"Received: baseline.shape={np.shape(baseline)}."
        ) from None
    check_finite(values, "baseline")
    return broadcast


def gaussian_blur(images: np.ndarray, size: int = 11, sigma: float = 5.0) -> np.ndarray:
    """RISE's insertion baseline: a Gaussian blur (11 x 11 kernel, sigma 5, reflected edges).

    Images with a side of at most `size // 2` pixels become their mean colour instead.
    """
    x = tf.constant(images, tf.float32)
    taps = np.exp(-((np.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    taps = tf.constant(taps / taps.sum(), tf.float32)
    channels = images.shape[-1]
    pad = size // 2
    if min(images.shape[1:3]) <= pad:  # too small to reflect: the mean colour of each image
        return np.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape).copy()
    x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    rows = tf.tile(tf.reshape(taps, (size, 1, 1, 1)), (1, 1, channels, 1))
    cols = tf.tile(tf.reshape(taps, (1, size, 1, 1)), (1, 1, channels, 1))
    x = tf.nn.depthwise_conv2d(x, rows, (1, 1, 1, 1), "VALID")
    x = tf.nn.depthwise_conv2d(x, cols, (1, 1, 1, 1), "VALID")
    return x.numpy()


_CURVE_ARGS = """
    Args:
        model: A Keras model taking one image input `(n, H, W, C)`.
        images: The images the maps explain, `(n, H, W, C)` (or `(n, H, W)` for one channel).
        heatmaps: Non-negative maps `(n, H, W)` at the images' size; only their order matters.
        targets: `None` (the top-1 class on each original image), an int, or one per sample.
        steps: Number of steps; step `k` perturbs the `round(k * H * W / steps)` most salient
            pixels (all channels of a pixel together; ties in row-major order). Defaults to
            100. (RISE used 224 steps of 224 pixels on 224 x 224 images.)
        baseline: What a removed pixel becomes, or an added pixel starts from: a number, an
            array broadcastable to the images, or `"blur"` (`gaussian_blur`).
        batch_size: Perturbed images per compiled model call (never more held at once).
            Defaults to 32.
        output: Index of the model output holding the class scores. Defaults to 0.
        activation: As in `average_drop`.

    Raises:
        ValueError: maps not `(n, H, W)`; images of another batch or size, or not finite;
            `steps` not a positive int; a baseline that does not broadcast or is not finite;
            bad targets.
"""


def deletion_curve(model, images, heatmaps, targets=None, *, steps=100, baseline=0.0,
                   batch_size=32, output=0, activation="auto") -> PerturbationCurve:
    """RISE's deletion curve: the target's probability as the most salient pixels are removed.

    Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of Black-box Models"
    (BMVC 2018, sec. 4.1): pixels are replaced by the baseline (0 by default, as in RISE)
    in decreasing order of the map, and the probability of the target class is recorded
    after each step, from the intact image (fraction 0) to the fully removed one (fraction 1).
    A faithful map makes it fall fast: a lower area is better.
    """
    return _curve(model, images, heatmaps, targets, steps, baseline, batch_size, output,
                  activation, insert=False)


def insertion_curve(model, images, heatmaps, targets=None, *, steps=100, baseline="blur",
                    batch_size=32, output=0, activation="auto") -> PerturbationCurve:
    """RISE's insertion curve: the target's probability as the most salient pixels are added.

    Petsiuk et al., RISE (BMVC 2018, sec. 4.1): starting from the baseline (a blurred copy
    of the image by default, as in RISE), the image's pixels are put back in decreasing order
    of the map. A faithful map makes it rise fast: a higher area is better.
    """
    return _curve(model, images, heatmaps, targets, steps, baseline, batch_size, output,
                  activation, insert=True)


_CURVE_RETURNS = """
    Returns:
        A `PerturbationCurve` with `fractions`, `scores` `(n, steps + 1)` and `areas` `(n,)`.
"""
deletion_curve.__doc__ += _CURVE_ARGS + _CURVE_RETURNS
insertion_curve.__doc__ += _CURVE_ARGS + _CURVE_RETURNS


def deletion(model, images, heatmaps, targets=None, **kwargs) -> np.ndarray:
    """Area under RISE's deletion curve per sample, float64 `(n,)` in [0, 1]; lower is better.

    Takes the arguments of `deletion_curve` (`steps=100`, `baseline=0.0`, `batch_size=32`,
    `output=0`, `activation="auto"`) and returns its `areas`.
    """
    return deletion_curve(model, images, heatmaps, targets, **kwargs).areas


def insertion(model, images, heatmaps, targets=None, **kwargs) -> np.ndarray:
    """Area under RISE's insertion curve per sample, float64 `(n,)` in [0, 1]; higher is better.

    Takes the arguments of `insertion_curve` (`steps=100`, `baseline="blur"`, `batch_size=32`,
    `output=0`, `activation="auto"`) and returns its `areas`.
    """
    return insertion_curve(model, images, heatmaps, targets, **kwargs).areas


def mean_deletion(model, images, heatmaps, targets=None, **kwargs) -> float:
    """The mean deletion area (see `deletion`)."""
    return mean(deletion(model, images, heatmaps, targets, **kwargs))


def mean_insertion(model, images, heatmaps, targets=None, **kwargs) -> float:
    """The mean insertion area (see `insertion`)."""
    return mean(insertion(model, images, heatmaps, targets, **kwargs))
