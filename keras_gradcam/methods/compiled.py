"""Compiling the step: one `tf.function` with an unknown batch dimension per input signature,
its outputs, and the chunk rows that keep XLA to a handful of shapes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_gradcam.errors import InvalidInputError, KerasGradCAMError
from keras_gradcam.explanation import Explanation
from keras_gradcam.methods.forward import Pass
from keras_gradcam.targets import check_score_count, check_scores_finite


def step_outputs(inputs, ids: tf.Tensor, maps: tf.Tensor, run: Pass) -> dict:
    """What a compiled step returns for one batch (see `BaseCAM.collect`)."""
    finite = tf.reduce_all(
        [tf.reduce_all(tf.math.is_finite(x)) for x in keras.tree.flatten(inputs)
         if x.dtype.is_floating] or [tf.constant(True)]
    )
    n = tf.shape(ids)[0]
    return {
        "heatmaps": maps, "targets": run.ids[:n], "scores": run.scores[:n],
        "class_scores": run.class_scores[:n], "probabilities": run.probabilities[:n],
        "finite": finite, "score_count": tf.shape(run.scores)[0],
        "samples": tf.shape(run.ids)[0],
    }


def compile_step(body: Callable, signature: Any, jit_compile: bool, inputs: Any):
    """The concrete function of `body(inputs, ids)` for `signature` (batch axis unknown).

    Raises:
        InvalidInputError: the model cannot run on such inputs (naming their shapes).
    """
    function = tf.function(
        body,
        input_signature=(signature, tf.TensorSpec((None,), tf.int32)),
        jit_compile=jit_compile,
        autograph=False,  # plain graph code; our own errors reach the user unwrapped
    )
    try:
        # The concrete function: calling it skips tf.function's per-call signature matching.
        return function.get_concrete_function()
    except KerasGradCAMError:
        raise
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
        shapes = keras.tree.map_structure(lambda x: tuple(x.shape), inputs)
        raise InvalidInputError(
            f"The model could not run on inputs of shape {shapes}: "
            f"{str(error).strip().splitlines()[0]} Check that the inputs match the model's "
            "input shape and dtype."
        ) from error


def padded_rows(start: int, stop: int, batch_size: int, pad: bool) -> np.ndarray:
    """Row indices of one chunk. With `pad` (XLA), padded by repeating the last row to a power
    of two, at most `batch_size`, so XLA compiles a handful of shapes instead of one per batch
    size; maps are per sample, so padding never changes them."""
    rows = np.arange(start, stop)
    if pad:
        size = min(batch_size, 1 << (len(rows) - 1).bit_length())
        rows = np.concatenate([rows, np.full(max(size - len(rows), 0), stop - 1)])
    return rows


def collect_outputs(outputs: dict, target_fn: Callable | None, count: int | None,
                    score_space: str, kind: str) -> Explanation:
    """The checks and conversion behind `BaseCAM.collect`."""
    if not bool(outputs["finite"]):
        raise InvalidInputError(
            "`images` contain NaN or infinite values; Grad-CAM of such inputs is "
            "meaningless. Clean or re-normalise the images first."
        )
    check_score_count(target_fn, int(outputs["score_count"]), int(outputs["samples"]))
    arrays = {k: np.asarray(outputs[k])[:count] for k in
              ("heatmaps", "targets", "scores", "class_scores", "probabilities")}
    check_scores_finite(arrays["scores"])
    if target_fn is not None:
        arrays["targets"] = np.full(len(arrays["targets"]), -1, np.int32)
    return Explanation(**arrays, score_space=score_space, kind=kind)
