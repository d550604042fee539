"""Score-CAM's masked forward passes, compiled and batched inside the step."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_gradcam.inputs import require_image
from keras_gradcam.maps import resize_maps
from keras_gradcam.model import unchanged


def pair_scores(run, count: int, chunk: int, perturb) -> tf.Tensor:
    """The explained score of every (sample, slot) pair of a run: `(batch, count)`.

    `perturb(sample, slot)` gets `(chunk,)` index tensors and returns the model inputs and the
    capture of that chunk's pairs. The `batch * count` perturbed passes run `chunk` at a time
    in a `tf.while_loop` (the last chunk padded to keep shapes static), never all at once.
    """
    total = tf.shape(run.ids)[0] * count
    steps = (total + chunk - 1) // chunk

    def body(i, scores):
        pair = tf.minimum(i * chunk + tf.range(chunk), total - 1)
        sample, slot = pair // count, pair % count
        inputs, capture = perturb(sample, slot)
        _, outputs = run.score_model(inputs, capture)
        data = {k: tf.gather(v, sample) for k, v in run.data.items()}
        value = run.rule(outputs, tf.gather(run.ids, sample), run.target, data).scores
        return i + 1, scores.write(i, value)

    array = tf.TensorArray(tf.float32, size=steps, element_shape=(chunk,))
    _, array = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), array))
    return tf.reshape(tf.reshape(array.stack(), [-1])[:total], [-1, count])


def pair_masks(activations: tf.Tensor, sample: tf.Tensor, channel: tf.Tensor,
               size: tuple[int, ...]) -> tf.Tensor:
    """`channel_masks` of the `(sample, channel)` pairs only: `(pairs, *size)`.

    Score-CAM builds its masks chunk by chunk with this, so that one chunk of masks is in
    memory, not `batch * channels` (ResNet50: 2048 x 224 x 224 floats per image).
    """
    rank = activations.shape.rank
    maps = tf.gather_nd(tf.transpose(activations, [0, rank - 1, *range(1, rank - 1)]),
                        tf.stack([sample, channel], axis=1))
    x = resize_maps(maps, size)
    axes = list(range(1, x.shape.rank))
    low = tf.reduce_min(x, axis=axes, keepdims=True)
    high = tf.reduce_max(x, axis=axes, keepdims=True)
    return tf.math.divide_no_nan(x - low, high - low)


def masked_scores(run, activations: tf.Tensor, size: tuple[int, ...], chunk: int,
                  vary=None) -> tf.Tensor:
    """The explained score of every (sample, channel) pair: `(batch, channels)`, the image
    input multiplied by the channel's mask (see `pair_scores`). The masks are built chunk by
    chunk (`pair_masks`); `vary(masks, channel)`, if given, changes each chunk's masks."""
    leaves = keras.tree.flatten(run.inputs)
    index = require_image(run.inputs, len(size), "Score-CAM")
    channel_axis = leaves[index].shape.rank == len(size) + 2

    def perturb(sample, channel):
        mask = pair_masks(activations, sample, channel, size)
        mask = vary(mask, channel) if vary is not None else mask
        mask = mask[..., None] if channel_axis else mask
        chunk_leaves = [tf.gather(x, sample) for x in leaves]
        chunk_leaves[index] = chunk_leaves[index] * tf.cast(mask, leaves[index].dtype)
        return keras.tree.pack_sequence_as(run.inputs, chunk_leaves), unchanged

    return pair_scores(run, activations.shape[-1], chunk, perturb)


def averaged_scores(run, activations: tf.Tensor, size: tuple[int, ...], chunk: int, draws: int,
                    draw_masks) -> tf.Tensor:
    """The mean over `draws` of `masked_scores` with the masks of draw `j = 0, 1, ...` varied
    by `draw_masks(masks, channel, j)` (`masks` `(pairs, *size)`, `channel` `(pairs,)`, `j` an
    int32 scalar tensor).

    The draws run one after the other in a `tf.while_loop` (SS-CAM's noisy masks, IS-CAM's
    scaled masks).

    Returns:
        `(batch, channels)`.
    """
    total = tf.zeros([tf.shape(activations)[0], activations.shape[-1]], tf.float32)

    def body(j, total):
        def vary(masks, channel):
            return draw_masks(masks, channel, j)

        return j + 1, total + masked_scores(run, activations, size, chunk, vary)

    _, total = tf.while_loop(lambda j, _: j < draws, body, (tf.constant(0), total))
    return total / draws
