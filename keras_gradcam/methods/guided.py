"""The guided-backpropagation rewiring: a replay of the user's graph with guided ReLUs."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_gradcam.errors import ModelNotSupportedError
from keras_gradcam.layers import is_container, is_functional, walk
from keras_gradcam.model import ScoreModel, twin_with_activation, unchanged


@tf.custom_gradient
def guided_relu(x):
    """ReLU whose gradient passes only positive gradients at positive inputs."""

    def grad(upstream):
        gate = tf.cast(upstream > 0, upstream.dtype) * tf.cast(x > 0, upstream.dtype)
        return upstream * gate

    return tf.nn.relu(x), grad


def _is_relu(function) -> bool:
    return getattr(function, "__name__", None) == "relu"


def _plain_relu_layer(layer) -> bool:
    if isinstance(layer, keras.layers.ReLU):
        return not layer.max_value and not layer.negative_slope and not layer.threshold
    return isinstance(layer, keras.layers.Activation) and _is_relu(layer.activation)


class GuidedScoreModel(ScoreModel):
    """`ScoreModel` whose replay runs every ReLU as `guided_relu`.

    Layers with a fused `activation="relu"` run as shallow twins sharing their weights; ReLU
    layers are replaced by the function; nested models are replayed too. The user's model and
    its layers are not changed.

    Raises:
        ModelNotSupportedError: a subclassed model (or nested model) has no graph to rewire.
    """

    def __init__(self, model, path, pre_activation=True):
        containers = [model] + [p[-1] for p in walk(model) if is_container(p[-1])]
        plain = [m.name for m in containers if not is_functional(m)]
        if plain:
            raise ModelNotSupportedError(
                f"Guided backpropagation rewires the model's graph, but {plain} are subclassed "
                "models without one. Rebuild them as functional or Sequential models."
            )
        super().__init__(model, path, pre_activation)
        self._guided: dict[int, object] = {}

    def _substitute(self, op):
        if id(op) not in self._guided:
            self._guided[id(op)] = self._rewire(op)
        return self._guided[id(op)]

    def _rewire(self, op):
        if is_container(op):
            return lambda inputs, *args, **kwargs: self._replay(op, inputs, (), unchanged, False)
        if _plain_relu_layer(op):
            return lambda x, *args, **kwargs: guided_relu(x)
        if _is_relu(getattr(op, "activation", None)):
            return twin_with_activation(op, guided_relu)
        return op


def guided_gradients(rule, model: GuidedScoreModel, inputs, ids, target_fn, image: int):
    """Gradient of the score w.r.t. the image input through guided ReLUs.

    Args:
        rule: The explainer's `ScoreRule`.

    Returns:
        `(gradients, scores)`: gradients float32 like the image input, and the `Scores`.
    """
    leaves = keras.tree.flatten(inputs)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(leaves[image])
        _, outputs = model(inputs, unchanged)
        scores = rule(outputs, ids, target_fn)
    gradients = tape.gradient(scores.scores, leaves[image])
    if gradients is None:
        raise ModelNotSupportedError("The explained score does not depend on the image input.")
    return tf.cast(gradients, tf.float32), scores


def centred_scale(x: tf.Tensor) -> tf.Tensor:
    """Signed values into [0, 1] per sample: `0.5 + 0.5 x / max|x|` (zero stays at 0.5)."""
    peak = tf.reduce_max(tf.abs(x), axis=list(range(1, x.shape.rank)), keepdims=True)
    return 0.5 + 0.5 * tf.math.divide_no_nan(x, peak)

