"""The guided-backpropagation rewiring: a replay of the user's graph with guided ReLUs.

Guided backpropagation (Springenberg et al., 2015) changes the backward pass of each ReLU-like
activation `y = f(x)` only: the gradient passes where the forward local derivative is non-zero
and the upstream gradient is positive,

    R^(l) = 1[R^(l+1) > 0] * f'(x) * R^(l+1)

which for each activation Keras offers reads:

- ReLU (`"relu"`, `keras.layers.ReLU()`): `1[x > 0]`, the classic `1[x > 0] 1[R > 0] R`;
- ReLU6 (`"relu6"`, `keras.layers.ReLU(6.0)`, as in MobileNetV2): `1[0 < x < 6]`; above 6
  the output is constant, so nothing passes;
- leaky ReLU (`"leaky_relu"`, slope 0.2; `keras.layers.LeakyReLU(a)`, default 0.3):
  `1` for `x > 0`, `a` for `x <= 0`;
- `keras.layers.ReLU(max_value=m, negative_slope=a, threshold=t)`: `1` on `t < x < m`, `a`
  for `x <= t`, `0` for `x >= m`.

Fused activations run as twins of their layer sharing the weights; activation layers are
replaced by the guided function. Other activations (tanh, sigmoid, GELU, swish, ...) keep their
gradient. A model with no ReLU-like activation at all is warned about, not refused: the rule
then gates nothing and the result is the plain input gradient, which is well defined, and
refusing would take the guided methods away from swish or GELU models (EfficientNet,
transformers) without offering anything better; the warning says what was computed.
"""

from __future__ import annotations

import warnings

import keras
import tensorflow as tf

from keras_gradcam.errors import ModelNotSupportedError
from keras_gradcam.graph import is_container, is_functional, walk
from keras_gradcam.model import ScoreModel, twin_with_activation, unchanged

# Fused activations by name: the arguments of `keras.activations.relu` they stand for.
_FUSED = {"relu": {}, "relu6": {"max_value": 6.0}, "leaky_relu": {"negative_slope": 0.2}}


class GuideSwitch:
    """Whether the guided activations built with it guide the gradients they pass (`on`,
    default) or pass the plain gradient `f'(x) * upstream`. Read when a gradient is built, so
    two `tape.gradient` calls over one forward pass can take one of each."""

    def __init__(self):
        self.on = True


def guided_relu_like(negative_slope=0.0, max_value=None, threshold=0.0, switch=None):
    """`keras.activations.relu` with these arguments, with the guided gradient
    `1[upstream > 0] * f'(x) * upstream`, where `f'(x)` is 1 on `threshold < x < max_value`,
    `negative_slope` for `x <= threshold` and 0 for `x >= max_value` (the plain gradient
    `f'(x) * upstream` while a given `GuideSwitch` is off)."""

    @tf.custom_gradient
    def guided(x):
        def grad(upstream):
            inside = tf.cast(x > threshold, upstream.dtype)
            slope = inside + negative_slope * (1 - inside)
            if max_value is not None:
                slope = slope * tf.cast(x < max_value, upstream.dtype)
            if switch is not None and not switch.on:
                return upstream * slope
            return upstream * tf.cast(upstream > 0, upstream.dtype) * slope

        relu_args = {"negative_slope": negative_slope, "max_value": max_value}
        return keras.activations.relu(x, threshold=threshold, **relu_args), grad

    return guided


guided_relu = guided_relu_like()
"""ReLU whose gradient passes only positive gradients at positive inputs."""


def relu_arguments(layer) -> dict | None:
    """The `keras.activations.relu` arguments of a ReLU-like layer or of its fused activation
    (`{}` for a plain ReLU); None when it has none."""
    if isinstance(layer, keras.layers.ReLU):
        max_value = None if layer.max_value is None else float(layer.max_value)
        return {"negative_slope": float(layer.negative_slope), "max_value": max_value,
                "threshold": float(layer.threshold)}
    if isinstance(layer, keras.layers.LeakyReLU):
        return {"negative_slope": float(layer.negative_slope)}
    name = getattr(getattr(layer, "activation", None), "__name__", None)
    return dict(_FUSED[name]) if name in _FUSED else None


