"""Small offline datasets for the demo, notebooks and tests, with a plantable shortcut.

Fashion-MNIST comes from Debian's `dataset-fashion-mnist` package where installed
(`apt-get install dataset-fashion-mnist`), else from `keras.datasets` (a download); otherwise
generated images stand in: `generated_shapes` (four easy shapes) for a model that should learn
its classes, `striped_disks` (four look-alike classes) for the shortcut story.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
SHAPE_CLASSES = ("square", "disk", "cross", "ring")
STRIPE_CLASSES = ("vertical", "diagonal /", "horizontal", "diagonal \\")
DATA_ENV = "KERAS_GRADCAM_DATA"
DATA_CHOICES = ("auto", "fashion-mnist", "shapes")


def fashion_mnist_available(directory: str = FASHION_MNIST_DIR) -> bool:
    return os.path.exists(os.path.join(directory, "train-images-idx3-ubyte.gz"))


def load_fashion_mnist(split: str = "train", directory: str = FASHION_MNIST_DIR):
    """Read Fashion-MNIST: Debian's idx files where installed, else `keras.datasets` (download).

    Args:
        split: `"train"` (60,000 images) or `"test"` (10,000).
        directory: Folder holding the `*-idx*-ubyte.gz` files.

    Returns:
        `(images, labels)`: uint8 `(n, 28, 28)` and uint8 `(n,)`.

    Raises:
        FileNotFoundError: no local files and no download possible (the message gives the
            apt-get command that installs them).
    """
    if split not in ("train", "test"):
        raise ValueError(f"`split` must be 'train' or 'test'. Received: split={split!r}.")
    if not fashion_mnist_available(directory):
        return _download_fashion_mnist(split, directory)
    prefix = {"train": "train", "test": "t10k"}[split]
    paths = [os.path.join(directory, f"{prefix}-{kind}-ubyte.gz")
             for kind in ("images-idx3", "labels-idx1")]
    with gzip.open(paths[0], "rb") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(paths[1], "rb") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


def _download_fashion_mnist(split: str, directory: str):
    """`keras.datasets.fashion_mnist`, after a 3-second check that its server answers."""
    import socket

    try:
        socket.create_connection(("storage.googleapis.com", 443), timeout=3).close()
        import keras

        train, test = keras.datasets.fashion_mnist.load_data()
    except Exception as error:  # noqa: BLE001 - offline: one clear error instead
        raise FileNotFoundError(
            f"Fashion-MNIST is not in {directory} and could not be downloaded ({error}). "
            "Install it with `apt-get install dataset-fashion-mnist`, or use "
            "`generated_shapes()`."
        ) from None
    return train if split == "train" else test


def generated_shapes(n: int, size: int = 28, seed: int = 0):
    """Grayscale shapes (square, disk, cross, ring) of random size and position, with noise.

    Returns:
        `(images, labels)`: uint8 `(n, size, size)` and uint8 `(n,)`.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.zeros((n, size, size), np.float32)
    labels = rng.integers(0, len(SHAPE_CLASSES), n).astype(np.uint8)
    for i, label in enumerate(labels):
        r = rng.uniform(0.25, 0.4) * size
        cy, cx = rng.uniform(r, size - r, 2)
        dy, dx = np.abs(yy - cy), np.abs(xx - cx)
        dist = np.hypot(dy, dx)
        shape = [
            np.maximum(dy, dx) <= r,
            dist <= r,
            (np.minimum(dy, dx) <= r / 3) & (np.maximum(dy, dx) <= r),
            (dist <= r) & (dist >= r * 0.6),
        ][label]
        images[i] = shape * rng.uniform(0.6, 1.0)
    images += rng.normal(0, 0.05, images.shape)
    return (np.clip(images, 0, 1) * 255).astype(np.uint8), labels


