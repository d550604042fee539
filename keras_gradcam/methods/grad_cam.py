"""Grad-CAM (Selvaraju et al., ICCV 2017)."""

from __future__ import annotations

import tensorflow as tf

from keras_gradcam.maps import spatial_mean
from keras_gradcam.methods.base import BaseCAM


class GradCAM(BaseCAM):
    """Grad-CAM: feature maps weighted by their spatially averaged gradients.

    For the score `y^c` before the softmax and feature maps `A^k` of the chosen layer:

        alpha_k^c = 1/Z sum_ij d y^c / d A^k_ij                 (eq. 2)
        L^c       = ReLU(sum_k alpha_k^c A^k)                   (eq. 1)

    Gradients are averaged over the spatial axes only, so a batch gives the maps of its
    samples one by one.

    Example:

    >>> cam = GradCAM(model)                  # last spatial layer
    >>> heatmaps = cam(images)                # (batch, H, W) in [0, 1], top-1 class
    >>> raw = cam(images, 3, resize=False, normalize=False)
    """

    name = "gradcam"

    def channel_weights(self, activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
        return spatial_mean(gradients)
