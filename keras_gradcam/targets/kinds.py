"""Target objects: what to explain per image, with the per-image data it needs.

A target that scores the model output (`Segmentation`, `Box`, `Regression`, `Function`, and
plain callables) carries its per-image data (masks, boxes) as arrays with one row per image.
The data travels with the images: sliced with each chunk, padded with the batch, split across
replicas, streamed with a dataset, and the compiled step receives it as an input, so a new
target of the same kind (other masks, other boxes) never retraces. Class targets (`Classes`,
`TopK`, ints and lists of ints) become class ids; several classes per image give maps
`(batch, K, H, W)` from one compiled step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from keras_gradcam.errors import InvalidTargetError

FROM_DATASET = "dataset"  # a target's data that a dataset's elements carry: (inputs, data)


class Target:
    """Base of the targets that score the explained output themselves.

    Subclasses set `data` (a dict of arrays, one row per image; `FROM_DATASET` values are
    read from a dataset's elements) and implement `score`.
    """

    data: dict[str, Any] = {}
    explained_class: int = -1  # what `Explanation.targets` reports (-1: not a class)

    def score(self, explained: tf.Tensor, outputs: list, data: dict[str, tf.Tensor]) -> tf.Tensor:
        """The score `(batch,)` to explain.

        Args:
            explained: The explained output, in the explainer's score space (before a final
                softmax/sigmoid by default).
            outputs: Every model output, a flat list.
            data: This batch's rows of the target's data, as tensors.
        """
        raise NotImplementedError

    def key(self) -> tuple:
        """What the compiled step depends on (never the data): targets of equal keys share it."""
        return (type(self), *sorted((k, _shape_of(v)) for k, v in self.data.items()))

    def arrays(self, samples: int) -> dict[str, np.ndarray]:
        """The data as float32/int32 arrays, checked to hold `samples` rows."""
        out = {}
        for name, value in self.data.items():
            if isinstance(value, str) and value == FROM_DATASET:
                raise InvalidTargetError(
                    f"{type(self).__name__}'s `{name}` come from a dataset's elements; pass "
                    "the target to `iter_explanations`/`write_explanations`, or give the arrays."
                )
            array = np.asarray(value)
            if len(array) != samples:
                raise InvalidTargetError(
                    f"{type(self).__name__}'s `{name}` must hold one row per image: expected "
                    f"{samples}, received {len(array)} (shape {array.shape})."
                )
            out[name] = array.astype(np.int32 if array.dtype.kind in "iub" else np.float32)
        return out

    def describe(self) -> str:
        """What messages call this target."""
        return f"target {type(self).__name__}"


class Classes:
    """Explain given classes: one per image `(n,)`, or several per image (`(n, K)`, or a
    ragged list of lists, padded with empty maps). An int means that class for every image."""

    def __init__(self, ids):
        self.ids = ids


class TopK:
    """Explain the `k` highest-scoring classes of each image: maps `(batch, k, H, W)`."""

    def __init__(self, k: int):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidTargetError(f"`k` must be a positive int. Received: k={k!r}.")
        self.k = int(k)


class Segmentation(Target):
    """A class's score summed over a region of a dense-prediction output.

        score = sum over (i, j) of y^c_ij * m_ij,    y: `(batch, H, W, classes)` pre-softmax

    With `masks=None`, `m` is where the model predicts class `c` (argmax over classes), as
    pytorch-grad-cam's `SemanticSegmentationTarget` does; the mask gets no gradient. Masks of
    another size than the output are resized to it (nearest neighbour).

    Args:
        class_id: The class `c` (an index into the output's last axis).
        masks: `(n, H, W)` bool/float masks, one per image; `None`; or `"dataset"` when a
            dataset's elements carry them: `(images, masks)`.
    """

    def __init__(self, class_id: int, masks=None):
        self.class_id = self.explained_class = _index(class_id, "class_id")
        self.data = {} if masks is None else {"masks": masks}

    def key(self) -> tuple:
        return (*super().key(), self.class_id)

    def score(self, explained, outputs, data):
        if explained.shape.rank != 4:
            raise InvalidTargetError(
                "Segmentation needs an output (batch, H, W, classes). Received an output of "
                f"shape {tuple(explained.shape)}; pick it with `output=`."
            )
        logits = tf.cast(explained[..., self.class_id], tf.float32)
        if "masks" in data:
            masks = tf.cast(data["masks"], tf.float32)
            if masks.shape[1:3] != logits.shape[1:3]:
                masks = tf.image.resize(masks[..., None], logits.shape[1:3], "nearest")[..., 0]
        else:
            predicted = tf.argmax(explained, axis=-1, output_type=tf.int32)
            masks = tf.stop_gradient(tf.cast(predicted == self.class_id, tf.float32))
        return tf.reduce_sum(logits * masks, axis=[1, 2])

    def describe(self) -> str:
        return f"target Segmentation(class_id={self.class_id})"


class Box(Target):
    """One detected object per image: the class scores of the anchors whose box matches it.

        score = sum over anchors a with IoU(b_a, B) >= iou of s_a^c

    `b_a` are the model's boxes and `s_a^c` its (pre-activation) score of class `c` per anchor.
    The model must output boxes `(batch, anchors, 4)` as `(y0, x0, y1, x1)` in the same units
    as `boxes`, and class scores `(batch, anchors, classes)`: by default the first two model
    outputs in that order. Pass `decode` (a function of the flat output list returning
    `(boxes, scores)`) to pick other outputs or to decode anchor offsets: keras-hub's
    RetinaNet outputs `{"bbox_regression", "cls_logits"}` (flat in that order), the boxes as
    offsets from its anchors, which `anchor_decoder(anchors)` decodes. The matching gets no
    gradient.

    Args:
        boxes: `(n, 4)` one box per image, `(y0, x0, y1, x1)`; or `"dataset"`.
        class_ids: `(n,)` the class of each box, or one int for all; or `"dataset"`.
        iou: The IoU threshold of a match. Defaults to 0.5.
        decode: Optional `outputs -> (boxes, scores)`.
    """

    def __init__(self, boxes, class_ids, iou: float = 0.5, decode: Callable | None = None):
        self.iou = float(iou)
        self.decode = decode
        if isinstance(class_ids, (int, np.integer)) and not isinstance(class_ids, bool):
            self.explained_class = int(class_ids)
            class_ids = np.full((len(np.asarray(boxes)),), int(class_ids))
        self.data = {"boxes": boxes, "class_ids": class_ids}

    def key(self) -> tuple:
        return (*super().key(), self.iou, self.decode)

    def score(self, explained, outputs, data):
        if self.decode is not None:
            boxes, scores = self.decode(outputs)
        elif len(outputs) >= 2:
            boxes, scores = outputs[0], outputs[1]
        else:
            raise InvalidTargetError(
                "Box needs the model's boxes (batch, anchors, 4) and class scores (batch, "
                "anchors, classes); the model has one output. Pass `decode=`."
            )
        boxes, scores = tf.cast(boxes, tf.float32), tf.cast(scores, tf.float32)
        given = tf.cast(data["boxes"], tf.float32)[:, None, :]
        match = tf.stop_gradient(tf.cast(box_iou(boxes, given) >= self.iou, tf.float32))
        ids = tf.cast(data["class_ids"], tf.int32)
        per_anchor = tf.gather(scores, ids, axis=2, batch_dims=1)
        return tf.reduce_sum(per_anchor * match, axis=1)


class Regression(Target):
    """Unit `index` of a regression output (or of any output, before its activation)."""

    def __init__(self, index: int = 0):
        self.index = _index(index, "index")
        self.data = {}

    def key(self) -> tuple:
        return (*super().key(), self.index)

    def score(self, explained, outputs, data):
        flat = tf.reshape(tf.cast(explained, tf.float32), [tf.shape(explained)[0], -1])
        return flat[:, self.index]


class Function(Target):
    """A callable on the model output: `fn(output)`, or `fn(output, data)` with `data` (a dict
    of per-image arrays that travel with the images). The output is a list for several
    outputs."""

    def __init__(self, fn: Callable, data: dict[str, Any] | None = None):
        if not callable(fn):
            raise InvalidTargetError(f"`fn` must be callable. Received: {fn!r}.")
        self.fn = fn
        self.data = dict(data or {})

    def key(self) -> tuple:
        return (*super().key(), self.fn)

    def score(self, explained, outputs, data):
        from keras_gradcam.targets.classes import call_target

        if self.data:
            return call_target(lambda out: self.fn(out, data), outputs, name=self.fn)
        return call_target(self.fn, outputs)

    def describe(self) -> str:
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        return "target callable " + ("(a lambda)" if name == "<lambda>" else repr(name))


def anchor_decoder(anchors, anchor_format: str = "yxyx", encoding: str = "center_xywh",
                   variance=None, deltas: int = 0, scores: int = 1) -> Callable:
    """A `Box(decode=...)` for detectors whose box output is offsets from anchors, such as
    keras-hub's RetinaNet: decodes them into `(y0, x0, y1, x1)` boxes in the anchors' units
    with `keras.utils.bounding_boxes.decode_deltas_to_boxes`, as keras-hub's own
    `decode_predictions` does (before its non-max suppression).

        anchors = detector.anchor_generator(images[:1])      # keras-hub: a dict per level
        cam(images, Box(boxes, class_ids, decode=anchor_decoder(anchors)))

    Args:
        anchors: `(anchors, 4)`, or a dict of them per pyramid level (concatenated in order).
        anchor_format: Keras' name of the anchors' box format. Defaults to `"yxyx"`.
        encoding: How the offsets are encoded: `"center_xywh"` (keras-hub's RetinaNet) or
            `"center_yxhw"`.
        variance: Optional 4 factors the offsets are multiplied by.
        deltas: Position of the offsets `(batch, anchors, 4)` in the flat model outputs.
        scores: Position of the class scores `(batch, anchors, classes)` (keras-hub's
            `{"bbox_regression", "cls_logits"}` flattens to 0 and 1).
    """
    if isinstance(anchors, dict):
        anchors = np.concatenate([np.asarray(a) for a in anchors.values()], axis=0)
    anchors = np.asarray(anchors, np.float32)
    if anchors.ndim != 2 or anchors.shape[-1] != 4:
        raise InvalidTargetError(f"`anchors` must be (anchors, 4). Received {anchors.shape}.")

    def decode(outputs):
        from keras.utils import bounding_boxes  # Keras >= 3.8

        offsets = tf.cast(outputs[deltas], tf.float32)
        if offsets.shape[1] is not None and offsets.shape[1] != len(anchors):
            raise InvalidTargetError(
                f"The model gives {offsets.shape[1]} box offsets per image but there are "
                f"{len(anchors)} anchors: make them for the explained image size."
            )
        boxes = bounding_boxes.decode_deltas_to_boxes(
            anchors=tf.constant(anchors), boxes_delta=offsets, anchor_format=anchor_format,
            box_format="yxyx", encoded_format=encoding, variance=variance,
        )
        return boxes, outputs[scores]

    return decode


def box_iou(boxes: tf.Tensor, given: tf.Tensor) -> tf.Tensor:
    """IoU of `(batch, anchors, 4)` boxes with `(batch, 1, 4)` boxes, `(y0, x0, y1, x1)`."""
    top = tf.maximum(boxes[..., :2], given[..., :2])
    bottom = tf.minimum(boxes[..., 2:], given[..., 2:])
    inter = tf.reduce_prod(tf.maximum(bottom - top, 0.0), axis=-1)

    def area(b):
        return tf.reduce_prod(tf.maximum(b[..., 2:] - b[..., :2], 0.0), axis=-1)

    return tf.math.divide_no_nan(inter, area(boxes) + area(given) - inter)


def _index(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InvalidTargetError(f"`{name}` must be a non-negative int. Received: {value!r}.")
    return int(value)


def _shape_of(value) -> Any:
    if isinstance(value, str):
        return value
    array = np.asarray(value)
    return (array.shape[1:], array.dtype.kind in "iub")
