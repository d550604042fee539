"""BaseCAM: one core for the CAM family.

It owns the user's model (shared, never changed), the compiled step and the post-processing.
A method overrides one hook: `channel_weights(A, dA)` (Grad-CAM family),
`weighted_activations(A, dA)` (element-wise variants), `compute_maps(A, dA)` or, when it
needs the classes or more forward passes, `layer_maps(run)` (CAM, Score-CAM).

Its public step interface is what every client (`explain`, `explain_dataset` on one device or
under a strategy, the callback, the benchmark) uses: `prepare_inputs`, `class_ids`, the
compiled `step` and `collect`, which turns step outputs into an `Explanation`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from keras_gradcam.explanation import HEATMAP, Explanation
from keras_gradcam.graph import LayerPath
from keras_gradcam.inputs import (
    check_batch_size,
    check_bool,
    prepare_inputs,
    spatial_size,
)
from keras_gradcam.layers import resolve_layer
from keras_gradcam.methods.compiled import (
    collect_outputs,
    compile_step,
    per_class_views,
    run_in_chunks,
    step_outputs,
    step_signature,
)
from keras_gradcam.methods.forward import Pass, ScoreRule, run_forward
from keras_gradcam.methods.maths import CamMaths
from keras_gradcam.model import ScoreModel, head_activation
from keras_gradcam.targets import Resolved, Targets, class_ids, resolve
from keras_gradcam.tokens import TokenGrid, as_token_grid, maps_rank

Step = Callable[..., dict]  # (inputs, ids, data) -> step outputs


def default_jit_compile() -> bool:
    """XLA where it pays: on when a GPU is visible, off on CPU (measured slower there)."""
    return bool(tf.config.list_physical_devices("GPU"))


class BaseCAM(CamMaths):
    """Base of every CAM method: builds once, explains whole batches in one compiled call.

    Args:
        model: A built Keras model (Sequential, functional, nested, multi-input/output or
            subclassed). It is never changed.
        layer: The layer whose feature maps are weighted: `None` (the last layer with a spatial
            output, looking inside nested models), a name, an `"outer/inner"` path, a layer
            object or an index into `model.layers` (`"fpn[P3]"`: one output of a layer; `"head@0"`:
            one call of a shared layer). A list of these explains several layers: their
            maps, scaled into [0, 1] and resized alike, are averaged.
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
        tokens: How a layer that outputs a token sequence `(batch, tokens, channels)` (a
            vision transformer's) lays out on the image: `"auto"` (default: the grid of the
            patch embedding, class/register tokens dropped; see `TokenGrid`), a
            `TokenGrid(prefix=..., grid=(rows, cols))`, or `None` to explain the sequence
            as a 1-D map. Applies only to images with two spatial axes (or an explicit grid).
    """

    uses_gradients: ClassVar[bool] = True  # the core takes d score / dA at the layer
    result_kind: ClassVar[str] = HEATMAP  # what `Explanation.heatmaps` holds ("image": guided)
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
        tokens: str | TokenGrid | None = "auto",
    ):
        _check_options(model, score, batch_size)
        jit_compile = check_bool(jit_compile, "jit_compile")
        layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
        if not layers:
            raise ValueError("`layer` is an empty list. Pass None, one layer or several layers.")
        self.model = model
        self.output_index = _output_index(model, output)
        self.paths: list[LayerPath] = [
            resolve_layer(model, item, output=self.output_index) for item in layers
        ]
        self.path: LayerPath = self.paths[0]
        self.score = score
        self.jit_compile = default_jit_compile() if jit_compile is None else jit_compile
        self.batch_size = int(batch_size)
        self.aug_smooth = bool(check_bool(aug_smooth, "aug_smooth"))
        self.eigen_smooth = bool(check_bool(eigen_smooth, "eigen_smooth"))
        self.trace_count = 0
        self.tokens = as_token_grid(tokens)
        self.score_models = [
            ScoreModel(model, path, pre_activation=score == "logits", tokens=self.tokens)
            for path in self.paths
        ]
        head = head_activation(model, self.output_index)
        self.score_rule = ScoreRule(self.output_index, score, head)
        self._steps: dict[Any, Step] = {}
        self._num_classes: int | None = _num_classes(model, self.output_index)

    @property
    def layer(self) -> keras.layers.Layer:
        """The resolved layer whose feature maps are explained (the first, if several)."""
        return self.path[-1]

    @property
    def layers(self) -> list[keras.layers.Layer]:
        """Every resolved layer, in the order given."""
        return [path[-1] for path in self.paths]

    @property
    def token_grid(self) -> TokenGrid | None:
        """The token grid the last traced call used (inferred with `tokens="auto"`), or None
        when the layer's output is not a token sequence."""
        return self.score_models[0].token_grid

    @property
    def num_classes(self) -> int | None:
        """Classes of the explained output (2 for a single unit), once known."""
        return self._num_classes

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
                per sample (ids, or float/bool one-hot rows `(batch, classes)`), int
                `(batch, K)` for several classes per sample, a target object
                (`keras_gradcam.targets`), or a callable taking the model outputs and
                returning a score per sample.
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
        """Like `__call__`, but returns an `Explanation`: the maps with the explained
        classes, scores, class scores and probabilities."""
        inputs, n = self.prepare_inputs(images)
        batch_size = self.batch_size if batch_size is None else check_batch_size(batch_size)
        resolved = self.resolve_targets(targets, n)
        step = self.step(inputs, resolved, resize=resize, normalize=normalize)
        outputs = run_in_chunks(step, inputs, resolved, n, batch_size, self.jit_compile)
        return Explanation.concatenate(
            [self.collect(out, resolved, count) for out, count in outputs]
        )

    def explain_dataset(self, dataset, **kwargs):
        """Explain a `tf.data.Dataset` batch by batch; see `keras_gradcam.explain_dataset`."""
        from keras_gradcam.writing import explain_dataset

        return explain_dataset(self, dataset, **kwargs)

    # ---- the step interface ------------------------------------------------------------------

    def prepare_inputs(self, images: Any) -> tuple[Any, int]:
        """Check `images` against the model's inputs; returns `(inputs as tensors, samples)`.

        Raises:
            InvalidInputError: see `keras_gradcam.inputs.prepare_inputs`.
        """
        return prepare_inputs(self.model, images)

    def class_ids(self, targets: Targets, samples: int) -> np.ndarray:
        """int32 class ids for class `targets` (see `keras_gradcam.targets.class_ids`)."""
        return class_ids(targets, samples, self._num_classes)

    def resolve_targets(self, targets: Any, samples: int) -> Resolved:
        """What `targets` asks of `samples` images: class ids, a scoring target, its data.

        Raises:
            InvalidTargetError: see `keras_gradcam.targets.resolve`.
        """
        return resolve(targets, samples, self._num_classes)

    def step(self, inputs: Any, targets: Resolved | None = None, *, resize: bool = True,
             normalize: bool = True) -> Step:
        """The compiled step for inputs like `inputs` and targets like `targets` (any batch
        size, any data of the same kind): traced once per such signature and option.

        Returns:
            A function `(inputs, ids, data) -> dict` of tensors (`ids`, `data`: the rows of a
            `Resolved`); pass each result to `collect`.

        Raises:
            InvalidInputError: the model cannot run on such inputs.
        """
        targets = targets if targets is not None else resolve(None, 1, None)
        signature = step_signature(inputs, targets)
        target = targets.target
        key = (repr(signature), target.key() if target else None, bool(resize), bool(normalize))
        if key not in self._steps:
            self._steps[key] = self._compile(signature, inputs, target, resize, normalize)
        return self._steps[key]

    def collect(self, outputs: dict, targets: Resolved | None = None,
                count: int | None = None) -> Explanation:
        """Check one step's outputs and turn its first `count` rows into an `Explanation`.

        Raises:
            InvalidInputError: the inputs held NaN or infinite values.
            InvalidTargetError: the explained scores are not finite, or a target callable
                did not return one score per sample.
        """
        target = targets.target if targets is not None else None
        return collect_outputs(outputs, target, count, self.score, self.result_kind)

    # ---- inside the step ---------------------------------------------------------------------

    def forward(self, inputs, ids, target=None, data=None, score_model=None,
                groups: int = 1) -> Pass:
        """Run the model (and the backward pass if the method uses gradients) for one layer.

        Args:
            groups: The batch holds `groups` views of the same samples one after the other
                (`aug_smooth`); top-1 classes are taken from the first view.
        """
        return run_forward(score_model or self.score_models[0], self.score_rule, inputs, ids,
                           target, data or {}, self.uses_gradients, groups)

    def input_size(self, inputs) -> tuple[int, ...]:
        """The spatial size of the image input that maps are resized to.

        Raises:
            InvalidInputError: no input has as many spatial axes as the layer's maps.
        """
        return spatial_size(inputs, self.maps_rank(inputs))

    def maps_rank(self, inputs) -> int:
        """Spatial axes of the (first) layer's maps on `inputs` (2 for a token grid)."""
        return maps_rank(self.path, self.tokens, inputs)

    def _compile(self, signature, inputs, target, resize: bool, normalize: bool) -> Step:
        size = self.input_size(inputs) if resize else None

        def body(inputs, ids, data):
            self.trace_count += 1
            several = ids.shape.rank == 2
            views, flat, data = per_class_views(inputs, ids, data) if several else (
                inputs, ids, data)
            maps, run = self.compute(views, flat, target, data, size, bool(normalize))
            return step_outputs(inputs, ids, maps, run)

        concrete = compile_step(body, signature, self.jit_compile, inputs)
        classes = concrete.structured_outputs["class_scores"].shape[-1]
        if self._num_classes is None and classes is not None:
            self._num_classes = int(classes)
        return concrete


def _check_options(model, score: str, batch_size) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a keras.Model. Received: model of type {type(model).__name__}."
        )
    if score not in ("logits", "probability"):
        raise ValueError(f"`score` must be 'logits' or 'probability'. Received: score={score!r}.")
    check_batch_size(batch_size)


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



__all__ = ["BaseCAM", "Explanation", "Pass", "default_jit_compile"]
