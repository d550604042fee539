"""Grad-CAM element-wise (pytorch-grad-cam's `GradCAMElementWise`)."""

from __future__ import annotations

import tensorflow as tf

from keras_gradcam.methods.base import BaseCAM


class GradCAMElementWise(BaseCAM):
    """HiResCAM with a ReLU per channel: only positive gradient x activation terms count.

        L^c = ReLU(sum_k ReLU(g^k * A^k)),    g = d y^c / dA

    A channel that lowers the score at a position cannot cancel one that raises it there.
    """

    name = "gradcam-elementwise"

    def weighted_activations(self, activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
        return tf.nn.relu(gradients * activations)
