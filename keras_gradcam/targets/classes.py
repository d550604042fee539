"""What to explain: the one home of the targets vocabulary.

- class ids: `None` (the top-1 class, `TOP1`), an int (that class for every sample), one class
  per sample; one-hot rows `(n, classes)` are one class per sample both as labels
  (`label_ids`) and as explain targets (`class_ids`: there only float/bool rows, since an int
  `(n, K)` array means several classes per sample);
- callables on the model outputs that return one score per sample;
- the single-unit rule: a model output with one unit is a binary classifier, class 1 the unit
  and class 0 its complement (`[-z, z]` for a logit, `[1 - p, p]` for a probability).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from keras_gradcam.errors import InvalidTargetError

Targets = int | Sequence[int] | np.ndarray | Callable | None

TOP1 = -1  # class id meaning "the highest-scoring class of this sample"


def _out_of_range(ids: np.ndarray, num_classes: int | None, what: str, positions=None) -> None:
    if num_classes is None or not ids.size:
        return
    bad = np.flatnonzero((ids < 0) | (ids >= num_classes))
    if bad.size:
        where = bad[0] if positions is None else positions[bad[0]]
        raise InvalidTargetError(
            f"{what} must lie in [0, {num_classes - 1}] (the explained output has "
            f"{num_classes} classes). Received out-of-range classes: "
            f"{sorted(set(ids[bad].tolist()))[:10]}, the first, {ids[bad[0]]}, at position "
            f"{where}."
        )


def class_ids(targets: Targets, batch: int, num_classes: int | None) -> np.ndarray:
    """Turn `targets` into int32 class ids (`TOP1` for the top-1 class).

    Args:
        targets: `None` (top-1), an int (that class for every sample), one class per sample
            `(batch,)`, one-hot rows `(batch, classes)`, or several classes per sample:
            int `(batch, K)` or a ragged list of lists (padded with `PAD`). A 2-D array is
            read as one-hot labels (one class per sample, its 1) only when it is float or
            bool, has exactly `num_classes` columns and every row holds a single 1, the rest 0;
            an int 2-D array always means several class ids per sample.
        batch: Number of samples.
        num_classes: Size of the explained output's last axis, if known.

    Returns:
        An int32 array of shape `(batch,)`, or `(batch, K)` for several classes per sample.

    Raises:
        InvalidTargetError: wrong length, type or class range, or float/bool 2-D targets that
            are not one-hot rows.
    """
    if targets is None:
        return np.full((batch,), TOP1, np.int32)
    if isinstance(targets, (bool, np.bool_)):
        raise InvalidTargetError(f"`targets` must be class indices. Received: targets={targets!r}.")
    if isinstance(targets, (int, np.integer)):
        ids = np.full((batch,), int(targets), np.int64)
    else:
        ids = _padded(targets) if _is_ragged(targets) else np.asarray(targets)
        if ids.ndim == 2 and ids.dtype.kind in "fb" and ids.size:
            ids = _one_hot_ids(ids, num_classes)
        if ids.ndim not in (1, 2) or not (ids.dtype.kind in "iu" or ids.size == 0):
            raise InvalidTargetError(
                "`targets` must be None, an int, one int class per sample, one-hot rows "
                "(float, batch x classes), several int classes per sample (a list per "
                "sample), or a callable. "
                f"Received: targets with shape {ids.shape} and dtype {ids.dtype}."
            )
        if len(ids) != batch:
            raise InvalidTargetError(
                "`targets` must hold one class per sample: one int class per sample, or a list "
                f"of int classes per sample for several: expected {batch} values, received "
                f"{len(ids)}. Pass an int to explain the same class for all images."
            )
        if ids.ndim == 2 and num_classes is not None and num_classes > 2 and (
            ids.shape[1] == num_classes and _rows_one_hot(ids)
        ):
            warnings.warn(
                f"`targets` of shape {ids.shape} and dtype {ids.dtype} look like one-hot labels, "
                "but int (n, K) targets are several classes per sample: this explains class 0 "
                f"{num_classes - 1} times and class 1 once per image. For one class per image, "
                "pass `labels.argmax(axis=1)` or float one-hot rows.",
                stacklevel=4,
            )
    _out_of_range(ids[ids != PAD], num_classes, "Target classes")
    return ids.astype(np.int32)


def _rows_one_hot(rows: np.ndarray) -> bool:
    """Whether every row holds a single 1 and 0 elsewhere."""
    return bool(np.isin(rows, (0, 1)).all() and (rows.sum(axis=1) == 1).all())


def _one_hot_ids(rows: np.ndarray, num_classes: int | None) -> np.ndarray:
    """Class ids `(n,)` of float/bool one-hot rows `(n, num_classes)`; raise otherwise."""
    if num_classes is not None and rows.shape[1] != num_classes:
        raise InvalidTargetError(
            f"Float or bool `targets` of shape (n, K) are read as one-hot rows, which need one "
            f"column per class ({num_classes}). Received: targets.shape={rows.shape}. For "
            "several classes per sample, pass int class ids."
        )
    if not _rows_one_hot(rows):
        bad = next(i for i, row in enumerate(rows)
                   if not (np.isin(row, (0, 1)).all() and row.sum() == 1))
        raise InvalidTargetError(
            "Float or bool `targets` of shape (n, classes) are read as one-hot rows: each row "
            f"a single 1 and 0 elsewhere. Received at row {bad}: {rows[bad].tolist()[:10]}. "
            "For several classes per sample, pass int class ids; for soft labels, "
            "`labels.argmax(axis=1)`."
        )
    return rows.argmax(axis=1).astype(np.int64)


PAD = -(2**30)  # an empty slot of a ragged list of classes (its map is all zero)


def _is_ragged(targets) -> bool:
    return isinstance(targets, (list, tuple)) and any(
        isinstance(t, (list, tuple, np.ndarray)) for t in targets
    ) and len({len(t) if hasattr(t, "__len__") else -1 for t in targets}) > 1


def _padded(targets) -> np.ndarray:
    rows = [np.asarray(t).reshape(-1) for t in targets]
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), PAD, np.int64)
    for i, row in enumerate(rows):
        if row.size and row.dtype.kind not in "iu":
            raise InvalidTargetError(f"`targets[{i}]` must hold int classes. Received: {row}.")
        out[i, : len(row)] = row
    return out


def label_ids(labels, num_classes: int | None, name: str = "labels",
              positions=None) -> np.ndarray:
    """Class ids `(n,)` int32 from labels: sparse `(n,)`/`(n, 1)` or one-hot `(n, classes)`.

    Float labels must hold whole class numbers (`2.0`, not `0.7`); one-hot labels (float, bool
    or int: labels are never several classes) are read by their largest entry. Explain calls
    read the same float/bool one-hot rows as class ids (`class_ids`). `positions` (the
    samples' positions in a dataset) are what error messages name; by default, the index in
    `labels`.

    Raises:
        InvalidTargetError: labels that are not classes (strings, fractions, NaN, wrong shape)
            or lie outside `[0, num_classes)`; the message names the first bad value and its
            position.
    """
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim == 2 and array.shape[1] > 1 and array.dtype.kind in "iufb":
        if num_classes is not None and array.shape[1] != num_classes:
            raise InvalidTargetError(
                f"One-hot `{name}` must have one column per class ({num_classes}). Received: "
                f"{name}.shape={array.shape}."
            )
        array = array.argmax(axis=1)
    if array.ndim != 1 or array.dtype.kind not in "iuf":
        raise InvalidTargetError(
            f"`{name}` must be integer classes (n,) or one-hot (n, classes). Received: "
            f"{name}.shape={array.shape} with dtype {array.dtype}."
        )
    if array.dtype.kind == "f":
        whole = np.isfinite(array) & (array == np.round(array))
        if not whole.all():
            first = int(np.flatnonzero(~whole)[0])
            where = first if positions is None else positions[first]
            raise InvalidTargetError(
                f"`{name}` must hold whole class numbers. Received {array[first]:g} at position "
                f"{where}. Round or fix the labels (class ids, or one-hot rows)."
            )
    _out_of_range(array, num_classes, f"`{name}` (classes outside the explained output's "
                  "range are refused)", positions)
    return array.astype(np.int32)


INVALID = -2  # a label that `label_ids` refuses, flagged inside a tf.data pipeline


def label_ids_in_graph(labels: tf.Tensor, num_classes: int | None) -> tf.Tensor:
    """`label_ids` for a tf.data pipeline: int32 `(batch,)`, `INVALID` where `label_ids` would
    refuse a label (then call `label_ids` on the host for the message)."""
    if labels.shape.rank == 2 and labels.shape[-1] != 1:
        return tf.argmax(labels, axis=-1, output_type=tf.int32)
    values = tf.cast(tf.reshape(labels, [-1]), tf.float64)
    valid = tf.math.is_finite(values) & tf.equal(values, tf.round(values)) & (values >= 0)
    if num_classes is not None:
        valid &= values < num_classes
    safe = tf.where(valid, values, tf.zeros_like(values))
    return tf.where(valid, tf.cast(safe, tf.int32), tf.constant(INVALID, tf.int32))


def two_class(unit: tf.Tensor, probability: bool) -> tf.Tensor:
    """The single-unit rule: `(batch, 1)` -> `(batch, 2)`, `[-z, z]` or `[1 - p, p]`."""
    return tf.concat([1.0 - unit if probability else -unit, unit], axis=-1)


def unit_sign(ids: tf.Tensor) -> tf.Tensor:
    """The sign of the unit in the single-unit rule per class id: -1 for class 0, +1 for 1."""
    return tf.cast(2 * ids - 1, tf.float32)


def is_single_unit(explained: tf.Tensor) -> bool:
    """Whether an output (static shape) is one unit per sample: a binary classifier."""
    return explained.shape.rank == 1 or explained.shape[-1] == 1


def class_scores(explained: tf.Tensor, probability: bool = False) -> tf.Tensor:
    """Per-class scores `(batch, classes)` of the explained output.

    Dense outputs (segmentation) are summed over their positions. A single unit (a binary
    classifier) becomes two classes by `two_class`, so `targets=0` explains the negative class.
    """
    scores = tf.cast(explained, tf.float32)
    if scores.shape.rank == 1:
        scores = scores[:, None]
    if scores.shape.rank > 2:
        scores = tf.reduce_sum(scores, axis=list(range(1, scores.shape.rank - 1)))
    if scores.shape[-1] == 1:
        scores = two_class(scores, probability)
    return scores


def probabilities(scores: tf.Tensor, space: str, head: str | None, single: bool) -> tf.Tensor:
    """The model's probabilities from per-class `scores` in `space` ("logits"/"probability").

    Args:
        head: The model's own final activation ("softmax", "sigmoid" or None).
        single: The output is a single unit (sigmoid of `[-z, z]` gives `[1 - p, p]`).
    """
    if space == "probability":
        return scores
    if head == "sigmoid" or single:
        return tf.sigmoid(scores)
    return tf.nn.softmax(scores, axis=-1)


def select_scores(per_class: tf.Tensor, ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Pick one score per sample, `per_class[i, ids[i]]`. A negative id is a rank: `TOP1`
    (-1) the highest-scoring class, -2 the second, ... (`PAD` counts as `TOP1`).

    Returns:
        `(score, ids)`: scores of shape `(batch,)` and the class ids used (ranks resolved).
    """
    top1 = tf.argmax(per_class, axis=-1, output_type=tf.int32)
    if ids.dtype != tf.int32:
        ids = tf.cast(ids, tf.int32)
    rank = tf.clip_by_value(-ids - 1, 0, tf.shape(per_class)[-1] - 1)
    order = tf.argsort(per_class, axis=-1, direction="DESCENDING", stable=True)
    ranked = tf.where(rank > 0, tf.gather(order, rank, batch_dims=1), top1)
    ids = tf.where(ids < 0, ranked, ids)
    return tf.gather(per_class, ids, axis=1, batch_dims=1), ids


def call_target(fn: Callable, outputs: list, name: Callable | None = None) -> tf.Tensor:
    """Apply a user's target callable to the outputs; check it gives a score vector.

    Args:
        fn: The callable; it gets the model output (a list when the model has several).
        outputs: The model outputs, a flat list.
        name: What to call the callable in messages (defaults to `fn`).

    Returns:
        float32 `(batch,)`. That it holds one score per sample is checked by the step (see
        `check_score_count`), since the batch size is only known when it runs.

    Raises:
        InvalidTargetError: the callable failed, or returned something else than a numeric
            tensor of shape `(batch,)` computed from the outputs.
    """
    fn_name = _name(name or fn)
    try:
        value = fn(outputs[0] if len(outputs) == 1 else outputs)
    except InvalidTargetError:
        raise
    except Exception as error:  # the user's code: say whose it is
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise InvalidTargetError(
            f"The target callable {fn_name} raised {type(error).__name__}: {text} It receives "
            "the model output (a list for several outputs) and must return one score per sample."
        ) from error
    if not isinstance(value, (tf.Tensor, tf.Variable)):
        raise InvalidTargetError(
            f"The target callable {fn_name} must return a tensor of scores computed from the "
            f"model output, shape (batch,). Received a {type(value).__name__}: "
            f"{str(value)[:80]}. Use tensor operations on the output, e.g. "
            "`lambda out: out[:, 3]`."
        )
    if value.shape.rank != 1:
        raise InvalidTargetError(
            f"The target callable {fn_name} must return one score per sample, shape "
            f"(batch,). Received a tensor of shape {tuple(value.shape)}; reduce it, e.g. with "
            "`keras.ops.sum(..., axis=...)`."
        )
    if not (value.dtype.is_floating or value.dtype.is_integer):
        raise InvalidTargetError(
            f"The target callable {fn_name} must return numeric scores. Received dtype "
            f"{value.dtype.name}."
        )
    return tf.cast(value, tf.float32)


def check_score_count(target, count: int, samples: int) -> None:
    """Raise when a target (a callable) gave `count` scores for `samples` samples."""
    if count != samples:
        what = target.describe() if hasattr(target, "describe") else _name(target)
        raise InvalidTargetError(
            f"The {what} must return exactly one score per sample: it "
            f"returned {count} scores for {samples} samples. Do not slice or reduce the batch "
            "axis; index the class axis instead, e.g. `lambda out: out[:, 1]`."
        )


def _name(fn) -> str:
    name = getattr(fn, "__name__", type(fn).__name__)
    return f"{name!r}" if name != "<lambda>" else "(a lambda)"


def check_scores_finite(scores: np.ndarray, what: str = "target") -> None:
    """Raise when explained scores are NaN/inf (a target callable computing NaN, say)."""
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise InvalidTargetError(
            f"The explained {what} scores are NaN or infinite for images {bad[:10].tolist()}"
            f"{' ...' if bad.size > 10 else ''}; their maps would be meaningless. Check the "
            "target callable (or the model) for divisions by zero, logs of zero or overflow."
        )
