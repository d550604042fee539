"""FEM, the Feature Explanation Method (Fuad et al., IPTA 2020)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_gradcam.maps import spatial_mean
from keras_gradcam.methods.base import BaseCAM
from keras_gradcam.methods.smoothing import per_channel


class FEM(BaseCAM):
    """FEM: the positions where a channel fires far above its own mean, weighted by that mean.

    For channel `A^k` with spatial mean `mu_k` and standard deviation `sigma_k` (over the
    positions of one sample), the k-sigma rule keeps its unusually strong responses:

        B^k = 1[A^k > mu_k + k sigma_k],    L = ReLU(sum_k mu_k B^k)

    Class-agnostic (no gradients, one forward pass): every target gives the same map.

    Choices where implementations differ:

    - This is the formulation of the paper and of its authors' code (binary maps weighted by
      the channel means), also xplique's (which thresholds with `>=`: a constant channel,
      `sigma_k = 0`, is then kept everywhere; with `>` it is dropped, as in the authors' code).
    - pytorch-grad-cam's `FEM` instead weights the feature maps themselves,
      `sum_k (mean_ij B^k_ij) A^k`: the channel weight is the share of positions above the
      threshold, and the map keeps the activations' shape rather than binary blobs.
    - Another reading thresholds channels rather than positions (keep channel `k` when `mu_k`
      exceeds the mean plus `k` standard deviations of the channel means); it is not the
      paper's.

    Args:
        k: The number of standard deviations above the mean a response must exceed. Defaults
            to 2.0, the paper's.
        **kwargs: As for `BaseCAM`.
    """

    name = "fem"
    uses_gradients = False

    def __init__(self, model, layer=None, *, k: float = 2.0, **kwargs):
        if isinstance(k, bool) or not isinstance(k, (int, float, np.number)) or not np.isfinite(k):
            raise ValueError(f"`k` must be a finite number. Received: k={k!r}.")
        super().__init__(model, layer, **kwargs)
        self.k = float(k)

    def weighted_activations(self, activations: tf.Tensor, gradients: tf.Tensor | None):
        mean = spatial_mean(activations)
        deviation = tf.sqrt(spatial_mean(tf.square(activations - per_channel(mean, activations))))
        threshold = per_channel(mean + self.k * deviation, activations)
        return tf.cast(activations > threshold, tf.float32) * per_channel(mean, activations)
