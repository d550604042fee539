"""What to explain: a class per sample, the top-1 class, or a callable on the model outputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from keras_gradcam.errors import InvalidTargetError

Targets = int | Sequence[int] | np.ndarray | Callable | None

TOP1 = -1  # class id meaning "the highest-scoring class of this sample"


def class_ids(targets: Targets, batch: int, num_classes: int | None) -> np.ndarray:
    """Turn `targets` into one int32 class id per sample (`TOP1` for the top-1 class).

    Args:
        targets: `None` (top-1), an int (that class for every sample) or one class per sample.
        batch: Number of samples.
        num_classes: Size of the explained output's last axis, if known.

    Returns:
        An int32 array of shape `(batch,)`.

    Raises:
        InvalidTargetError: wrong length, type or class range.
    """
    if targets is None:
        return np.full((batch,), TOP1, np.int32)
    if isinstance(targets, (bool, np.bool_)):
        raise InvalidTargetError(f"`targets` must be class indices. Received: targets={targets!r}.")
    if isinstance(targets, (int, np.integer)):
        ids = np.full((batch,), int(targets), np.int64)
    else:
        ids = np.asarray(targets)
        if ids.ndim != 1 or not (ids.dtype.kind in "iu" or ids.size == 0):
            raise InvalidTargetError(
                "`targets` must be None, an int, one int class per sample, or a callable. "
                f"Received: targets with shape {ids.shape} and dtype {ids.dtype}."
            )
        if len(ids) != batch:
            raise InvalidTargetError(
                f"`targets` must hold one class per image: expected {batch} values, "
                f"received {len(ids)}. Pass an int to explain the same class for all images."
            )
    if num_classes is not None and ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        bad = ids[(ids < 0) | (ids >= num_classes)]
        raise InvalidTargetError(
            f"Target classes must lie in [0, {num_classes - 1}] (the explained output has "
            f"{num_classes} units). Received out-of-range classes: {sorted(set(bad.tolist()))}."
        )
    return ids.astype(np.int32)


def class_scores(explained: tf.Tensor, probability: bool = False) -> tf.Tensor:
    """Per-class scores `(batch, classes)` of the explained output.

    Dense outputs (segmentation) are summed over their positions. A single unit (a binary
    classifier) becomes two classes: class 1 is the unit, class 0 its complement (`-z` for a
    logit, `1 - p` for a probability), so `targets=0` explains the negative class.
    """
    scores = tf.cast(explained, tf.float32)
    if scores.shape.rank == 1:
        scores = scores[:, None]
    if scores.shape.rank > 2:
        scores = tf.reduce_sum(scores, axis=list(range(1, scores.shape.rank - 1)))
    if scores.shape[-1] == 1:
        scores = tf.concat([1.0 - scores if probability else -scores, scores], axis=-1)
    return scores


def select_scores(per_class: tf.Tensor, ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Pick one score per sample, `per_class[i, ids[i]]`, the top-1 class where `ids` is `TOP1`.

    Returns:
        `(score, ids)`: scores of shape `(batch,)` and the class ids used (top-1 resolved).
    """
    top1 = tf.argmax(per_class, axis=-1, output_type=tf.int32)
    ids = tf.where(ids < 0, top1, ids)
    return tf.gather(per_class, ids, axis=1, batch_dims=1), ids


def call_target(fn: Callable, outputs: list) -> tf.Tensor:
    """Apply a user's target callable to the outputs and check it gives one score per sample."""
    value = fn(outputs[0] if len(outputs) == 1 else outputs)
    value = tf.convert_to_tensor(value)
    if value.shape.rank != 1:
        raise InvalidTargetError(
            "A target callable must return one score per sample, shape (batch,). "
            f"Received a tensor of shape {tuple(value.shape)}; reduce it, e.g. with "
            "`keras.ops.sum(..., axis=...)`."
        )
    return tf.cast(value, tf.float32)
