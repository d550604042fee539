"""Find the layer to explain: by name, "outer/inner" path, object, index, or automatically."""

from __future__ import annotations

import difflib
from collections.abc import Iterator

import keras
import numpy as np

from keras_gradcam.errors import LayerNotFoundError, NotSpatialLayerError

LayerPath = tuple  # (child of the model, child of that child, ..., target layer)

_CONV_CLASSES = tuple(
    cls
    for cls in (
        getattr(keras.layers, name, None)
        for name in (
            "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D",
            "SeparableConv1D", "SeparableConv2D", "Conv1DTranspose", "Conv2DTranspose",
            "Conv3DTranspose",
        )
    )
    if cls is not None
)


def is_container(layer) -> bool:
    """Whether `layer` is a model that holds layers of its own."""
    return isinstance(layer, keras.Model)


def is_functional(model) -> bool:
    """Whether `model` has a graph that can be replayed (functional, or a built Sequential)."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None) is not None
    return hasattr(model, "_nodes_by_depth") and hasattr(model, "_run_through_graph")


def walk(model, prefix: tuple = ()) -> Iterator[LayerPath]:
    """Yield the path of every layer below `model`, depth first, in model order."""
    for layer in model.layers:
        path = prefix + (layer,)
        yield path
        if is_container(layer):
            yield from walk(layer, path)


def path_name(path: LayerPath) -> str:
    return "/".join(layer.name for layer in path)


def output_rank(layer) -> int | None:
    """Rank of the layer's output (batch included), or None when it cannot be known."""
    try:
        output = layer.output
    except (AttributeError, ValueError):  # subclassed models: layers have no symbolic output
        return len(layer.kernel_size) + 2 if isinstance(layer, _CONV_CLASSES) else None
    if isinstance(output, (list, tuple)) or not hasattr(output, "shape"):
        return None
    return len(output.shape)


def is_spatial(path: LayerPath) -> bool:
    """Whether the layer at `path` outputs (batch, *spatial, channels) with 1 to 3 spatial axes."""
    layer = path[-1]
    if isinstance(layer, keras.layers.InputLayer):
        return False
    if isinstance(layer, _CONV_CLASSES):
        return True
    rank = output_rank(layer)
    return rank is not None and 3 <= rank <= 5


def spatial_candidates(model) -> list[LayerPath]:
    """Every layer (nested ones included) whose output is spatial, in model order."""
    return [path for path in walk(model) if not is_container(path[-1]) and is_spatial(path)]


def map_rank(layer) -> int:
    """Number of spatial axes of the layer's output (its maps' rank without batch)."""
    rank = output_rank(layer)
    return rank - 2 if rank is not None else len(layer.kernel_size)


def feeding_layers(model, output: int) -> set[int] | None:
    """Ids of the top-level layers of `model` that output `output` depends on (None: all,
    when the model has no graph to walk)."""
    graph = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    try:
        tensors = [graph.outputs[output]]
    except (AttributeError, ValueError, IndexError, TypeError):
        return None
    seen: set[int] = set()
    while tensors:
        history = getattr(tensors.pop(), "_keras_history", None)
        if history is None or id(history.operation) in seen:
            continue
        seen.add(id(history.operation))
        node = history.operation._inbound_nodes[history.node_index]
        tensors.extend(node.input_tensors)
    return seen


_PASSIVE = ("Reshape", "Flatten", "Concatenate", "Activation", "Softmax", "Permute",
            "Identity", "Dropout")


def output_heads(model) -> set[int]:
    """Ids of the top-level layers that make a model output: the output layers themselves
    and, behind reshapes, concatenations and activations, the layers that feed them (a
    segmentation net's last 1x1 convolution, a detector's per-level class and box convs)."""
    graph = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    try:
        tensors = list(graph.outputs)
    except (AttributeError, ValueError, TypeError):
        return set()
    heads, seen = set(), set()
    while tensors:
        history = getattr(tensors.pop(), "_keras_history", None)
        if history is None or id(history.operation) in seen:
            continue
        op = history.operation
        seen.add(id(op))
        heads.add(id(op))
        if type(op).__name__ in _PASSIVE:
            tensors.extend(op._inbound_nodes[history.node_index].input_tensors)
    return heads


