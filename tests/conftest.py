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
