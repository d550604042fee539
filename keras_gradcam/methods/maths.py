"""The CAM maths of the one-hook core: from feature maps `A` and gradients `dA` to maps.

A method overrides one hook: `channel_weights(A, dA)` (Grad-CAM family),
`weighted_activations(A, dA)` (element-wise variants), `compute_maps(A, dA)` or, when it needs
the classes or more forward passes, `layer_maps(run)` (CAM, Score-CAM). `compute` applies the
ReLU, resizing, de-augmentation and averaging over layers common to all of them.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_gradcam.maps import normalize_maps, resize_maps, spatial_mean
from keras_gradcam.methods.forward import Pass
from keras_gradcam.methods.smoothing import Augmentation, first_component, per_channel


class CamMaths:
    """The hooks and the per-batch maths of `BaseCAM` (which supplies `forward`,
    `score_models`, `aug_smooth` and `eigen_smooth`)."""

    def channel_weights(self, activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
        """Weights `(batch, channels)` of the feature maps. Grad-CAM: spatial mean of dA."""
        return spatial_mean(gradients)

    def weighted_activations(self, activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
        """Per-channel terms `(batch, *spatial, channels)` whose sum over channels is the map.

        Defaults to `w_k A_k` with `w = channel_weights(A, dA)`.
        """
        return activations * per_channel(self.channel_weights(activations, gradients), activations)

    def compute_maps(self, activations: tf.Tensor, gradients: tf.Tensor | None) -> tf.Tensor:
        """Maps `(batch, *spatial)` before the ReLU: the sum over channels of
        `weighted_activations(A, dA)`, or its first principal component with `eigen_smooth`."""
        weighted = self.weighted_activations(activations, gradients)
        if self.eigen_smooth:
            return first_component(weighted)
        return tf.reduce_sum(weighted, axis=-1)

    def layer_maps(self, run: Pass) -> tf.Tensor:
        """Maps `(batch, *spatial)` before the ReLU from one run. Methods that need more than
        `(A, dA)` (the classes, or more forward passes) override this."""
        return self.compute_maps(run.activations, run.gradients)

    def raw_maps(self, inputs, ids, target=None, data=None) -> tuple[tf.Tensor, ...]:
        """Run the model for the first layer; returns `(maps before the ReLU, scores, ids,
        class_scores)`."""
        run = self.forward(inputs, ids, target, data or {})
        return self.layer_maps(run), run.scores, run.ids, run.class_scores

    def compute(self, inputs, ids, target, data, size, normalize: bool) -> tuple[tf.Tensor, Pass]:
        """The body of the compiled step: the maps of one batch and the first layer's run.

        Every layer's map is computed (on the augmented views with `aug_smooth`), ReLU'd,
        resized to `size` (`None`: the largest map's size), the views are de-augmented and
        averaged, the layers averaged, then the result normalised if asked.
        """
        augment = Augmentation(inputs) if self.aug_smooth else None
        views = augment.inputs if augment else inputs
        groups = augment.groups if augment else 1
        data = {k: tf.tile(v, [groups] + [1] * (v.shape.rank - 1)) for k, v in data.items()}
        first, maps = None, []
        for score_model in self.score_models:
            run = self.forward(views, tf.tile(ids, [groups]), target, data, score_model, groups)
            first = run if first is None else first
            maps.append(tf.nn.relu(self.layer_maps(run)))
        if size is None:
            size = max((tuple(m.shape[1:]) for m in maps), key=lambda s: int(np.prod(s)))
        maps = [resize_maps(m, size) for m in maps]
        if augment:
            maps = [augment.undo(m) for m in maps]
        if len(maps) > 1:
            maps = [tf.reduce_mean(tf.stack([normalize_maps(m) for m in maps]), axis=0)]
        return (normalize_maps(maps[0]) if normalize else maps[0]), first

