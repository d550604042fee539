"""CAM: class activation mapping (Zhou et al., CVPR 2016)."""

from __future__ import annotations

import tensorflow as tf

from keras_gradcam.errors import ModelNotSupportedError
from keras_gradcam.maps import weighted_sum
from keras_gradcam.methods.base import BaseCAM, Pass
from keras_gradcam.methods.cam_head import find_dense_head
from keras_gradcam.targets import unit_sign


class CAM(BaseCAM):
    """CAM: feature maps weighted by the dense layer that reads their global average.

    For a model `A -> GAP -> dense` with kernel `W` (channels, classes), `y^c = b_c +
    sum_k W_kc mean_ij A^k_ij`, and

        L^c = ReLU(sum_k W_kc A^k)

    No gradients are taken (one forward pass). Grad-CAM reduces to CAM on such models, up to
    the factor `1/(h w)` that normalisation removes. Dropout, flatten and activation layers may
    sit between the pooling and the dense layer.

    Raises:
        ModelNotSupportedError: (at construction) the layer is not followed by global average
            pooling and a dense layer producing the explained output (`output=`); and, when
            called, for callable targets (CAM explains classes).
    """

    name = "cam"
    uses_gradients = False

    def __init__(self, model, layer=None, **kwargs):
        super().__init__(model, layer, **kwargs)
        self.dense_layers = [
            find_dense_head(model, path, self.output_index) for path in self.paths
        ]
        self._kernels = {id(m): d for m, d in zip(self.score_models, self.dense_layers)}

    def resolve_targets(self, targets, samples: int):
        resolved = super().resolve_targets(targets, samples)
        if resolved.target is not None:
            raise ModelNotSupportedError(
                "CAM explains classes and cannot use a callable target or another scoring target "
                f"({resolved.target.describe()}). Pass class indices, or use a gradient method "
                "such as GradCAM for custom scores."
            )
        return resolved

    resolve_targets.__doc__ = BaseCAM.resolve_targets.__doc__

    def layer_maps(self, run: Pass) -> tf.Tensor:
        dense = self._kernels[id(run.score_model)]
        return weighted_sum(self.class_weights(dense.kernel, run.ids), run.activations)

    @staticmethod
    def class_weights(kernel: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
        """The kernel columns of the explained classes: `(batch, channels)`.

        A single unit is a binary classifier with scores `[-z, z]`: class 1 takes the column,
        class 0 its negative."""
        kernel = tf.cast(kernel, tf.float32)
        if kernel.shape[-1] == 1:
            return unit_sign(ids)[:, None] * tf.transpose(kernel)
        return tf.transpose(tf.gather(kernel, ids, axis=1))

