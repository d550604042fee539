"""Check and convert what users pass as model inputs, before anything is traced."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from keras_gradcam.errors import InvalidInputError


def check_batch_size(batch_size) -> int:
    """`batch_size` as an int, or a ValueError naming it when it is not a positive int."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or (
        batch_size < 1
    ):
        raise ValueError(
            f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}."
        )
    return int(batch_size)


def model_inputs(model) -> list | None:
    """The model's symbolic inputs, or None when it has none (subclassed models)."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    return list(inputs) if inputs else None


def prepare_inputs(model, images: Any) -> tuple[Any, int]:
    """Validate `images` against the model's inputs and convert them to tensors.

    Args:
        model: The Keras model.
        images: An array or tensor with a batch axis, or for multi-input models a list (in
            model input order) or a dict keyed by input name.

    Returns:
        `(inputs, n)`: the same structure as tensors of the model's input dtypes, and the
        number of samples.

    Raises:
        InvalidInputError: wrong number of inputs, unknown names, wrong rank or shape, or
            inputs of different lengths.
    """
    expected = model_inputs(model)
    names = None
    if isinstance(images, dict):
        names = list(images) if expected is None else [t.name for t in expected]
        if set(images) != set(names):
            raise InvalidInputError(
                f"The model's inputs are named {names}. Received a dict with keys "
                f"{sorted(images)}."
            )
        leaves = [images[name] for name in names]
    elif isinstance(images, (list, tuple)) and (expected is None or len(expected) > 1):
        leaves = list(images)
    else:
        leaves = [images]
    if expected is not None and len(leaves) != len(expected):
        raise InvalidInputError(
            f"The model takes {len(expected)} inputs "
            f"({', '.join(repr(t.name) for t in expected)}). Received {len(leaves)}. "
            "Pass a list (in model input order) or a dict keyed by input name."
        )
    tensors = [_to_tensor(x, spec) for x, spec in zip(leaves, expected or [None] * len(leaves))]
    sizes = sorted({int(x.shape[0]) for x in tensors})
    if len(sizes) != 1:
        raise InvalidInputError(
            f"All inputs must hold the same number of samples. Received sizes {sizes}."
        )
    if sizes[0] == 0:
        raise InvalidInputError("`images` is empty: pass at least one sample.")
    if names is not None and (expected is None or _takes_dict(model)):
        return dict(zip(names, tensors)), sizes[0]
    return (tensors if len(tensors) > 1 else tensors[0]), sizes[0]


def _takes_dict(model) -> bool:
    """Whether a functional model was built on a dict of inputs (else: list in input order)."""
    graph = getattr(model, "_functional", None) or model
    return isinstance(getattr(graph, "_inputs_struct", None), dict)


def _to_tensor(x, spec) -> tf.Tensor:
    if not isinstance(x, (np.ndarray, tf.Tensor)) and not hasattr(x, "__array__"):
        raise InvalidInputError(
            f"`images` must be arrays or tensors. Received: {type(x).__name__}."
        )
    tensor = tf.convert_to_tensor(x)
    if spec is not None:
        dtype = tf.as_dtype(spec.dtype)
    elif tensor.dtype.is_floating or tensor.dtype.is_unsigned or tensor.dtype == tf.bool:
        dtype = tf.float32
    else:
        dtype = tensor.dtype
    if tensor.dtype != dtype:
        tensor = tf.cast(tensor, dtype)
    got = tuple(tensor.shape)
    if spec is None:
        if len(got) < 2:
            raise InvalidInputError(
                f"`images` must have a batch axis. Received: images.shape={got}."
            )
        return tensor
    expected = tuple(spec.shape)
    if len(got) != len(expected) or any(
        e is not None and e != g for e, g in zip(expected[1:], got[1:])
    ):
        hint = " Add a batch axis, e.g. `images[None]`." if len(got) == len(expected) - 1 else ""
        raise InvalidInputError(
            f"`images` must be a batched {len(expected)}D array matching the model input "
            f"shape {expected}. Received: images.shape={got}.{hint}"
        )
    return tensor
