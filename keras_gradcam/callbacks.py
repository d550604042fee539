"""GradCAMCallback: Grad-CAM of a fixed probe set in TensorBoard during training.

Every `freq` epochs the callback explains the same probe images with the model's current
weights. What is written, with step = epoch (0-based, as `keras.callbacks.TensorBoard`
does; a fit with `initial_epoch` continues the steps), into `log_dir/gradcam`:

- Images `gradcam/probe_00`, `gradcam/probe_01`, ...: per probe the original, the overlay for
  the explained target and, with `explain_classes="both"` where the prediction differs from
  the label, the overlay for the prediction, side by side (2 dark pixels apart). The summary
  description carries label, prediction and score.
- Image `gradcam/grid`: the overlays of all probes in a near-square grid.
- Text `gradcam/predictions`: a table of label, prediction, score and metrics per probe.
- Scalars `gradcam/drift` (mean absolute change of the maps since the last logged epoch,
  or since the start of this fit for its first logged epoch), `gradcam/zero_maps` (share
  of all-zero maps), `gradcam/probe_accuracy` (with labels), and with `masks`
  `gradcam/energy_in_mask` and `gradcam/pointing_game`, overall and per class
  (`gradcam/energy_in_mask/<class name>`, grouped by label, or by prediction without
  labels).

Scalars are computed on the maps of the label (the prediction with
`explain_classes="predicted"` or without labels.

A model that learns a shortcut outside the object shows its energy inside the object falling.
With `masks`, a custom-scalars layout (TensorBoard's CUSTOM SCALARS tab, written once) charts
"accuracy vs energy inside the object": `gradcam/probe_accuracy`, `gradcam/energy_in_mask` and
the `epoch_accuracy` of `keras.callbacks.TensorBoard` (train and validation) when it logs one.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_gradcam.explanation import HEATMAP, Explanation
from keras_gradcam.image import grid_shape
from keras_gradcam.inputs import check_positive_int
from keras_gradcam.methods import AUTO, BaseCAM, get_method, method_for
from keras_gradcam.probes import ProbeSet
from keras_gradcam.summaries import (
    EpochLog,
    class_namer,
    open_writer,
    scalar_summaries,
    write_layout,
    write_summaries,
)

_CLASSES = ("label", "predicted", "both")


def _resolve_method(method) -> type[BaseCAM] | str:
    """A BaseCAM subclass from a class or a name (see `keras_gradcam.get_method`); `"auto"`
    stays as it is until the model is known."""
    if isinstance(method, type) and issubclass(method, BaseCAM) or method == AUTO:
        return method
    if not isinstance(method, str):
        raise TypeError(
            "`method` must be a method name such as 'gradcam' or a BaseCAM subclass. "
            f"Received: method={method!r} of type {type(method).__name__}."
        )
    return get_method(method)


class GradCAMCallback(keras.callbacks.Callback):
    """Writes Grad-CAM of a fixed probe set to TensorBoard every `freq` epochs.

    The explainer is built once at train begin on the model being trained: it shares the
    model's layers (so each epoch sees the current weights), is traced once for the whole fit
    (resumed fits included) and never changes the model or its training. Misconfiguration
    (probe shapes, layer, labels, masks, a `log_dir` that cannot be written) raises a
    `ValueError` at train begin, before the first training step; afterwards a failure while
    explaining one epoch is a warning (saying what of that epoch was written) and training
    goes on. What is written is listed in this module's docstring (`keras_gradcam.callbacks`).

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
        method: A method name (see `keras_gradcam.get_method`) or a `BaseCAM` subclass.
            Defaults to `"auto"` (Grad-CAM; on transformers element-wise, see `method_for`).
        layer: The layer to explain, as for `GradCAM`; `None` (default) takes the last layer
            with a spatial output.
        freq: Log every `freq` epochs (epochs 0, freq, 2*freq, ...). Defaults to 1.
        targets: Deprecated name of `explain_classes`.
        explain_classes: `"label"` (explain the true class), `"predicted"` (the top-1 class)
            or `"both"`. Defaults to `None`: `"label"` when labels are given, else
            `"predicted"`.
        num_probes: How many samples to take from a dataset. Defaults to 16.
        colormap: Matplotlib colour map of the overlays. Defaults to `"jet"`.
        alpha: Weight of the heatmap in the overlays. Defaults to 0.4.
        pointing_tolerance: Pixels of tolerance of the pointing game. Defaults to None: the
            paper's 15 pixels at 224x224 scaled with the probe maps, `15 * max(H, W) / 224`
            (about 2 pixels for 32x32 probes); a number means pixels.
        batch_size: Largest number of probes explained at once. Defaults to 32.
        method_kwargs: Extra keyword arguments for the method's constructor (e.g.
            `{"score": "probability"}`).

    Attributes:
        explainer: The `BaseCAM` built at train begin (None before).
        probes: The `ProbeSet` built at train begin (None before).
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
        method: str | type[BaseCAM] = "auto",
        layer: Any = None,
        freq: int = 1,
        targets: str | None = None,
        *,
        explain_classes: str | None = None,
        num_probes: int = 16,
        colormap: str = "jet",
        alpha: float = 0.4,
        pointing_tolerance: float | None = None,
        batch_size: int = 32,
        method_kwargs: dict | None = None,
    ):
        super().__init__()
        self.freq = check_positive_int(freq, "freq")
        self.num_probes = check_positive_int(num_probes, "num_probes")
        name = "explain_classes"
        if targets is not None:
            warnings.warn(
                "`GradCAMCallback(targets=...)` is deprecated: use `explain_classes=`.",
                DeprecationWarning,
                stacklevel=2,
            )
            explain_classes, name = explain_classes or targets, "targets"
        if explain_classes is not None and explain_classes not in _CLASSES:
            raise ValueError(
                f"`{name}` must be one of {_CLASSES} (or None). Received: "
                f"{name}={explain_classes!r}."
            )
        if log_dir is None:
            raise ValueError("`log_dir` is required: the run directory given to TensorBoard.")
        self.log_dir = os.fspath(log_dir)
        self.method = _resolve_method(method)
        self.layer = layer
        self.colormap = colormap
        self.alpha = float(alpha)
        self.pointing_tolerance = pointing_tolerance
        self.batch_size = batch_size
        self.method_kwargs = dict(method_kwargs or {})
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self._sources = {"images": probe_images, "labels": probe_labels,
                         "display_images": display_images, "masks": masks}
        self._classes_option = explain_classes
        self.explain_classes = explain_classes or (
            "label" if probe_labels is not None else "predicted"
        )
        if self.explain_classes in ("label", "both") and probe_labels is None and not isinstance(
            probe_images, tf.data.Dataset
        ):
            raise ValueError(
                f"`{name}={self.explain_classes!r}` needs `probe_labels`. Pass the labels, or "
                f"{name}='predicted' to explain the predicted classes."
            )
        self.explainer: BaseCAM | None = None
        self.probes: ProbeSet | None = None
        self.last_explanation: Explanation | None = None
        self.last_scalars: dict[str, float] = {}
        self.timings: list[float] = []
        self._writer, self._layout_written = None, False
        self._previous_maps: np.ndarray | None = None

    @property
    def targets(self) -> str:
        """Deprecated name of `explain_classes`."""
        warnings.warn("`GradCAMCallback.targets` is deprecated: use `explain_classes`.",
                      DeprecationWarning, stacklevel=2)
        return self.explain_classes

    @property
    def classes(self) -> int | None:
        """Classes of the explained output (known once training began)."""
        return None if self.explainer is None else self.explainer.num_classes

    # ---- set-up (train begin): fail fast -----------------------------------------------------

    def on_train_begin(self, logs=None):
        if self.explainer is None or self.explainer.model is not self.model:
            self._build()
        # The maps before this fit are the baseline of the first logged epoch's drift; running
        # them here also traces the compiled step once and checks everything end to end.
        baseline = self.probes.explain(self.explainer, self.explain_classes)[0]
        if baseline.heatmaps.ndim != 3:
            raise ValueError(
                "GradCAMCallback draws one 2D heatmap per image, but "
                f"{type(self.explainer).__name__} returns maps of shape "
                f"{baseline.heatmaps.shape[1:]} per sample. Use a CAM method such as 'gradcam'."
            )
        self._previous_maps = baseline.heatmaps
        if self.probes.masks is not None:
            self.probes.localisation(baseline.heatmaps, self.pointing_tolerance)  # checks masks
        self._open_writer()

    def _build(self):
        method = method_for(self.model, self.method, self.layer)
        if method.result_kind != HEATMAP:
            raise ValueError(
                f"GradCAMCallback draws one 2D heatmap per image, but {method.__name__} returns "
                f"{method.result_kind}s. Use a CAM method such as 'gradcam'."
            )
        self.explainer = method(
            self.model, self.layer, batch_size=self.batch_size, **self.method_kwargs
        )
        sources = self._sources
        self.probes = ProbeSet.build(
            self.explainer, sources["images"], sources["labels"], sources["display_images"],
            sources["masks"], self.num_probes,
        )
        labels = self.probes.labels
        if self._classes_option is None:
            self.explain_classes = "label" if labels is not None else "predicted"
        elif labels is None and self.explain_classes in ("label", "both"):
            raise ValueError(
                f"`explain_classes={self.explain_classes!r}` needs labels: pass `probe_labels` "
                "or a dataset of (inputs, labels); or explain_classes='predicted'."
            )
        classes = self.classes
        if self.class_names is not None and classes and len(self.class_names) < classes:
            raise ValueError(
                f"`class_names` must name all {classes} classes of the model. Received "
                f"{len(self.class_names)} names."
            )

    def _open_writer(self):
        """Create the writer now (a bad `log_dir` fails here); with masks, write the layout once."""
        if self._writer is None:
            self._writer = open_writer(os.path.join(self.log_dir, "gradcam"))
            if self.probes.masks is not None and not self._layout_written:
                self._layout_written = write_layout(self._writer)

    # ---- per epoch ---------------------------------------------------------------------------

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.freq or self.explainer is None:
            return
        start = time.perf_counter()
        summaries = []
        try:
            summaries = self._summaries(epoch)
            self._write(summaries, epoch)
        except Exception as error:  # a bad epoch must not stop training
            done = sum(1 for s in summaries if s.get("written"))
            what = (
                f"wrote {done} of its {len(summaries)} summaries and stopped"
                if done else "wrote nothing for this epoch"
            )
            warnings.warn(
                f"GradCAMCallback could not log the probes at epoch {epoch}: it {what}; "
                f"training goes on. {type(error).__name__}: {error}",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        self.timings.append(time.perf_counter() - start)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _summaries(self, epoch: int) -> list[dict]:
        """Everything one logged epoch writes, computed before anything is written."""
        primary, predicted = self.probes.explain(self.explainer, self.explain_classes)
        maps = primary.heatmaps
        localisation = None
        if self.probes.masks is not None:
            localisation = self.probes.localisation(maps, self.pointing_tolerance)
        log = EpochLog(epoch, self.probes, primary, predicted, localisation,
                       class_namer(self.class_names), self.explain_classes != "predicted")
        scalars = log.scalars(self._previous_maps)
        self._pending = (maps, primary, scalars)
        return log.summaries(self.colormap, self.alpha) + scalar_summaries(scalars)

    def _write(self, summaries: list[dict], epoch: int) -> None:
        self._open_writer()
        write_summaries(self._writer, summaries, epoch)
        self._previous_maps, self.last_explanation, self.last_scalars = self._pending


__all__ = ["GradCAMCallback", "grid_shape"]
