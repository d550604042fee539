"""KPCA-CAM (Karmani et al., 2024): Eigen-CAM with kernel PCA."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_gradcam.methods.base import BaseCAM


class KPCACAM(BaseCAM):
    """KPCA-CAM: the feature maps' first kernel principal component over positions. Class-agnostic.

    With `x_i` the feature vector (channels) at position `i` of one sample and `n` positions:

        K_ij  = exp(-gamma ||x_i - x_j||^2)                  (RBF kernel)
        gamma = 1 / mean_ij ||x_i - x_j||^2                  (default, per image)
        K~    = (I - 1/n) K (I - 1/n)                        (centred in feature space)
        K~ a  = lambda a,  |a| = 1,  lambda the largest eigenvalue
        L     = ReLU(sqrt(lambda) a)

    `sqrt(lambda) a_i` is the projection of position `i`'s centred feature-space image on the
    first principal axis (Schoelkopf et al. 1998), what scikit-learn's `KernelPCA` returns.

    Choices where implementations differ:

    - Kernel: RBF. pytorch-grad-cam's `KPCA_CAM` defaults to a sigmoid kernel
      `tanh(gamma <x_i, x_j> + 1)` on mean-centred features.
    - `gamma`: defaults to the inverse of the mean squared distance between the image's
      positions (`2 sum_k var_k`), so the kernel's width follows the activations' scale and
      a map does not change when they are rescaled. scikit-learn's (and so pytorch-grad-cam's)
      default is `1 / channels`: on the ReLU maps of a trained CNN `gamma ||x_i - x_j||^2` is
      then mostly far above 1 (median 24 on the 10x10x32 maps of notebook 03's model), `K` is
      nearly the identity and the first component singles out a few isolated positions
      (pointing game 0.20 there, against 0.99 with the default here). Smaller `gamma` tends
      to Eigen-CAM (the RBF kernel becomes linear in `<x_i, x_j>` after centring).
    - Sign: an eigenvector's sign is arbitrary. As Eigen-CAM's rule keeps the map positive
      where the features are strongest, the sign is chosen so that the map correlates
      non-negatively with each position's channel sum `sum_k A_ik`. (Eigen-CAM's own rule,
      a positive mean projection, would favour the densest positions in feature space, usually
      the background, under an RBF kernel.) pytorch-grad-cam inherits scikit-learn's rule:
      the entry of largest magnitude is positive.

    No gradients are taken (one forward pass), so every target gives the same map. The cost
    is an eigendecomposition of a `(positions, positions)` matrix per image: fine for the
    7x7 to 28x28 maps of late layers, slow beyond.

    Args:
        gamma: RBF kernel coefficient, a positive float used for every image; `None`
            (default) takes `1 / mean_ij ||x_i - x_j||^2` per image.
        **kwargs: As for `BaseCAM`.
    """

    name = "kpcacam"
    uses_gradients = False

    def __init__(self, model, layer=None, *, gamma: float | None = None, **kwargs):
        if gamma is not None and (
            isinstance(gamma, bool) or not isinstance(gamma, (int, float, np.number))
            or not np.isfinite(gamma) or gamma <= 0
        ):
            raise ValueError(
                f"`gamma` must be a positive float or None. Received: gamma={gamma!r}."
            )
        super().__init__(model, layer, **kwargs)
        self.gamma = None if gamma is None else float(gamma)

    def compute_maps(self, activations: tf.Tensor, gradients: tf.Tensor | None) -> tf.Tensor:
        return kernel_first_component(activations, self.gamma)


def kernel_first_component(x: tf.Tensor, gamma: float | None = None) -> tf.Tensor:
    """Projection of each position on the first RBF kernel principal component, signed to
    correlate with the channel sum (see `KPCACAM`): `(batch, *spatial, channels)` ->
    `(batch, *spatial)`. `gamma=None`: `1 / mean squared distance` per image (0 when all
    positions are equal, which gives a zero map)."""
    flat = tf.reshape(x, [tf.shape(x)[0], -1, x.shape[-1]])
    norms = tf.reduce_sum(tf.square(flat), axis=-1)
    squared = norms[:, :, None] + norms[:, None, :] - 2.0 * tf.matmul(flat, flat, transpose_b=True)
    squared = tf.nn.relu(squared)
    if gamma is None:
        gamma = tf.math.divide_no_nan(1.0, tf.reduce_mean(squared, axis=[1, 2], keepdims=True))
    kernel = tf.exp(-gamma * squared)
    centred = (kernel - tf.reduce_mean(kernel, axis=1, keepdims=True)
               - tf.reduce_mean(kernel, axis=2, keepdims=True)
               + tf.reduce_mean(kernel, axis=[1, 2], keepdims=True))
    values, vectors = tf.linalg.eigh(centred)  # ascending eigenvalues
    projection = vectors[..., -1] * tf.sqrt(tf.nn.relu(values[..., -1]))[:, None]
    strength = tf.reduce_sum(flat, axis=-1)
    strength -= tf.reduce_mean(strength, axis=-1, keepdims=True)
    sign = tf.where(tf.reduce_sum(projection * strength, axis=-1) < 0, -1.0, 1.0)
    return tf.reshape(projection * sign[:, None], [-1, *x.shape[1:-1]])
