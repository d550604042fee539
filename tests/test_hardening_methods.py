"""Issue 12, methods side: no silent wrong answer from CAM's head check, the subclassed-model
replay under concurrent calls, and guided backpropagation on ReLU-like activations."""

import keras
import numpy as np
import pytest

import keras_gradcam as kgc

L = keras.layers


# ---- CAM: the GAP -> dense head must feed the explained output ------------------------------


def branching_heads():
    """trunk -> gap_a -> head_a (output 0); trunk -> branch -> gap_b -> head_b (output 1)."""
    inputs = keras.Input((16, 16, 3), name="image")
    trunk = L.Conv2D(4, 3, padding="same", activation="relu", name="trunk")(inputs)
    out_a = L.Dense(3, activation="softmax", name="head_a")(L.GlobalAveragePooling2D()(trunk))
    branch = L.Conv2D(5, 3, padding="same", activation="relu", name="branch")(trunk)
    out_b = L.Dense(3, activation="softmax", name="head_b")(L.GlobalAveragePooling2D()(branch))
    return keras.Model(inputs, [out_a, out_b], name="two_heads")


def test_cam_refuses_a_head_that_feeds_another_output():
    model = branching_heads()
    with pytest.raises(kgc.ModelNotSupportedError, match="'head_b'.*output 1.*output=1"):
        kgc.CAM(model, layer="branch")
    with pytest.raises(kgc.ModelNotSupportedError, match="'head_b'"):
        kgc.CAM(model, layer="branch", output="head_a")


def test_cam_explains_the_output_its_head_feeds(images):
    model = branching_heads()
    cam = kgc.CAM(model, layer="branch", output=1)(images, [0, 1, 2, 0], resize=False)
    grad = kgc.GradCAM(model, layer="branch", output=1)(images, [0, 1, 2, 0], resize=False)
    np.testing.assert_allclose(cam, grad, atol=1e-4)


# ---- CAM: count only the explained model's own graph ----------------------------------------


def model_with_shared_layers():
    """conv -> gap -> dense, whose conv and gap also serve a second (feature-extractor) model."""
    conv = L.Conv2D(6, 3, padding="same", activation="relu", name="conv")
    gap = L.GlobalAveragePooling2D(name="gap")
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, L.Dense(4, activation="softmax", name="dense")(gap(conv(inputs))))
    other = keras.Input((16, 16, 3))
    keras.Model(other, gap(conv(other)))  # the layers are now read in two graphs
    return model


def loaded_sequential(folder):
    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        L.Conv2D(4, 3, padding="same", activation="relu", name="conv1"),
        L.Conv2D(6, 3, padding="same", activation="relu", name="conv2"),
        L.GlobalAveragePooling2D(name="gap"),
        L.Dense(4, activation="softmax", name="dense"),
    ])
    model.save(folder / "m.keras")
    return keras.models.load_model(folder / "m.keras")


def test_cam_accepts_layers_shared_with_another_model(images):
    model = model_with_shared_layers()
    cam = kgc.CAM(model)(images, [0, 1, 2, 3], resize=False)
    grad = kgc.GradCAM(model)(images, [0, 1, 2, 3], resize=False)
    np.testing.assert_allclose(cam, grad, atol=1e-4)


def test_cam_accepts_a_sequential_model_loaded_from_a_keras_file(images, tmp_path):
    model = loaded_sequential(tmp_path)
    cam = kgc.CAM(model)(images, [0, 1, 2, 3], resize=False)
    grad = kgc.GradCAM(model)(images, [0, 1, 2, 3], resize=False)
    np.testing.assert_allclose(cam, grad, atol=1e-4)
