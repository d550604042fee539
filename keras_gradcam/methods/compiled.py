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
from keras_gradcam.targets import PAD, check_score_count, check_scores_finite


def per_class_views(inputs, ids: tf.Tensor, data: dict):
    """Several classes per image `(n, K)`: the batch repeated K times (class slot major), the
    ids flattened to match and the target data repeated."""
    k = ids.shape[1]

    def tile(x):
        return tf.tile(x, [k] + [1] * (x.shape.rank - 1))

    flat = tf.reshape(tf.transpose(ids), [-1])
    return keras.tree.map_structure(tile, inputs), flat, {n: tile(v) for n, v in data.items()}


def step_outputs(inputs, ids: tf.Tensor, maps: tf.Tensor, run: Pass) -> dict:
    """What a compiled step returns for one batch (see `BaseCAM.collect`). With several
    classes per image (`ids` of shape `(n, K)`), maps `(n, K, ...)`, empty slots all zero."""
    finite = tf.reduce_all(
        [tf.reduce_all(tf.math.is_finite(x)) for x in keras.tree.flatten(inputs)
         if x.dtype.is_floating] or [tf.constant(True)]
    )
    n = tf.shape(ids)[0]
    out = {
        "heatmaps": maps, "targets": run.ids, "scores": run.scores,
        "class_scores": run.class_scores[:n], "probabilities": run.probabilities[:n],
        "finite": finite, "score_count": tf.shape(run.scores)[0],
        "samples": tf.shape(run.ids)[0],
    }
    if ids.shape.rank == 2:
        k, present = ids.shape[1], ids != PAD

        def per_image(t):  # (K * n, ...) -> (n, K, ...)
            t = tf.reshape(t[: k * n], tf.concat([[k, n], tf.shape(t)[1:]], 0))
            return tf.transpose(t, [1, 0, *range(2, t.shape.rank)])

        mask = tf.reshape(tf.cast(present, maps.dtype), [n, k] + [1] * (maps.shape.rank - 1))
        out.update(heatmaps=per_image(maps) * mask,
                   targets=tf.where(present, per_image(run.ids), -1),
                   scores=tf.where(present, per_image(run.scores), 0.0), present=present)
    else:
        out.update(heatmaps=maps[:n], targets=run.ids[:n], scores=run.scores[:n])
    return out


def step_signature(inputs, targets) -> tuple:
    """The specs of a step's `(inputs, ids, data)` for inputs and a `Resolved` like these,
    with an unknown batch axis (and for ids `(n, K)`, a known K)."""
    signature = keras.tree.map_structure(
        lambda x: tf.TensorSpec((None, *x.shape[1:]), x.dtype), inputs
    )
    ids = targets.ids
    ids = tf.TensorSpec((None,) if ids.ndim == 1 else (None, ids.shape[1]), tf.int32)
    data = {k: tf.TensorSpec((None, *v.shape[1:]), tf.as_dtype(v.dtype))
            for k, v in targets.data.items()}
    return signature, ids, data


def compile_step(body: Callable, signature: tuple, jit_compile: bool, inputs: Any):
    """The concrete function of `body(inputs, ids, data)` for `signature`, the specs of the
    three with an unknown batch axis.

    Raises:
        InvalidInputError: the model cannot run on such inputs (naming their shapes).
    """
    function = tf.function(
        body,
        input_signature=signature,
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


def collect_outputs(outputs: dict, target, count: int | None,
                    score_space: str, kind: str) -> Explanation:
    """The checks and conversion behind `BaseCAM.collect` (`target`: the scoring target)."""
    if not bool(outputs["finite"]):
        raise InvalidInputError(
            "`images` contain NaN or infinite values; Grad-CAM of such inputs is "
            "meaningless. Clean or re-normalise the images first."
        )
    check_score_count(target, int(outputs["score_count"]), int(outputs["samples"]))
    arrays = {k: np.asarray(outputs[k])[:count] for k in
              ("heatmaps", "targets", "scores", "class_scores", "probabilities")}
    check_scores_finite(arrays["scores"])
    if target is not None:
        arrays["targets"] = np.full(arrays["targets"].shape, target.explained_class, np.int32)
    present = np.asarray(outputs["present"])[:count] if "present" in outputs else None
    return Explanation(**arrays, score_space=score_space, kind=kind, present=present)


def run_in_chunks(step, inputs, resolved, n: int, batch_size: int, jit_compile: bool) -> list:
    """Run `step` over `n` samples in chunks of `batch_size` (the last padded to a compiled
    size under XLA). Returns `(outputs, rows used)` per chunk, still on the device: results
    come to the host after the loop, so chunks queue up back to back."""
    outputs = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        rows = padded_rows(start, stop, batch_size, jit_compile)
        if len(rows) == n:  # the whole input in one call: no slicing (eager ops cost ~1 ms)
            chunk = inputs
        elif len(rows) == stop - start:
            chunk = keras.tree.map_structure(lambda x, a=start, b=stop: x[a:b], inputs)
        else:
            chunk = keras.tree.map_structure(lambda x, rows=rows: tf.gather(x, rows), inputs)
        outputs.append((step(chunk, *resolved.rows(rows)), stop - start))
    return outputs
