"""IS-CAM (Naidu et al., 2020, "IS-CAM: Integrated Score-CAM for axiomatic-based
explanations")."""

from __future__ import annotations

import tensorflow as tf

from keras_gradcam.inputs import check_positive_int
from keras_gradcam.methods.forward import Pass
from keras_gradcam.methods.masking import averaged_scores
from keras_gradcam.methods.score_cam import ScoreCAM


class ISCAM(ScoreCAM):
    """IS-CAM: Score-CAM with each mask's score integrated along the mask from 0 to 1.

    With `H^k` Score-CAM's mask (channel `A^k` upsampled to the input and min-max scaled into
    [0, 1]), the score is averaged over `N` masks scaled by `i / N` (a Riemann sum of the
    integral over the scale, as Integrated Gradients integrates along the input):

        c_k = (1/N) sum_{i=1..N} y^c(X * (i/N) H^k),    w_k = softmax_k(c_k),
        L^c = ReLU(sum_k w_k A^k)

    Implementations differ on the scale: torch-cam's ISCAM multiplies the mask by the running
    sum of `i/N` (1/N, 3/N, 6/N, ... up to (N+1)/2, beyond the unmasked input); here step `i`
    scales it by `i/N`, which ends at Score-CAM's mask. With `samples=1` this is Score-CAM.
    The softmax over channels is as in `ScoreCAM`.

    Args:
        samples: Integration steps `N`. Defaults to 10 (torch-cam's default).
        max_channels: As for `ScoreCAM`. The cost is `samples` forward passes per kept
            channel and sample.
        **kwargs: As for `BaseCAM`.
    """

    name = "iscam"

    def __init__(self, model, layer=None, *, samples: int = 10, **kwargs):
        self.samples = check_positive_int(samples, "samples")
        super().__init__(model, layer, **kwargs)

    def mask_scores(self, run: Pass, activations: tf.Tensor, size) -> tf.Tensor:
        def scaled(masks, channel, step):
            return masks * (tf.cast(step + 1, masks.dtype) / self.samples)

        return averaged_scores(run, activations, size, self.batch_size, self.samples, scaled)
