"""Explain a whole `tf.data.Dataset`: batch by batch, on one device or across replicas.

`explain_dataset(explainer, dataset)` streams the dataset through any `BaseCAM` explainer. It
either yields one `Explanation` per batch (a generator; nothing is kept between batches) or,
with `out_dir` / `maps_path`, writes overlay PNGs and a `.npy` memmap of the maps as it goes
and returns a small `DatasetExplanation` summary. Memory stays flat whatever the dataset size:
only one batch of images and maps is alive at a time.

Under a `tf.distribute` strategy (the active one, or `strategy=`) each global batch is split
across the replicas, every replica runs the explainer's compiled step on its share, and the
results are gathered back in dataset order.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_gradcam.errors import InvalidInputError, InvalidTargetError
from keras_gradcam.image import displayable, overlay, save_png
from keras_gradcam.methods.base import BaseCAM, Explanation

_UNKNOWN = int(tf.data.UNKNOWN_CARDINALITY)
_INFINITE = int(tf.data.INFINITE_CARDINALITY)
_LABEL_CHECK = "keras_gradcam label check"


@dataclasses.dataclass
class DatasetExplanation:
    """What `explain_dataset` returns when it writes its results (`out_dir` / `maps_path`).

    Attributes:
        count: Number of samples explained.
        indices: int64 `(count,)`, the position of each explained sample in the dataset
            (`0..count-1` on one worker; a worker's own share under multi-worker strategies).
        targets: int32 `(count,)`, the class explained per sample (-1 for callable targets).
        scores: float32 `(count,)`, the differentiated score per sample.
        predicted: int32 `(count,)`, the top-1 class per sample.
        maps: The maps `(count, *spatial)` as a read-only memmap of `maps_path`, or `None`.
        files: Paths of the overlay PNGs written to `out_dir`, in dataset order.
    """

    count: int
    indices: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    predicted: np.ndarray
    maps: np.ndarray | None
    files: list[str]


def explain_dataset(
    explainer: BaseCAM,
    dataset: tf.data.Dataset,
    *,
    targets: Any = None,
    out_dir: str | os.PathLike | None = None,
    maps_path: str | os.PathLike | None = None,
    progress: bool = True,
    strategy: tf.distribute.Strategy | None = None,
    count: int | None = None,
    batch_size: int | None = None,
    resize: bool = True,
    normalize: bool = True,
    colormap: str = "jet",
    alpha: float = 0.4,
) -> Iterator[Explanation] | DatasetExplanation:
    """Explain every sample of a `tf.data.Dataset`, streaming it batch by batch.

    Dataset elements follow the `model.fit` convention: `inputs`, `(inputs,)`,
    `(inputs, labels)` or `(inputs, labels, sample_weights)`, where `inputs` is a tensor, or a
    tuple/list/dict of tensors for multi-input models. The dataset may be batched or not; it is
    re-batched to `batch_size` samples per device.

    Without `out_dir` and `maps_path` this returns a generator of `Explanation`s, one per batch,
    in dataset order; concatenated, they equal `explainer.explain(all_inputs, ...)`. With either
    of them it runs to the end, writing as it goes, and returns a `DatasetExplanation`.

    Under a `tf.distribute` strategy (`strategy=`, else the one whose `scope()` is active),
    each global batch of `batch_size * num_replicas_in_sync` samples is split across the
    replicas (`strategy.experimental_distribute_dataset`), each replica runs the explainer's
    compiled step (`strategy.run`) and the per-replica results are gathered in dataset order.

    Args:
        explainer: Any `BaseCAM` instance (`GradCAM(model)`, `ScoreCAM(model)`, ...).
        dataset: A `tf.data.Dataset` as described above.
        targets: `None` (top-1 class per sample; default), `"label"` (the dataset's labels:
            sparse `(batch,)`/`(batch, 1)` or one-hot `(batch, classes)`), an int (that class
            for all), one class per sample for the whole dataset `(count,)`, or a callable on
            the model outputs as for the explainer.
        out_dir: Folder to write one overlay PNG per sample into, named by dataset position
            (`000123.png`). Needs image inputs `(batch, H, W, 1|3)`.
        maps_path: A `.npy` file to write the maps into, float32 `(count, *spatial)`, through
            `np.lib.format.open_memmap`. Needs the number of samples: `count=`, or a dataset of
            known cardinality (a batched dataset of known cardinality is counted with one cheap
            pass over the input pipeline).
        progress: Show a `keras.utils.Progbar` (samples). Defaults to `True`.
        strategy: A `tf.distribute.Strategy` to run on; defaults to the active one, if any.
        count: Number of samples in the dataset, when its cardinality is unknown.
        batch_size: Samples per device per step. Defaults to the explainer's `batch_size`.
        resize, normalize: As for the explainer's call.
        colormap, alpha: Of the overlays, as for `keras_gradcam.overlay`.

    Returns:
        A generator of `Explanation`s, or a `DatasetExplanation` when writing.

    Raises:
        TypeError: `explainer` is not a `BaseCAM` or `dataset` not a `tf.data.Dataset`.
        ValueError: bad options (`targets="label"` without labels, a missing `count`, ...);
            `InvalidInputError` for inputs the model cannot take or that hold NaN/inf.

    Example:

    ```python
    cam = keras_gradcam.GradCAM(model)
    ds = tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(64)
    for explanation in explain_dataset(cam, ds, targets="label"):
        ...  # explanation.heatmaps: (64, H, W)
    summary = explain_dataset(cam, ds, out_dir="cams/", maps_path="cams/maps.npy")
    ```
    """
    job = _Job(explainer, dataset, targets, strategy, count, batch_size, resize, normalize)
    writing = out_dir is not None or maps_path is not None
    if out_dir is not None:
        job.check_drawable()
    if maps_path is not None:
        job.require_count("`maps_path`")
    bar = keras.utils.Progbar(job.count, unit_name="image") if progress else None
    batches = job.run(bar)
    if not writing:
        return _generator(batches)
    return _write(job, batches, out_dir, maps_path, colormap, float(alpha))


class _Job:
    """The checked options and the prepared dataset of one `explain_dataset` call."""

    def __init__(self, explainer, dataset, targets, strategy, count, batch_size, resize,
                 normalize):
        if not isinstance(explainer, BaseCAM):
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
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1
        ):
            raise ValueError(f"`count` must be a positive int. Received: count={count!r}.")
        if batch_size is not None and (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1
        ):
            raise ValueError(
                f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}."
            )
        self.explainer = explainer
        self.resize, self.normalize = bool(resize), bool(normalize)
        self.batch_size = int(batch_size or explainer.batch_size)
        self.strategy = _pick_strategy(strategy)
        self.replicas = self.strategy.num_replicas_in_sync if self.strategy else 1

        spec = dataset.element_spec
        self.inputs_spec, self.labels_spec = _split_spec(spec)
        self.batched = _is_batched(self.inputs_spec, explainer.model)
        self.source = dataset
        self.count = self._known_count(dataset, count)
        self.target_fn: Callable | None = None
        self.mode, self.fixed = self._targets(targets)
        self.dataset = self._pipeline(dataset)

    # ---- options --------------------------------------------------------------------------

    def _known_count(self, dataset, count) -> int | None:
        if count is not None:
            return int(count)
        cardinality = int(dataset.cardinality())
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

    def _targets(self, targets):
        num_classes = self.explainer._num_classes
        if targets is None:
            return "top1", None
        if isinstance(targets, str):
            if targets != "label":
                raise ValueError(
                    "`targets` must be None, 'label', an int, one class per sample or a "
                    f"callable. Received: targets={targets!r}."
                )
            if self.labels_spec is None:
                raise ValueError(
                    "`targets='label'` needs a dataset of (inputs, labels) pairs; this dataset "
                    f"yields inputs only (element_spec={self.source.element_spec})."
                )
            return "label", None
        if callable(targets):
            self.target_fn = targets
            return "callable", None
        if isinstance(targets, (bool, np.bool_)):
            raise InvalidTargetError(f"`targets` must be class indices. Received: {targets!r}.")
        if isinstance(targets, (int, np.integer)):
            ids = np.asarray([int(targets)])
            mode = "int"
        else:
            ids = np.asarray(targets)
            if ids.ndim != 1 or ids.dtype.kind not in "iu":
                raise InvalidTargetError(
                    "`targets` must be None, 'label', an int, one int class per sample or a "
                    f"callable. Received: targets with shape {ids.shape} and dtype {ids.dtype}."
                )
            count = self.require_count("Per-sample `targets`")
            if len(ids) != count:
                raise InvalidTargetError(
                    f"`targets` must hold one class per sample of the dataset: expected "
                    f"{count}, received {len(ids)}."
                )
            mode = "array"
        if num_classes is not None and ids.size and (ids.min() < 0 or ids.max() >= num_classes):
            bad = sorted(set(ids[(ids < 0) | (ids >= num_classes)].tolist()))
            raise InvalidTargetError(
                f"Target classes must lie in [0, {num_classes - 1}]. Received: {bad[:10]}."
            )
        return mode, tf.constant(ids.astype(np.int32))

    def check_drawable(self) -> None:
        if self._image_leaf() is None:
            raise InvalidInputError(
                "`out_dir` writes overlays on the input images, but no input looks like images "
                f"(batch, H, W, 1 or 3). Received: element_spec={self.source.element_spec}. "
                "Use `maps_path=` or iterate over the results instead."
            )

    def _image_leaf(self) -> int | None:
        for index, leaf in enumerate(keras.tree.flatten(self.inputs_spec)):
            shape = leaf.shape if self.batched else tf.TensorShape([None]).concatenate(leaf.shape)
            if shape.rank == 4 and shape[-1] in (1, 3) or shape.rank == 3:
                return index
        return None

    # ---- the pipeline ---------------------------------------------------------------------

    def _pipeline(self, dataset):
        """Elements `(inputs, ids, index)`: one batch of `batch_size * replicas` samples."""
        mode, fixed, num_classes = self.mode, self.fixed, self.explainer._num_classes
        replicas = self.replicas

        def split(*element):
            inputs, labels = _unpack(element)
            return (inputs, labels) if labels is not None else (inputs,)

        data = dataset.map(split)
        if self.batched:
            data = data.unbatch()
        data = data.enumerate().batch(self.batch_size * self.replicas)

        def ids_of(index, element):
            inputs, labels = element if len(element) == 2 else (element[0], None)
            n = tf.shape(index)[0]
            if mode == "label":
                ids = _label_ids(labels, num_classes)
            elif mode == "int":
                ids = tf.fill([n], fixed[0])
            elif mode == "array":
                ids = tf.gather(fixed, index)
            else:
                ids = tf.fill([n], tf.constant(-1, tf.int32))
            if replicas > 1:  # no replica may get an empty share: pad with copies, index -1
                pad = tf.maximum(replicas - n, 0)
                inputs = keras.tree.map_structure(
                    lambda t: tf.concat([t, tf.repeat(t[-1:], pad, axis=0)], 0), inputs
                )
                ids = tf.concat([ids, tf.repeat(ids[-1:], pad)], 0)
                index = tf.concat([index, tf.fill([pad], tf.constant(-1, index.dtype))], 0)
            return inputs, ids, index

        return data.map(ids_of).prefetch(tf.data.AUTOTUNE)

    # ---- running --------------------------------------------------------------------------

    def run(self, bar) -> Iterator[tuple[np.ndarray, Any, Explanation]]:
        """Yields `(indices, inputs, explanation)` per batch, in dataset order."""
        if self.strategy is None:
            return self._run_local(bar)
        return self._run_distributed(bar)

    def _run_local(self, bar):
        explainer = self.explainer
        seen = 0
        for inputs, ids, index in _label_errors(self.dataset):
            if self.mode == "top1":
                targets = None
            elif self.mode == "callable":
                targets = self.target_fn
            else:
                targets = ids.numpy()
            explanation = explainer.explain(
                inputs, targets, resize=self.resize, normalize=self.normalize,
                batch_size=self.batch_size,
            )
            seen += len(index)
            if bar is not None:
                bar.update(seen)
            yield index.numpy(), inputs, explanation
        self._finish(bar, seen)

    def _run_distributed(self, bar):
        explainer, strategy = self.explainer, self.strategy
        first = next(iter(self.dataset.take(1)), None)
        if first is None:
            self._finish(bar, 0)
            return
        prepared, _ = explainer._prepare_inputs(_first_rows(first[0]))
        step = explainer._step(prepared, self.target_fn, self.resize, self.normalize)
        structure = prepared

        def cast(inputs, ids, index):
            return _like(inputs, structure), ids, index

        dist = strategy.experimental_distribute_dataset(self.dataset.map(cast))

        @tf.function(input_signature=[dist.element_spec])
        def run(element):
            inputs, ids, index = element
            # A plain function: each replica calls the explainer's compiled step on its share.
            out = strategy.run(lambda x, i: step(x, i), args=(inputs, ids))
            return out, index

        seen = 0
        for element in _label_errors(dist):
            out, index = run(element)
            local = lambda value: strategy.experimental_local_results(value)  # noqa: E731
            if not all(bool(f) for f in local(out["finite"])):
                raise InvalidInputError(
                    "`images` contain NaN or infinite values; Grad-CAM of such inputs is "
                    "meaningless. Clean or re-normalise the images first."
                )
            indices = np.concatenate([i.numpy() for i in local(index)])
            order = np.argsort(indices, kind="stable")
            order = order[indices[order] >= 0]  # drop the padding
            parts = {
                key: np.concatenate([v.numpy() for v in local(out[key])])[order]
                for key in out
                if key != "finite"
            }
            if self.target_fn is not None:
                parts["targets"] = np.full(len(order), -1, np.int32)
            inputs = keras.tree.map_structure(
                lambda *values: tf.concat(values, axis=0), *local(element[0])
            )
            inputs = keras.tree.map_structure(lambda x, o=order: tf.gather(x, o), inputs)
            seen += len(order)
            if bar is not None:
                bar.update(seen)
            yield indices[order], inputs, Explanation(**parts)
        self._finish(bar, seen)

    def _finish(self, bar, seen: int) -> None:
        if bar is not None and bar.target != seen:
            bar.target = seen
            bar.update(seen, finalize=True)
        if self.count is not None and seen != self.count and self.strategy is None:
            warnings.warn(
                f"The dataset held {seen} samples, but count={self.count} was expected.",
                stacklevel=3,
            )

    def display(self, inputs) -> np.ndarray:
        """The image input of a batch as drawable RGB in [0, 1]."""
        return displayable(keras.tree.flatten(inputs)[self._image_leaf()])


def _generator(batches) -> Iterator[Explanation]:
    for _, _, explanation in batches:
        yield explanation


def _write(job, batches, out_dir, maps_path, colormap, alpha) -> DatasetExplanation:
    files: list[str] = []
    indices, targets, scores, predicted = [], [], [], []
    maps = None
    width = max(6, len(str((job.count or 1) - 1)))
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
    for index, inputs, explanation in batches:
        if maps_path is not None:
            if maps is None:
                maps = np.lib.format.open_memmap(
                    os.fspath(maps_path), mode="w+", dtype=np.float32,
                    shape=(job.count, *explanation.heatmaps.shape[1:]),
                )
            if index.max() >= job.count:
                raise ValueError(
                    f"The dataset holds more than count={job.count} samples; pass the right "
                    "`count=`."
                )
            maps[index] = explanation.heatmaps
        if out_dir is not None:
            pictures = overlay(job.display(inputs), explanation.heatmaps, colormap, alpha)
            for i, picture in zip(index, pictures):
                files.append(save_png(os.path.join(out_dir, f"{int(i):0{width}d}.png"), picture))
        indices.append(index)
        targets.append(explanation.targets)
        scores.append(explanation.scores)
        predicted.append(explanation.predicted)
    if maps is not None:
        maps.flush()
        del maps
        maps = np.load(os.fspath(maps_path), mmap_mode="r")

    def join(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros((0,), dtype)

    indices_array = join(indices, np.int64)
    return DatasetExplanation(
        count=len(indices_array),
        indices=indices_array,
        targets=join(targets, np.int32),
        scores=join(scores, np.float32),
        predicted=join(predicted, np.int32),
        maps=maps,
        files=files,
    )


# ---- helpers ------------------------------------------------------------------------------


def _pick_strategy(strategy):
    """The strategy to distribute over, or None for a plain single-device run."""
    if strategy is None:
        if not tf.distribute.has_strategy():
            return None
        strategy = tf.distribute.get_strategy()
    if type(strategy).__name__ == "_DefaultDistributionStrategy":
        return None
    return strategy


def _unpack(element):
    """`(inputs, labels or None)` from a dataset element (the `model.fit` convention)."""
    if len(element) == 1:
        element = element[0]
    if isinstance(element, tuple):
        if len(element) == 1:
            return element[0], None
        if len(element) in (2, 3):
            return element[0], element[1]
        raise ValueError(
            "Dataset elements must be `inputs`, `(inputs, labels)` or "
            f"`(inputs, labels, sample_weights)`. Received a tuple of {len(element)} parts; "
            "for a multi-input model nest the inputs: `((a, b), labels)` or a dict."
        )
    return element, None


def _split_spec(spec):
    return _unpack(spec if isinstance(spec, tuple) else (spec,))


def _is_batched(inputs_spec, model) -> bool:
    """Whether the dataset's inputs already carry a batch axis (compared with the model's)."""
    leaves = keras.tree.flatten(inputs_spec)
    for leaf in leaves:
        if not isinstance(leaf, tf.TensorSpec):
            raise InvalidInputError(
                "Dataset inputs must be dense tensors. Received an element of type "
                f"{type(leaf).__name__} ({leaf})."
            )
    try:
        expected = list(model.inputs)
    except (AttributeError, ValueError):
        expected = []
    if expected:
        rank = len(expected[0].shape)
        got = leaves[0].shape.rank
        if got == rank:
            return True
        if got == rank - 1:
            return False
        raise InvalidInputError(
            f"Dataset inputs must be images shaped like the model input {tuple(expected[0].shape)} "
            f"(batched or not). Received: element shape {tuple(leaves[0].shape)}."
        )
    return True


def _label_ids(labels, num_classes) -> tf.Tensor:
    """Class ids `(batch,)` int32 from sparse `(batch,)`/`(batch, 1)` or one-hot labels."""
    if labels.shape.rank == 2 and labels.shape[-1] != 1:
        ids = tf.argmax(labels, axis=-1, output_type=tf.int32)
    else:
        if labels.shape.rank not in (1, 2):
            raise InvalidTargetError(
                "Labels used as targets must be classes (batch,) or one-hot (batch, classes). "
                f"Received labels of shape {labels.shape}."
            )
        ids = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    if num_classes is not None:
        checks = [
            tf.debugging.assert_less(
                ids, tf.constant(num_classes, tf.int32),
                message=f"{_LABEL_CHECK}: labels must be < {num_classes}",
            ),
            tf.debugging.assert_non_negative(ids, message=f"{_LABEL_CHECK}: labels must be >= 0"),
        ]
        with tf.control_dependencies([c for c in checks if c is not None]):
            ids = tf.identity(ids)
    return ids


def _label_errors(iterable):
    """Iterate, turning the pipeline's label range checks into `InvalidTargetError`s."""
    iterator = iter(iterable)
    while True:
        try:
            element = next(iterator)
        except StopIteration:
            return
        except tf.errors.InvalidArgumentError as error:
            if _LABEL_CHECK not in str(error):
                raise
            raise InvalidTargetError(
                "The dataset's labels hold classes outside the explained output's range "
                f"[0, num_classes). {_first_line(error)} Check the labels, or pass targets=None "
                "to explain the top-1 class."
            ) from None
        yield element


def _first_line(error) -> str:
    return str(error).strip().splitlines()[0][:300]


def _first_rows(inputs):
    return keras.tree.map_structure(lambda x: x[:1], inputs)


def _like(inputs, structure):
    """`inputs` cast to the dtypes (and container) of the explainer's prepared inputs."""
    if isinstance(structure, dict):
        if not isinstance(inputs, dict):
            raise InvalidInputError("Dict model inputs need a dataset of dicts.")
        return {key: tf.cast(inputs[key], value.dtype) for key, value in structure.items()}
    if isinstance(structure, (list, tuple)):
        return [tf.cast(x, s.dtype) for x, s in zip(keras.tree.flatten(inputs), structure)]
    leaf = keras.tree.flatten(inputs)[0]
    return tf.cast(leaf, structure.dtype)


__all__ = ["DatasetExplanation", "explain_dataset"]
