"""GradCAMCallback: Grad-CAM of a fixed probe set in TensorBoard during training.

Every `freq` epochs the callback explains the same probe images with the model's current
weights and writes, under `log_dir/gradcam`:

- one image per probe (`gradcam/probe_03`): the original, the overlay for the label and, where
  it differs, the overlay for the prediction, side by side; its description carries the label,
  prediction and score;
- one grid of all probes (`gradcam/grid`) and a text table (`gradcam/predictions`);
- bias scalars: `gradcam/drift` and `gradcam/zero_maps` always, `gradcam/probe_accuracy` with
  labels, and with object masks or boxes `gradcam/energy_in_mask` and `gradcam/pointing_game`,
  overall and per class (`gradcam/energy_in_mask/<class>`).

A model that learns a shortcut outside the object shows its energy inside the object falling.
"""

from __future__ import annotations

import math
import os
import re
import time
import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_gradcam.image import displayable, overlay, to_unit_rgb
from keras_gradcam.methods import get_method
from keras_gradcam.methods.base import BaseCAM, Explanation

_TARGETS = ("label", "predicted", "both")
_GAP = 2  # white pixels between panels and grid cells


def _resolve_method(method) -> type[BaseCAM]:
    """A BaseCAM subclass from a class or a name (see `keras_gradcam.get_method`)."""
    if isinstance(method, type) and issubclass(method, BaseCAM):
        return method
    if not isinstance(method, str):
        raise TypeError(
            "`method` must be a method name such as 'gradcam' or a BaseCAM subclass. "
            f"Received: method={method!r} of type {type(method).__name__}."
        )
    return get_method(method)


def _as_class_ids(labels, name: str = "probe_labels") -> np.ndarray:
    """Integer class ids `(n,)` from sparse labels `(n,)`/`(n, 1)` or one-hot `(n, classes)`."""
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim == 2 and array.shape[1] > 1:
        array = array.argmax(axis=1)
    if array.ndim != 1 or array.dtype.kind not in "iuf":
        raise ValueError(
            f"`{name}` must be integer classes (n,) or one-hot (n, classes). "
            f"Received: {name}.shape={array.shape} with dtype {array.dtype}."
        )
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(f"`{name}` must hold whole class numbers. Received: {array[:5]}...")
    return array.astype(np.int64)


