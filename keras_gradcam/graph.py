"""The structure of a Keras model as explainers see it: layer paths through nested models
and plain layers that hold layers, symbolic outputs and their ranks."""

from __future__ import annotations

from collections.abc import Iterator

import keras

LayerPath = tuple  # (child of the model, child of that child, ..., target layer)


class PickedPath(tuple):
    """A `LayerPath` that explains one part of its layer: one element of an output that is a
    list or dict (`key`: a feature pyramid level, `"fpn[P3]"`), or one call of a layer applied
    several times (`call`: a head shared across pyramid levels, `"classification_head@0"`)."""

    key: int | str | None = None
    call: int | None = None

    @classmethod
    def of(cls, path: LayerPath, key=None, call=None) -> PickedPath:
        picked = cls(path)
        picked.key, picked.call = key, call
        return picked

    @property
    def suffix(self) -> str:
        return (f"[{self.key}]" if self.key is not None else "") + (
            f"@{self.call}" if self.call is not None else "")

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


def sublayers(layer) -> list:
    """The layers `layer` holds directly: a model's `layers`, or the sublayers a plain layer
    tracks (a keras-hub encoder's blocks, a block's normalisation and attention layers)."""
    if is_container(layer):
        return list(layer.layers)
    flatten = getattr(layer, "_flatten_layers", None)
    return list(flatten(include_self=False, recursive=False)) if flatten else []


def walk(model, prefix: tuple = (), into_layers: bool = False) -> Iterator[LayerPath]:
    """Yield the path of every layer below `model`, depth first, in model order.

    Args:
        into_layers: Also go inside plain layers that hold layers (their sublayers have no
            graph of their own: they are reached by name and captured while they run).
    """
    for layer in sublayers(model):
        path = prefix + (layer,)
        yield path
        if is_container(layer) or (into_layers and sublayers(layer)):
            yield from walk(layer, path, into_layers)


def inside_plain_layer(path: LayerPath) -> bool:
    """Whether the layer at `path` sits inside a plain layer (no symbolic output of its own)."""
    return any(not is_container(layer) for layer in path[:-1])


def path_name(path: LayerPath) -> str:
    return "/".join(layer.name for layer in path) + getattr(path, "suffix", "")


def symbolic_output(layer, call: int | None = None, structured: bool = False):
    """The layer's symbolic output at its first call (or at call `call`). Keras keeps a
    layer's outputs as a flat list; with `structured`, a dict a layer returns is rebuilt
    (from the layer's output spec) so that its keys are known.

    Raises:
        AttributeError, ValueError: the layer has no such symbolic output (subclassed models).
    """
    if not call:
        output = layer.output
    else:
        output = layer._get_node_attribute_at_index(call, "output_tensors", "output")
    if structured and isinstance(output, (list, tuple)) and not is_container(layer):
        node = layer._inbound_nodes[call or 0]
        try:
            output = layer.compute_output_spec(*node.arguments.args, **node.arguments.kwargs)
        except (AttributeError, KeyError, NotImplementedError, TypeError, ValueError):
            pass  # the flat list, by position
    return output


def output_rank(layer) -> int | None:
    """Rank of the output (batch included) of a layer, or of a path's picked part; None when
    it cannot be known."""
    path = layer if isinstance(layer, tuple) else (layer,)
    layer, key = path[-1], getattr(path, "key", None)
    try:
        output = symbolic_output(layer, getattr(path, "call", None), key is not None)
        if key is not None:
            output = output[key]
    except (AttributeError, ValueError, KeyError, IndexError, TypeError):
        # subclassed models: layers have no symbolic output
        fixed = isinstance(layer, _CONV_CLASSES) and key is None
        return len(layer.kernel_size) + 2 if fixed else None
    if isinstance(output, (list, tuple, dict)) or not hasattr(output, "shape"):
        return None
    return len(output.shape)


def is_spatial(path: LayerPath) -> bool:
    """Whether the layer at `path` outputs (batch, *spatial, channels) with 1 to 3 spatial axes."""
    layer = path[-1]
    if isinstance(layer, keras.layers.InputLayer):
        return False
    if isinstance(layer, _CONV_CLASSES):
        return True
    rank = output_rank(path)
    return rank is not None and 3 <= rank <= 5


def map_rank(layer) -> int | None:
    """Number of spatial axes of the output of a layer or of a path's picked part (its maps'
    rank without batch, before any token grid); None when it is known only once it runs."""
    rank = output_rank(layer)
    return rank - 2 if rank is not None else None