class GuidedScoreModel(ScoreModel):
    """`ScoreModel` whose replay runs every ReLU-like activation guided (see the module).

    Layers with a fused ReLU-like `activation` run as shallow twins sharing their weights; ReLU,
    LeakyReLU and Activation layers are replaced by the guided function; nested models are
    replayed too. The user's model and its layers are not changed.

    Raises:
        ModelNotSupportedError: a subclassed model (or nested model) has no graph to rewire.
    """

    def __init__(self, model, path, pre_activation=True, tokens=None):
        containers = [model] + [p[-1] for p in walk(model) if is_container(p[-1])]
        plain = [m.name for m in containers if not is_functional(m)]
        if plain:
            raise ModelNotSupportedError(
                f"Guided backpropagation rewires the model's graph, but {plain} are subclassed "
                "models without one. Rebuild them as functional or Sequential models."
            )
        if not any(relu_arguments(p[-1]) is not None for p in walk(model)):
            warnings.warn(
                f"Model {model.name!r} has no ReLU-like activation (relu, relu6, leaky_relu, "
                "ReLU or LeakyReLU layers) for guided backpropagation to guide, so the result "
                "is the plain gradient of the score w.r.t. the input, not a guided one. Read "
                "it as such, or use GradCAM or HiResCAM, which work with any activation.",
                UserWarning,
                stacklevel=4,
            )
        super().__init__(model, path, pre_activation, tokens)
        self._guided: dict[int, object] = {}
        self.switch = GuideSwitch()

    def _substitute(self, op):
        if id(op) not in self._guided:
            self._guided[id(op)] = self._rewire(op)
        return self._guided[id(op)]

    def _rewire(self, op):
        if is_container(op):
            return lambda inputs, *args, **kwargs: self._replay(op, inputs, (), unchanged, False)
        arguments = relu_arguments(op)
        if arguments is None:
            return op
        guided = guided_relu_like(**arguments, switch=self.switch)
        if isinstance(op, (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.Activation)):
            return lambda x, *args, **kwargs: guided(x)
        return twin_with_activation(op, guided)


def guided_gradients(rule, model: GuidedScoreModel, inputs, ids, target, data, image: int):
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
        scores = rule(outputs, ids, target, data)
    gradients = tape.gradient(scores.scores, leaves[image])
    if gradients is None:
        raise ModelNotSupportedError("The explained score does not depend on the image input.")
    return tf.cast(gradients, tf.float32), scores


def guided_and_layer_gradients(rule, model: GuidedScoreModel, inputs, ids, target, data,
                               image: int):
    """One forward pass of the guided replay, two backward passes from the score: plain to the
    layer (the ReLUs between it and the output pass the plain gradient, so `dA` is Grad-CAM's)
    and guided to the image input.

    Returns:
        `(input gradients, activations, layer gradients, scores)`, float32 but the `Scores`.
    """
    leaves = keras.tree.flatten(inputs)
    with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:
        tape.watch(leaves[image])

        def watch(tensor):
            tape.watch(tensor)
            return tensor

        activations, outputs = model(inputs, watch)
        scores = rule(outputs, ids, target, data)
    model.switch.on = False
    try:
        layer_gradients = tape.gradient(scores.scores, activations)
    finally:
        model.switch.on = True
    gradients = tape.gradient(scores.scores, leaves[image])
    if gradients is None or layer_gradients is None:
        raise ModelNotSupportedError(
            f"The explained score does not depend on the image input or on layer "
            f"{model.path[-1].name!r}; pick a layer on the path to the explained output."
        )
    return (tf.cast(gradients, tf.float32), tf.cast(activations, tf.float32),
            tf.cast(layer_gradients, tf.float32), scores)


def centred_scale(x: tf.Tensor) -> tf.Tensor:
    """Signed values into [0, 1] per sample: `0.5 + 0.5 x / max|x|` (zero stays at 0.5)."""
    peak = tf.reduce_max(tf.abs(x), axis=list(range(1, x.shape.rank)), keepdims=True)
    return 0.5 + 0.5 * tf.math.divide_no_nan(x, peak)

