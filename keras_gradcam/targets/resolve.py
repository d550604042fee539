"""Turn what the user passed as `targets` into class ids, a scoring target and its data."""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_gradcam.errors import InvalidTargetError
from keras_gradcam.targets.classes import TOP1, class_ids
from keras_gradcam.targets.kinds import Classes, Function, Target, TopK


@dataclasses.dataclass
class Resolved:
    """The targets of one explain call.

    Attributes:
        ids: int32 `(n,)`, or `(n, K)` for several classes per image (`TOP1` and other
            negative ids are ranks, `PAD` an empty slot).
        target: The scoring target (`Segmentation`, a callable, ...), or None for classes.
        data: The target's per-image arrays, one row per image.
    """

    ids: np.ndarray
    target: Target | None
    data: dict[str, np.ndarray]

    @property
    def classes_per_image(self) -> int | None:
        """K for several classes per image, else None."""
        return int(self.ids.shape[1]) if self.ids.ndim == 2 else None

    def rows(self, rows) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The ids and data of some images."""
        return self.ids[rows], {k: v[rows] for k, v in self.data.items()}


def resolve(targets, samples: int, num_classes: int | None) -> Resolved:
    """Resolve `targets` for `samples` images.

    Accepts `None`, an int, one class per image, several per image (`(n, K)` or ragged
    lists), `Classes`, `TopK`, a `Target` object or a callable.

    Raises:
        InvalidTargetError: targets of the wrong type, length or class range.
    """
    if isinstance(targets, Target):
        return Resolved(np.full((samples,), TOP1, np.int32), targets, targets.arrays(samples))
    if callable(targets) and not isinstance(targets, type):
        return Resolved(np.full((samples,), TOP1, np.int32), Function(targets), {})
    if isinstance(targets, TopK):
        if num_classes is not None and targets.k > num_classes:
            raise InvalidTargetError(
                f"TopK(k={targets.k}) asks for more classes than the explained output has "
                f"({num_classes})."
            )
        ranks = -1 - np.arange(targets.k, dtype=np.int32)
        return Resolved(np.tile(ranks, (samples, 1)), None, {})
    if isinstance(targets, Classes):
        targets = targets.ids
    return Resolved(class_ids(targets, samples, num_classes), None, {})


__all__ = ["Resolved", "resolve"]
