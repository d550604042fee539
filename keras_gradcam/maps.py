"""Tensor operations on CAM maps, used inside the compiled step: resize and normalise."""

from __future__ import annotations

import tensorflow as tf


def resize_maps(maps: tf.Tensor, size: tuple[int, ...]) -> tf.Tensor:
    """Bilinearly (or trilinearly) resize maps `(batch, *spatial)` to `(batch, *size)`.

    Handles 1, 2 and 3 spatial axes. A size equal to the map's own returns it unchanged.
    """
    rank = len(size)
    if tuple(maps.shape[1:]) == tuple(size):
        return maps
    if rank == 1:
        x = tf.image.resize(maps[:, :, None, None], (size[0], 1), method="bilinear")
        return x[:, :, 0, 0]
    if rank == 2:
        return tf.image.resize(maps[..., None], size, method="bilinear")[..., 0]
    if rank == 3:  # (b, d, h, w): resize (h, w) in every depth slice, then along depth
        d, h, w = maps.shape[1:]
        x = tf.image.resize(tf.reshape(maps, (-1, h, w, 1)), size[1:], method="bilinear")
        x = tf.reshape(x, (-1, d, size[1] * size[2], 1))
        x = tf.image.resize(x, (size[0], size[1] * size[2]), method="bilinear")
        return tf.reshape(x, (-1, *size))
    raise ValueError(f"Maps must have 1 to 3 spatial axes. Received: size={size}.")


def normalize_maps(maps: tf.Tensor) -> tf.Tensor:
    """Scale each non-negative map by its maximum into [0, 1]; an all-zero map stays zero."""
    axes = list(range(1, maps.shape.rank))
    peak = tf.reduce_max(maps, axis=axes, keepdims=True)
    return tf.math.divide_no_nan(maps, peak)


def spatial_mean(x: tf.Tensor) -> tf.Tensor:
    """Mean over the spatial axes of `(batch, *spatial, channels)`: `(batch, channels)`."""
    return tf.reduce_mean(x, axis=list(range(1, x.shape.rank - 1)))


def spatial_sum(x: tf.Tensor) -> tf.Tensor:
    """Sum over the spatial axes of `(batch, *spatial, channels)`: `(batch, channels)`."""
    return tf.reduce_sum(x, axis=list(range(1, x.shape.rank - 1)))


def weighted_sum(weights: tf.Tensor, activations: tf.Tensor) -> tf.Tensor:
    """`sum_k weights[b, k] * activations[b, ..., k]`: `(batch, *spatial)`."""
    spatial = activations.shape.rank - 2
    shape = [-1] + [1] * spatial + [weights.shape[-1]]
    return tf.reduce_sum(activations * tf.reshape(weights, shape), axis=-1)
