"""Targets for a dataset: where each batch's class ids and target data come from."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from keras_gradcam.errors import InvalidTargetError
from keras_gradcam.targets.classes import label_ids
from keras_gradcam.targets.kinds import FROM_DATASET, Target, TopK
from keras_gradcam.targets.resolve import Resolved, resolve


def plan_dataset_targets(explainer, targets, labels_spec, batched: bool,
                         require_count: Callable[[str], int]) -> tuple[Resolved, str, str]:
    """How a dataset's batches get their targets.

    Args:
        explainer: The explainer.
        targets: As for `iter_explanations`.
        labels_spec: The spec of the elements' second part (labels or target data), or None.
        batched: Whether the dataset's elements are batches.
        require_count: `what -> the number of samples` (raising when it cannot be known).

    Returns:
        `(resolved, ids_from, data_from)`: a `Resolved` of the whole dataset (ids and data of
        `count` rows, or of one row to repeat); where each batch's ids come from ("fill",
        "gather" by position, or "label": the elements' labels) and its target data
        ("gather" by position, or "element": the elements' second part).
    """
    ids_from, data_from = "fill", "gather"
    num_classes = explainer.num_classes
    if isinstance(targets, str):
        if targets != "label":
            raise ValueError(
                "`targets` must be None, 'label', an int, one class per sample, a target "
                f"object or a callable. Received: targets={targets!r}."
            )
        _require_part(labels_spec, "`targets='label'`", "labels")
        spec = labels_spec
        shape = spec.shape[1:] if batched else spec.shape
        label_ids(np.zeros((0, *shape), spec.dtype.as_numpy_dtype), num_classes)
        return resolve(None, 1, num_classes), "label", data_from
    if isinstance(targets, Target) and any(
        isinstance(v, str) and v == FROM_DATASET for v in targets.data.values()
    ):
        _require_part(labels_spec, f"{type(targets).__name__}(... 'dataset')", "data")
        keys = list(targets.data)
        specs = keras.tree.flatten(labels_spec)
        if len(keys) != len(specs):
            raise InvalidTargetError(
                f"{type(targets).__name__} takes {keys} from the dataset's elements "
                f"(inputs, data): pass them as a dict with those keys. Received data "
                f"{labels_spec}."
            )
        data = {k: np.zeros((1, *(s.shape[1:] if batched else s.shape)),
                            np.int32 if s.dtype.is_integer or s.dtype.is_bool else np.float32)
                for k, s in zip(sorted(keys) if isinstance(labels_spec, dict) else keys,
                                specs)}
        return Resolved(np.full((1,), -1, np.int32), targets, data), ids_from, "element"
    per_sample = isinstance(targets, Target) and bool(targets.data) or not (
        targets is None or callable(targets) or isinstance(targets, (int, np.integer, TopK))
    )
    rows = require_count("Per-sample `targets`") if per_sample else 1
    resolved = explainer.resolve_targets(targets, rows)
    ids_from = "gather" if per_sample and resolved.target is None else "fill"
    return resolved, ids_from, data_from


def _require_part(labels_spec, what: str, part: str) -> None:
    if labels_spec is None:
        raise ValueError(
            f"{what} needs a dataset of (inputs, {part}) pairs; this dataset yields inputs "
            "only."
        )
