"""Ablation-CAM (Desai & Ramaswamy, WACV 2020)."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_gradcam.inputs import check_positive_int
from keras_gradcam.maps import weighted_sum
from keras_gradcam.methods.base import BaseCAM, Pass
from keras_gradcam.methods.masking import pair_scores
from keras_gradcam.methods.score_cam import top_variance_channels
from keras_gradcam.methods.smoothing import per_channel


class AblationCAM(BaseCAM):
    """Ablation-CAM: channels weighted by the drop in score when they are zeroed. No gradients.

    For the explained score `y^c` and `y^c_k`, the same score with channel `k` of the layer's
    feature maps set to 0 (the other channels and every other layer's input unchanged):

        w_k = (y^c - y^c_k) / y^c,    L^c = ReLU(sum_k w_k A^k)          (eq. 2-3)

    Choices where implementations differ:

    - The ablated channel is set to 0, as in the paper, whatever the layer's range.
      pytorch-grad-cam does so only when the activations' minimum is 0 and otherwise sets the
      channel to `min(A) - 1e7`.
    - The division by `y^c` is the paper's: for a negative score it flips every weight, and a
      zero score gives zero weights (no division by zero).
    - The ablated passes replay the model with the layer's output replaced; TensorFlow prunes
      the layers that only feed the replaced output, so what runs per ablation is the rest of
      the model (plus whatever skip connections need from before the layer).

    The `batch * channels` ablated passes run `batch_size` at a time in a `tf.while_loop` inside
    the compiled step.

    Args:
        max_channels: Ablate only the `max_channels` channels of highest spatial variance per
            sample (Faster Score-CAM's selection); the others get weight 0 (as skipped channels
            do in pytorch-grad-cam). `None` (default) ablates all. The cost is one pass
            through the rest of the model per ablated channel and sample.
        **kwargs: As for `BaseCAM`.
    """

    name = "ablationcam"
    uses_gradients = False

    def __init__(self, model, layer=None, *, max_channels: int | None = None, **kwargs):
        if max_channels is not None:
            max_channels = check_positive_int(max_channels, "max_channels")
        super().__init__(model, layer, **kwargs)
        self.max_channels = max_channels

    def layer_maps(self, run: Pass) -> tf.Tensor:
        activations = run.activations
        chosen = None
        if self.max_channels is not None:
            chosen = top_variance_channels(activations, self.max_channels)
        ablated = ablated_scores(run, chosen, self.batch_size)
        scores = run.scores[:, None]
        weights = tf.math.divide_no_nan(scores - ablated, scores)
        if chosen is not None:
            activations = tf.gather(activations, chosen, axis=-1, batch_dims=1)
        return weighted_sum(weights, activations)


def ablated_scores(run: Pass, channels: tf.Tensor | None, chunk: int) -> tf.Tensor:
    """The explained score with one channel of the layer's output zeroed, for every sample
    and channel in `channels` (`(batch, n)` indices; `None`: every channel): `(batch, n)`,
    `chunk` passes at a time (see `masking.pair_scores`)."""
    activations = run.activations
    width = activations.shape[-1]
    leaves = keras.tree.flatten(run.inputs)

    def perturb(sample, slot):
        channel = slot if channels is None else tf.gather_nd(
            channels, tf.stack([sample, slot], axis=1))
        keep = 1.0 - tf.one_hot(channel, width, dtype=activations.dtype)
        ablated = tf.gather(activations, sample) * per_channel(keep, activations)
        inputs = keras.tree.pack_sequence_as(run.inputs, [tf.gather(x, sample) for x in leaves])
        return inputs, lambda maps: tf.cast(ablated, maps.dtype)

    count = width if channels is None else channels.shape[-1]
    return pair_scores(run, count, chunk, perturb)
