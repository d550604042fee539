"""Run a user's model so that one inner layer's output and the pre-softmax scores come out.

The user's layers and weights are shared, never copied or changed. Functional models (and built
Sequential ones) are replayed node by node through their own graph, which reaches layers inside
nested backbones without the "Graph disconnected" error of `keras.Model(model.inputs, [...])`.
Subclassed models have no graph: the target layer's output is captured while the model runs.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import keras

from keras_gradcam.errors import ModelNotSupportedError
from keras_gradcam.layers import LayerPath, is_container, is_functional

Capture = Callable  # tensor -> tensor; called on the target layer's output

_SQUASHING = ("softmax", "sigmoid")


def _activation_name(layer) -> str | None:
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    return name if name in _SQUASHING else None


def unchanged(tensor):
    """The `Capture` that leaves the layer's output as it is (no gradient needed)."""
    return tensor


def twin_with_activation(layer, activation):
    """A shallow copy of `layer` sharing its weights, with another fused `activation`.

    The user's layer is not touched. (`copy.copy` would go through Keras' pickling, a save.)
    """
    twin = object.__new__(type(layer))
    object.__setattr__(twin, "__dict__", dict(vars(layer)))
    object.__setattr__(twin, "activation", activation)
    return twin


def _linear_twin(layer):
    """What runs in place of `layer` to skip its final softmax/sigmoid, sharing its weights."""
    if isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)):
        return lambda x, *args, **kwargs: x
    return twin_with_activation(layer, keras.activations.linear)


def _call(layer, args, kwargs):
    if getattr(layer, "_call_has_training_arg", False):
        kwargs = {**kwargs, "training": False}
    return layer(*args, **kwargs)


def head_activation(model, index: int = 0) -> str | None:
    """The softmax/sigmoid that ends output `index` of `model` ("softmax", "sigmoid" or None).

    Follows nested models; for subclassed models, looks at the last layer (as the replay does).
    """
    if not is_functional(model):
        return _activation_name(model.layers[-1]) if model.layers else None
    graph = model._functional if isinstance(model, keras.Sequential) else model
    op = _output_layers(graph)[index]
    return head_activation(op, 0) if is_container(op) else _activation_name(op)


def _output_layers(graph) -> list:
    return [tensor._keras_history.operation for tensor in graph.outputs]


class ScoreModel:
    """Callable `(inputs, capture) -> (feature_maps, outputs)` over the user's model.

    Args:
        model: A built Keras model.
        path: Layers from a direct child of `model` to the target layer (see `resolve_layer`).
        pre_activation: Whether outputs ending in softmax/sigmoid give the scores before it.
    """

    def __init__(self, model: keras.Model, path: LayerPath, pre_activation: bool = True):
        if not model.built:
            raise ModelNotSupportedError(
                f"Model {model.name!r} is not built yet. Call it once on a batch of data or run "
                "`model.build(input_shape)` before explaining it."
            )
        self.model = model
        self.path = tuple(path)
        self.pre_activation = pre_activation
        # Twins are made once and kept, so a traced function sees the same objects every time.
        self._twins: dict[int, object] = {}

    def __call__(self, inputs, capture: Capture):
        """Run the model. Returns `(feature_maps, outputs)`, outputs as a flat list."""
        captured = []

        def record(tensor):
            tensor = capture(tensor)
            captured.append(tensor)
            return tensor

        outputs = self._run(self.model, inputs, self.path, record, self.pre_activation)
        if not captured:
            raise ModelNotSupportedError(
                f"Layer {self.path[-1].name!r} was not called while running the model, so its "
                "output cannot be explained. Pick a layer on the path from the inputs to the "
                "explained output."
            )
        if len(captured) > 1:
            warnings.warn(
                f"Layer {self.path[-1].name!r} is called {len(captured)} times in the model; "
                "the last call is explained. To explain another call, pick a layer that is "
                "called once (e.g. a layer applied right after that call).",
                stacklevel=2,
            )
        return captured[-1], keras.tree.flatten(outputs)

    def _twin(self, layer):
        if id(layer) not in self._twins:
            self._twins[id(layer)] = _linear_twin(layer)
        return self._twins[id(layer)]

    def _substitute(self, op):
        """What runs in place of `op` during a replay: `op` itself (subclasses rewire)."""
        return op

    def _run(self, model, inputs, path, capture, strip):
        if is_functional(model):
            return self._replay(model, inputs, path, capture, strip)
        return self._run_subclassed(model, inputs, path, capture, strip)

    def _replay(self, model, inputs, path, capture, strip):
        graph = model._functional if isinstance(model, keras.Sequential) else model
        heads = {id(op) for op in _output_layers(graph)} if strip else set()
        child = path[0] if path else None

        def operation_fn(op):
            def run(*args, **kwargs):
                if op is child and len(path) > 1:  # the target lives inside this nested model
                    return self._run(op, args[0], path[1:], capture, id(op) in heads)
                if op is child:
                    return capture(_call(self._substitute(op), args, kwargs))
                if id(op) in heads and is_container(op):
                    return self._run(op, args[0], (), capture, True)
                if id(op) in heads and _activation_name(op):
                    return _call(self._twin(op), args, kwargs)
                return _call(self._substitute(op), args, kwargs)

            return run

        if hasattr(graph, "_standardize_inputs"):
            inputs = graph._standardize_inputs(inputs)
        return graph._run_through_graph(inputs, operation_fn=operation_fn)

    def _run_subclassed(self, model, inputs, path, capture, strip):
        with contextlib.ExitStack() as stack:
            if path:
                stack.enter_context(_capturing(path[-1], capture))
            if strip and model.layers and _activation_name(model.layers[-1]):
                stack.enter_context(_without_activation(model.layers[-1]))
            return model(inputs, training=False)


@contextlib.contextmanager
def _capturing(layer, capture: Capture):
    """While tracing a subclassed model, route `layer`'s output through `capture`.

    Subclassed models have no graph to cut, so this is the one place where the layer is touched:
    an instance attribute shadows `call` for the duration of the trace and is removed after.
    """
    original = layer.call

    def call(*args, **kwargs):
        return capture(original(*args, **kwargs))

    object.__setattr__(layer, "call", call)
    try:
        yield
    finally:
        object.__delattr__(layer, "call")


@contextlib.contextmanager
def _without_activation(layer):
    """While tracing a subclassed model, skip the last layer's softmax/sigmoid."""
    if isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)):
        object.__setattr__(layer, "call", lambda x, *args, **kwargs: x)
        try:
            yield
        finally:
            object.__delattr__(layer, "call")
        return
    had_own = "activation" in vars(layer)
    original = layer.activation
    object.__setattr__(layer, "activation", keras.activations.linear)
    try:
        yield
    finally:
        if had_own:
            object.__setattr__(layer, "activation", original)
        else:
            object.__delattr__(layer, "activation")
