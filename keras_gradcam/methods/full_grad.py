"""FullGrad (Srinivas & Fleuret, NeurIPS 2019, "Full-Gradient Representation for Neural
Network Visualization")."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_gradcam.inputs import require_image
from keras_gradcam.maps import normalize_maps, resize_maps
from keras_gradcam.methods.base import BaseCAM
from keras_gradcam.methods.bias_replay import BiasScoreModel, bias_of
from keras_gradcam.methods.forward import Scores
from keras_gradcam.methods.smoothing import Augmentation


class FullGrad(BaseCAM):
    """FullGrad: the input-gradient term plus every layer's bias-gradient terms.

    For a ReLU network (piecewise linear, no final softmax) the score decomposes exactly
    (the paper's full-gradient completeness):

        f(x) = sum(x * df/dx) + sum_l sum(b_l * df/db_l)

    A convolution's bias `b_c` acts at every position `p`, so its term is a map per channel,
    `b_c * df/dz_pc` with `z` the layer's pre-activation output (`df/db_c` is its sum over
    positions). Batch normalization counts with its implicit bias (see `bias_replay`). The
    saliency map is the paper's

        S(x) = psi(x * df/dx) + sum_l sum_c psi(b_lc * df/dz_lc),
        psi  = |.|, min-max scaled into [0, 1] per sample and channel, resized to the input,

    then normalised by its maximum. Choices where implementations differ: `psi` scales each
    channel (as the paper's sum over channels and pytorch-grad-cam do; the authors' code
    scales a whole layer at once), at the layer's resolution before the bilinear upsampling
    (as pytorch-grad-cam; upsampling is linear, so the channels are summed first and resized
    once); the input term is scaled per colour channel too. Only terms with the layer's
    spatial layout enter the map: biases of dense layers on flat vectors have none (they count
    in the completeness sum, not in the map), as in both codes. Layers with a bias are the
    convolutions, dense layers and batch normalization; other normalisations (LayerNorm, ...)
    are not affine in their input and are left out.

    FullGrad is not a single-layer CAM: it reads every bias at once, so `layer=` must be `None`
    (the last spatial layer is still resolved, to find the image input and its size), and
    `resize` is ignored (maps are at the input's resolution). One forward and one backward
    pass, on a replay of the model's graph (functional and Sequential models, nested ones
    included). `aug_smooth` works as for the other methods; `eigen_smooth` has no channels to
    combine and is refused.
    """

    name = "fullgrad"
    uses_gradients = False

    def __init__(self, model, layer=None, **kwargs):
        if layer is not None:
            raise ValueError(
                "FullGrad sums the input-gradient term and the bias-gradient terms of every "
                "layer; it has no target layer. Pass layer=None (the default). "
                f"Received: layer={layer!r}."
            )
        if kwargs.get("eigen_smooth"):
            raise ValueError("`eigen_smooth=True` does not apply to FullGrad: its map is a sum of "
                             "per-layer terms, not a combination of channels. Pass "
                             "eigen_smooth=False.")
        super().__init__(model, None, **kwargs)
        self._bias_model = BiasScoreModel(model, self.path, self.score == "logits")

    def gradient_terms(self, inputs, ids, target=None, data=None,
                       groups: int = 1) -> tuple[list[tf.Tensor], Scores]:
        """The full-gradient terms of a batch: `x * df/dx` (like the image input), then
        `b * df/dz` of each biased layer in the order they ran (like its output, channels
        last; flat for dense layers). Each sample's terms sum to its score (for ReLU networks
        without a final softmax).

        Args:
            target, data: As for `BaseCAM.forward`: a scoring target and its batch data.
            groups: As for `BaseCAM.forward` (`aug_smooth` views).

        Returns:
            `(terms, scores)`, terms float32.
        """
        leaves = keras.tree.flatten(inputs)
        image = require_image(inputs, self.maps_rank(inputs), "FullGrad")
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(leaves[image])
            outputs, records = self._bias_model.run(inputs, _watcher(tape))
            scores = self.score_rule(outputs, ids, target, data or {}, groups)
        sources = [leaves[image]] + [z for _, z in records]
        grads = tape.gradient(scores.scores, sources,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        terms = [tf.cast(grads[0], tf.float32) * tf.cast(leaves[image], tf.float32)]
        for (layer, z), grad in zip(records, grads[1:]):
            bias, axis = bias_of(layer, z.shape.rank)
            term = bias * tf.cast(grad, tf.float32)
            if axis != z.shape.rank - 1:  # channels last
                term = tf.experimental.numpy.moveaxis(term, axis, -1)
            terms.append(term)
        return terms, scores

    def combine(self, terms: list[tf.Tensor], size: tuple[int, ...]) -> tf.Tensor:
        """The map `(batch, *size)` before the final normalisation: `psi` of every term with
        `len(size)` spatial axes, summed."""
        total = 0.0
        for term in terms:
            if term.shape.rank != len(size) + 2:
                continue
            axes = list(range(1, term.shape.rank - 1))
            term = tf.abs(term)
            low = tf.reduce_min(term, axis=axes, keepdims=True)
            high = tf.reduce_max(term, axis=axes, keepdims=True)
            scaled = tf.math.divide_no_nan(term - low, high - low)
            total += resize_maps(tf.reduce_sum(scaled, axis=-1), size)
        return total

    def compute(self, inputs, ids, target, data, size, normalize: bool):
        augment = Augmentation(inputs) if self.aug_smooth else None
        views, groups = (augment.inputs, augment.groups) if augment else (inputs, 1)
        data = {k: tf.tile(v, [groups] + [1] * (v.shape.rank - 1)) for k, v in data.items()}
        terms, scores = self.gradient_terms(views, tf.tile(ids, [groups]), target, data, groups)
        maps = self.combine(terms, self.input_size(inputs))
        maps = augment.undo(maps) if augment else maps
        n = tf.shape(ids)[0]
        first = Scores(scores.scores[:n], scores.ids[:n], scores.class_scores[:n],
                       scores.probabilities[:n])
        return (normalize_maps(maps) if normalize else maps), first


def _watcher(tape):
    def watch(tensor):
        tape.watch(tensor)
        return tensor

    return watch
