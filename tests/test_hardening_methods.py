"""Issue 12, methods side: no silent wrong answer from CAM's head check, the subclassed-model
replay under concurrent calls, and guided backpropagation on ReLU-like activations."""

import threading

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


# ---- subclassed models: nothing the explainer does shows to other callers --------------------


class SubclassedSoftmax(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = L.Conv2D(6, 3, padding="same", activation="relu")
        self.pool = L.GlobalAveragePooling2D()
        self.head = L.Dense(3, activation="softmax")

    def call(self, x):
        return self.head(self.pool(self.conv(x)))


def test_subclassed_model_called_in_another_thread_while_explained_keeps_its_softmax(images):
    model = SubclassedSoftmax()
    model(images)
    inputs = keras.Input((16, 16, 3))
    twin = keras.Model(inputs, model.head(model.pool(model.conv(inputs))))
    expected = kgc.GradCAM(twin).explain(images)
    done, sums, failures = threading.Event(), [], []

    def call_in_a_loop():
        try:
            while not done.is_set() or len(sums) < 100:
                sums.append(keras.ops.convert_to_numpy(model(images)).sum(axis=-1))
        except Exception as error:  # reported below, in the main thread
            failures.append(error)

    caller = threading.Thread(target=call_in_a_loop)
    caller.start()
    try:
        for _ in range(4):
            got = kgc.GradCAM(model).explain(images)
            np.testing.assert_allclose(got.heatmaps, expected.heatmaps, atol=1e-5)
            np.testing.assert_allclose(got.logits, expected.logits, atol=1e-5)
    finally:
        done.set()
        caller.join()
    assert not failures
    assert len(sums) >= 100
    np.testing.assert_allclose(np.concatenate(sums), 1.0, atol=1e-5)
    assert "call" not in vars(model.conv) and "call" not in vars(model.head)
    assert "activation" not in vars(model.head) or model.head.activation.__name__ == "softmax"
