"""Faithfulness metrics: does the model's confidence follow the map?

Average drop and increase in confidence (Grad-CAM++) score the image multiplied by its map
(deletion and insertion, RISE, are in `perturbation.py`). Each returns one float64 value per
sample, shape `(n,)`; its `mean_*` twin the mean over the samples.

Scores are the model's probability of the target class: with `activation="auto"` (the default)
outputs of a final softmax or sigmoid are used as they are and other outputs go through a
softmax. A single output unit is a binary classifier, two classes `[1 - p, p]` (class 1 the
unit, a sigmoid applied unless the model ends in one), as the explainers read it. The model
runs compiled, `batch_size` images at a time. The user's model is only
called, never changed.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_gradcam.inputs import check_batch_size
from keras_gradcam.metrics._checks import as_heatmaps, mean
from keras_gradcam.metrics._scoring import (
    check_images,
    scorer_for,
    target_classes,
)


def _confidences(model, images, heatmaps, targets, output, activation, batch_size):
    maps = as_heatmaps(heatmaps)
    if maps.max(initial=0.0) > 1.0 + 1e-6:
        raise ValueError(
            "`heatmaps` must lie in [0, 1] (explain with `normalize=True`). "
            f"Received a maximum of {float(maps.max())}."
        )
    x = check_images(images, maps)
    scorer = scorer_for(model, output, activation)
    batch_size = check_batch_size(batch_size)
    before, ids = target_classes(scorer, x, targets, batch_size)
    after = scorer.probabilities(x * maps[..., None], batch_size)[np.arange(len(x)), ids]
    return before, after


def average_drop(
    model: keras.Model,
    images: Any,
    heatmaps: Any,
    targets: Any = None,
    *,
    batch_size: int = 32,
    output: int = 0,
    activation: str | None = "auto",
) -> np.ndarray:
    """Relative drop in the target's probability when the image is multiplied by its map.

    Chattopadhyay et al., "Grad-CAM++: Generalized Gradient-based Visual Explanations for
    Deep Convolutional Networks" (WACV 2018, sec. 5.1): with `Y` the probability of the target
    class on the image and `O` on the explanation map `image * heatmap` (the map, in [0, 1],
    multiplied into every channel, so 0 in the model's input space is the baseline), the
    drop is `max(0, Y - O) / Y` (0 when `Y` is 0). The paper's "Average Drop %" is
    `100 * mean_average_drop(...)`. Lower is better.

    Args:
        model: A Keras model taking one image input `(n, H, W, C)`.
        images: The images the maps explain, `(n, H, W, C)` (or `(n, H, W)` for one channel).
        heatmaps: Maps `(n, H, W)` in [0, 1], at the images' size.
        targets: `None` (the top-1 class on each image), an int, or one class per sample.
        batch_size: Images per model call. Defaults to 32.
        output: Index of the model output holding the class scores. Defaults to 0.
        activation: `"auto"` (probabilities from a final softmax/sigmoid as they are, a
            softmax over other outputs), `"softmax"` (always apply one) or `None` (raw outputs).

    Returns:
        float64 `(n,)` in [0, 1].

    Raises:
        ValueError: maps not `(n, H, W)` in [0, 1]; images of another batch or size, or not
            finite; targets of the wrong length or range.
    """
    before, after = _confidences(model, images, heatmaps, targets, output, activation, batch_size)
    drop = np.maximum(before - after, 0.0)
    return np.divide(drop, before, out=np.zeros_like(drop), where=before > 0)


def increase_in_confidence(
    model: keras.Model,
    images: Any,
    heatmaps: Any,
    targets: Any = None,
    *,
    batch_size: int = 32,
    output: int = 0,
    activation: str | None = "auto",
) -> np.ndarray:
    """Whether the target's probability rises on the image multiplied by its map: 1.0 or 0.0.

    Chattopadhyay et al., Grad-CAM++ (WACV 2018, sec. 5.1): 1.0 when `O > Y` (see
    `average_drop` for `Y`, `O` and the arguments). The paper's "% Increase in Confidence" is
    `100 * mean_increase_in_confidence(...)`. Higher is better.

    Returns:
        float64 `(n,)` of 1.0 and 0.0.
    """
    before, after = _confidences(model, images, heatmaps, targets, output, activation, batch_size)
    return (after > before).astype(np.float64)


def mean_average_drop(model, images, heatmaps, targets=None, **kwargs) -> float:
    """The mean of `average_drop` (the Grad-CAM++ paper's Average Drop, as a fraction)."""
    return mean(average_drop(model, images, heatmaps, targets, **kwargs))


def mean_increase_in_confidence(model, images, heatmaps, targets=None, **kwargs) -> float:
    """The mean of `increase_in_confidence` (the share of samples whose confidence rises)."""
    return mean(increase_in_confidence(model, images, heatmaps, targets, **kwargs))
