"""Grad-CAM++ (Chattopadhyay et al., WACV 2018)."""

from __future__ import annotations

import tensorflow as tf

from keras_gradcam.maps import spatial_sum
from keras_gradcam.methods.base import BaseCAM
from keras_gradcam.methods.smoothing import per_channel


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++: channel weights from positive gradients, re-weighted per position.

    With `g = d y^c / dA^k` (the score before the softmax), the paper's closed form for an
    exponential score `exp(y^c)` (eq. 19) gives

        alpha_ij^k = g_ij^2 / (2 g_ij^2 + sum_ab A_ab^k g_ij^3)      (0 where the denominator is 0)
        w_k        = sum_ij alpha_ij^k ReLU(g_ij)
        L^c        = ReLU(sum_k w_k A^k)

    This is the paper's equation and the variant pytorch-grad-cam ships, except that
    pytorch-grad-cam adds 1e-6 to the denominator. That epsilon is not small on ImageNet models:
    there |g| is about 9e-4 (EfficientNet-Lite0), so `2 g^2` is about 1.6e-6 and the epsilon is
    more than 10% of the denominator in most channels. Its maps differ from the paper's by 5-8%,
    by an amount that depends on the scale of the logits (scaling them scales `g`, not the
    epsilon). The form here has no epsilon. The authors' code and tf-keras-vis also divide alpha
    by its spatial sum per channel before weighting, which changes the relative channel weights
    and so the maps; that step is not in the paper and is not done here. Differentiating
    `exp(y^c)` instead of `y^c` multiplies `g` by `exp(y^c)`: alpha is unchanged and w_k scales
    by a positive per-sample constant, so normalised maps are the same.

    Computed in the equivalent reduced form `alpha_ij ReLU(g_ij) = ReLU(g_ij) / (2 + S_k g_ij)`
    with `S_k = sum_ab A_ab^k` (the `g^2` cancels): where the denominator is zero (`g_ij = 0`, or
    `2 + S_k g_ij = 0`) the term is 0, never NaN or infinite, and where `g_ij <= 0` both forms
    are 0. Two element-wise passes instead of seven, and no `g^3` to underflow.
    """

    name = "gradcam++"

    def channel_weights(self, activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
        total = per_channel(spatial_sum(activations), activations)
        return spatial_sum(tf.math.divide_no_nan(tf.nn.relu(gradients), 2.0 + total * gradients))
