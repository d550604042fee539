"""The probe set of `GradCAMCallback`: checked and converted once, when training begins."""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_gradcam.explanation import Explanation
from keras_gradcam.image import displayable, to_unit_rgb
from keras_gradcam.inputs import dataset_is_batched, image_index, model_inputs, unpack_element
from keras_gradcam.targets import label_ids


@dataclasses.dataclass
class ProbeSet:
    """The probes every logged epoch explains, ready for the explainer and for drawing.

    Attributes:
        inputs: The model inputs as the explainer prepared them (tensors).
        count: Number of probes.
        labels: int32 class per probe, or `None`.
        display: float32 RGB `(count, H, W, 3)` in [0, 1], what the overlays are drawn on.
        masks: Object masks `(count, H, W)` or boxes `(count, 4)`, or `None`.
    """

    inputs: Any
    count: int
    labels: np.ndarray | None
    display: np.ndarray
    masks: np.ndarray | None

    @classmethod
    def build(cls, explainer, images, labels=None, display_images=None, masks=None,
              num_probes: int = 16) -> ProbeSet:
        """Check the probes against the explainer's model and convert them.

        Args:
            explainer: The explainer the callback built.
            images: Model-ready inputs, or a `tf.data.Dataset` of inputs or
                `(inputs, labels)` (batched or not), of which the first `num_probes` are taken.
            labels, display_images, masks: As for `GradCAMCallback`.

        Raises:
            ValueError: probes, labels, display images or masks that do not fit the model.
        """
        if isinstance(images, tf.data.Dataset):
            images, labels = _first_samples(images, explainer.model, labels, num_probes)
        inputs, count = explainer.prepare_inputs(images)  # shapes vs the model input
        if labels is not None:
            labels = label_ids(labels, explainer.num_classes, "probe_labels")
            if len(labels) != count:
                raise ValueError(
                    f"`probe_labels` must hold one label per probe: expected {count}, received "
                    f"{len(labels)}."
                )
        display = _display(inputs, display_images, count)
        return cls(inputs, count, labels, display, _masks(masks, inputs, count))

    def explain(self, explainer, classes: str) -> tuple[Explanation, Explanation | None]:
        """`(primary, predicted)`: the explanation of the labels (`classes` "label" or
        "both") or of the predictions, and with "both" also that of the predictions."""
        if classes == "predicted":
            return explainer.explain(self.inputs), None
        primary = explainer.explain(self.inputs, self.labels)
        return primary, (explainer.explain(self.inputs) if classes == "both" else None)

    def localisation(
        self, maps: np.ndarray, tolerance: float | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """`(energy_in_mask, pointing_game)` of `maps` per probe against the masks
        (`tolerance` as in `pointing_game`: None scales 15 pixels at 224 with the maps)."""
        from keras_gradcam.metrics import energy_in_mask, pointing_game

        hits = pointing_game(maps, self.masks, tolerance=tolerance)
        return energy_in_mask(maps, self.masks), hits


def _first_samples(dataset, model, labels, num_probes: int):
    """Probe inputs (and labels, when the dataset has them) from a dataset's first samples."""
    x_spec, y_spec = unpack_element(dataset.element_spec)
    if model_inputs(model) and dataset_is_batched(x_spec, model):
        dataset = dataset.unbatch()
    elements = list(dataset.take(num_probes).as_numpy_iterator())
    if not elements:
        raise ValueError("The probe dataset is empty: it must yield at least one sample.")
    pairs = [unpack_element(e if isinstance(e, tuple) else (e,)) for e in elements]
    images = keras.tree.map_structure(lambda *leaves: np.stack(leaves), *[x for x, _ in pairs])
    if y_spec is not None and labels is None:
        labels = np.stack([y for _, y in pairs])
    return images, labels


def _display(inputs, display_images, count: int) -> np.ndarray:
    if display_images is not None:
        display = np.asarray(display_images)
        if display.ndim not in (3, 4) or len(display) != count:
            raise ValueError(
                f"`display_images` must be (n, H, W[, C]) with one image per probe (n={count}). "
                f"Received: display_images.shape={display.shape}."
            )
        return to_unit_rgb(display)
    if isinstance(inputs, (list, dict)):
        raise ValueError("For a multi-input model pass `display_images` (n, H, W[, C]) to draw on.")
    try:
        return displayable(inputs.numpy())
    except ValueError as error:
        raise ValueError(
            f"The probe images cannot be drawn: {error} Pass `display_images`."
        ) from None


def _masks(masks, inputs, count: int) -> np.ndarray | None:
    if masks is None:
        return None
    masks = np.asarray(masks)
    index = image_index(inputs, 2)
    if index is None:
        raise ValueError("`masks` need image inputs (batch, H, W[, C]).")
    size = tuple(int(d) for d in keras.tree.flatten(inputs)[index].shape[1:3])
    if not (masks.shape == (count, 4)) and masks.shape != (count, *size):
        raise ValueError(
            f"`masks` must be object masks of shape {(count, *size)} (one per probe, at the "
            f"model input's size) or boxes of shape ({count}, 4) as (y0, x0, y1, x1). "
            f"Received: masks.shape={masks.shape}."
        )
    return masks


__all__ = ["ProbeSet"]
