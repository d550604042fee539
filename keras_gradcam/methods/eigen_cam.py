"""Eigen-CAM (Muhammad & Yeasin, IJCNN 2020) and its gradient-weighted variant."""

from __future__ import annotations

import tensorflow as tf

from keras_gradcam.methods.base import BaseCAM
from keras_gradcam.methods.smoothing import first_component


class EigenCAM(BaseCAM):
    """Eigen-CAM: the first principal component of the feature maps. Class-agnostic.

    With `X` the `(positions, channels)` matrix of `A` and `mu` its mean row,

        L = ReLU((X - mu) v_1),   v_1 the first right singular vector of X - mu,

    its sign chosen so that `mu . v_1 >= 0` (see `first_component`). No gradients are taken
    (one forward pass), so every target gives the same map.
    """

    name = "eigencam"
    uses_gradients = False

    def compute_maps(self, activations: tf.Tensor, gradients: tf.Tensor | None) -> tf.Tensor:
        return first_component(activations)


class EigenGradCAM(BaseCAM):
    """Eigen-Grad-CAM: the first principal component of `g * A` (class-specific).

        L^c = ReLU(first_component(g * A)),    g = d y^c / dA
    """

    name = "eigengradcam"

    def compute_maps(self, activations: tf.Tensor, gradients: tf.Tensor | None) -> tf.Tensor:
        return first_component(gradients * activations)
