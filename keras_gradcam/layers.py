"""Find the layer to explain: by name, "outer/inner" path, object, index, or automatically."""

from __future__ import annotations

import difflib
import re

import keras
import numpy as np

from keras_gradcam.errors import LayerNotFoundError, NotSpatialLayerError
from keras_gradcam.graph import (
    LayerPath,
    PickedPath,
    inside_plain_layer,
    is_container,
    is_spatial,
    output_rank,
    path_name,
    sublayers,
    symbolic_output,
    walk,
)


def spatial_candidates(model) -> list[LayerPath]:
    """Every layer (nested ones included) whose output is spatial, in model order."""
    return [path for path in walk(model) if not is_container(path[-1]) and is_spatial(path)]


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


def _is_attention(layer) -> bool:
    return isinstance(layer, keras.layers.MultiHeadAttention) or type(
        layer).__name__.endswith("Attention")


def _is_norm(layer) -> bool:
    return "Norm" in type(layer).__name__  # LayerNormalization, RMSNormalization, ...


def transformer_input_norm(model, feeding: set[int] | None = None) -> LayerPath | None:
    """The last transformer block's first normalisation layer: the input of its attention.

    The automatic pick on transformers. Not the encoder's output: a classifier that reads the
    class token sends no gradient to the last block's patch tokens there (the last block's
    MLP acts on each token alone), so every map at the encoder output is zero. At the
    normalisation before the last attention, every patch token feeds the class token.
    Blocks are plain layers holding an attention and a normalisation layer (keras-hub), or an
    attention layer of a functional graph fed by a normalisation layer (keras.io's ViT).

    Args:
        feeding: Ids of the top-level layers the explained output depends on (None: all).
    """
    found = None
    for path in walk(model, into_layers=True):
        layer = path[-1]
        if feeding is not None and id(path[0]) not in feeding:
            continue
        inner = sublayers(layer) if not is_container(layer) else []
        norms = [s for s in inner if _is_norm(s)]
        if norms and any(_is_attention(s) for s in inner):
            found = path + (norms[0],)
        elif _is_attention(layer) and not inside_plain_layer(path):
            nodes = getattr(layer, "_inbound_nodes", None) or []
            tensors = nodes[-1].input_tensors if nodes else []
            history = getattr(tensors[0], "_keras_history", None) if tensors else None
            if history is not None and _is_norm(history.operation):
                found = path[:-1] + (history.operation,)
    return found


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
            A name may pick one part of its layer: `"fpn[P3]"` one element of an output that
            is a dict (or `"fpn[0]"` of a list), `"head@1"` the second call of a layer
            applied several times (calls count from 0, in the model's order).
        output: The explained output (index), which the automatic pick follows.

    Returns:
        A tuple of layers from a direct child of `model` down to the target layer (a
        `PickedPath` when a part was named).

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
        block = transformer_input_norm(model, feeding)
        if block is not None and (not candidates or output_rank(candidates[-1]) == 3):
            return block
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
        matches = [p for p in walk(model) if p[-1] is layer] or [
            p for p in walk(model, into_layers=True) if p[-1] is layer]
        if not matches:
            raise LayerNotFoundError(
                f"Layer {layer.name!r} (the object passed) is not part of model {model.name!r}. "
                f"Pass a layer of this model; these can be explained: {_describe(candidates)}."
            )
        path = matches[0]
    else:
        name, key, call = _split_pick(model, layer)
        path = _find_by_name(model, name, candidates)
        if key is not None or call is not None:
            return _picked(path, key, call, candidates)
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
    parts = _parts(path[-1])
    if not is_spatial(path) and parts:
        raise NotSpatialLayerError(
            f"Layer {path_name(path)!r} returns {len(parts)} outputs (a feature pyramid?): "
            f"name one, e.g. layer={path_name(path) + f'[{next(iter(parts))}]'!r}. Its "
            f"outputs: {_list_parts(parts)}."
        )
    if not is_spatial(path) and not (inside_plain_layer(path) and output_rank(path) is None):
        raise NotSpatialLayerError(
            f"Layer {path_name(path)!r} has no spatial output (its output rank is "
            f"{output_rank(path[-1])}; expected 3 to 5, like Conv1D/2D/3D). "
            f"Layers that can be explained: {_describe(candidates)}."
        )
    return path


def _find_by_name(model, name: str, candidates: list[LayerPath]) -> LayerPath:
    matches = _named(walk(model), name)
    if not matches:  # a layer inside a plain layer (a keras-hub encoder's block)
        matches = _named(walk(model, into_layers=True), name)
    all_paths = list(walk(model, into_layers=True))
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



def _named(paths, name: str) -> list[LayerPath]:
    if "/" in name:
        return [p for p in paths if path_name(p) == name]
    return [p for p in paths if p[-1].name == name]


_PICK = re.compile(r"^(?P<name>.+?)(?:\[(?P<key>[^\[\]]+)\])?(?:@(?P<call>\d+))?$")


def _split_pick(model, name: str) -> tuple[str, str | None, int | None]:
    """`"fpn[P3]"` -> `("fpn", "P3", None)`, `"head@1"` -> `("head", None, 1)`; a name that
    is a layer's own is never split."""
    match = _PICK.match(name)
    if any(name in (p[-1].name, path_name(p)) for p in walk(model, into_layers=True)) or not match:
        return name, None, None
    call = match.group("call")
    return match.group("name"), match.group("key"), None if call is None else int(call)


def _parts(layer, call: int | None = None) -> dict:
    """The elements of a layer's output that is a list or dict (key -> tensor), else {}."""
    try:
        output = symbolic_output(layer, call, structured=True)
    except (AttributeError, ValueError):
        return {}
    if isinstance(output, dict):
        return dict(output)
    return dict(enumerate(output)) if isinstance(output, (list, tuple)) else {}


def _list_parts(parts: dict) -> str:
    return ", ".join(f"{k!r} {tuple(getattr(v, 'shape', ()))}" for k, v in parts.items())


def _picked(path: LayerPath, key: str | None, call: int | None,
            candidates: list[LayerPath]) -> PickedPath:
    """The path with one element of its layer's output and/or one of its calls, checked."""
    layer, name = path[-1], path_name(path)
    calls = len(getattr(layer, "_inbound_nodes", ()) or ())
    if call is not None and calls and call >= calls:
        raise LayerNotFoundError(
            f"Layer {name!r} is called {calls} time(s) in the model; it has no call @{call} "
            "(calls count from 0)."
        )
    if key is not None:
        parts = _parts(layer, call)
        if not parts:
            raise NotSpatialLayerError(
                f"Layer {name!r} returns one output, not a list or dict: `[{key}]` picks an "
                f"element of such outputs. Pass {name!r}."
            )
        if key not in parts and key.lstrip("-").isdigit() and int(key) in parts:
            key = int(key)
        if key not in parts:
            raise LayerNotFoundError(
                f"Layer {name!r} has no output {key!r}. Its outputs: {_list_parts(parts)}."
            )
    picked = PickedPath.of(path, key, call)
    if not is_spatial(picked):
        raise NotSpatialLayerError(
            f"{path_name(picked)!r} has no spatial output (its output rank is "
            f"{output_rank(picked)}; expected 3 to 5). Layers that can be explained: "
            f"{_describe(candidates)}."
        )
    return picked
