"""LayerCAM (Jiang et al., IEEE TIP 2021)."""

from __future__ import annotations

import tensorflow as tf

from keras_gradcam.methods.base import BaseCAM


class LayerCAM(BaseCAM):
    """LayerCAM: each position of a feature map weighted by its own positive gradient.

        L^c = ReLU(sum_k ReLU(g^k) * A^k),    g = d y^c / dA

    Reliable on shallow layers too; combine several with `layer=[...]`. Where every gradient
    is positive it equals HiResCAM.
    """

    name = "layercam"

    def weighted_activations(self, activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
        return tf.nn.relu(gradients) * activations
