"""One run of the model over a batch: feature maps `A` of the chosen layer, the explained
scores and their gradient `dA` (pytorch-grad-cam's "activations and gradients"), apart from
the CAM maths that turns them into maps."""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf

from keras_gradcam.errors import InvalidTargetError, ModelNotSupportedError
from keras_gradcam.model import ScoreModel, unchanged
from keras_gradcam.targets import (
    Target,
    class_scores,
    is_single_unit,
    probabilities,
    select_scores,
)


@dataclasses.dataclass
class Scores:
    """The explained scores of a batch (symbolic tensors inside the step).

    Attributes:
        scores: float32 `(batch,)`, the explained score per sample (a callable target's
            result may have another length; the step reports it).
        ids: int32 `(batch,)`, the explained class per sample (top-1 resolved).
        class_scores: float32 `(batch, classes)`, in the explainer's score space.
        probabilities: float32 `(batch, classes)`, the model's own probabilities.
    """

    scores: tf.Tensor
    ids: tf.Tensor
    class_scores: tf.Tensor
    probabilities: tf.Tensor


@dataclasses.dataclass
class ScoreRule:
    """How the explained score is read from the model outputs.

    Attributes:
        output: Index of the explained output in the flat list of outputs.
        space: `"logits"` or `"probability"`.
        head: The model's own final activation of that output ("softmax", "sigmoid", None).
    """

    output: int
    space: str
    head: str | None

    def __call__(self, outputs: list, ids: tf.Tensor, target: Target | None,
                 data: dict | None = None, groups: int = 1) -> Scores:
        """Scores of `outputs` for classes `ids` (negative: ranks, `TOP1` the top-1 class), or
        of the scoring `target` given this batch's `data`.

        Args:
            groups: The batch holds `groups` views of the same samples one after the other
                (`aug_smooth`); ranked classes are taken from the first view.
        """
        explained = outputs[self.output]
        per_class = class_scores(explained, self.space == "probability")
        if groups > 1:  # every view explains the ranked class of the original sample
            first = per_class[: tf.shape(per_class)[0] // groups]
            n = tf.shape(first)[0]
            _, resolved = select_scores(first, ids[:n])
            ids = tf.tile(resolved, [groups])
        scores, ids = select_scores(per_class, ids)
        if target is not None:
            scores = target.score(explained, outputs, data or {})
        squashed = probabilities(per_class, self.space, self.head, is_single_unit(explained))
        return Scores(scores, ids, per_class, squashed)


@dataclasses.dataclass
class Pass:
    """One run of the model over a batch for one target layer, as `layer_maps` sees it.

    Lives inside the compiled step: every field is a symbolic tensor (or the callable/model).

    Attributes:
        inputs: The model inputs of this run (augmented ones with `aug_smooth=True`).
        activations: float32 `(batch, *spatial, channels)`, the layer's feature maps `A`.
        gradients: float32, same shape, `d score / dA`; `None` for methods without gradients.
        scores: float32 `(batch,)`, the explained score per sample.
        ids: int32 `(batch,)`, the explained class per sample (top-1 resolved).
        class_scores: float32 `(batch, classes)`.
        probabilities: float32 `(batch, classes)`.
        target: The scoring target (a `Target`), or `None` for classes.
        data: This batch's rows of the target's data (a dict of tensors).
        score_model: The `ScoreModel` that ran, to run it again (Score-CAM).
        rule: The `ScoreRule` that read the scores, to read them again.
    """

    inputs: Any
    activations: tf.Tensor
    gradients: tf.Tensor | None
    scores: tf.Tensor
    ids: tf.Tensor
    class_scores: tf.Tensor
    probabilities: tf.Tensor
    target: Target | None
    data: dict
    score_model: ScoreModel
    rule: ScoreRule


def run_forward(score_model: ScoreModel, rule: ScoreRule, inputs, ids, target, data,
                gradients: bool, groups: int = 1) -> Pass:
    """Run the model (and the backward pass to the layer when `gradients`) over a batch.

    Raises:
        InvalidTargetError: a callable target whose score does not depend on the model output.
        ModelNotSupportedError: the score does not depend on the chosen layer.
    """
    with tf.GradientTape(watch_accessed_variables=False) as tape:

        def watch(tensor):
            tape.watch(tensor)
            return tensor

        activations, outputs = score_model(inputs, watch if gradients else unchanged)
        scores = rule(outputs, ids, target, data, groups)
    grads = None
    if gradients:
        grads, *of_outputs = tape.gradient(scores.scores, [activations, *outputs])
        if grads is None and target is not None and all(g is None for g in of_outputs):
            raise InvalidTargetError(
                f"The score of the {target.describe()} does not depend on the model "
                f"output (it returned {scores.scores!r}). Compute it from the output the "
                "callable receives, e.g. `lambda out: out[:, 3]`."
            )
        if grads is None:
            raise ModelNotSupportedError(
                f"The explained score does not depend on layer {score_model.path[-1].name!r}; "
                "pick a layer on the path to the explained output (see `output=`)."
            )
        grads = tf.cast(grads, tf.float32)
    return Pass(inputs, tf.cast(activations, tf.float32), grads, scores.scores, scores.ids,
                scores.class_scores, scores.probabilities, target, data, score_model, rule)


__all__ = ["Pass", "ScoreRule", "Scores", "run_forward"]
