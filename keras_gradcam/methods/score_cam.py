"""Score-CAM (Wang et al., CVPR Workshops 2020) with Faster Score-CAM's channel selection."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_gradcam.inputs import check_positive_int, require_image
from keras_gradcam.maps import weighted_sum
from keras_gradcam.methods.base import BaseCAM, Pass
from keras_gradcam.methods.masking import masked_scores


class ScoreCAM(BaseCAM):
    """Score-CAM: channels weighted by the score of the input they mask. No gradients.

    Each channel `A^k` is upsampled to the input and min-max scaled into [0, 1] to give a mask
    `H^k`; the model scores every masked input `X * H^k`, and

        w_k = softmax_k(y^c(X * H^k)),    L^c = ReLU(sum_k w_k A^k)

    The softmax is taken over channels of the target score (pre-softmax logits by default,
    probabilities with `score="probability"`), as pytorch-grad-cam does. The paper subtracts
    the score of a baseline input first; a constant shift leaves a softmax unchanged.
    The `batch * channels` masked inputs run `batch_size` at a time inside the compiled step.

    Masks are upsampled with half-pixel bilinear resizing (`tf.image.resize`, Keras' and
    TensorFlow's convention); pytorch-grad-cam upsamples with `align_corners=True`, which
    shifts and stretches each mask slightly, so the channel scores and the maps differ by up
    to 10%.

    Args:
        max_channels: Keep only the `max_channels` channels of highest spatial variance per
            sample (Faster Score-CAM); `None` (default) keeps all. The cost is one forward
            pass per kept channel and sample.
        **kwargs: As for `BaseCAM`.
    """

    name = "scorecam"
    uses_gradients = False

    def __init__(self, model, layer=None, *, max_channels: int | None = None, **kwargs):
        if max_channels is not None:
            max_channels = check_positive_int(max_channels, "max_channels")
        super().__init__(model, layer, **kwargs)
        self.max_channels = max_channels

    def selected_channels(self, activations: tf.Tensor) -> tf.Tensor:
        """Indices `(batch, n)` of the channels of highest spatial variance, highest first."""
        return top_variance_channels(activations, self.max_channels)

    def layer_maps(self, run: Pass) -> tf.Tensor:
        activations = run.activations
        if self.max_channels is not None:
            chosen = self.selected_channels(activations)
            activations = tf.gather(activations, chosen, axis=-1, batch_dims=1)
        index = require_image(run.inputs, activations.shape.rank - 2, "Score-CAM")
        size = tuple(keras.tree.flatten(run.inputs)[index].shape[1 : activations.shape.rank - 1])
        weights = tf.nn.softmax(self.mask_scores(run, activations, size), axis=-1)
        return weighted_sum(weights, activations)

    def mask_scores(self, run: Pass, activations: tf.Tensor, size: tuple[int, ...]) -> tf.Tensor:
        """Scores `(batch, channels)` of the inputs masked by each channel of `activations`
        upsampled to `size` (masks built `batch_size` at a time, see `masking.pair_masks`);
        SS-CAM and IS-CAM average them over several variations of each mask."""
        return masked_scores(run, activations, size, self.batch_size)


def top_variance_channels(activations: tf.Tensor, count: int | None) -> tf.Tensor:
    """Indices `(batch, min(count, channels))` of each sample's channels of highest spatial
    variance, highest first (Faster Score-CAM's selection); `count=None` takes all."""
    axes = list(range(1, activations.shape.rank - 1))
    variance = tf.math.reduce_variance(activations, axis=axes)
    count = min(count or activations.shape[-1], activations.shape[-1])
    return tf.math.top_k(variance, k=count).indices
