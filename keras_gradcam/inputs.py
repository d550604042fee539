"""Check and convert what users pass as model inputs, before anything is traced."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_gradcam.errors import InvalidInputError, ModelNotSupportedError


def check_positive_int(value, name: str) -> int:
    """`value` as an int, or a ValueError naming `name` when it is not a positive int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}.")
    return int(value)


def check_batch_size(batch_size) -> int:
    """`batch_size` as an int, or a ValueError naming it when it is not a positive int."""
    return check_positive_int(batch_size, "batch_size")


def check_bool(value, name: str) -> bool | None:
    """`value` when it is a bool (or None), else a TypeError naming `name`."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    raise TypeError(f"`{name}` must be True, False or None. Received: {name}={value!r}.")


def is_image(x, spatial_rank: int = 2, *, floating: bool = False, channels: bool = True) -> bool:
    """Whether a tensor or spec is a batch of images `(batch, *spatial, channels)` with
    `spatial_rank` fully known spatial axes (`channels=False`: `(batch, *spatial)`)."""
    rank = spatial_rank + (2 if channels else 1)
    shape = x.shape
    if shape.rank != rank or None in shape[1 : 1 + spatial_rank]:
        return False
    return not floating or tf.as_dtype(x.dtype).is_floating


def image_index(inputs, spatial_rank: int = 2, *, floating: bool = False,
                channels_only: bool = False) -> int | None:
    """Index in `keras.tree.flatten(inputs)` of the image input (tensors or specs), or None.

    The image input is the first of shape `(batch, *spatial, channels)` with `spatial_rank`
    spatial axes; failing that (unless `channels_only`), the first `(batch, *spatial)`
    (grayscale without a channel axis).
    """
    leaves = keras.tree.flatten(inputs)
    for channels in (True,) if channels_only else (True, False):
        for index, x in enumerate(leaves):
            if is_image(x, spatial_rank, floating=floating, channels=channels):
                return index
    return None


def image_rank(inputs) -> int | None:
    """Spatial axes of the image input (with a channel axis first; 2 preferred, then 3,
    then 1), or None if none."""
    leaves = keras.tree.flatten(inputs)
    for channels in (True, False):
        for rank in (2, 3, 1):
            if any(is_image(x, rank, channels=channels) for x in leaves):
                return rank
    return None


def require_image(inputs, spatial_rank: int, what: str) -> int:
    """`image_index(inputs, spatial_rank, floating=True)`, or an error saying `what` needs it.

    Raises:
        ModelNotSupportedError: the model has no floating input with that many spatial axes.
    """
    index = image_index(inputs, spatial_rank, floating=True)
    if index is None:
        raise ModelNotSupportedError(
            f"{what} needs a floating image input with {spatial_rank} spatial axes (the "
            "layer's); the model has none."
        )
    return index


def spatial_size(inputs, rank: int) -> tuple[int, ...]:
    """The spatial size of the image input with `rank` spatial axes (see `image_index`).

    Raises:
        InvalidInputError: no input has as many spatial axes.
    """
    index = image_index(inputs, rank)
    if index is None:
        raise InvalidInputError(
            "`resize=True` needs an input with as many spatial axes as the layer's maps "
            f"({rank}); none of the inputs has. Pass `resize=False`."
        )
    return tuple(int(d) for d in keras.tree.flatten(inputs)[index].shape[1 : 1 + rank])


def unpack_element(element):
    """`(inputs, labels or None)` from a dataset element (the `model.fit` convention:
    `inputs`, `(inputs,)`, `(inputs, labels)` or `(inputs, labels, sample_weights)`)."""
    if isinstance(element, tuple) and len(element) == 1:
        element = element[0]
    if isinstance(element, tuple):
        if len(element) == 1:
            return element[0], None
        if len(element) in (2, 3):
            return element[0], element[1]
        raise InvalidInputError(
            "Dataset elements must be `inputs`, `(inputs, labels)` or "
            f"`(inputs, labels, sample_weights)`. Received a tuple of {len(element)} parts; "
            "for a multi-input model nest the inputs: `((a, b), labels)` or a dict."
        )
    return element, None


def dataset_is_batched(inputs_spec, model) -> bool:
    """Whether a dataset's inputs already carry a batch axis (compared with the model's).

    Raises:
        InvalidInputError: inputs that are not dense tensors, or of a rank the model cannot
            take batched or unbatched.
    """
    leaves = keras.tree.flatten(inputs_spec)
    for leaf in leaves:
        if not isinstance(leaf, tf.TensorSpec):
            raise InvalidInputError(
                "Dataset inputs must be dense tensors. Received an element of type "
                f"{type(leaf).__name__} ({leaf})."
            )
    expected = model_inputs(model)
    if not expected:
        return True
    rank, got = len(expected[0].shape), leaves[0].shape.rank
    if got == rank:
        return True
    if got == rank - 1:
        return False
    raise InvalidInputError(
        f"Dataset inputs must be shaped like the model input {tuple(expected[0].shape)} "
        f"(batched or not). Received: element shape {tuple(leaves[0].shape)}."
    )


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
    source = np.asarray(x) if not isinstance(x, tf.Tensor) else None
    if source is not None and source.dtype.kind not in "biuf":
        raise InvalidInputError(
            "`images` must hold numbers (float32, or uint8 pixels). Received an array of dtype "
            f"{source.dtype} (kind {source.dtype.kind!r}); convert it, e.g. "
            "`np.asarray(images, dtype='float32')`."
        )
    tensor = tf.convert_to_tensor(source if source is not None else x)
    if not (tensor.dtype.is_floating or tensor.dtype.is_integer or tensor.dtype == tf.bool):
        raise InvalidInputError(
            f"`images` must hold numbers. Received a tensor of dtype {tensor.dtype.name}."
        )
    if spec is not None:
        dtype = tf.as_dtype(spec.dtype)
    elif tensor.dtype.is_floating or tensor.dtype.is_unsigned or tensor.dtype == tf.bool:
        dtype = tf.float32
    else:
        dtype = tensor.dtype
    if tensor.dtype != dtype:
        if tensor.dtype.is_floating and not dtype.is_floating and not bool(
            tf.reduce_all(tf.math.is_finite(tensor))
        ):
            raise InvalidInputError(
                f"`images` contain NaN or infinite values, and the model takes {dtype.name} "
                "inputs, to which they cannot be converted. Clean the images first."
            )
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


def cast_like(inputs, structure):
    """`inputs` (e.g. a dataset's) cast to the dtypes and container of prepared inputs."""
    if isinstance(structure, dict):
        if not isinstance(inputs, dict):
            raise InvalidInputError("Dict model inputs need a dataset of dicts.")
        return {key: tf.cast(inputs[key], value.dtype) for key, value in structure.items()}
    if isinstance(structure, (list, tuple)):
        return [tf.cast(x, s.dtype) for x, s in zip(keras.tree.flatten(inputs), structure)]
    leaf = keras.tree.flatten(inputs)[0]
    return tf.cast(leaf, structure.dtype)
