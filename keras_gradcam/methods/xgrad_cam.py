"""XGrad-CAM (Fu et al., BMVC 2020)."""

from __future__ import annotations

import tensorflow as tf

from keras_gradcam.maps import spatial_sum
from keras_gradcam.methods.base import BaseCAM

EPSILON = 1e-7


class XGradCAM(BaseCAM):
    """XGrad-CAM: gradients averaged with the feature maps as weights.

        w_k = sum_ij g_ij^k A_ij^k / (sum_ij A_ij^k + eps),   eps = 1e-7
        L^c = ReLU(sum_k w_k A^k)

    Derived from two axioms (sensitivity and conservation); for ReLU feature maps the map
    sums (nearly) to `sum_k sum_ij g A`, HiResCAM's total.
    """

    name = "xgradcam"

    def channel_weights(self, activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
        return spatial_sum(gradients * activations) / (spatial_sum(activations) + EPSILON)
