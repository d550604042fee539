"""Guided backpropagation (Springenberg et al., ICLR 2015 workshop) and Guided Grad-CAM."""

from __future__ import annotations

import tensorflow as tf

from keras_gradcam.methods.base import BaseCAM, _map_rank, _spatial_size
from keras_gradcam.methods.grad_cam import GradCAM
from keras_gradcam.methods.guided import GuidedScoreModel, centred_scale, guided_gradients
from keras_gradcam.methods.masking import image_index
from keras_gradcam.methods.smoothing import Augmentation


class _Guided:
    """Mixin: the guided gradient of a batch (de-augmented with `aug_smooth`)."""

    def _build_guided(self):
        self._guided_model = GuidedScoreModel(self.model, self.path, self.score == "logits")

    def guided(self, inputs, ids, target_fn):
        augment = Augmentation(inputs) if self.aug_smooth else None
        views, groups = (augment.inputs, augment.groups) if augment else (inputs, 1)
        image = image_index(inputs, _map_rank(self.layer) + 2)
        grads, scores, ids_, logits = guided_gradients(
            self, self._guided_model, views, tf.tile(ids, [groups]), target_fn, image
        )
        n = tf.shape(ids)[0]
        grads = augment.undo(grads) if augment else grads
        return grads, scores[:n], ids_[:n], logits[:n]


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

    def compute(self, inputs, ids, target_fn, size, normalize: bool):
        grads, scores, ids, logits = self.guided(inputs, ids, target_fn)
        return (centred_scale(grads) if normalize else grads), scores, ids, logits


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

    def compute(self, inputs, ids, target_fn, size, normalize: bool):
        size = _spatial_size(inputs, self.layer, True)
        heatmaps, scores, ids_, logits = super().compute(inputs, ids, target_fn, size, True)
        grads = self.guided(inputs, ids_, target_fn)[0]
        product = grads * heatmaps[..., None]
        return (centred_scale(product) if normalize else product), scores, ids_, logits

