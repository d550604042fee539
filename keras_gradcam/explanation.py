"""What an explain call returns: one dataclass with field names that say what they hold."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

HEATMAP = "heatmap"  # (batch, *spatial) maps, to overlay on the images
IMAGE = "image"  # (batch, H, W, C) pictures in the input's space (guided backprop), as they are


@dataclasses.dataclass
class Explanation:
    """The explanation of a batch.

    Attributes:
        heatmaps: float32 `(batch, *spatial)`, in [0, 1] when normalised; for methods whose
            result is an image (`kind == "image"`: guided backprop, guided Grad-CAM),
            `(batch, H, W, C)` like the image input.
        targets: int32 `(batch,)`, the class explained per sample (-1 for callable targets).
        scores: float32 `(batch,)`, the differentiated score per sample, in `score_space`.
        class_scores: float32 `(batch, classes)`, the explained output's score for every
            class in `score_space` (summed over positions for dense outputs; a single sigmoid
            unit gives two classes, `[-z, z]` or `[1 - p, p]`).
        probabilities: float32 `(batch, classes)`: the model's own softmax/sigmoid of the
            class scores (softmax for a linear multi-class head, sigmoid for a single unit).
        score_space: `"logits"` (before the model's final softmax/sigmoid) or
            `"probability"`, as chosen by the explainer's `score=`.
        kind: `"heatmap"` or `"image"`: what `heatmaps` holds, as the method declares.
        present: With several classes per image, bool `(batch, K)`: the slots asked for
            (a ragged list of classes leaves the others empty: all-zero maps, target -1);
            `None` otherwise. Then `heatmaps` is `(batch, K, *spatial)` and `targets`,
            `scores` are `(batch, K)`.
    """

    heatmaps: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    class_scores: np.ndarray
    probabilities: np.ndarray
    score_space: str = "logits"
    kind: str = HEATMAP
    present: np.ndarray | None = None

    @property
    def predicted(self) -> np.ndarray:
        """The top-1 class per sample, int32 `(batch,)`."""
        return self.class_scores.argmax(axis=-1).astype(np.int32)

    @property
    def logits(self) -> np.ndarray:
        """Deprecated: `class_scores` (which are probabilities with `score="probability"`)."""
        warnings.warn(
            "`Explanation.logits` is deprecated: use `class_scores` (in `score_space`), or "
            "`probabilities`.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.class_scores

    def __len__(self) -> int:
        return len(self.targets)

    def take(self, rows) -> Explanation:
        """The explanation of some samples only (`rows`: indices or a bool mask)."""
        arrays = {f: getattr(self, f)[rows] for f in _ARRAYS if getattr(self, f) is not None}
        return dataclasses.replace(self, **arrays)

    @classmethod
    def concatenate(cls, parts: list[Explanation]) -> Explanation:
        """One explanation of the samples of `parts`, in order."""
        if len(parts) == 1:
            return parts[0]
        arrays = {f: np.concatenate([getattr(p, f) for p in parts]) for f in _ARRAYS
                  if getattr(parts[0], f) is not None}
        return dataclasses.replace(parts[0], **arrays)


_ARRAYS = ("heatmaps", "targets", "scores", "class_scores", "probabilities", "present")

__all__ = ["HEATMAP", "IMAGE", "Explanation"]
