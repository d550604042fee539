"""Shapley-CAM (Cai, 2024: "CAMs as Shapley Value-based Explainers")."""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from keras_gradcam.methods.base import Pass
from keras_gradcam.methods.forward import run_forward
from keras_gradcam.methods.grad_cam import GradCAM


class ShapleyCAM(GradCAM):
    """Shapley-CAM: Grad-CAM with the gradient corrected by a Hessian-vector product.

    With `g = d y^c / dA` and `H = d^2 y^c / dA^2` the Hessian of the score over every
    activation of the layer (all positions and channels), `HA` is the Hessian-vector product
    `(HA)_ijk = sum_{i'j'k'} H_{ijk,i'j'k'} A_{i'j'k'}`, and

        w_k = mean_ij (g - HA / 2)_ijk,    L^c = ReLU(sum_k w_k A^k)

    Why: take the activations as players and a coalition's worth as the score with the other
    activations zeroed. Expanding the score to second order around `A`, the game is quadratic
    and the Shapley value of each activation is exactly `A * (g - HA / 2)` (the paper's closed
    form); Shapley-CAM averages `g - HA / 2` over positions as Grad-CAM averages `g`. Where
    the score is linear in `A` (e.g. `A -> pooling -> dense` logits, or piecewise-linear
    layers such as ReLU between them) `HA = 0` and Shapley-CAM is Grad-CAM.

    Choices where implementations differ: this is pytorch-grad-cam's `ShapleyCAM` (channel
    weights `mean(g - 0.5 * hvp)`). The score is the target class's logit by default (the
    paper's experiments prefer its ReST utility, `y^c + log softmax(y)_c`; pass it as a
    callable target on the logits: `lambda y: 2 * y[:, c] - tf.reduce_logsumexp(y, axis=-1)`).

    `HA` comes from a second tape around the backward pass inside the compiled step
    (reverse over reverse: the gradient of `g . v` with `v = A` held fixed), about one more
    backward pass. `eigen_smooth` projects `A * w` as for Grad-CAM.
    """

    name = "shapleycam"

    def forward(self, inputs, ids, target=None, data=None, score_model=None,
                groups: int = 1) -> Pass:
        """`BaseCAM.forward`, with the run's `gradients` holding `g - HA / 2`."""
        score_model = score_model or self.score_models[0]
        watched = _Watched(score_model)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            watched.tape = tape
            run = run_forward(watched, self.score_rule, inputs, ids, target, data or {}, True,
                              groups)
        product = tape.gradient(run.gradients, watched.maps, output_gradients=run.activations,
                                unconnected_gradients=tf.UnconnectedGradients.ZERO)
        corrected = run.gradients - 0.5 * tf.cast(product, tf.float32)
        return dataclasses.replace(run, gradients=corrected, score_model=score_model)


class _Watched:
    """A `ScoreModel` whose captured feature maps are also watched by an outer tape."""

    def __init__(self, score_model):
        self.score_model, self.path = score_model, score_model.path
        self.tape, self.maps = None, None

    def __call__(self, inputs, capture):
        def watch(maps):
            self.tape.watch(maps)
            self.maps = maps
            return capture(maps)

        return self.score_model(inputs, watch)