def _tag_part(text: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", str(text)).strip("_") or "class"


def _hstack(panels: list[np.ndarray]) -> np.ndarray:
    """Panels `(H, W, 3)` uint8 side by side, separated by white gaps."""
    height = panels[0].shape[0]
    gap = np.full((height, _GAP, 3), 255, np.uint8)
    parts = []
    for i, panel in enumerate(panels):
        if i:
            parts.append(gap)
        parts.append(panel)
    return np.concatenate(parts, axis=1)


def grid_shape(n: int) -> tuple[int, int]:
    """`(rows, cols)` of the probe grid: `ceil(sqrt(n))` columns."""
    cols = max(1, math.ceil(math.sqrt(n)))
    return -(-n // cols), cols


def _grid(pictures: np.ndarray) -> np.ndarray:
    """`(n, H, W, 3)` uint8 pictures in a near-square grid with white gaps."""
    n, height, width, _ = pictures.shape
    rows, cols = grid_shape(n)
    out = np.full(
        (rows * height + (rows - 1) * _GAP, cols * width + (cols - 1) * _GAP, 3), 255, np.uint8
    )
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = r * (height + _GAP), c * (width + _GAP)
        out[y : y + height, x : x + width] = pictures[i]
    return out


def _png(image: np.ndarray) -> bytes:
    """uint8 RGB `(H, W, 3)` as PNG bytes (Pillow, a matplotlib dependency: ~10x faster here
    than one eager `tf.summary.image` per picture)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _write_image(tag: str, image: np.ndarray, step: int, description: str):
    """What `tf.summary.image(tag, image[None], step, description=...)` writes, encoded once."""
    from tensorboard.plugins.image import metadata

    height, width = image.shape[:2]
    tf.summary.write(
        tag,
        tf.constant([str(width).encode(), str(height).encode(), _png(image)], tf.string),
        step=step,
        metadata=metadata.create_summary_metadata(display_name=None, description=description),
    )


class GradCAMCallback(keras.callbacks.Callback):
    """Writes Grad-CAM of a fixed probe set to TensorBoard every `freq` epochs.

    The explainer is built once at train begin on the model being trained: it shares the
    model's layers (so each epoch sees the current weights), is traced once for the whole fit
    (resumed fits included) and never changes the model or its training. Misconfiguration
    (probe shapes, layer, labels, masks) raises a `ValueError` at train begin, before the first
    training step; afterwards a failure while explaining one epoch is a warning and training
    goes on.

    What is written, with step = epoch (0-based, as `keras.callbacks.TensorBoard` does; a fit
    with `initial_epoch` continues the steps), into `log_dir/gradcam`:

    - Images `gradcam/probe_00`, `gradcam/probe_01`, ...: per probe the original, the overlay for
      the explained target and, with `targets="both"` where the prediction differs from the
      label, the overlay for the prediction, side by side (2 white pixels apart). The summary
      description carries label, prediction and score.
    - Image `gradcam/grid`: the overlays of all probes in a near-square grid.
    - Text `gradcam/predictions`: a table of label, prediction, score and metrics per probe.
    - Scalars `gradcam/drift` (mean absolute change of the maps since the last logged epoch,
      or since the start of this fit for its first logged epoch), `gradcam/zero_maps` (share
      of all-zero maps), `gradcam/probe_accuracy` (with labels), and with `masks`
      `gradcam/energy_in_mask` and `gradcam/pointing_game`, overall and per class
      (`gradcam/energy_in_mask/<class name>`, grouped by label, or by prediction without
      labels).

    Scalars are computed on the maps of the label (the prediction with `targets="predicted"`
    or without labels).

    Args:
        probe_images: Model-ready inputs `(n, ...)` (an array, tensor, or list/dict for
            multi-input models), or a `tf.data.Dataset` of inputs or `(inputs, labels)` tuples,
            batched or not, of which the first `num_probes` samples are taken.
        log_dir: The run directory, the same as given to `keras.callbacks.TensorBoard`; the
            callback writes beside its `train`/`validation` into `log_dir/gradcam`.
        probe_labels: Optional class per probe, `(n,)` ints or one-hot `(n, classes)`.
        class_names: Optional names of the classes (indexed by class id), used in descriptions
            and per-class tags.
        display_images: Optional images to draw on, `(n, H, W[, C])`, uint8 or float, when the
            model input is preprocessed; they may be larger than the model input. Defaults to
            the probe images (min-max scaled when they have negative values).
        masks: Optional objects, bool masks `(n, H, W)` at the model input's size or boxes
            `(n, 4)` as `(y0, x0, y1, x1)` pixels, for the energy and pointing-game scalars.
        method: A method name (`"gradcam"`, or any name `keras_gradcam.get_method` knows) or a
            `BaseCAM` subclass. Defaults to `"gradcam"`.
        layer: The layer to explain, as for `GradCAM`; `None` (default) takes the last layer
            with a spatial output.
        freq: Log every `freq` epochs (epochs 0, freq, 2*freq, ...). Defaults to 1.
        targets: `"label"` (explain the true class), `"predicted"` (the top-1 class) or
            `"both"`. Defaults to `None`: `"label"` when labels are given, else `"predicted"`.
        num_probes: How many samples to take from a dataset. Defaults to 16.
        colormap: Matplotlib colour map of the overlays. Defaults to `"jet"`.
        alpha: Weight of the heatmap in the overlays. Defaults to 0.4.
        pointing_tolerance: Pixels of tolerance of the pointing game (15 in the paper; use less
            for small images). Defaults to 15.
        batch_size: Largest number of probes explained at once. Defaults to 32.
        method_kwargs: Extra keyword arguments for the method's constructor (e.g.
            `{"score": "probability"}`).

    Attributes:
        explainer: The `BaseCAM` built at train begin (None before).
        last_explanation: The `Explanation` of the last logged epoch (targets as for scalars).
        last_scalars: Dict of the scalars written at the last logged epoch.
        timings: Seconds spent per logged epoch (explaining, drawing and writing).

    Raises:
        ValueError: at construction for bad options, and at train begin when probes, layer,
            labels or masks do not fit the model.

    Example:

    ```python
    cb = keras_gradcam.GradCAMCallback(
        x_probe, log_dir="logs/run1", probe_labels=y_probe, masks=probe_masks)
    model.fit(x, y, epochs=20, callbacks=[cb, keras.callbacks.TensorBoard("logs/run1")])
    # tensorboard --logdir logs
    ```
    """

    def __init__(
        self,
        probe_images: Any,
        log_dir: str | os.PathLike,
        probe_labels: Any = None,
        class_names: Any = None,
        display_images: Any = None,
        masks: Any = None,
        method: str | type[BaseCAM] = "gradcam",
        layer: Any = None,
        freq: int = 1,
        targets: str | None = None,
        *,
        num_probes: int = 16,
        colormap: str = "jet",
        alpha: float = 0.4,
        pointing_tolerance: float = 15,
        batch_size: int = 32,
        method_kwargs: dict | None = None,
    ):
        super().__init__()
        if isinstance(freq, bool) or not isinstance(freq, (int, np.integer)) or freq < 1:
            raise ValueError(f"`freq` must be a positive int. Received: freq={freq!r}.")
        if isinstance(num_probes, bool) or not isinstance(num_probes, (int, np.integer)) or (
            num_probes < 1
        ):
            raise ValueError(
                f"`num_probes` must be a positive int. Received: num_probes={num_probes!r}."
            )
        if targets is not None and targets not in _TARGETS:
            raise ValueError(
                f"`targets` must be one of {_TARGETS} (or None). Received: targets={targets!r}."
            )
        if log_dir is None:
            raise ValueError("`log_dir` is required: the run directory given to TensorBoard.")
        self.log_dir = os.fspath(log_dir)
        self.method = _resolve_method(method)
        self.layer = layer
        self.freq = int(freq)
        self.num_probes = int(num_probes)
        self.colormap = colormap
        self.alpha = float(alpha)
        self.pointing_tolerance = pointing_tolerance
        self.batch_size = batch_size
        self.method_kwargs = dict(method_kwargs or {})
        self.class_names = None if class_names is None else [str(c) for c in class_names]

        self._probe_source = probe_images
        self._raw_labels = probe_labels
        self._raw_display = display_images
        self._raw_masks = masks
        self._targets_option = targets
        if probe_labels is not None and targets is None:
            self.targets = "label"
        else:
            self.targets = targets or "predicted"
        if self.targets in ("label", "both") and probe_labels is None and not isinstance(
            probe_images, tf.data.Dataset
        ):
            raise ValueError(
                f"`targets={self.targets!r}` needs `probe_labels`. Pass the labels, or "
                "targets='predicted' to explain the predicted classes."
            )

        self.explainer: BaseCAM | None = None
        self.last_explanation: Explanation | None = None
        self.last_scalars: dict[str, float] = {}
        self.timings: list[float] = []
        self._writer = None
        self._probes = None
        self._labels: np.ndarray | None = None
        self._display: np.ndarray | None = None
        self._masks = None
        self._previous_maps: np.ndarray | None = None
        self._n = 0
        self.classes: int | None = None

    # ---- set-up (train begin): fail fast -----------------------------------------------------

    def on_train_begin(self, logs=None):
        if self.explainer is None or self.explainer.model is not self.model:
            self._build()
        # The maps before this fit are the baseline of the first logged epoch's drift; running
        # them here also traces the compiled step once and checks everything end to end.
        baseline = self._explain()[0]
        if baseline.heatmaps.ndim != 3:
            raise ValueError(
                "GradCAMCallback draws one 2D heatmap per image, but "
                f"{type(self.explainer).__name__} returns maps of shape "
                f"{baseline.heatmaps.shape[1:]} per sample. Use a CAM method such as 'gradcam'."
            )
        self._previous_maps = baseline.heatmaps
        if self._masks is not None:
            self._localisation(baseline.heatmaps)  # checks the masks against the maps

    def _build(self):
        model = self.model
        images, labels = self._materialise(model)
        self.explainer = self.method(
            model, self.layer, batch_size=self.batch_size, **self.method_kwargs
        )
        inputs, n = self.explainer._prepare_inputs(images)  # probe shapes vs the model input
        self._probes, self._n = inputs, n
        self.classes = self.explainer._num_classes

        if labels is not None:
            labels = _as_class_ids(labels)
            if len(labels) != n:
                raise ValueError(
                    f"`probe_labels` must hold one label per probe: expected {n}, received "
                    f"{len(labels)}."
                )
            if self.classes and (labels.min() < 0 or labels.max() >= self.classes):
                raise ValueError(
                    f"`probe_labels` must lie in [0, {self.classes - 1}] (the model has "
                    f"{self.classes} outputs). Received labels in [{labels.min()}, "
                    f"{labels.max()}]."
                )
        if self._targets_option is None:
            self.targets = "label" if labels is not None else "predicted"
        elif labels is None and self.targets in ("label", "both"):
            raise ValueError(
                f"`targets={self.targets!r}` needs labels: pass `probe_labels` or a dataset "
                "of (inputs, labels); or targets='predicted'."
            )
        self._labels = labels
        if self.class_names is not None and self.classes and len(self.class_names) < self.classes:
            raise ValueError(
                f"`class_names` must name all {self.classes} classes of the model. Received "
                f"{len(self.class_names)} names."
            )

        if self._raw_display is not None:
            display = np.asarray(self._raw_display)
            if display.ndim not in (3, 4) or len(display) != n:
                raise ValueError(
                    f"`display_images` must be (n, H, W[, C]) with one image per probe (n={n}). "
                    f"Received: display_images.shape={display.shape}."
                )
            self._display = to_unit_rgb(display)
        else:
            if isinstance(inputs, (list, dict)):
                raise ValueError(
                    "For a multi-input model pass `display_images` (n, H, W[, C]) to draw on."
                )
            try:
                self._display = displayable(inputs.numpy())
            except ValueError as error:
                raise ValueError(f"The probe images cannot be drawn: {error} Pass "
                                 "`display_images`.") from None

        self._masks = None
        if self._raw_masks is not None:
            masks = np.asarray(self._raw_masks)
            size = self._map_size(inputs)
            is_boxes = masks.ndim == 2 and masks.shape == (n, 4)
            if not is_boxes and masks.shape != (n, *size):
                raise ValueError(
                    f"`masks` must be object masks of shape {(n, *size)} (one per probe, at the "
                    f"model input's size) or boxes of shape ({n}, 4) as (y0, x0, y1, x1). "
                    f"Received: masks.shape={masks.shape}."
                )
            self._masks = masks

    def _materialise(self, model):
        """Probe inputs and labels; a dataset is read here (its first `num_probes` samples)."""
        source, labels = self._probe_source, self._raw_labels
        if not isinstance(source, tf.data.Dataset):
            return source, labels
        spec = source.element_spec
        has_labels = isinstance(spec, tuple) and len(spec) in (2, 3)
        x_spec = spec[0] if has_labels else spec
        try:
            rank = len(model.inputs[0].shape)
        except (AttributeError, ValueError, IndexError, TypeError):
            rank = None
        leaf = keras.tree.flatten(x_spec)[0]
        dataset = source
        if rank is not None and leaf.shape.rank == rank:
            dataset = dataset.unbatch()
        elif rank is not None and leaf.shape.rank != rank - 1:
            raise ValueError(
                f"The probe dataset's inputs must be samples or batches for a model input of "
                f"rank {rank}. Received elements of shape {leaf.shape}."
            )
        elements = list(dataset.take(self.num_probes).as_numpy_iterator())
        if not elements:
            raise ValueError("The probe dataset is empty: it must yield at least one sample.")
        xs = [e[0] for e in elements] if has_labels else elements
        images = keras.tree.map_structure(lambda *leaves: np.stack(leaves), *xs)
        if has_labels and labels is None:
            labels = np.stack([e[1] for e in elements])
        return images, labels

    def _map_size(self, inputs) -> tuple[int, ...]:
        for x in keras.tree.flatten(inputs):
            if x.shape.rank in (3, 4):  # (batch, H, W) or (batch, H, W, C)
                return tuple(int(d) for d in x.shape[1:3])
        raise ValueError("`masks` need image inputs (batch, H, W[, C]).")

    # ---- per epoch ---------------------------------------------------------------------------

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.freq or self.explainer is None:
            return
        start = time.perf_counter()
        try:
            self._log(epoch)
        except Exception as error:  # a bad epoch must not stop training
            warnings.warn(
                f"GradCAMCallback could not explain the probes at epoch {epoch}; training goes "
                f"on without this epoch's images. {type(error).__name__}: {error}",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        self.timings.append(time.perf_counter() - start)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _explain(self) -> tuple[Explanation, Explanation | None]:
        """`(primary, predicted)`: the maps behind the scalars and, for "both", the top-1 maps."""
        cam = self.explainer
        if self.targets == "predicted":
            return cam.explain(self._probes), None
        primary = cam.explain(self._probes, self._labels)
        if self.targets == "both":
            return primary, cam.explain(self._probes)
        return primary, None

    def _localisation(self, maps) -> tuple[np.ndarray, np.ndarray]:
        from keras_gradcam.metrics import energy_in_mask, pointing_game

        return (
            energy_in_mask(maps, self._masks),
            pointing_game(maps, self._masks, tolerance=self.pointing_tolerance),
        )

    def _class_name(self, index: int) -> str:
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return str(index)

    def _log(self, epoch: int):
        primary, predicted = self._explain()
        maps = primary.heatmaps
        preds = primary.predicted
        scalars: dict[str, float] = {}
        if self._previous_maps is not None and self._previous_maps.shape == maps.shape:
            scalars["gradcam/drift"] = float(np.mean(np.abs(maps - self._previous_maps)))
        scalars["gradcam/zero_maps"] = float(np.mean(maps.reshape(len(maps), -1).max(axis=1) <= 0))
        if self._labels is not None:
            scalars["gradcam/probe_accuracy"] = float(np.mean(preds == self._labels))
        energy = hits = None
        if self._masks is not None:
            energy, hits = self._localisation(maps)
            groups = self._labels if self._labels is not None else preds
            for name, values in (("energy_in_mask", energy), ("pointing_game", hits)):
                scalars[f"gradcam/{name}"] = float(np.mean(values))
                for cls in np.unique(groups):
                    tag = f"gradcam/{name}/{_tag_part(self._class_name(int(cls)))}"
                    scalars[tag] = float(np.mean(values[groups == cls]))

        overlays = overlay(self._display, maps, self.colormap, self.alpha)
        originals = np.round(self._display * 255).astype(np.uint8)
        pred_overlays = None
        if predicted is not None:
            differs = predicted.targets != primary.targets
            if differs.any():
                pred_overlays = np.zeros_like(overlays)
                pred_overlays[differs] = overlay(
                    self._display[differs], predicted.heatmaps[differs], self.colormap, self.alpha
                )
        else:
            differs = np.zeros(len(maps), bool)

        writer = self._get_writer()
        digits = max(2, len(str(self._n - 1)))
        probabilities = primary.probabilities
        rows = []
        with writer.as_default(), tf.summary.record_if(True):
            for i in range(self._n):
                panels = [originals[i], overlays[i]]
                if differs[i]:
                    panels.append(pred_overlays[i])
                text = self._describe(i, primary, predicted, probabilities, energy, hits)
                rows.append(text)
                _write_image(
                    f"gradcam/probe_{i:0{digits}d}",
                    _hstack(panels),
                    epoch,
                    f"Epoch {epoch}. " + "; ".join(text),
                )
            _write_image(
                "gradcam/grid",
                _grid(overlays),
                epoch,
                f"Grad-CAM of all {self._n} probes at epoch {epoch}, "
                f"explaining the {'label' if self.targets != 'predicted' else 'prediction'}.",
            )
            header = ["probe", *(part.split(": ")[0] for part in rows[0])]
            table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for i, parts in enumerate(rows):
                values = [f"{i:0{digits}d}", *(part.split(": ", 1)[1] for part in parts)]
                table.append("| " + " | ".join(values) + " |")
            tf.summary.text("gradcam/predictions", "\n".join(table), step=epoch)
            for tag, value in scalars.items():
                tf.summary.scalar(tag, value, step=epoch)
        writer.flush()
        self._previous_maps = maps
        self.last_explanation = primary
        self.last_scalars = scalars

    def _describe(self, i, primary, predicted, probabilities, energy, hits) -> list[str]:
        pred = int(primary.predicted[i])
        parts = []
        if self._labels is not None:
            parts.append(f"label: {self._class_name(int(self._labels[i]))}")
        parts.append(f"prediction: {self._class_name(pred)}")
        parts.append(f"probability: {probabilities[i, pred]:.3f}")
        explained = "label" if self.targets != "predicted" else "prediction"
        parts.append(f"score of {explained}: {primary.scores[i]:.3f}")
        if energy is not None:
            parts.append(f"energy in mask: {energy[i]:.3f}")
            parts.append(f"pointing hit: {'yes' if hits[i] else 'no'}")
        return parts

    def _get_writer(self):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "gradcam"))
        return self._writer


__all__ = ["GradCAMCallback"]
