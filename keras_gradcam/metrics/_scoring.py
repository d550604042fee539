"""Target-class probabilities of a model on (perturbed) images, in compiled batches.

The compiled functions of a model are kept while the model lives (a weak-keyed cache holding
only a weak reference to it), so repeated metric calls trace once; the model is never changed.
"""

from __future__ import annotations

import weakref
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_gradcam.metrics._checks import check_finite
from keras_gradcam.model import head_activation
from keras_gradcam.targets import class_ids, two_class

_ACTIVATIONS = ("auto", "softmax", None)
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class Scorer:
    """Probabilities `(batch, classes)` of one model output, plain or on perturbed images.

    `squash` applies a softmax (a sigmoid to a single unit). A single unit is a binary
    classifier, read as the explainers read it: two classes `[1 - p, p]`, class 1 the unit.
    """

    def __init__(self, model: keras.Model, output: int, squash: bool):
        model_ref = weakref.ref(model)  # the traced graphs hold the variables, not the model

        def probabilities(images):
            outputs = keras.tree.flatten(model_ref()(images, training=False))
            scores = tf.cast(outputs[output], tf.float32)
            scores = tf.reshape(scores, (-1, int(np.prod(scores.shape[1:]))))
            if scores.shape[-1] == 1:  # the single-unit rule, read as probabilities
                return two_class(tf.sigmoid(scores) if squash else scores, probability=True)
            return tf.nn.softmax(scores) if squash else scores

        def perturbed(images, ranks, cutoffs, baselines, targets, insert):
            moved = (ranks < cutoffs[:, None, None])[..., None]
            x = tf.where(moved, images, baselines) if insert else tf.where(
                moved, baselines, images
            )
            return tf.gather(probabilities(x), targets, axis=1, batch_dims=1)

        self._probabilities = tf.function(probabilities, reduce_retracing=True)
        self._perturbed = tf.function(perturbed, reduce_retracing=True)

    def probabilities(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        parts = [
            self._probabilities(tf.constant(images[i : i + batch_size])).numpy()
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(parts).astype(np.float64)

    def curves(self, images, ranks, cutoffs, baselines, targets, insert, batch_size):
        """Scores `(n, steps)`: sample i with its `cutoffs[j]` top-ranked pixels perturbed."""
        n, steps = len(images), len(cutoffs)
        scores = np.empty((n * steps,), np.float64)
        for start in range(0, n * steps, batch_size):
            pairs = np.arange(start, min(start + batch_size, n * steps))
            sample, step = pairs // steps, pairs % steps
            scores[pairs] = self._perturbed(
                tf.constant(images[sample]),
                tf.constant(ranks[sample]),
                tf.constant(cutoffs[step]),
                tf.constant(baselines[sample]),
                tf.constant(targets[sample]),
                bool(insert),
            ).numpy()
        return scores.reshape(n, steps)


def scorer_for(model, output: int, activation) -> Scorer:
    """The (cached) `Scorer` of `model`'s output `output`, after checking the arguments."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a keras.Model. Received: model of type {type(model).__name__}."
        )
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"`activation` must be 'auto', 'softmax' or None. Received: activation={activation!r}."
        )
    if isinstance(output, bool) or not isinstance(output, (int, np.integer)) or output < 0:
        raise ValueError(f"`output` must be a non-negative int. Received: output={output!r}.")
    try:
        head = head_activation(model, int(output))
    except IndexError:
        raise ValueError(
            f"`output` must index one of the model's {len(model.outputs)} outputs. "
            f"Received: output={output}."
        ) from None
    squash = activation == "softmax" or (activation == "auto" and head is None)
    scorers = _CACHE.setdefault(model, {})
    key = (int(output), squash)
    if key not in scorers:
        scorers[key] = Scorer(model, int(output), squash)
    return scorers[key]


def check_images(images: Any, maps: np.ndarray) -> np.ndarray:
    """`images` as finite float32 `(n, H, W, C)` matching maps `(n, H, W)`."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[:3] != maps.shape:
        raise ValueError(
            "`images` must be a batch (n, height, width, channels) with the heatmaps' batch and "
            f"spatial size {maps.shape}. Received: images.shape={np.shape(images)}. Explain "
            "with `resize=True` so that maps match the images."
        )
    check_finite(x, "images")
    return x


def target_classes(scorer: Scorer, images: np.ndarray, targets: Any, batch_size: int):
    """Probabilities of the target per original image, and the targets (top-1 when None)."""
    probabilities = scorer.probabilities(images, batch_size)
    ids = class_ids(targets, len(images), probabilities.shape[1])
    ids = np.where(ids < 0, probabilities.argmax(axis=1), ids).astype(np.int32)
    return probabilities[np.arange(len(images)), ids], ids
