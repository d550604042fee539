"""SS-CAM (Wang, Naidu et al., 2020, "SS-CAM: Smoothed Score-CAM for Sharper Visual Feature
Localization")."""

from __future__ import annotations

import tensorflow as tf

from keras_gradcam.inputs import check_positive_int
from keras_gradcam.methods.forward import Pass
from keras_gradcam.methods.masking import averaged_scores
from keras_gradcam.methods.noise import check_seed, check_sigma, draw_noise
from keras_gradcam.methods.score_cam import ScoreCAM


class SSCAM(ScoreCAM):
    """SS-CAM: Score-CAM with each mask's score averaged over noisy copies of the mask.

    With `H^k` Score-CAM's mask (channel `A^k` upsampled to the input and min-max scaled into
    [0, 1]) and `N` draws of Gaussian noise `e_j ~ N(0, sigma^2)` per pixel,

        c_k = (1/N) sum_j y^c(X * (H^k + e_j^k)),    w_k = softmax_k(c_k),
        L^c = ReLU(sum_k w_k A^k)

    The paper smooths in two places: on the masks (its SS-CAM(1), the method it presents
    first) or on the input (SS-CAM(2)). This is the mask version, as in torch-cam. As for
    `ScoreCAM`, the softmax is taken over channels of the target score (logits by default);
    the SS-CAM reference code weights `A^k` by the averaged class probability itself.
    The noise is drawn from `seed` inside the compiled step, one pattern per draw and channel,
    the same for every sample (so a batch gives exactly its samples' maps, and calls repeat).

    Args:
        samples: Noisy copies `N` of each mask. Defaults to 35 (torch-cam's default).
        sigma: Standard deviation of the noise, in mask units (masks lie in [0, 1]).
            Defaults to 2.0 (torch-cam's default).
        seed: Seed of the noise. Defaults to 0.
        max_channels: As for `ScoreCAM`. The cost is `samples` forward passes per kept
            channel and sample.
        **kwargs: As for `BaseCAM`.
    """

    name = "sscam"

    def __init__(self, model, layer=None, *, samples: int = 35, sigma: float = 2.0,
                 seed: int = 0, **kwargs):
        self.samples = check_positive_int(samples, "samples")
        self.sigma = check_sigma(sigma)
        self.seed = check_seed(seed)
        super().__init__(model, layer, **kwargs)

    def mask_noise(self, shape, draw) -> tf.Tensor:
        """The noise `e_j` (before `sigma`) added to the masks `(channels, *size)` in draw `j`."""
        return draw_noise(shape, self.seed, draw)

    def mask_scores(self, run: Pass, activations: tf.Tensor, size) -> tf.Tensor:
        def noisy(masks, channel, draw):
            noise = self.mask_noise((activations.shape[-1], *size), draw)
            return masks + self.sigma * tf.gather(noise, channel)

        return averaged_scores(run, activations, size, self.batch_size, self.samples, noisy)
