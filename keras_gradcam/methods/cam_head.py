"""Check that a layer feeds `GAP -> dense` (what CAM needs) by walking the model's graph."""

from __future__ import annotations

import keras

from keras_gradcam.errors import ModelNotSupportedError
from keras_gradcam.graph import LayerPath, is_container, path_name

_POOLS = tuple(
    getattr(keras.layers, f"GlobalAveragePooling{d}D") for d in (1, 2, 3)
)
_PASS_THROUGH = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
                 keras.layers.SpatialDropout3D, keras.layers.GaussianDropout,
                 keras.layers.GaussianNoise, keras.layers.AlphaDropout)
_BETWEEN = _PASS_THROUGH + (keras.layers.Flatten, keras.layers.Activation, keras.layers.ReLU,
                            keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.Softmax)


def _own_nodes(container) -> set[int] | None:
    """The ids of the nodes of `container`'s own graph; None when it has none (subclassed).

    A layer shared with another model (or a Sequential model rebuilt on loading) has outbound
    nodes in other graphs too; only these belong to the explained model."""
    graph = container._functional if isinstance(container, keras.Sequential) else container
    by_depth = getattr(graph, "_nodes_by_depth", None)
    if by_depth is None:
        return None
    return {id(node) for nodes in by_depth.values() for node in nodes}


def _readers(container, layer) -> list:
    """The layers of `container`'s graph that read `layer`'s output."""
    nodes = getattr(layer, "_outbound_nodes", [])
    own = _own_nodes(container)
    if own is not None:
        return [node.operation for node in nodes if id(node) in own]
    members = {id(member) for member in container.layers}
    return [node.operation for node in nodes if id(node.operation) in members]


def _walk_forward(model: keras.Model, path: LayerPath) -> list[tuple]:
    """`(layer, top)` for each layer applied after `path[-1]`, `top` being the direct child of
    `model` whose output carries it (the layer itself, or the nested model holding it)."""
    plain = next((layer for layer in path[:-1] if not is_container(layer)), None)
    if plain is not None:
        raise ModelNotSupportedError(
            f"CAM needs `{path_name(path)}` -> global average pooling -> dense, but "
            f"{path[-1].name!r} sits inside the layer {plain.name!r} (a transformer block?), "
            "whose inside has no graph to follow to the head. Use GradCAM (or HiResCAM), "
            "which work on any layer."
        )
    path, chain = list(path), []
    while path:
        container = path[-2] if len(path) > 1 else model
        readers = _readers(container, path[-1])
        if len(readers) > 1:
            raise ModelNotSupportedError(
                f"CAM needs `{path_name(path)}` -> global average pooling -> dense, but the "
                f"output of {path[-1].name!r} is read by {len(readers)} layers "
                f"({', '.join(r.name for r in readers)}). Use GradCAM (or HiResCAM) instead."
            )
        if readers:
            path[-1] = readers[0]
            chain.append((readers[0], path[0]))
        else:
            path.pop()
    return chain


def following_layers(model: keras.Model, path: LayerPath) -> list:
    """The chain of layers applied after `path[-1]` in `model`'s own graph, leaving nested
    models through their output.

    Raises:
        ModelNotSupportedError: the output branches (is read by two layers).
    """
    return [layer for layer, _ in _walk_forward(model, path)]


def _outputs_fed(model: keras.Model, tops: list) -> list[int] | None:
    """Indices of `model`'s outputs produced by one of the layers `tops` (None: no graph)."""
    graph = model._functional if isinstance(model, keras.Sequential) else model
    if getattr(graph, "_nodes_by_depth", None) is None:
        return None
    ids = {id(top) for top in tops}
    return [
        i for i, tensor in enumerate(graph.outputs)
        if id(tensor._keras_history.operation) in ids
    ]


def find_dense_head(model: keras.Model, path: LayerPath, output: int = 0) -> keras.layers.Dense:
    """The Dense layer that reads the global average of `path[-1]`'s output.

    Accepts `layer -> [dropout] -> GlobalAveragePooling -> [dropout, flatten, activation] ->
    Dense -> [activation/softmax]`, across nested models, and checks that the dense layer (or
    what follows it) gives model output `output`: a head that feeds another output would
    explain the wrong scores.

    Raises:
        ModelNotSupportedError: any other structure, naming what was found; or a head that
            feeds another output than `output`.
    """
    walked = _walk_forward(model, path)
    chain = [layer for layer, _ in walked]
    rest = [layer for layer in chain if not isinstance(layer, _PASS_THROUGH)]
    found = " -> ".join([path[-1].name] + [f"{x.name} ({type(x).__name__})" for x in chain])
    pooled = bool(rest) and isinstance(rest[0], _POOLS)
    after = rest[1:] if pooled else []
    dense_at = next((i for i, x in enumerate(after) if isinstance(x, keras.layers.Dense)), None)
    ok = dense_at is not None and all(
        isinstance(x, _BETWEEN) for i, x in enumerate(after) if i != dense_at
    )
    if not ok:
        raise ModelNotSupportedError(
            "CAM needs the explained layer to be followed by global average pooling and one "
            "dense layer (dropout, flatten or activations may sit between). Received: "
            f"{found}. Pick the layer just before the "
            "pooling with `layer=`, or use GradCAM, which works on any head."
        )
    dense = after[dense_at]
    start = next(i for i, (layer, _) in enumerate(walked) if layer is dense)
    fed = _outputs_fed(model, [top for _, top in walked[start:]])
    if fed is not None and output not in fed:
        names = list(getattr(model, "output_names", None) or [])
        where = ", ".join(
            f"output {i}" + (f" ({names[i]!r})" if i < len(names) else "") for i in fed
        ) or "no model output"
        hint = f"Pass `output={fed[0]}` to explain that output, or pick" if fed else "Pick"
        raise ModelNotSupportedError(
            f"CAM reads the kernel of dense layer {dense.name!r} (the head after "
            f"{path_name(path)!r}), but that head feeds {where}, not the explained output. "
            f"Received: output={output}. {hint} a layer whose pooling and dense head lead to "
            f"output {output} with `layer=`, or use GradCAM, which follows the explained "
            "score's gradient."
        )
    return dense
