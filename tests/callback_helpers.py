"""Helpers for tests/test_callbacks.py: tiny models, synthetic objects with masks, event files."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

SIZE = 24  # image side
OBJECT = 8  # object side
MARKER = 4  # shortcut marker side
_COLOURS = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)  # class 0 red, class 1 green


def tiny_cnn(size: int = SIZE, channels: int = 3, classes: int = 2, seed: int = 0) -> keras.Model:
    """conv -> conv -> GAP -> dense(softmax), functional; weights fixed by `seed`."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, channels), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="dense")(x)
    model = keras.Model(inputs, outputs, name="tiny_cnn")
    model.compile(
        keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return model


def objects(n: int, *, shortcut: bool, seed: int, agreement: float = 1.0):
    """Striped squares (class 0 horizontal, class 1 vertical) on noise, plus a coloured marker.

    The object is an 8x8 square in the image centre; the marker a 4x4 square in a random corner,
    outside the object. With `shortcut=True` the marker's colour gives the class (red 0, green 1)
    and the stripes agree with the class only with probability `agreement`; without, the
    marker's colour is random and the stripes always agree.

    Returns:
        `(images (n, S, S, 3) float32, labels (n,) int64, masks (n, S, S) bool)`.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.normal(0.3, 0.08, (n, SIZE, SIZE, 3)).astype(np.float32)
    masks = np.zeros((n, SIZE, SIZE), bool)
    stripes = np.tile((np.arange(OBJECT) % 2).astype(np.float32), (OBJECT, 1))  # vertical
    corners = [(0, 0), (0, SIZE - MARKER), (SIZE - MARKER, 0), (SIZE - MARKER, SIZE - MARKER)]
    for i in range(n):
        kind = labels[i] if rng.random() < (agreement if shortcut else 1.0) else 1 - labels[i]
        pattern = stripes if kind == 1 else stripes.T
        y, x = rng.integers(6, SIZE - 6 - OBJECT + 1, 2)
        images[i, y : y + OBJECT, x : x + OBJECT] = 0.2 + 0.6 * pattern[..., None]
        masks[i, y : y + OBJECT, x : x + OBJECT] = True
        colour = labels[i] if shortcut else rng.integers(0, 2)
        cy, cx = corners[rng.integers(0, 4)]
        images[i, cy : cy + MARKER, cx : cx + MARKER] = _COLOURS[colour]
    return np.clip(images, 0.0, 1.0), labels.astype(np.int64), masks


def read_events(directory: str):
    """TensorBoard's own reader over `directory`, everything kept."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    accumulator = ea.EventAccumulator(
        directory,
        size_guidance={ea.TENSORS: 0, ea.IMAGES: 0, ea.SCALARS: 0, ea.HISTOGRAMS: 0},
    )
    accumulator.Reload()
    return accumulator


def written(directory: str) -> dict[str, set]:
    """`{plugin: {(tag, step), ...}}` of every tensor summary in `directory`."""
    accumulator = read_events(directory)
    out: dict[str, set] = {}
    for tag in accumulator.Tags()["tensors"]:
        plugin = accumulator.SummaryMetadata(tag).plugin_data.plugin_name
        out.setdefault(plugin, set()).update((tag, e.step) for e in accumulator.Tensors(tag))
    return out
