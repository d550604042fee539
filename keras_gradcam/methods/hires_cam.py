"""HiResCAM (Draelos & Carin, 2020, arXiv:2011.08891)."""

from __future__ import annotations

import tensorflow as tf

from keras_gradcam.methods.base import BaseCAM


class HiResCAM(BaseCAM):
    """HiResCAM: gradients times feature maps, element-wise, before summing over channels.

        L^c = ReLU(sum_k g^k * A^k),    g = d y^c / dA

    Grad-CAM averages `g` over positions first, which can highlight places the model does not
    use. Without the averaging the map is faithful: for a CNN ending in global average pooling
    and one dense layer, the map before the ReLU sums over positions to `y^c - b_c` (the logit
    without its bias), each position's share of the score.
    """

    name = "hirescam"

    def weighted_activations(self, activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
        return gradients * activations
