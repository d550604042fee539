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
    """
    seeds = tf.stack([tf.constant(seed % 2**31, tf.int32), tf.cast(draw, tf.int32)])
    return tf.random.stateless_normal(shape, seeds, dtype=tf.float32)
