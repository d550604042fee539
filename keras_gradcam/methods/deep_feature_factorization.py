"""Deep Feature Factorization (Collins, Achanta & Süsstrunk, ECCV 2018, "Deep Feature
Factorization for Concept Discovery")."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from keras_gradcam.errors import ModelNotSupportedError
from keras_gradcam.inputs import check_bool, check_positive_int, prepare_inputs, spatial_size
from keras_gradcam.layers import resolve_layer
from keras_gradcam.maps import normalize_maps, resize_maps
from keras_gradcam.methods.cam_head import find_dense_head
from keras_gradcam.methods.noise import check_seed
from keras_gradcam.model import ScoreModel, unchanged
from keras_gradcam.tokens import as_token_grid, maps_rank

_EPSILON = 1e-12


def nmf_init(v: tf.Tensor, components: int, seed: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Seeded non-negative starting factors for `v` `(batch, n, m)`: uniform in [0, 1) times
    `sqrt(mean(v) / components)` per batch element (so that `W H` has `v`'s scale). The
    uniform draws depend on `(seed, n, m, components)` only, not on the batch."""
    n, m = tf.shape(v)[1], v.shape[2]
    scale = tf.sqrt(tf.reduce_mean(v, axis=[1, 2], keepdims=True) / components)
    seeds = [[seed % 2**31, 0], [seed % 2**31, 1]]
    w = tf.random.stateless_uniform((n, components), seeds[0], dtype=tf.float32, alg="philox")
    h = tf.random.stateless_uniform((components, m), seeds[1], dtype=tf.float32, alg="philox")
    return scale * w[None], scale * h[None]


