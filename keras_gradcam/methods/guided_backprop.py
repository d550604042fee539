"""Guided backpropagation (Springenberg et al., ICLR 2015 workshop) and Guided Grad-CAM."""

from __future__ import annotations

import tensorflow as tf

from keras_gradcam.explanation import IMAGE
from keras_gradcam.inputs import require_image
from keras_gradcam.maps import normalize_maps, resize_maps
from keras_gradcam.methods.base import BaseCAM
from keras_gradcam.methods.forward import Pass, Scores
from keras_gradcam.methods.grad_cam import GradCAM
from keras_gradcam.methods.guided import (
    GuidedScoreModel,
    centred_scale,
    guided_and_layer_gradients,
    guided_gradients,
)
from keras_gradcam.methods.smoothing import Augmentation


class _Guided:
    """Mixin: the guided gradient of a batch (de-augmented with `aug_smooth`).

    The result is an image like the model input (`result_kind = "image"`), not a heatmap;
    the layer's gradients are not taken (`uses_gradients = False`), the input's are.
    """

    result_kind = IMAGE

    def _build_guided(self):
        self._guided_model = GuidedScoreModel(self.model, self.path, self.score == "logits",
                                              self.tokens)

    def guided(self, inputs, ids, target, data) -> tuple[tf.Tensor, Scores]:
        augment = Augmentation(inputs) if self.aug_smooth else None
        views, groups = (augment.inputs, augment.groups) if augment else (inputs, 1)
        image = require_image(inputs, self.maps_rank(inputs), "Guided backpropagation")
        data = {k: tf.tile(v, [groups] + [1] * (v.shape.rank - 1)) for k, v in data.items()}
        grads, scores = guided_gradients(
            self.score_rule, self._guided_model, views, tf.tile(ids, [groups]), target, data,
            image,
        )
        n = tf.shape(ids)[0]
        first = Scores(scores.scores[:n], scores.ids[:n], scores.class_scores[:n],
                       scores.probabilities[:n])
        return (augment.undo(grads) if augment else grads), first


class GuidedBackprop(_Guided, BaseCAM):
    """Guided backpropagation: the input gradient through ReLUs that pass only positive
    gradients at positive inputs.

        R^(l) = 1[x^(l) > 0] * 1[R^(l+1) > 0] * R^(l+1)    at every ReLU

    It runs on a rewired replay of the graph (the user's model is untouched). Returns
    `(batch, H, W, C)` like the image input: raw gradients with `normalize=False`, else scaled
    per sample to `0.5 + 0.5 g / max|g|` in [0, 1] (zero at 0.5). `resize` is ignored.

    Caveat: guided backprop is largely independent of the model's weights and of the class;
    it behaves like an edge detector doing partial image recovery and fails the sanity checks
    of Adebayo et al. (NeurIPS 2018) and Nie et al. (ICML 2018). Do not read it as the model's
    reasoning.
    """

    name = "guided-backprop"
    uses_gradients = False

    def __init__(self, model, layer=None, **kwargs):
        super().__init__(model, layer, **kwargs)
        self._build_guided()

    def compute(self, inputs, ids, target, data, size, normalize: bool):
        grads, scores = self.guided(inputs, ids, target, data)
        return (centred_scale(grads) if normalize else grads), scores


class GuidedGradCAM(_Guided, GradCAM):
    """Guided Grad-CAM: guided backpropagation times the upsampled Grad-CAM map.

        G^c = R_guided * upsample(L^c_Grad-CAM)    (Selvaraju et al., ICCV 2017, sec. 3)

    Returns `(batch, H, W, C)` like the image input, scaled as `GuidedBackprop` does. The
    Grad-CAM factor makes it class-discriminative, but the guided factor carries the caveat
    of `GuidedBackprop`: prefer Grad-CAM or HiResCAM maps alone to judge a model.
    """

    name = "guided-gradcam"

    def __init__(self, model, layer=None, **kwargs):
        super().__init__(model, layer, **kwargs)
        self._build_guided()

    def compute(self, inputs, ids, target, data, size, normalize: bool):
        if self.aug_smooth or len(self.score_models) > 1:  # two passes: plain, then guided
            heatmaps, run = super().compute(inputs, ids, target, data, self.input_size(inputs),
                                            True)
            grads = self.guided(inputs, run.ids[: tf.shape(ids)[0]], target, data)[0]
        else:
            grads, heatmaps, run = self.one_pass(inputs, ids, target, data)
        product = grads * heatmaps[..., None]
        return (centred_scale(product) if normalize else product), run

    def one_pass(self, inputs, ids, target, data) -> tuple[tf.Tensor, tf.Tensor, Pass]:
        """Guided gradients, normalised Grad-CAM maps and the run from one forward pass of
        the guided replay (see `guided_and_layer_gradients`)."""
        image = require_image(inputs, self.maps_rank(inputs), "Guided backpropagation")
        model = self._guided_model
        grads, activations, layer_grads, scores = guided_and_layer_gradients(
            self.score_rule, model, inputs, ids, target, data, image)
        run = Pass(inputs, activations, layer_grads, scores.scores, scores.ids,
                   scores.class_scores, scores.probabilities, target, data, model,
                   self.score_rule)
        maps = resize_maps(tf.nn.relu(self.layer_maps(run)), self.input_size(inputs))
        return grads, normalize_maps(maps), run
