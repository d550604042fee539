"""Seeded Gaussian noise for the smoothed methods (SS-CAM, Smooth Grad-CAM++), drawn inside
the compiled step."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf


def check_sigma(value, name: str = "sigma") -> float:
    """`value` as a float, or a ValueError naming `name` when it is not a finite number >= 0."""
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
            or not math.isfinite(value) or value < 0):
        raise ValueError(f"`{name}` must be a finite number >= 0. Received: {name}={value!r}.")
    return float(value)


def check_seed(seed) -> int:
    """`seed` as an int, or a TypeError when it is not one."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"`seed` must be an int. Received: seed={seed!r}.")
    return int(seed)


def draw_noise(shape, seed: int, draw) -> tf.Tensor:
    """Standard normal float32 noise of `shape` for draw number `draw` (an int or an int32
    scalar tensor).

    A function of `(seed, draw)` only: the same for every sample of a batch and on every
    call, so a batch gives exactly its samples' maps one by one, and results are reproducible.
    It is computed from a 32-bit integer hash of `(seed, draw, position)` (Box-Muller on two
    uniforms), plain integer and float ops that give the same noise with and without XLA and
    on every device, unlike TensorFlow's stateless RNG ops (whose XLA kernels draw other
    numbers inside loops).
    """
    key = _mix(tf.bitwise.bitwise_xor(
        _mix(tf.constant(seed % 2**32, tf.uint32)),
        tf.cast(draw, tf.uint32) * tf.constant(0x9E3779B9, tf.uint32),
    ))
    index = tf.cast(tf.range(int(np.prod(shape)), dtype=tf.int32), tf.uint32) * 2

    def uniform(offset):  # in (0, 1)
        bits = _mix(tf.bitwise.bitwise_xor(index + tf.constant(offset, tf.uint32), key))
        return (tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) + 0.5) / 2.0**24

    radius = tf.sqrt(-2.0 * tf.math.log(uniform(0)))
    return tf.reshape(radius * tf.cos(2.0 * math.pi * uniform(1)), shape)


def _mix(x: tf.Tensor) -> tf.Tensor:
    """A well-mixed 32-bit integer hash (Wellons' "lowbias32") of a uint32 tensor."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = x * tf.constant(0x7FEB352D, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))
    x = x * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
