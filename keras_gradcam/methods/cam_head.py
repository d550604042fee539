"""Check that a layer feeds `GAP -> dense` (what CAM needs) by walking the model's graph."""

from __future__ import annotations

import keras

from keras_gradcam.errors import ModelNotSupportedError
from keras_gradcam.layers import LayerPath, path_name

_POOLS = tuple(
    getattr(keras.layers, f"GlobalAveragePooling{d}D") for d in (1, 2, 3)
)
_PASS_THROUGH = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
                 keras.layers.SpatialDropout3D, keras.layers.GaussianDropout,
                 keras.layers.GaussianNoise, keras.layers.AlphaDropout)
_BETWEEN = _PASS_THROUGH + (keras.layers.Flatten, keras.layers.Activation, keras.layers.ReLU,
                            keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.Softmax)


def following_layers(model: keras.Model, path: LayerPath) -> list:
    """The chain of layers applied after `path[-1]`, leaving nested models through their output.

    Raises:
        ModelNotSupportedError: the output branches (is read by two layers).
    """
    path, chain = list(path), []
    while path:
        container = path[-2] if len(path) > 1 else model
        members = {id(layer) for layer in container.layers}
        nodes = getattr(path[-1], "_outbound_nodes", [])
        readers = [n.operation for n in nodes if id(n.operation) in members]
        if len(readers) > 1:
            raise ModelNotSupportedError(
                f"CAM needs `{path_name(path)}` -> global average pooling -> dense, but the "
                f"output of {path[-1].name!r} is read by {len(readers)} layers "
                f"({', '.join(r.name for r in readers)}). Use GradCAM (or HiResCAM) instead."
            )
        if readers:
            path[-1] = readers[0]
            chain.append(readers[0])
        else:
            path.pop()
    return chain


def find_dense_head(model: keras.Model, path: LayerPath) -> keras.layers.Dense:
    """The Dense layer that reads the global average of `path[-1]`'s output.

    Accepts `layer -> [dropout] -> GlobalAveragePooling -> [dropout, flatten, activation] ->
    Dense -> [activation/softmax]`, across nested models.

    Raises:
        ModelNotSupportedError: any other structure, naming what was found.
    """
    chain = following_layers(model, path)
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
    return after[dense_at]
