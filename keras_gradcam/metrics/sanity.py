"""Sanity check: Adebayo et al.'s model-parameter randomisation test."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from keras_gradcam.graph import path_name, walk
from keras_gradcam.metrics._checks import mean

Explainer = Callable[[Any, Any], Any]  # (images, targets) -> maps (n, H, W)


def randomization_check(
    explainer_factory: Callable[[keras.Model], Explainer],
    model: keras.Model,
    images: Any,
    targets: Any = None,
    *,
    layers: int | str | keras.layers.Layer | Sequence[Any] = 1,
) -> np.ndarray:
    """Rank correlation of each map before and after re-initialising the model's top layers.

    Adebayo et al., "Sanity Checks for Saliency Maps" (NeurIPS 2018, sec. 3.1), the model
    parameter randomisation test: a map that explains the model must change when the learned
    weights are replaced by random ones. A copy of `model` is made with
    `keras.models.clone_model`, given the model's weights with `set_weights`, and then the
    chosen layers of the copy get fresh weights from their own initialisers (all their
    variables, batch-norm statistics included; Keras' global seed, `keras.utils.set_random_seed`,
    makes them reproducible). The user's model is never changed. Both maps explain the same
    class: `targets`, or when `None` the top-1 class of the original model. The result per
    sample is the Spearman rank correlation of the two maps over all pixels (ties get their
    average rank). Two constant maps that are equal score 1, a constant map against a varying
    one 0. Values near 1 mean the method ignores the randomised weights: it fails the check.
    For the paper's cascading test, call it with `layers=1, 2, 3, ...`.

    One random draw decides the result for all samples. For conv -> pooling -> dense models,
    randomising the dense head alone can leave Grad-CAM highly correlated by chance (when the
    random class weights happen to favour the same channels): on a small trained 3-conv CNN
    the mean over samples ranged from -0.4 to 0.95 over five draws with `layers=1`, -0.1 to
    0.6 with `layers=2` and 0.09 to 0.33 with `layers=3`. Randomise several top layers, or
    repeat with several seeds (`keras.utils.set_random_seed`) and look at the spread.

    Args:
        explainer_factory: Builds an explainer for a model, e.g. `keras_gradcam.GradCAM`
            or `lambda m: GradCAM(m, "conv2")`. The explainer is called as
            `explainer(images, targets)` with one class per sample and returns maps `(n, ...)`.
        model: The trained Keras model (Sequential or functional, so it can be cloned).
        images: The model inputs to explain.
        targets: `None` (the original model's top-1 class per sample), an int, or one class
            per sample.
        layers: Which layers to re-initialise: an int `k` (the top `k` layers of
            `model.layers` that have weights; a nested model counts as one layer), or a
            layer, a name, an `"outer/inner"` path, or a list of them. Defaults to 1 (the head).

    Returns:
        float64 `(n,)` in [-1, 1].

    Raises:
        ValueError: `layers` naming no layer or a layer without weights; maps whose shapes
            differ before and after.
        TypeError: the model cannot be cloned (subclassed models without `get_config`).
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a keras.Model. Received: model of type {type(model).__name__}."
        )
    paths = _layer_paths(model, layers)
    randomized = randomized_copy(model, paths)
    if targets is None:
        outputs = keras.tree.flatten(model(np.asarray(images), training=False))
        scores = np.asarray(outputs[0])
        targets = scores.reshape(len(scores), -1).argmax(axis=1).astype(np.int32)
    before = np.asarray(explainer_factory(model)(images, targets), np.float64)
    after = np.asarray(explainer_factory(randomized)(images, targets), np.float64)
    if before.shape != after.shape or before.ndim < 2:
        raise ValueError(
            "The explainer must return maps (n, ...) of one shape for both models. Received: "
            f"shapes {before.shape} before and {after.shape} after randomisation."
        )
    return spearman(before, after)


def mean_randomization_check(explainer_factory, model, images, targets=None, **kwargs) -> float:
    """The mean of `randomization_check` over the samples."""
    return mean(randomization_check(explainer_factory, model, images, targets, **kwargs))


