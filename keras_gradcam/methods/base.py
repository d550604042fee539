"""BaseCAM: one core for the CAM family.

It owns the user's model (shared, never changed), the compiled step and the post-processing.
A method overrides one hook: `channel_weights(A, dA)` (Grad-CAM family),
`weighted_activations(A, dA)` (element-wise variants), `compute_maps(A, dA)` or, when it
needs the classes or more forward passes, `layer_maps(run)` (CAM, Score-CAM).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from keras_gradcam.errors import InvalidInputError, KerasGradCAMError, ModelNotSupportedError
from keras_gradcam.inputs import check_batch_size, prepare_inputs
from keras_gradcam.layers import LayerPath, resolve_layer
from keras_gradcam.maps import normalize_maps, resize_maps, spatial_mean
from keras_gradcam.methods.smoothing import Augmentation, first_component, per_channel
from keras_gradcam.model import ScoreModel, head_activation, unchanged
from keras_gradcam.targets import (
    TOP1,
    Targets,
    call_target,
    class_ids,
    class_scores,
    select_scores,
)


@dataclasses.dataclass
class Explanation:
    """What one explain call returns.

    Attributes:
        heatmaps: float32 `(batch, *spatial)`, in [0, 1] when normalised.
        targets: int32 `(batch,)`, the class explained per sample (-1 for callable targets).
        scores: float32 `(batch,)`, the differentiated score (pre-softmax unless
            `score="probability"`).
        logits: float32 `(batch, classes)`, the explained output's scores for every class
            (summed over positions for dense outputs; a single sigmoid unit gives two classes,
            `[-z, z]`).
        probabilities: float32 `(batch, classes)`: the model's own softmax/sigmoid of
            `logits` (softmax for a linear multi-class head, sigmoid for a single unit).
    """

    heatmaps: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    logits: np.ndarray
    probabilities: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        """The top-1 class per sample, int32 `(batch,)`."""
        return self.logits.argmax(axis=-1).astype(np.int32)


def default_jit_compile() -> bool:
    """XLA where it pays: on when a GPU is visible, off on CPU (measured slower there)."""
    return bool(tf.config.list_physical_devices("GPU"))


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
        logits: float32 `(batch, classes)`.
        target_fn: The user's target callable, or `None`.
        score_model: The `ScoreModel` that ran, to run it again (Score-CAM).
    """

    inputs: Any
    activations: tf.Tensor
    gradients: tf.Tensor | None
    scores: tf.Tensor
    ids: tf.Tensor
    logits: tf.Tensor
    target_fn: Callable | None
    score_model: ScoreModel


