"""Run a user's model so that one inner layer's output and the pre-softmax scores come out.

The user's layers and weights are shared, never copied or changed. Functional models (and built
Sequential ones) are replayed node by node through their own graph, which reaches layers inside
nested backbones without the "Graph disconnected" error of `keras.Model(model.inputs, [...])`.
Subclassed models have no graph: the target layer's output is captured while the model runs,
through a per-thread hook that other threads calling the model at the same time do not see.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
from collections.abc import Callable

import keras

from keras_gradcam.errors import ModelNotSupportedError, NotSpatialLayerError
from keras_gradcam.graph import LayerPath, is_container, is_functional
from keras_gradcam.inputs import image_index, spatial_size
from keras_gradcam.tokens import TokenGrid, patch_embedding

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
    state = {k: v for k, v in vars(layer).items()  # not a `_routed` call of a trace elsewhere
             if not (k == "call" and getattr(v, "keras_gradcam_route", False))}
    object.__setattr__(twin, "__dict__", state)
    object.__setattr__(twin, "activation", activation)
    return twin


def _linear_twin(layer):
    """What runs in place of `layer` to skip its final softmax/sigmoid, sharing its weights."""
    if isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)):
        return lambda x, *args, **kwargs: x
    return twin_with_activation(layer, keras.activations.linear)


def _call(layer, args, kwargs):
    # Inference mode, as `model(x, training=False)`: a Keras layer takes `training` even when
    # its `call` does not, and hands it to the layers it calls (keras-hub's DeepLabV3 pooling).
    if getattr(layer, "_call_has_training_arg", False) or isinstance(layer, keras.layers.Layer):
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


def _call_order(graph, layer) -> list[int]:
    """Keras' node index (the order of the calls as the model was built) of each call of
    `layer` in `graph`, in the order `_run_through_graph` runs them (deepest first)."""
    nodes = getattr(graph, "_nodes_by_depth", {})
    ran = [node for depth in sorted(nodes, reverse=True) for node in nodes[depth]
           if node.operation is layer]
    built = getattr(layer, "_inbound_nodes", [])
    return [next((i for i, n in enumerate(built) if n is node), k) for k, node in enumerate(ran)]


def _output_layers(graph) -> list:
    return [tensor._keras_history.operation for tensor in graph.outputs]


class ScoreModel:
    """Callable `(inputs, capture) -> (feature_maps, outputs)` over the user's model.

    Args:
        model: A built Keras model.
        path: Layers from a direct child of `model` to the target layer (see `resolve_layer`).
        pre_activation: Whether outputs ending in softmax/sigmoid give the scores before it.
        tokens: How a `(batch, tokens, channels)` output of the layer lays out on a 2-D
            image (`TokenGrid`; None: it stays a sequence). The feature maps are then the
            grid `(batch, rows, cols, channels)`, and what `capture` returns goes back in place
            of the patch tokens.
    """

    def __init__(self, model: keras.Model, path: LayerPath, pre_activation: bool = True,
                 tokens: TokenGrid | None = None):
        if not model.built:
            raise ModelNotSupportedError(
                f"Model {model.name!r} is not built yet. Call it once on a batch of data or run "
                "`model.build(input_shape)` before explaining it."
            )
        self.model = model
        self.path = tuple(path)
        # One part of the layer (see `PickedPath`): an element of its output, one of its calls.
        self.key, self.call = getattr(path, "key", None), getattr(path, "call", None)
        self.pre_activation = pre_activation
        self.tokens = tokens
        self.token_grid: TokenGrid | None = None  # the grid the last run used
        auto = tokens is not None and not tokens.complete
        self._patch_layer = patch_embedding(model) if auto else None
        # Twins are made once and kept, so a traced function sees the same objects every time.
        self._twins: dict[int, object] = {}

    def __call__(self, inputs, capture: Capture):
        """Run the model. Returns `(feature_maps, outputs)`, outputs as a flat list."""
        captured, calls = {}, []  # captured: call (Keras' node index) -> feature maps
        name = self.path[-1].name
        image, patches = _image_size(inputs), {}

        def take(call, part):  # the explained tensor -> what the model goes on with
            if self.tokens is not None and part.shape.rank == 3 and (
                    image is not None or self.tokens.complete):
                grid = self._fit_tokens(part, image, patches.get("grid"))
                cells, merge = grid.split(part)
                captured[call] = capture(cells)
                return merge(captured[call])
            captured[call] = capture(part)
            return captured[call]

        def record(output, call=None):  # call: Keras' node index of this call, if known
            call = len(calls) if call is None else call
            calls.append(call)
            if self.call is not None and call != self.call:
                return output  # another call of a shared layer: left as it is
            if self.key is None:
                return take(call, output)
            key = self.key
            if isinstance(output, dict) and isinstance(key, int):  # by position, as flattened
                key = sorted(output)[key]
            part = take(call, output[key])
            if isinstance(output, dict):
                return {**output, key: part}
            parts = list(output)
            parts[key] = part
            return type(output)(parts) if isinstance(output, tuple) else parts

        def note_patches(call, *args, **kwargs):  # the patch embedding's grid on this input
            out = call(*args, **kwargs)
            if out.shape.rank == 4 and None not in out.shape[1:3]:
                patches["grid"] = tuple(int(d) for d in out.shape[1:3])
            return out

        with contextlib.ExitStack() as stack:
            if self._patch_layer is not None and self._patch_layer is not self.path[-1]:
                stack.enter_context(_routed(self._patch_layer, note_patches))
            outputs = self._run(self.model, inputs, self.path, record, self.pre_activation)
        if not captured:
            what = "its output" if self.call is None else f"its call @{self.call}"
            raise ModelNotSupportedError(
                f"Layer {name!r} was called {len(calls)} time(s) while running the model, so "
                f"{what} cannot be explained. Pick a layer on the path from the inputs to "
                "the explained output."
            )
        last = max(captured)
        if len(captured) > 1:
            warnings.warn(
                f"Layer {name!r} is called {len(captured)} times in the model (a head shared "
                f"across pyramid levels?); its last call, '{name}@{last}', is explained. To "
                f"explain another call, name it: layer='{name}@0' is the first (calls count "
                "in the order the model was built).",
                stacklevel=2,
            )
        return captured[last], keras.tree.flatten(outputs)

    def _fit_tokens(self, sequence, image, patch_grid) -> TokenGrid:
        count, where = sequence.shape[1], repr(self.path[-1].name)
        if count is None and not self.tokens.complete:
            raise NotSpatialLayerError(
                f"Layer {where} outputs a token sequence of unknown length, so its grid cannot "
                "be inferred. Pass tokens=keras_gradcam.TokenGrid(prefix=..., grid=(rows, cols))."
            )
        if self.tokens.complete and count is None:
            self.token_grid = self.tokens
        else:
            self.token_grid = self.tokens.fit(int(count), image, patch_grid, f"layer {where}")
        return self.token_grid

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
        # The replay runs a shared layer's calls in its own order: name each by its node index.
        order = iter(_call_order(graph, child) if len(path) == 1 else ())

        def operation_fn(op):
            def run(*args, **kwargs):
                if op is child and len(path) > 1 and not is_container(op):  # in a plain layer
                    with _routed(path[-1], lambda call, *a, **k: capture(call(*a, **k))):
                        return _call(self._substitute(op), args, kwargs)
                if op is child and len(path) > 1:  # the target lives inside this nested model
                    return self._run(op, args[0], path[1:], capture, id(op) in heads)
                if op is child:  # an output head explained itself: its maps before the softmax
                    head = id(op) in heads and _activation_name(op)
                    layer = self._twin(op) if head else self._substitute(op)
                    return capture(_call(layer, args, kwargs), next(order, None))
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
            last = model.layers[-1] if model.layers else None
            if strip and last is not None and _activation_name(last):
                linear = _linear_call(last)
                stack.enter_context(_routed(last, lambda call, *a, **k: linear(*a, **k)))
            if path:  # entered last, so it wraps the stripped call: the maps are pre-activation
                stack.enter_context(
                    _routed(path[-1], lambda call, *a, **k: capture(call(*a, **k)))
                )
            return model(inputs, training=False)


def _image_size(inputs) -> tuple[int, int] | None:
    """`(height, width)` of the image input `(batch, H, W, C)`, if any (`inputs.image_index`)."""
    index = image_index(inputs, 2, channels_only=True)
    return None if index is None else spatial_size(inputs, 2)


def _linear_call(layer):
    """`layer.call` without its final softmax/sigmoid, run on a twin sharing the weights."""
    twin = _linear_twin(layer)
    return functools.partial(type(layer).call, twin) if isinstance(twin, type(layer)) else twin


_routes = threading.local()  # per thread: {id(layer): [hook, ...]}, the last entered outermost
_installed: dict[int, int] = {}  # id(layer) -> number of open `_routed` contexts, all threads
_install_lock = threading.Lock()


def _thread_routes() -> dict:
    if not hasattr(_routes, "hooks"):
        _routes.hooks = {}
    return _routes.hooks


@contextlib.contextmanager
def _routed(layer, hook):
    """While tracing a subclassed model in this thread, run `hook(call, *args, **kwargs)` in place
    of `layer.call(*args, **kwargs)`, `call` being the layer's own.

    Subclassed models have no graph to cut, so this is the one place where a layer is touched:
    while any thread traces through it, an instance attribute shadows `call` and is removed
    after. That attribute looks its hooks up in a `threading.local`, so only the tracing thread
    sees them: another thread calling the model meanwhile runs the layer's own `call` (and
    activation) unchanged. Hooks entered later in a thread wrap those entered earlier.
    """
    key = id(layer)
    hooks = _thread_routes().setdefault(key, [])
    hooks.append(hook)
    with _install_lock:
        if key not in _installed:
            own = layer.call

            def call(*args, **kwargs):
                route = own
                for routed in _thread_routes().get(key, ()):
                    route = functools.partial(routed, route)
                return route(*args, **kwargs)

            call.keras_gradcam_route = True
            object.__setattr__(layer, "call", call)
        _installed[key] = _installed.get(key, 0) + 1
    try:
        yield
    finally:
        hooks.pop()
        if not hooks:
            del _thread_routes()[key]
        with _install_lock:
            _installed[key] -= 1
            if not _installed[key]:
                del _installed[key]
                object.__delattr__(layer, "call")
