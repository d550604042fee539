"""A replay of the user's graph that records the output of every biased affine layer (FullGrad).

The gradient of a score `f` w.r.t. a layer's bias `b` is the gradient w.r.t. the layer's
pre-activation output `z = W * x + b`, summed over the positions that share `b`: for a
convolution, `df/db_c = sum_p df/dz_pc`. FullGrad keeps the per-position terms
`b_c * df/dz_pc` (a map per channel). So the replay records `z` of each biased layer:

- convolutions (1D/2D/3D, depthwise, separable, transposed) and dense layers with a bias: `z`
  before their fused activation (the layer runs as a linear twin sharing its weights, then the
  activation is applied);
- batch normalization, in inference an affine map `y = s x + b` with the implicit bias
  `b = beta - moving_mean * gamma / sqrt(moving_variance + epsilon)`: its output `y`.

Nested models are replayed too; the user's model and its layers are not changed.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_gradcam.errors import ModelNotSupportedError
from keras_gradcam.graph import is_container, is_functional, walk
from keras_gradcam.model import ScoreModel, twin_with_activation, unchanged

AFFINE = tuple(
    getattr(keras.layers, name) for name in (
        "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
        "SeparableConv2D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "Dense",
    ) if hasattr(keras.layers, name)
)


def has_bias(layer) -> bool:
    """Whether `layer` is an affine layer with a bias, or batch normalization."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return True
    return isinstance(layer, AFFINE) and getattr(layer, "bias", None) is not None


def bias_of(layer, rank: int) -> tf.Tensor:
    """float32 bias of `layer` shaped to broadcast against its output of `rank`."""
    if isinstance(layer, keras.layers.BatchNormalization):
        gamma = tf.cast(layer.gamma, tf.float32) if layer.scale else 1.0
        beta = tf.cast(layer.beta, tf.float32) if layer.center else 0.0
        scale = gamma / tf.sqrt(tf.cast(layer.moving_variance, tf.float32) + layer.epsilon)
        bias = beta - tf.cast(layer.moving_mean, tf.float32) * scale
        axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
    else:
        bias = tf.cast(layer.bias, tf.float32)
        axis = 1 if getattr(layer, "data_format", None) == "channels_first" else -1
    shape = [1] * rank
    shape[axis % rank] = -1
    return tf.reshape(bias, shape), axis % rank


class BiasScoreModel(ScoreModel):
    """`ScoreModel` that records every biased layer's pre-activation output while it runs.

    Raises:
        ModelNotSupportedError: a subclassed model (or nested model) has no graph to replay,
            or the model has no biased layer.
    """

    def __init__(self, model, path, pre_activation=True):
        containers = [model] + [p[-1] for p in walk(model) if is_container(p[-1])]
        plain = [m.name for m in containers if not is_functional(m)]
        if plain:
            raise ModelNotSupportedError(
                f"FullGrad replays the model's graph to reach every bias, but {plain} are "
                "subclassed models without one. Rebuild them as functional or Sequential models."
            )
        super().__init__(model, path, pre_activation)
        self._rewired: dict[int, object] = {}
        self._records: list = []
        self._watch = unchanged

    def run(self, inputs, watch):
        """Run the model, passing each recorded tensor through `watch` (e.g. a tape's).

        Returns:
            `(outputs, records)`: the outputs as a flat list, and `(layer, z)` pairs in the
            order the layers ran.
        """
        self._records, self._watch = [], watch
        try:
            _, outputs = self(inputs, unchanged)
            return outputs, self._records
        finally:
            self._records, self._watch = [], unchanged

    def _record(self, layer, tensor):
        tensor = self._watch(tensor)
        self._records.append((layer, tensor))
        return tensor

    def _twin(self, layer):  # a head run without its softmax still has its bias
        twin = super()._twin(layer)
        return (lambda *args, **kwargs: self._record(layer, twin(*args, **kwargs))
                ) if has_bias(layer) else twin

    def _substitute(self, op):
        if id(op) not in self._rewired:
            self._rewired[id(op)] = self._rewire(op)
        return self._rewired[id(op)]

    def _rewire(self, op):
        if is_container(op):
            return lambda inputs, *args, **kwargs: self._replay(op, inputs, (), unchanged, False)
        if not has_bias(op):
            return op
        if isinstance(op, keras.layers.BatchNormalization):  # inference statistics
            return lambda *args, **kwargs: self._record(
                op, op(*args, **{**kwargs, "training": False}))
        activation = getattr(op, "activation", None)
        if activation is None or activation is keras.activations.linear:
            return lambda *args, **kwargs: self._record(op, op(*args, **kwargs))
        linear = twin_with_activation(op, keras.activations.linear)
        return lambda *args, **kwargs: activation(self._record(op, linear(*args, **kwargs)))