def striped_disks(n: int, size: int = 28, seed: int = 0, contrast: float = 0.09):
    """Look-alike classes: grey disks whose faint stripes run in one of four directions.

    Every disk has a random radius (9-13 px at `size=28`), position, brightness, stripe phase
    and a slight tilt, plus pixel noise; only the direction of the low-contrast stripes tells
    the classes (`STRIPE_CLASSES`: vertical, diagonal /, horizontal, diagonal \\) apart. A small
    CNN learns them in a few epochs (about 97% after 6 epochs of 4,000 images), but a bright
    class marker is learned first and a model trained with one ignores the stripes: what
    Fashion-MNIST's look-alike garments show in `keras-gradcam demo`, without a download.

    Args:
        n: Number of images.
        size: Side of the square images.
        seed: Seed of everything random.
        contrast: Amplitude of the stripes (the disks' brightness is 0.6-0.85 of full scale).

    Returns:
        `(images, labels)`: uint8 `(n, size, size)` and uint8 `(n,)`.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] + 0.5
    images = np.zeros((n, size, size), np.float32)
    labels = rng.integers(0, len(STRIPE_CLASSES), n).astype(np.uint8)
    period = 4.0 * size / 28
    for i, label in enumerate(labels):
        r = rng.uniform(0.32, 0.46) * size
        cy, cx = rng.uniform(r, size - r, 2)
        angle = np.pi / 4 * label + rng.normal(0, 0.1)  # direction across the stripes
        across = yy * np.sin(angle) + xx * np.cos(angle)
        wave = np.sin(2 * np.pi * across / period + rng.uniform(0, 2 * np.pi))
        disk = np.hypot(yy - cy, xx - cx) <= r
        images[i] = disk * (rng.uniform(0.6, 0.85) + contrast * wave)
    images += rng.normal(0, 0.05, images.shape)
    return (np.clip(images, 0, 1) * 255).astype(np.uint8), labels


def place_on_canvas(images, labels, canvas: int = 40, shortcut: bool = False,
                    marker: int = 5, shuffle_markers: bool = False, seed: int = 0):
    """Centre 28x28-like images on a larger canvas and optionally plant a class marker.

    The marker, a bright `marker` x `marker` square, sits in a corner that depends on the class
    (`label % 4`), outside the object: a shortcut that predicts the class without looking at the
    object, like the Grad-CAM paper's biased doctor/nurse data set (section 6.3).

    Args:
        images: uint8 `(n, h, w)`.
        labels: `(n,)` class ids.
        canvas: Side of the square canvas.
        shortcut: Plant the class marker.
        marker: Side of the marker square.
        shuffle_markers: Put the marker in a random corner (a marker that predicts nothing).
        seed: Seed for `shuffle_markers`.

    Returns:
        `(x, masks)`: float32 `(n, canvas, canvas, 1)` in [0, 1] and bool object masks
        `(n, canvas, canvas)` (pixels of the object itself).
    """
    n, h, w = images.shape
    top, left = (canvas - h) // 2, (canvas - w) // 2
    x = np.zeros((n, canvas, canvas), np.float32)
    x[:, top : top + h, left : left + w] = images / 255.0
    masks = x > 0.1
    if shortcut:
        corners = np.asarray(labels) % 4
        if shuffle_markers:
            corners = np.random.default_rng(seed).integers(0, 4, n)
        for i, corner in enumerate(corners):
            y0 = 0 if corner in (0, 1) else canvas - marker
            x0 = 0 if corner in (0, 2) else canvas - marker
            x[i, y0 : y0 + marker, x0 : x0 + marker] = 1.0
    return x[..., None], masks


SQUARE_COLOURS = np.array([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0]], np.float32)


def coloured_squares(n: int, size: int = 32, square: int = 8, seed: int = 0):
    """Noise images with one square at a random position whose colour (red, green, blue) is
    the class: the evidence region is known, for localisation checks.

    Returns:
        `(images, labels, boxes)`: float32 `(n, size, size, 3)` in [0, 1], int32 `(n,)`, and
        int `(n, 4)` boxes `(top, left, bottom, right)` in pixels.
    """
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.6, (n, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, len(SQUARE_COLOURS), n)
    corners = rng.integers(0, size - square + 1, (n, 2))
    for image, label, (top, left) in zip(images, labels, corners):
        image[top:top + square, left:left + square] = SQUARE_COLOURS[label]
    boxes = np.concatenate([corners, corners + square], axis=1)
    return images, labels.astype(np.int32), boxes