def nmf(v: tf.Tensor, w: tf.Tensor, h: tf.Tensor, iterations: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Lee & Seung's multiplicative updates for `min ||V - W H||_F`, `W, H >= 0`, run a fixed
    number of times (deterministic):

        H <- H * (W^T V) / (W^T W H),    W <- W * (V H^T) / (W H H^T)

    Args:
        v: `(batch, n, m)`, non-negative; each batch element is factorised on its own.
        w, h: starting factors `(batch, n, k)` and `(batch, k, m)` (see `nmf_init`).

    Returns:
        `(W, H)`.
    """

    def step(i, w, h):
        h = h * tf.matmul(w, v, transpose_a=True) / (
            tf.matmul(tf.matmul(w, w, transpose_a=True), h) + _EPSILON)
        w = w * tf.matmul(v, h, transpose_b=True) / (
            tf.matmul(w, tf.matmul(h, h, transpose_b=True)) + _EPSILON)
        return i + 1, w, h

    _, w, h = tf.while_loop(lambda i, *_: i < iterations, step, (tf.constant(0), w, h))
    return w, h


@dataclasses.dataclass
class Factorization:
    """What `DeepFeatureFactorization` returns (numpy float32).

    Attributes:
        maps: `(batch, k, H, W)`, each concept's map (`W`'s column), resized to the input and
            scaled into [0, 1] per image and concept (unless `resize`/`normalize` is off).
        concepts: `(batch, k, channels)`, each concept's channel vector (`H`'s row, unit
            norm); the same for every image unless `per_image=True`.
        class_scores: `(batch, k, units)`, each concept's share of the dense head's logits (see
            `DeepFeatureFactorization`), or None when the model does not end in
            global average pooling -> dense.
        errors: `(batch,)`, the relative reconstruction error `||V - W H|| / ||V||` of each
            image's activations.
    """

    maps: np.ndarray
    concepts: np.ndarray
    class_scores: np.ndarray | None
    errors: np.ndarray


class DeepFeatureFactorization:
    """Deep Feature Factorization: concepts by non-negative matrix factorisation of features.

    The layer's activations `A` form a `(positions, channels)` matrix `V` (negative values,
    absent after a ReLU, are clipped to 0), factorised into `k` concepts, `V ~ W H` with
    `W >= 0` `(positions, k)` (where each concept is) and `H >= 0` `(k, channels)` (what it
    is). As in the paper, the positions of all images of a call are stacked into one matrix,
    so the concepts are shared across the images (co-segmentation); `per_image=True`
    factorises each image on its own (then a batch gives exactly its images' results one by
    one). NMF runs inside one compiled call by `iterations` multiplicative updates from a
    seeded start, so results repeat; the rows of `H` are scaled to unit norm (`W` takes the
    scale) and concepts are sorted by their total weight `sum W`, largest first.

    Class scores: when the layer is followed by global average pooling and a dense layer
    (as for `CAM`), `GAP(V) ~ sum_j mean_p(W_pj) H_j`, so concept `j`'s share of the logits is

        s_j = mean_p(W_pj) H_j @ kernel       (the dense bias belongs to no concept)

    and `sum_j s_j + bias` approximates the logits as well as `W H` approximates `V`
    (pytorch-grad-cam instead pushes the raw concept vectors through the head, bias and
    softmax included). Otherwise `class_scores` is None.

    Args:
        model: A built Keras model; never changed.
        n_components: Number of concepts `k`. Defaults to 5.
        layer: As for `BaseCAM` (one layer). Defaults to the last spatial layer.
        output: Which model output the head check refers to. Defaults to 0.
        per_image: Factorise each image on its own. Defaults to False (shared concepts).
        iterations: Multiplicative updates. Defaults to 200.
        seed: Seed of the starting factors. Defaults to 0.
        tokens: How a token sequence lays out on the image, as for `BaseCAM`.

    Example:

    >>> dff = kgc.DeepFeatureFactorization(model, n_components=4)
    >>> result = dff(images)                        # result.maps: (batch, 4, H, W)
    >>> pictures = kgc.image.draw_concepts(images, result.maps)
    """

    def __init__(self, model, n_components: int = 5, layer=None, *, output: int = 0,
                 per_image: bool = False, iterations: int = 200, seed: int = 0,
                 tokens="auto"):
        self.model = model
        self.n_components = check_positive_int(n_components, "n_components")
        self.iterations = check_positive_int(iterations, "iterations")
        self.per_image = bool(check_bool(per_image, "per_image"))
        self.seed = check_seed(seed)
        self.path = resolve_layer(model, layer, output=output)
        self.tokens = as_token_grid(tokens)
        self._score_model = ScoreModel(model, self.path, pre_activation=True, tokens=self.tokens)
        try:
            self.dense = find_dense_head(model, self.path, output)
        except ModelNotSupportedError:
            self.dense = None
        self._steps: dict = {}

    @property
    def layer(self):
        """The resolved layer whose activations are factorised."""
        return self.path[-1]

    def __call__(self, images, *, resize: bool = True, normalize: bool = True) -> Factorization:
        """Factorise the activations of `images` (all in one compiled call).

        Returns:
            A `Factorization`.
        """
        inputs, _ = prepare_inputs(self.model, images)
        size = spatial_size(inputs, maps_rank(self.path, self.tokens, inputs)) if resize else None
        key = (tuple(tuple(x.shape[1:]) for x in keras.tree.flatten(inputs)), size,
               bool(normalize))
        if key not in self._steps:
            signature = keras.tree.map_structure(
                lambda x: tf.TensorSpec((None, *x.shape[1:]), x.dtype), inputs)
            self._steps[key] = tf.function(
                lambda x: self.factorize(x, size, normalize), input_signature=(signature,),
                autograph=False).get_concrete_function()
        out = self._steps[key](inputs)
        scores = out["class_scores"].numpy() if self.dense is not None else None
        return Factorization(out["maps"].numpy(), out["concepts"].numpy(), scores,
                             out["errors"].numpy())

    def factorize(self, inputs, size, normalize: bool) -> dict:
        """The compiled body: activations, NMF, maps and class scores of one batch."""
        activations, _ = self._score_model(inputs, unchanged)
        a = tf.nn.relu(tf.cast(activations, tf.float32))
        spatial, channels = a.shape[1:-1], a.shape[-1]
        batch = tf.shape(a)[0]
        v = tf.reshape(a, [batch if self.per_image else 1, -1, channels])
        w, h = nmf(v, *nmf_init(v, self.n_components, self.seed), self.iterations)
        norm = tf.norm(h, axis=-1, keepdims=True)
        h = tf.math.divide_no_nan(h, norm)
        w = w * tf.transpose(norm, [0, 2, 1])
        order = tf.argsort(tf.reduce_sum(w, axis=1), axis=-1, direction="DESCENDING")
        w, h = tf.gather(w, order, axis=2, batch_dims=1), tf.gather(h, order, axis=1, batch_dims=1)
        w = tf.reshape(w, [batch, -1, self.n_components])  # per image: positions x k
        h = tf.broadcast_to(h, [batch, self.n_components, channels])
        flat = tf.reshape(a, [batch, -1, channels])
        residual = tf.norm(flat - tf.matmul(w, h), axis=[1, 2])
        errors = tf.math.divide_no_nan(residual, tf.norm(flat, axis=[1, 2]))
        maps = tf.reshape(tf.transpose(w, [0, 2, 1]), [-1, *spatial])
        if size is not None:
            maps = resize_maps(maps, size)
        maps = normalize_maps(maps) if normalize else maps
        out = {"maps": tf.reshape(maps, [batch, self.n_components, *maps.shape[1:]]),
               "concepts": h, "errors": errors}
        if self.dense is not None:
            kernel = tf.cast(self.dense.kernel, tf.float32)
            out["class_scores"] = tf.reduce_mean(w, axis=1)[..., None] * tf.einsum(
                "bkc,cn->bkn", h, kernel)
        return out
