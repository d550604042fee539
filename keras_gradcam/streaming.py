"""Explain a whole `tf.data.Dataset`: batch by batch, on one device or across replicas.

`iter_explanations(explainer, dataset)` streams the dataset through any explainer and yields
one `Explanation` per batch (nothing is kept between batches); `write_explanations` (in
`keras_gradcam.writing`, built on the same `DatasetJob`) writes overlays and a `.npy` of the
maps as it goes. Memory stays
flat whatever the dataset size: only one batch of images and maps is alive at a time.

Under a `tf.distribute` strategy (the active one, or `strategy=`) each global batch is split
across the replicas, every replica runs the explainer's compiled step on its share, and the
results are gathered back in dataset order.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_gradcam.errors import InvalidInputError, InvalidTargetError
from keras_gradcam.explanation import Explanation
from keras_gradcam.inputs import (
    cast_like,
    check_positive_int,
    dataset_is_batched,
    image_index,
    unpack_element,
)
from keras_gradcam.targets import INVALID, label_ids, label_ids_in_graph
from keras_gradcam.targets.datasets import plan_dataset_targets

_UNKNOWN = int(tf.data.UNKNOWN_CARDINALITY)
_INFINITE = int(tf.data.INFINITE_CARDINALITY)


@dataclasses.dataclass
class Batch:
    """One explained batch: dataset positions, the inputs (for drawing) and the explanation."""

    indices: np.ndarray
    inputs: Any
    explanation: Explanation


def iter_explanations(
    explainer,
    dataset: tf.data.Dataset,
    *,
    targets: Any = None,
    progress: bool = True,
    strategy: tf.distribute.Strategy | None = None,
    count: int | None = None,
    batch_size: int | None = None,
    resize: bool = True,
    normalize: bool = True,
) -> Iterator[Explanation]:
    """Explain every sample of a `tf.data.Dataset`, yielding one `Explanation` per batch.

    Dataset elements follow the `model.fit` convention: `inputs`, `(inputs,)`,
    `(inputs, labels)` or `(inputs, labels, sample_weights)`, where `inputs` is a tensor, or a
    tuple/list/dict of tensors for multi-input models. The dataset may be batched or not; it is
    re-batched to `batch_size` samples per device. Concatenated, the explanations equal
    `explainer.explain(all_inputs, ...)`, in dataset order.

    Under a `tf.distribute` strategy (`strategy=`, else the one whose `scope()` is active),
    each global batch of `batch_size * num_replicas_in_sync` samples is split across the
    replicas (`strategy.experimental_distribute_dataset`), each replica runs the explainer's
    compiled step (`strategy.run`) and the per-replica results are gathered in dataset order.

    Args:
        explainer: Any explainer (`GradCAM(model)`, `ScoreCAM(model)`, ...).
        dataset: A `tf.data.Dataset` as described above.
        targets: The explainer's targets (`None`: top-1; an int; a callable), one class per
            sample of the whole dataset `(count,)`, or `"label"`: the dataset's labels
            (sparse `(batch,)`/`(batch, 1)` or one-hot `(batch, classes)`, whole numbers).
        progress: Show a `keras.utils.Progbar` (samples). Defaults to `True`.
        strategy: A `tf.distribute.Strategy` to run on; defaults to the active one, if any.
        count: Number of samples in the dataset, when its cardinality is unknown.
        batch_size: Samples per device per step. Defaults to the explainer's `batch_size`.
        resize, normalize: As for the explainer's call.

    Returns:
        A generator of `Explanation`s.

    Raises:
        TypeError: `explainer` is not an explainer or `dataset` not a `tf.data.Dataset`.
        ValueError: bad options (`targets="label"` without labels, ...); `InvalidInputError`
            for inputs the model cannot take or that hold NaN/inf; `InvalidTargetError` for
            labels that are not classes of the model (naming the first and its position).
    """
    job = DatasetJob(explainer, dataset, targets, strategy, count, batch_size, resize, normalize)
    return (batch.explanation for batch in job.run(progress))


class DatasetJob:
    """The checked options and the prepared dataset of one streaming run."""

    def __init__(self, explainer, dataset, targets, strategy, count, batch_size, resize,
                 normalize):
        if not all(hasattr(explainer, a) for a in ("prepare_inputs", "step", "collect")):
            raise TypeError(
                "`explainer` must be a keras_gradcam explainer (a BaseCAM such as "
                f"GradCAM(model)). Received: explainer of type {type(explainer).__name__}."
            )
        if not isinstance(dataset, tf.data.Dataset):
            raise TypeError(
                "`dataset` must be a tf.data.Dataset; for arrays call the explainer directly "
                "or wrap them with `tf.data.Dataset.from_tensor_slices(images)`. "
                f"Received: dataset of type {type(dataset).__name__}."
            )
        if strategy is not None and not isinstance(strategy, tf.distribute.Strategy):
            raise TypeError(
                "`strategy` must be a tf.distribute.Strategy or None. "
                f"Received: strategy of type {type(strategy).__name__}."
            )
        self.explainer = explainer
        self.resize, self.normalize = bool(resize), bool(normalize)
        self.batch_size = check_positive_int(
            explainer.batch_size if batch_size is None else batch_size, "batch_size"
        )
        self.strategy = _pick_strategy(strategy)
        self.replicas = self.strategy.num_replicas_in_sync if self.strategy else 1
        spec = dataset.element_spec
        self.inputs_spec, self.labels_spec = unpack_element(spec)
        self.batched = dataset_is_batched(self.inputs_spec, explainer.model)
        self.source = dataset
        self.count = None if count is None else check_positive_int(count, "count")
        self.count = self.count or self._cardinality_count()
        plan = plan_dataset_targets(explainer, targets, self.labels_spec, self.batched,
                                    self.require_count)
        self.targets, self.ids_from, self.data_from = plan
        self.dataset = self._pipeline(dataset)

    # ---- options --------------------------------------------------------------------------

    def _cardinality_count(self) -> int | None:
        cardinality = int(self.source.cardinality())
        if cardinality == _INFINITE:
            raise ValueError(
                "`dataset` is infinite (e.g. it ends with `.repeat()`); explain a finite "
                "dataset, e.g. `dataset.take(n)`."
            )
        if cardinality == _UNKNOWN:
            return None
        if not self.batched:
            return cardinality
        leaf = keras.tree.flatten(self.inputs_spec)[0]
        return None if leaf.shape[0] is None else cardinality * int(leaf.shape[0])

    def require_count(self, what: str) -> int:
        """The number of samples (counted with one cheap pass when batches vary in size)."""
        if self.count is not None:
            return self.count
        if self.batched and int(self.source.cardinality()) >= 0:
            sizes = self.source.map(lambda *e: tf.shape(keras.tree.flatten(e)[0])[0])
            self.count = int(sizes.reduce(np.int64(0), lambda a, b: a + tf.cast(b, tf.int64)))
            return self.count
        raise ValueError(
            f"{what} needs the number of samples, but the dataset's cardinality is unknown "
            "(e.g. after `filter`). Pass `count=` (the number of samples), or "
            "`dataset.apply(tf.data.experimental.assert_cardinality(n))`."
        )

    def _bar_target(self) -> int | None:
        """The progress bar's target: the count, or for batches of unknown size but a known
        number of batches, that number times the first batch's size (read once; exact but for
        a smaller last batch, and the bar ends at the true count). Counting exactly would run
        the whole input pipeline, image decoding included, a second time."""
        if self.count is not None or not self.batched or int(self.source.cardinality()) < 0:
            return self.count
        first = next(iter(self.source.take(1)), None)
        if first is None:
            return 0
        size = int(tf.shape(keras.tree.flatten(first)[0])[0])
        return int(self.source.cardinality()) * size

    def drawable_index(self) -> int:
        """Index of the input drawn under the overlays (images `(H, W[, 1|3])`).

        Raises:
            InvalidInputError: no input looks like images.
        """
        leaves = keras.tree.flatten(self.inputs_spec)
        if not self.batched:
            leaves = [tf.TensorSpec([None, *x.shape], x.dtype) for x in leaves]
        index = image_index(leaves, 2)
        if index is None or leaves[index].shape.rank == 4 and leaves[index].shape[-1] not in (
            1, 3
        ):
            raise InvalidInputError(
                "`out_dir` writes overlays on the input images, but no input looks like images "
                f"(batch, H, W, 1 or 3). Received: element_spec={self.source.element_spec}. "
                "Use `maps_path=` or iterate over the results instead."
            )
        return index

    # ---- the pipeline ---------------------------------------------------------------------

    def _pipeline(self, dataset):
        """Elements `(inputs, ids, data, index, labels)`: a batch of `batch_size * replicas`."""
        resolved, replicas = self.targets, self.replicas
        ids_from, data_from = self.ids_from, self.data_from
        num_classes = self.explainer.num_classes
        fixed_ids = tf.constant(resolved.ids)
        fixed_data = {k: tf.constant(v) for k, v in resolved.data.items()}
        batched = self.batched

        def split(*element):
            inputs, labels = unpack_element(element)
            if labels is None:  # a placeholder, so that every element has the same parts
                leaf = keras.tree.flatten(inputs)[0]
                labels = tf.zeros(tf.shape(leaf)[:1] if batched else [], tf.int32)
            return inputs, labels

        data = dataset.map(split)
        if self.batched:
            data = data.unbatch()
        data = data.enumerate().batch(self.batch_size * self.replicas)

        def ids_of(index, element):
            inputs, labels = element
            n = tf.shape(index)[0]
            if ids_from == "label":
                ids = label_ids_in_graph(labels, num_classes)
            elif ids_from == "gather":
                ids = tf.gather(fixed_ids, index)
            else:
                ids = tf.repeat(fixed_ids[:1], n, axis=0)
            if data_from == "element":
                parts = keras.tree.flatten(labels)
                target_data = {k: tf.cast(p, fixed_data[k].dtype)
                               for k, p in zip(fixed_data, parts)}
            else:
                target_data = {k: tf.gather(v, index) for k, v in fixed_data.items()}
            parts = (inputs, ids, target_data, index, labels)
            if replicas > 1:  # no replica may get an empty share: pad with copies, index -1
                pad = tf.maximum(replicas - n, 0)
                parts = keras.tree.map_structure(
                    lambda t: tf.concat([t, tf.repeat(t[-1:], pad, axis=0)], 0), parts
                )
                index = tf.concat([index, tf.fill([pad], tf.constant(-1, index.dtype))], 0)
                parts = (*parts[:3], index, parts[4])
            return parts

        return data.map(ids_of).prefetch(tf.data.AUTOTUNE)

    def _check_labels(self, ids: np.ndarray, index: np.ndarray, labels) -> None:
        """Name the first label that is not a class of the model (and its position)."""
        if self.ids_from == "label" and (ids == INVALID).any():
            label_ids(np.asarray(labels), self.explainer.num_classes, "labels",
                      positions=np.asarray(index))
            raise InvalidTargetError(f"The dataset's labels hold invalid classes: {labels}.")

    # ---- running --------------------------------------------------------------------------

    def run(self, progress: bool) -> Iterator[Batch]:
        """Yields one `Batch` per global batch, in dataset order."""
        bar = keras.utils.Progbar(self._bar_target(), unit_name="image") if progress else None
        seen = 0
        batches = self._run_local() if self.strategy is None else self._run_distributed()
        for batch in batches:
            seen += len(batch.indices)
            if bar is not None:
                bar.update(seen)
            yield batch
        if bar is not None and bar.target != seen:
            bar.target = seen
            bar.update(seen, finalize=True)
        self.seen = seen
        if self.count is not None and seen != self.count and self.strategy is None:
            warnings.warn(
                f"The dataset held {seen} samples, but count={self.count} was expected.",
                stacklevel=3,
            )

    def _run_local(self) -> Iterator[Batch]:
        explainer, step = self.explainer, None
        for inputs, ids, data, index, labels in self.dataset:
            ids, index = ids.numpy(), index.numpy()
            self._check_labels(ids, index, labels)
            prepared, _ = explainer.prepare_inputs(inputs)
            if step is None:
                step = explainer.step(prepared, self.targets, resize=self.resize,
                                      normalize=self.normalize)
            outputs = step(prepared, ids, data)
            yield Batch(index, inputs, explainer.collect(outputs, self.targets))

    def _run_distributed(self) -> Iterator[Batch]:
        explainer, strategy = self.explainer, self.strategy
        first = next(iter(self.dataset.take(1)), None)
        if first is None:
            return
        prepared, _ = explainer.prepare_inputs(keras.tree.map_structure(lambda x: x[:1],
                                                                         first[0]))
        step = explainer.step(prepared, self.targets, resize=self.resize,
                              normalize=self.normalize)

        def cast(inputs, ids, data, index, labels):
            return cast_like(inputs, prepared), ids, data, index, labels

        dist = strategy.experimental_distribute_dataset(self.dataset.map(cast))

        @tf.function(input_signature=[dist.element_spec])
        def run(element):
            # A plain function: each replica calls the explainer's compiled step on its share.
            return strategy.run(lambda x, i, d: step(x, i, d), args=element[:3])

        def local(value):
            return strategy.experimental_local_results(value)

        for element in dist:
            indices = np.concatenate([i.numpy() for i in local(element[3])])
            ids = np.concatenate([i.numpy() for i in local(element[1])])
            labels = np.concatenate([np.asarray(x) for x in local(element[4])])
            real = indices >= 0
            self._check_labels(ids[real], indices[real], labels[real])
            outputs = run(element)
            shares = [explainer.collect({k: v[r] for k, v in _per_replica(outputs, local)},
                                        self.targets) for r in range(self.replicas)]
            order = np.argsort(indices, kind="stable")
            order = order[indices[order] >= 0]  # drop the padding
            inputs = keras.tree.map_structure(
                lambda *values: tf.concat(values, axis=0), *local(element[0])
            )
            inputs = keras.tree.map_structure(lambda x, o=order: tf.gather(x, o), inputs)
            yield Batch(indices[order], inputs, Explanation.concatenate(shares).take(order))


# ---- helpers ------------------------------------------------------------------------------


def _per_replica(outputs: dict, local) -> list[tuple[str, tuple]]:
    return [(key, local(value)) for key, value in outputs.items()]


def _pick_strategy(strategy):
    """The strategy to distribute over, or None for a plain single-device run."""
    if strategy is None:
        if not tf.distribute.has_strategy():
            return None
        strategy = tf.distribute.get_strategy()
    if type(strategy).__name__ == "_DefaultDistributionStrategy":
        return None
    return strategy


__all__ = ["Batch", "DatasetJob", "iter_explanations"]