def _describe(paths: list[LayerPath], limit: int = 12) -> str:
    names = [path_name(p) for p in paths]
    if len(names) > limit:
        names = names[:3] + ["..."] + names[-(limit - 4):]
    return ", ".join(repr(n) for n in names) if names else "(none)"


def resolve_layer(model: keras.Model, layer=None, output: int = 0) -> LayerPath:
    """Resolve the user's `layer` argument to the path of a layer inside `model`.

    Args:
        model: The Keras model.
        layer: `None` (the last layer with a spatial output on the way to output `output`,
            nested models included), a layer name, an `"outer/inner"` path through nested
            models, a `keras.layers.Layer` object, or an integer index into `model.layers`.
        output: The explained output (index), which the automatic pick follows.

    Returns:
        A tuple of layers from a direct child of `model` down to the target layer.

    Raises:
        LayerNotFoundError: the layer does not exist.
        NotSpatialLayerError: the layer has no spatial output.
    """
    candidates = spatial_candidates(model)
    if layer is None:
        feeding = feeding_layers(model, output)
        if feeding is not None:
            candidates = [p for p in candidates if id(p[0]) in feeding]
        heads = output_heads(model)
        inner = [p for p in candidates if id(p[0]) not in heads or len(p) > 1]
        candidates = inner or candidates  # a feature map before the output head, if any
        if not candidates:
            raise NotSpatialLayerError(
                "The model has no layer with a spatial output (rank 3 to 5, e.g. Conv1D/2D/3D), "
                "so there is nothing to localise. Pass `layer=` explicitly. "
                f"Received model {model.name!r} with layers: {_describe(list(walk(model)))}."
            )
        return candidates[-1]
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer, str, keras.layers.Layer)):
        raise TypeError(
            "`layer` must be None, a layer name, an 'outer/inner' path, a keras Layer or an "
            f"int index. Received: layer={layer!r} of type {type(layer).__name__}."
        )
    if isinstance(layer, (int, np.integer)):
        try:
            path = (model.layers[int(layer)],)
        except IndexError:
            raise LayerNotFoundError(
                f"Layer index {layer} is out of range: the model has {len(model.layers)} "
                f"top-level layers. Layers that can be explained: {_describe(candidates)}."
            ) from None
    elif isinstance(layer, keras.layers.Layer):
        matches = [p for p in walk(model) if p[-1] is layer]
        if not matches:
            raise LayerNotFoundError(
                f"Layer {layer.name!r} (the object passed) is not part of model {model.name!r}. "
                f"Pass a layer of this model; these can be explained: {_describe(candidates)}."
            )
        path = matches[0]
    else:
        path = _find_by_name(model, layer, candidates)
    if is_container(path[-1]):
        inner = [p for p in candidates if p[: len(path)] == path]
        if inner:
            return inner[-1]
    if isinstance(path[-1], keras.layers.InputLayer):
        raise NotSpatialLayerError(
            f"Layer {path_name(path)!r} is a model input, which has no feature maps to weight: "
            "Grad-CAM explains a layer inside the model. Layers that can be explained: "
            f"{_describe(candidates)}."
        )
    if not is_spatial(path):
        raise NotSpatialLayerError(
            f"Layer {path_name(path)!r} has no spatial output (its output rank is "
            f"{output_rank(path[-1])}; expected 3 to 5, like Conv1D/2D/3D). "
            f"Layers that can be explained: {_describe(candidates)}."
        )
    return path


def _find_by_name(model, name: str, candidates: list[LayerPath]) -> LayerPath:
    all_paths = list(walk(model))
    if "/" in name:
        matches = [p for p in all_paths if path_name(p) == name]
    else:
        matches = [p for p in all_paths if p[-1].name == name]
    if len(matches) > 1:
        raise LayerNotFoundError(
            f"Layer name {name!r} is ambiguous: it appears at {_describe(matches)}. "
            "Pass the full 'outer/inner' path instead."
        )
    if not matches:
        # A top-level layer's path is its name: dedupe (keeping order) so no suggestion repeats.
        known = list(dict.fromkeys([path_name(p) for p in all_paths]
                                   + [p[-1].name for p in all_paths]))
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise LayerNotFoundError(
            f"No layer named {name!r} in model {model.name!r}.{hint} "
            f"Layers that can be explained: {_describe(candidates)}."
        )
    return matches[0]