class BaseCAM:
    """Base of every CAM method: builds once, explains whole batches in one compiled call.

    Args:
        model: A built Keras model (Sequential, functional, nested, multi-input/output or
            subclassed). It is never changed.
        layer: The layer whose feature maps are weighted: `None` (the last layer with a spatial
            output, looking inside nested models), a name, an `"outer/inner"` path, a layer
            object or an index into `model.layers`. A list of these explains several layers:
            each layer's map is scaled into [0, 1], resized to the input (or, with
            `resize=False`, to the largest of the maps) and the maps are averaged.
        output: Which model output the targets refer to (index or name). Defaults to 0.
        score: `"logits"` (default) differentiates the score before a final softmax/sigmoid,
            as the Grad-CAM paper asks; `"probability"` the activated output.
        jit_compile: `None` (XLA when a GPU is visible), `True` or `False`.
        batch_size: Largest number of samples run at once; larger inputs are split.
        aug_smooth: Also explain horizontally flipped and brightness-scaled (x0.9, x1.1) copies
            of the images (6 views in one batched run), flip their maps back and average
            them. Smoother maps that follow the object better; costs 6x. Defaults to `False`.
        eigen_smooth: Replace the sum over channels of the weighted feature maps by their
            projection on the first principal component (see `first_component`), which removes
            noise. Defaults to `False`.
    """

    uses_gradients: ClassVar[bool] = True
    name: ClassVar[str] = "base"

    def __init__(
        self,
        model: keras.Model,
        layer: Any = None,
        *,
        output: int | str = 0,
        score: str = "logits",
        jit_compile: bool | None = None,
        batch_size: int = 32,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ):
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"`model` must be a keras.Model. Received: model of type {type(model).__name__}."
            )
        if score not in ("logits", "probability"):
            raise ValueError(
                f"`score` must be 'logits' or 'probability'. Received: score={score!r}."
            )
        check_batch_size(batch_size)
        layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
        if not layers:
            raise ValueError("`layer` is an empty list. Pass None, one layer or several layers.")
        self.model = model
        self.paths: list[LayerPath] = [resolve_layer(model, item) for item in layers]
        self.path: LayerPath = self.paths[0]
        self.score = score
        self.output_index = _output_index(model, output)
        self.jit_compile = default_jit_compile() if jit_compile is None else bool(jit_compile)
        self.batch_size = batch_size
        self.aug_smooth = bool(aug_smooth)
        self.eigen_smooth = bool(eigen_smooth)
        self.trace_count = 0
        self._score_models = [
            ScoreModel(model, path, pre_activation=score == "logits") for path in self.paths
        ]
        self._score_model = self._score_models[0]
        self._steps: dict[Any, tf.types.experimental.GenericFunction] = {}
        self._num_classes: int | None = _num_classes(model, self.output_index)
        self._head_activation = head_activation(model, self.output_index)
        self._single_unit = False  # set while tracing: the explained output has one unit

    @property
    def layer(self) -> keras.layers.Layer:
        """The resolved layer whose feature maps are explained (the first, if several)."""
        return self.path[-1]

    @property
    def layers(self) -> list[keras.layers.Layer]:
        """Every resolved layer, in the order given."""
        return [path[-1] for path in self.paths]

    # ---- hooks -------------------------------------------------------------------------------

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

    # ---- public API --------------------------------------------------------------------------

    def __call__(
        self,
        images: Any,
        targets: Targets = None,
        *,
        resize: bool = True,
        normalize: bool = True,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Explain a batch.

        Args:
            images: Model inputs with a batch axis: an array or tensor, or for multi-input
                models a list or dict of them.
            targets: `None` (top-1 class per sample), an int (that class for all), one class
                per sample, or a callable taking the model outputs and returning a score per
                sample.
            resize: Upsample the maps to the input's spatial size.
            normalize: Scale each map into [0, 1] by its maximum (all-zero maps stay zero).
            batch_size: Override the constructor's `batch_size` for this call.

        Returns:
            float32 array `(batch, H, W)` (or `(batch, length)`, `(batch, D, H, W)`).
        """
        return self.explain(
            images, targets, resize=resize, normalize=normalize, batch_size=batch_size
        ).heatmaps

    def explain(
        self,
        images: Any,
        targets: Targets = None,
        *,
        resize: bool = True,
        normalize: bool = True,
        batch_size: int | None = None,
    ) -> Explanation:
        """Like `__call__`, but also returns the explained classes, scores and logits."""
        inputs, n = self._prepare_inputs(images)
        batch_size = self.batch_size if batch_size is None else check_batch_size(batch_size)
        target_fn = targets if callable(targets) else None
        step = self._step(inputs, target_fn, bool(resize), bool(normalize))
        ids = np.full((n,), TOP1, np.int32) if target_fn else class_ids(
            targets, n, self._num_classes
        )
        parts, finite = [], []
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            rows = self._padded_rows(start, stop, batch_size)
            if len(rows) == n:  # the whole input in one call: no slicing (eager ops cost ~1 ms)
                chunk = inputs
            elif len(rows) == stop - start:
                chunk = keras.tree.map_structure(lambda x, a=start, b=stop: x[a:b], inputs)
            else:
                chunk = keras.tree.map_structure(lambda x, rows=rows: tf.gather(x, rows), inputs)
            out = step(chunk, ids[rows])
            finite.append(out.pop("finite"))
            parts.append((stop - start, out))
        # Results come to the host after the loop, so chunks queue up back to back.
        if not all(bool(flag) for flag in finite):
            raise InvalidInputError(
                "`images` contain NaN or infinite values; Grad-CAM of such inputs is "
                "meaningless. Clean or re-normalise the images first."
            )
        parts = [{k: v.numpy()[:count] for k, v in out.items()} for count, out in parts]
        result = parts[0] if len(parts) == 1 else {
            k: np.concatenate([p[k] for p in parts]) for k in parts[0]
        }
        if target_fn:
            result["targets"] = np.full((n,), -1, np.int32)
        return Explanation(**result)

    def _padded_rows(self, start: int, stop: int, batch_size: int) -> np.ndarray:
        """Row indices of one chunk. Under XLA, padded (repeating the last row) to a power of
        two, at most `batch_size`, so XLA compiles a handful of shapes instead of one per batch
        size; maps are per sample, so padding never changes them."""
        rows = np.arange(start, stop)
        if self.jit_compile:
            size = min(batch_size, 1 << (len(rows) - 1).bit_length())
            rows = np.concatenate([rows, np.full(max(size - len(rows), 0), stop - 1)])
        return rows

    def explain_dataset(self, dataset, **kwargs):
        """Explain a `tf.data.Dataset` batch by batch; see `keras_gradcam.explain_dataset`."""
        from keras_gradcam.streaming import explain_dataset

        return explain_dataset(self, dataset, **kwargs)

    # ---- the compiled step -------------------------------------------------------------------

    def forward(self, inputs, ids, target_fn, score_model=None, groups: int = 1) -> Pass:
        """Run the model (and the backward pass if the method uses gradients) for one layer.

        Args:
            groups: The batch holds `groups` views of the same samples one after the other
                (`aug_smooth`); top-1 classes are taken from the first view.
        """
        score_model = self._score_model if score_model is None else score_model
        with tf.GradientTape(watch_accessed_variables=False) as tape:

            def watch(tensor):
                tape.watch(tensor)
                return tensor

            activations, outputs = score_model(inputs, watch if self.uses_gradients else unchanged)
            scores, ids, logits = self._scores(outputs, ids, target_fn, groups)
        gradients = None
        if self.uses_gradients:
            gradients = tape.gradient(scores, activations)
            if gradients is None:
                raise ModelNotSupportedError(
                    f"The explained score does not depend on layer {self.layer.name!r}; pick a "
                    "layer on the path to the explained output (see `output=`)."
                )
            gradients = tf.cast(gradients, tf.float32)
        activations = tf.cast(activations, tf.float32)
        return Pass(inputs, activations, gradients, scores, ids, logits, target_fn, score_model)

    def raw_maps(self, inputs, ids, target_fn) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """Run the model for the first layer; return maps before the ReLU.

        Returns:
            `(maps, scores, ids, logits)`.
        """
        run = self.forward(inputs, ids, target_fn)
        return self.layer_maps(run), run.scores, run.ids, run.logits

    def compute(self, inputs, ids, target_fn, size, normalize: bool):
        """The body of the compiled step: `(heatmaps, scores, ids, logits)` of one batch.

        Every layer's map is computed (on the augmented views with `aug_smooth`), ReLU'd,
        resized to `size` (`None`: the largest map's size), the views are de-augmented and
        averaged, the layers averaged, then the result normalised if asked.
        """
        augment = Augmentation(inputs) if self.aug_smooth else None
        views = augment.inputs if augment else inputs
        groups = augment.groups if augment else 1
        first, maps = None, []
        for score_model in self._score_models:
            run = self.forward(views, tf.tile(ids, [groups]), target_fn, score_model, groups)
            first = run if first is None else first
            maps.append(tf.nn.relu(self.layer_maps(run)))
        if size is None:
            size = max((tuple(m.shape[1:]) for m in maps), key=lambda s: int(np.prod(s)))
        maps = [resize_maps(m, size) for m in maps]
        if augment:
            maps = [augment.undo(m) for m in maps]
        if len(maps) > 1:
            maps = [tf.reduce_mean(tf.stack([normalize_maps(m) for m in maps]), axis=0)]
        heatmaps = normalize_maps(maps[0]) if normalize else maps[0]
        n = tf.shape(ids)[0]
        return heatmaps, first.scores[:n], first.ids[:n], first.logits[:n]

    def _scores(self, outputs, ids, target_fn, groups: int = 1):
        explained = outputs[self.output_index]
        self._single_unit = explained.shape.rank == 1 or explained.shape[-1] == 1  # trace time
        logits = class_scores(explained, self.score == "probability")
        if groups > 1:  # every view explains the top-1 class of the original sample
            top1 = tf.argmax(logits[: tf.shape(logits)[0] // groups], -1, output_type=tf.int32)
            ids = tf.where(ids < 0, tf.tile(top1, [groups]), ids)
        scores, ids = select_scores(logits, ids)
        if target_fn is not None:
            scores = call_target(target_fn, outputs)
        return scores, ids, logits

    def _probabilities(self, logits: tf.Tensor) -> tf.Tensor:
        """The explained output's probabilities from the per-class scores."""
        if self.score == "probability":
            return logits
        if self._head_activation == "sigmoid" or self._single_unit:
            return tf.sigmoid(logits)
        return tf.nn.softmax(logits, axis=-1)

    def _step(self, inputs, target_fn, resize: bool, normalize: bool):
        signature = keras.tree.map_structure(
            lambda x: tf.TensorSpec((None, *x.shape[1:]), x.dtype), inputs
        )
        key = (repr(signature), target_fn, resize, normalize)
        if key in self._steps:
            return self._steps[key]
        size = _spatial_size(inputs, self.layer, resize)

        def step(inputs, ids):
            self.trace_count += 1
            finite = tf.reduce_all(
                [tf.reduce_all(tf.math.is_finite(x)) for x in keras.tree.flatten(inputs)
                 if x.dtype.is_floating] or [tf.constant(True)]
            )
            maps, scores, ids, logits = self.compute(inputs, ids, target_fn, size, normalize)
            return {"heatmaps": maps, "targets": ids, "scores": scores, "logits": logits,
                    "probabilities": self._probabilities(logits), "finite": finite}

        function = tf.function(
            step,
            input_signature=(signature, tf.TensorSpec((None,), tf.int32)),
            jit_compile=self.jit_compile,
            autograph=False,  # plain graph code; our own errors reach the user unwrapped
        )
        try:
            concrete = function.get_concrete_function()
        except KerasGradCAMError:
            raise
        except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
            shapes = keras.tree.map_structure(lambda x: tuple(x.shape), inputs)
            raise InvalidInputError(
                f"The model could not run on inputs of shape {shapes}: "
                f"{str(error).strip().splitlines()[0]} Check that the inputs match the model's "
                "input shape and dtype."
            ) from error
        logits_shape = concrete.structured_outputs["logits"].shape
        if self._num_classes is None and logits_shape[-1] is not None:
            self._num_classes = int(logits_shape[-1])
        # The concrete function: calling it skips tf.function's per-call signature matching.
        self._steps[key] = concrete
        return concrete

    # ---- inputs ------------------------------------------------------------------------------

    def _prepare_inputs(self, images) -> tuple[Any, int]:
        return prepare_inputs(self.model, images)



def _output_index(model, output) -> int:
    names = list(getattr(model, "output_names", None) or [])
    try:
        count = len(model.outputs)
    except (AttributeError, ValueError):
        count = None
    if isinstance(output, str):
        if output not in names:
            raise ValueError(f"No model output named {output!r}. Outputs: {names}.")
        return names.index(output)
    if isinstance(output, bool) or not isinstance(output, (int, np.integer)):
        raise TypeError(f"`output` must be an index or an output name. Received: {output!r}.")
    if count is not None and not 0 <= output < count:
        raise ValueError(
            f"`output` must be in [0, {count - 1}]: the model has {count} outputs "
            f"{names}. Received: output={output}."
        )
    return int(output)


def _num_classes(model, index: int) -> int | None:
    try:
        shape = model.outputs[index].shape
    except (AttributeError, ValueError, IndexError, TypeError):
        return None
    if len(shape) < 2 or shape[-1] == 1:
        return 2  # a single unit: class 1 is the unit, class 0 its complement
    return int(shape[-1]) if shape[-1] is not None else None



def _spatial_size(inputs, layer, resize: bool) -> tuple[int, ...] | None:
    """The input's spatial size that maps are resized to (None: keep the layer's resolution)."""
    if not resize:
        return None
    rank = _map_rank(layer)
    for x in keras.tree.flatten(inputs):
        if x.shape.rank == rank + 2 and None not in x.shape[1:-1]:
            return tuple(int(d) for d in x.shape[1:-1])
    for x in keras.tree.flatten(inputs):  # e.g. grayscale images without a channel axis
        if x.shape.rank == rank + 1 and None not in x.shape[1:]:
            return tuple(int(d) for d in x.shape[1:])
    raise InvalidInputError(
        "`resize=True` needs an input with as many spatial axes as the layer's maps "
        f"({rank}); none of the inputs has. Pass `resize=False`."
    )


def _map_rank(layer) -> int:
    try:
        return len(layer.output.shape) - 2
    except (AttributeError, ValueError):
        return len(layer.kernel_size)


__all__ = ["BaseCAM", "Explanation", "Pass", "default_jit_compile"]