def spearman(maps_a: Any, maps_b: Any) -> np.ndarray:
    """Spearman rank correlation of paired maps `(n, ...)`, one value per sample, float64 `(n,)`.

    Ties get their average rank. Equal constant maps score 1; a constant map against any
    other 0 (never NaN).
    """
    a = np.asarray(maps_a, np.float64).reshape(len(maps_a), -1)
    b = np.asarray(maps_b, np.float64).reshape(len(maps_b), -1)
    if a.shape != b.shape:
        raise ValueError(
            f"Paired maps must have one shape. Received: shapes {np.shape(maps_a)} and "
            f"{np.shape(maps_b)}."
        )
    result = np.zeros((len(a),), np.float64)
    for i, (x, y) in enumerate(zip(a, b)):
        rx, ry = _ranks(x), _ranks(y)
        rx, ry = rx - rx.mean(), ry - ry.mean()
        norm = np.sqrt((rx**2).sum() * (ry**2).sum())
        if norm > 0:
            result[i] = float(np.clip((rx * ry).sum() / norm, -1.0, 1.0))
        elif not rx.any() and not ry.any():
            result[i] = 1.0 if np.array_equal(x, y) else 0.0
    return result


def _ranks(values: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    average = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each value
    return average[inverse.reshape(-1)]


def randomized_copy(model: keras.Model, paths: Sequence[tuple[int, ...]]) -> keras.Model:
    """A clone of `model` with its weights, except the layers at `paths` freshly initialised.

    A path is the indices from `model.layers` down through nested models to a layer.
    """
    try:
        copy = keras.models.clone_model(model)
    except Exception as error:  # Keras raises several types for models it cannot rebuild
        raise TypeError(
            f"Model {model.name!r} could not be cloned ({type(error).__name__}: {error}). "
            "The randomisation check needs a Sequential or functional model, or a subclassed "
            "one with `get_config`/`from_config`."
        ) from error
    fresh = [_walk(copy, path).get_weights() for path in paths]
    copy.set_weights(model.get_weights())
    for path, weights in zip(paths, fresh):
        _walk(copy, path).set_weights(weights)
    return copy


def _walk(model, path):
    layer = model
    for index in path:
        layer = layer.layers[index]
    return layer


def _layer_paths(model, layers) -> list[tuple[int, ...]]:
    if isinstance(layers, (int, np.integer)) and not isinstance(layers, bool):
        weighted = [i for i, layer in enumerate(model.layers) if layer.weights]
        if not 1 <= layers <= len(weighted):
            raise ValueError(
                f"`layers` must be between 1 and {len(weighted)}, the number of layers with "
                f"weights in model {model.name!r}. Received: layers={layers}."
            )
        return [(i,) for i in weighted[-int(layers):]]
    specs = list(layers) if isinstance(layers, (list, tuple)) else [layers]
    paths = []
    for spec in specs:
        path = _find(model, spec)
        if path is None:
            raise ValueError(
                f"No layer {getattr(spec, 'name', spec)!r} in model {model.name!r}. "
                f"Received: layers={layers!r}; top-level layers: "
                f"{[layer.name for layer in model.layers]}."
            )
        if not _walk(model, path).weights:
            raise ValueError(
                f"Layer {_walk(model, path).name!r} has no weights to randomise. "
                f"Received: layers={layers!r}."
            )
        paths.append(path)
    return paths


def _find(model, spec) -> tuple[int, ...] | None:
    """Indices from `model.layers` down to the layer `spec` (an object, a name or an
    "outer/inner" path), found with `keras_gradcam.graph.walk`; top-level layers first."""
    matches = [
        path for path in walk(model)
        if path[-1] is spec or (isinstance(spec, str) and spec in (path_name(path),
                                                                    path[-1].name))
    ]
    if not matches:
        return None
    path = min(matches, key=len)
    containers = (model, *path[:-1])
    return tuple(c.layers.index(layer) for c, layer in zip(containers, path))
