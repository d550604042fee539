"""Token sequences of vision transformers laid out as the image grid they came from.

A transformer layer outputs `(batch, tokens, channels)`: a few tokens that are not patches
(class, distillation, register tokens) then one token per image patch, row by row. The CAM
maths wants `(batch, rows, cols, channels)`. `TokenGrid` says how to cut the sequence; the
explainers apply it to the layer's output and to its gradient in one place (the model replay),
so every method works on the grid unchanged.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf

from keras_gradcam.errors import NotSpatialLayerError
from keras_gradcam.graph import map_rank, walk
from keras_gradcam.inputs import image_rank, model_inputs

MAX_PREFIX = 16  # class + distillation + register tokens we look for when inferring


@dataclasses.dataclass(frozen=True)
class TokenGrid:
    """How a `(batch, tokens, channels)` layer output lays out on the image.

    Args:
        prefix: Number of tokens before the patch tokens (class, distillation and register
            tokens), which are dropped from the map. `None`: inferred.
        grid: `(rows, cols)` of the patch tokens, row by row. `None`: inferred.

    With both `None` (what `tokens="auto"` means), the grid is the output grid of the
    model's patch embedding (the first convolution whose stride equals its kernel, e.g. 16
    for ViT-B/16), measured on the actual input, or a multiple of it after patch merging
    (Swin); without such a layer, the factorisation of the token count whose aspect ratio
    matches the image. Whatever is left before the grid is the prefix.

    Example:

    ```python
    # ViT-B/16 at 224x224: one class token, then 14 x 14 patches.
    cam = GradCAM(vit, tokens=TokenGrid(prefix=1, grid=(14, 14)))
    ```
    """

    prefix: int | None = None
    grid: tuple[int, int] | None = None

    def __post_init__(self):
        if self.prefix is not None and (
                isinstance(self.prefix, bool) or not isinstance(self.prefix, int)
                or self.prefix < 0):
            raise ValueError(
                "`prefix` must be None or a non-negative int (the tokens before the patches). "
                f"Received: prefix={self.prefix!r}."
            )
        if self.grid is not None:
            grid = tuple(self.grid)
            if len(grid) != 2 or not all(
                    isinstance(g, int) and not isinstance(g, bool) and g > 0 for g in grid):
                raise ValueError(
                    "`grid` must be None or (rows, cols) of positive ints. "
                    f"Received: grid={self.grid!r}."
                )
            object.__setattr__(self, "grid", grid)

    @property
    def complete(self) -> bool:
        return self.prefix is not None and self.grid is not None

    def __str__(self) -> str:
        return f"TokenGrid(prefix={self.prefix}, grid={self.grid})"

    def fit(self, tokens: int, image_size: tuple[int, int] | None = None,
            patch_grid: tuple[int, int] | None = None, layer: str = "the layer") -> TokenGrid:
        """The complete grid for a sequence of `tokens` tokens, inferring what is `None`.

        Args:
            tokens: Length of the sequence.
            image_size: `(height, width)` of the model's image input, if known.
            patch_grid: `(rows, cols)` of the patch embedding's output on this input, if known.
            layer: The layer's name, for errors.

        Raises:
            NotSpatialLayerError: the tokens cannot be laid out so.
        """
        if self.grid is not None:
            rows, cols = self.grid
            prefix = tokens - rows * cols if self.prefix is None else self.prefix
            if prefix < 0 or prefix + rows * cols != tokens:
                raise NotSpatialLayerError(
                    f"{layer} outputs {tokens} tokens, which is not {prefix} + {rows} x {cols}. "
                    f"Received: tokens={self}. Pass the grid of this input, e.g. "
                    "TokenGrid(prefix=1, grid=(14, 14)) for ViT-B/16 at 224 x 224, or "
                    "tokens='auto'."
                )
            return TokenGrid(prefix, (rows, cols))
        found = _infer(tokens, self.prefix, image_size, patch_grid)
        if found is None:
            raise NotSpatialLayerError(
                f"Cannot lay out the {tokens} tokens of {layer} as an image grid (image "
                f"{image_size}, patch embedding grid {patch_grid}, prefix {self.prefix}). "
                "Pass it: tokens=keras_gradcam.TokenGrid(prefix=<class/register tokens>, "
                "grid=(rows, cols)), or tokens=None to explain the sequence as a 1-D map."
            )
        return found

    def split(self, sequence: tf.Tensor) -> tuple[tf.Tensor, object]:
        """`(batch, tokens, channels)` -> `(grid (batch, rows, cols, channels), merge)`, where
        `merge(grid)` puts a grid (changed or not) back in place of the patch tokens."""
        rows, cols = self.grid
        prefix = sequence[:, : self.prefix]
        channels = sequence.shape[-1]
        grid = tf.reshape(sequence[:, self.prefix:], [-1, rows, cols, channels])

        def merge(new_grid):
            patches = tf.reshape(new_grid, [-1, rows * cols, channels])
            return tf.concat([prefix, tf.cast(patches, prefix.dtype)], axis=1)

        return grid, merge


AUTO = TokenGrid()


def as_token_grid(tokens) -> TokenGrid | None:
    """The user's `tokens=` argument as a `TokenGrid` (None: sequences stay 1-D maps).

    Raises:
        TypeError: `tokens` is none of `"auto"`, `None`, a `TokenGrid`.
    """
    if tokens is None or tokens is False:
        return None
    if isinstance(tokens, str) and tokens == "auto":
        return AUTO
    if isinstance(tokens, TokenGrid):
        return tokens
    raise TypeError(
        "`tokens` must be 'auto', None or a keras_gradcam.TokenGrid(prefix=..., grid=(rows, "
        f"cols)). Received: tokens={tokens!r}."
    )


def maps_rank(path, tokens: TokenGrid | None, inputs) -> int:
    """Spatial axes of the maps of the layer at `path` on `inputs`: its output's, or 2 for a
    token sequence laid out as a grid (or the image's, when it is known only as it runs)."""
    rank, image = map_rank(path), image_rank(inputs)
    if tokens is not None and rank in (None, 1) and (image == 2 or tokens.complete):
        return 2
    return rank if rank is not None else image


def is_token_layer(model, path) -> bool:
    """Whether the layer at `path` outputs a token sequence of a 2-D image model (or its rank
    is known only as it runs, inside a transformer block)."""
    images = [x for x in model_inputs(model) or [] if len(x.shape) == 4]
    return bool(images) and map_rank(path) in (None, 1)


def _infer(tokens: int, prefix: int | None, image_size, patch_grid) -> TokenGrid | None:
    prefixes = range(MAX_PREFIX + 1) if prefix is None else (prefix,)
    if patch_grid is not None:
        rows, cols = patch_grid
        for factor in (1, 2, 4, 8, 16, 32, 64):  # Swin merges 2 x 2 patches per stage
            r, c = math.ceil(rows / factor), math.ceil(cols / factor)
            for p in prefixes:
                if p + r * c == tokens:
                    return TokenGrid(p, (r, c))
    height, width = image_size if image_size is not None else (1, 1)
    best = None
    for p in prefixes:
        count = tokens - p
        for r in range(1, math.isqrt(max(count, 0)) + 1):
            if count % r:
                continue
            for rows, cols in ((r, count // r), (count // r, r)):
                if min(rows, cols) < 2:
                    continue
                # patch height vs patch width: equal up to one patch of rounding
                ph, pw = height / rows, width / cols
                mismatch = abs(math.log(ph / pw))
                if mismatch <= math.log1p(1.0 / min(rows, cols)) + 1e-9 and (
                        best is None or mismatch < best[0] - 1e-9):
                    best = (mismatch, TokenGrid(p, (rows, cols)))
    return best[1] if best else None


def patch_embedding(model) -> keras.layers.Layer | None:
    """The model's patch embedding: its first 2-D convolution whose strides equal its kernel
    size (> 1), looking inside nested models and plain layers; None if there is none."""
    for path in walk(model, into_layers=True):
        layer = path[-1]
        kernel, strides = getattr(layer, "kernel_size", None), getattr(layer, "strides", None)
        if (isinstance(layer, keras.layers.Conv2D) and kernel is not None
                and tuple(kernel) == tuple(strides) and max(kernel) > 1):
            return layer
    return None


__all__ = ["TokenGrid", "as_token_grid", "is_token_layer", "maps_rank", "patch_embedding"]
