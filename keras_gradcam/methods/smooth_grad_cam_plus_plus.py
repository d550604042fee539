"""Smooth Grad-CAM++ (Omeiza et al., 2019, "Smooth Grad-CAM++: An Enhanced Inference Level
Visualization Technique for Deep Convolutional Neural Network Models")."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_gradcam.inputs import check_positive_int, require_image
from keras_gradcam.maps import spatial_sum
from keras_gradcam.methods.base import BaseCAM
from keras_gradcam.methods.forward import Pass, run_forward
from keras_gradcam.methods.noise import check_seed, check_sigma, draw_noise
from keras_gradcam.methods.smoothing import per_channel


class SmoothGradCAMPlusPlus(BaseCAM):
    """Smooth Grad-CAM++: Grad-CAM++'s weights from gradients averaged over noisy inputs.

    With `g_j = d y^c / dA` on the `j`-th of `N` noisy copies `X + e_j` of the input, the
    averaged powers `D1 = mean_j g_j`, `D2 = mean_j g_j^2`, `D3 = mean_j g_j^3` replace the
    powers of `g` in Grad-CAM++'s closed form (the paper's eq. for `alpha` and `w`):

        alpha_ij^k = D2_ij^k / (2 D2_ij^k + sum_ab A_ab^k D3_ij^k)   (0 where the denominator is 0)
        w_k        = sum_ij alpha_ij^k ReLU(D1_ij^k),      L^c = ReLU(sum_k w_k A^k)

    `A` is the layer's output on the noise-free input, whose top-1 class is the one explained;
    the copies only supply gradients. As for `GradCAMPlusPlus`, `y^c` is the score itself, not
    `exp(y^c)` (whose factor would weigh each copy by its own score). The noise is Gaussian,
    `e_j ~ N(0, (sigma * (max X - min X))^2)` per value of the image input, its range taken per
    sample (SmoothGrad's convention, Smilkov et al. 2017, which recommends 10-20%); other
    inputs are repeated unchanged. It is drawn from `seed` inside the compiled step, the same
    pattern for every sample, so a batch gives exactly its samples' maps and calls repeat.
    The clean input and its `N` copies run as one batch of `(N + 1) * batch` in one compiled
    step: memory and time grow about `N + 1` times (lower `batch_size` if memory is short).
    torch-cam's SmoothGradCAMpp defaults to 4 copies with an absolute standard deviation 0.3.
    With `sigma=0` this is `GradCAMPlusPlus`.

    Args:
        samples: Noisy copies `N`. Defaults to 16.
        sigma: Noise standard deviation as a fraction of each image's value range
            (max - min). Defaults to 0.15.
        seed: Seed of the noise. Defaults to 0.
        **kwargs: As for `BaseCAM`.
    """

    name = "smoothgradcam++"

    def __init__(self, model, layer=None, *, samples: int = 16, sigma: float = 0.15,
                 seed: int = 0, **kwargs):
        self.samples = check_positive_int(samples, "samples")
        self.sigma = check_sigma(sigma)
        self.seed = check_seed(seed)
        super().__init__(model, layer, **kwargs)

    def noisy_copies(self, inputs):
        """`inputs` followed by its `samples` noisy copies along the batch axis:
        `(samples + 1) * batch` rows, the first `batch` the clean inputs."""
        leaves = keras.tree.flatten(inputs)
        image = require_image(inputs, self.maps_rank(inputs), "Smooth Grad-CAM++")
        copies = self.samples + 1
        out = [tf.tile(x, [copies] + [1] * (x.shape.rank - 1)) for x in leaves]
        x = tf.cast(leaves[image], tf.float32)
        axes = list(range(1, x.shape.rank))
        spread = tf.reduce_max(x, axes, keepdims=True) - tf.reduce_min(x, axes, keepdims=True)
        noise = draw_noise((self.samples, 1, *x.shape[1:]), self.seed, 0)
        noisy = tf.reshape(x[None] + self.sigma * spread[None] * noise, [-1, *x.shape[1:]])
        out[image] = tf.cast(tf.concat([x, noisy], axis=0), leaves[image].dtype)
        return keras.tree.pack_sequence_as(inputs, out)

    def forward(self, inputs, ids, target=None, data=None, score_model=None,
                groups: int = 1) -> Pass:
        copies = self.samples + 1
        data = {k: tf.tile(v, [copies] + [1] * (v.shape.rank - 1)) for k, v in (data or {}).items()}
        return run_forward(score_model or self.score_models[0], self.score_rule,
                           self.noisy_copies(inputs), tf.tile(ids, [copies]), target, data, True,
                           groups * copies)

    def layer_maps(self, run: Pass) -> tf.Tensor:
        shape = run.activations.shape[1:]
        activations = tf.reshape(run.activations, [self.samples + 1, -1, *shape])[0]
        gradients = tf.reshape(run.gradients, [self.samples + 1, -1, *shape])[1:]
        return self.compute_maps(activations, gradients)

    def weighted_activations(self, activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
        """`w_k A^k` from the clean `A` `(batch, *spatial, channels)` and the gradients of the
        noisy copies `(samples, batch, *spatial, channels)`."""
        d1, d2, d3 = (tf.reduce_mean(gradients**p, axis=0) for p in (1, 2, 3))
        total = per_channel(spatial_sum(activations), activations)
        alpha = tf.math.divide_no_nan(d2, 2.0 * d2 + total * d3)
        return activations * per_channel(spatial_sum(alpha * tf.nn.relu(d1)), activations)
