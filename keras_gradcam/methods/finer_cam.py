"""Finer-CAM (Zhang et al., CVPR 2025): Grad-CAM of a class's score minus similar classes'."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from keras_gradcam.errors import ModelNotSupportedError
from keras_gradcam.inputs import check_positive_int
from keras_gradcam.methods.forward import ScoreRule, Scores
from keras_gradcam.methods.grad_cam import GradCAM


class FinerCAM(GradCAM):
    """Finer-CAM: Grad-CAM of the target's score minus the scores of the classes most like it.

    For the target class `c` with score `y^c` and `D` the `references` classes `d != c` whose
    scores are closest to `y^c` (smallest `|y^d - y^c|`, per sample), the explained score is

        s = y^c - alpha * mean_{d in D} y^d = mean_{d in D} (y^c - alpha y^d)

    and the map is Grad-CAM's on `s`: `w_k = mean_ij ds / dA^k_ij`, `L = ReLU(sum_k w_k A^k)`.
    Features shared with the similar classes cancel; what sets `c` apart remains. `alpha = 0`
    gives Grad-CAM. Targets are classes, as for Grad-CAM (`None`: the top-1 class); the
    explanation's `scores` hold `s`.

    Choices where implementations differ:

    - References: the `references=3` classes nearest in score, as the authors' code and
      pytorch-grad-cam choose them (its `comparison_categories=[1, 2, 3]`, when the target is
      the top-1 class); fewer when the output has fewer other classes.
    - Averaging: a plain mean over the references (the authors' `FinerDefaultTarget`).
      pytorch-grad-cam's `FinerWeightedTarget` weights each difference by the reference's
      softmax probability, `sum_d p_d (y^c - alpha y^d) / sum_d p_d`, and differentiates
      through those weights too.
    - `alpha` (the paper's comparison strength gamma) defaults to 1, as in both.

    Args:
        references: How many similar classes to compare with. Defaults to 3.
        alpha: Comparison strength, a number (usually in [0, 1]). Defaults to 1.0.
        **kwargs: As for `BaseCAM`.

    Raises:
        ModelNotSupportedError: (when called) for callable targets: Finer-CAM compares classes.
    """

    name = "finercam"

    def __init__(self, model, layer=None, *, references: int = 3, alpha: float = 1.0, **kwargs):
        references = check_positive_int(references, "references")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) or (
                not np.isfinite(alpha)):
            raise ValueError(f"`alpha` must be a finite number. Received: alpha={alpha!r}.")
        super().__init__(model, layer, **kwargs)
        self.references, self.alpha = references, float(alpha)
        self.score_rule = ContrastRule(**vars(self.score_rule), references=references,
                                       alpha=self.alpha)


@dataclasses.dataclass
class ContrastRule(ScoreRule):
    """A `ScoreRule` whose explained score is `y^c - alpha * mean(y^d)` over the `references`
    classes `d != c` with the closest scores (see `FinerCAM`)."""

    references: int = 3
    alpha: float = 1.0

    def __call__(self, outputs: list, ids: tf.Tensor, target, data=None,
                 groups: int = 1) -> Scores:
        if target is not None:
            raise ModelNotSupportedError(
                "Finer-CAM compares the target class with similar classes and cannot use a "
                "callable target. Pass class indices, or use GradCAM for custom scores."
            )
        scores = super().__call__(outputs, ids, None, data, groups)
        contrast = contrast_scores(scores.class_scores, scores.ids, self.references, self.alpha)
        return dataclasses.replace(scores, scores=contrast)


def contrast_scores(class_scores: tf.Tensor, ids: tf.Tensor, references: int,
                    alpha: float) -> tf.Tensor:
    """`y^c - alpha * mean(y^d)` per sample, over the `references` classes `d != c` whose
    scores are closest to `y^c`: `(batch, classes)`, `(batch,)` -> `(batch,)`."""
    count = min(references, class_scores.shape[-1] - 1)
    target = tf.gather(class_scores, ids, axis=-1, batch_dims=1)
    distance = tf.abs(class_scores - target[:, None])
    distance = tf.where(tf.one_hot(ids, class_scores.shape[-1]) > 0, np.inf, distance)
    nearest = tf.math.top_k(-tf.stop_gradient(distance), k=count).indices
    similar = tf.gather(class_scores, nearest, axis=-1, batch_dims=1)
    return target - alpha * tf.reduce_mean(similar, axis=-1)
