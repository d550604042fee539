"""Shared fixtures: tiny seeded models and images. No network, no downloads."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_policy():
    keras.utils.set_random_seed(0)
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture
def images():
    return np.random.default_rng(0).random((4, 16, 16, 3), dtype=np.float32)


def small_cnn(classes: int = 5, activation: str | None = "softmax", size: int = 16) -> keras.Model:
    """conv -> conv -> GAP -> dense, functional."""
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(classes, activation=activation, name="dense")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


@pytest.fixture
def cnn():
    return small_cnn()


def first_component_reference(x):
    """Eigen-CAM's map from a float64 SVD per sample (the first right singular vector of the
    centred `(positions, channels)` matrix), signed so that `mean . v >= 0`."""
    out = []
    for sample in np.asarray(x, np.float64):
        flat = sample.reshape(-1, sample.shape[-1])
        mean = flat.mean(axis=0)
        centred = flat - mean
        axis = np.linalg.svd(centred, full_matrices=False)[2][0]
        axis = -axis if mean @ axis < 0 else axis
        out.append((centred @ axis).reshape(sample.shape[:-1]))
    return np.stack(out)
