"""Issue 12, methods side: no silent wrong answer from CAM's head check, the subclassed-model
replay under concurrent calls, and guided backpropagation on ReLU-like activations."""

import threading
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

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
            np.testing.assert_allclose(got.class_scores, expected.class_scores, atol=1e-5)
    finally:
        done.set()
        caller.join()
    assert not failures
    assert len(sums) >= 100
    np.testing.assert_allclose(np.concatenate(sums), 1.0, atol=1e-5)
    assert "call" not in vars(model.conv) and "call" not in vars(model.head)
    assert "activation" not in vars(model.head) or model.head.activation.__name__ == "softmax"


# ---- guided backpropagation through every ReLU-like activation --------------------------------


def relu_like(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """Keras' relu in numpy, and its local derivative (1 between threshold and max_value)."""
    top = np.inf if max_value is None else max_value
    y = np.where(x > threshold, np.minimum(x, top), negative_slope * (x - threshold))
    slope = np.where(x > threshold, (x < top).astype(np.float32), negative_slope)
    return y, slope


ACTIVATIONS = {  # name: (layer to put after each conv or fused activation, numpy (f, f'))
    "ReLU(6.0)": (lambda: L.ReLU(6.0), {"max_value": 6.0}),
    "fused relu6": ("relu6", {"max_value": 6.0}),
    "Activation(relu6)": (lambda: L.Activation("relu6"), {"max_value": 6.0}),
    "LeakyReLU(0.1)": (lambda: L.LeakyReLU(0.1), {"negative_slope": 0.1}),
    "fused leaky_relu": ("leaky_relu", {"negative_slope": 0.2}),
    "ReLU(6, 0.1, 0.5)": (
        lambda: L.ReLU(6.0, negative_slope=0.1, threshold=0.5),
        {"max_value": 6.0, "negative_slope": 0.1, "threshold": 0.5},
    ),
    "ReLU()": (lambda: L.ReLU(), {}),
}


def two_activated_layers(activation):
    """x -> conv 1x1 -> f -> conv 1x1 -> f -> flatten -> dense, f an activation (layer or fused)."""
    inputs = keras.Input((2, 2, 2))
    x = inputs
    for i, width in enumerate((4, 3)):
        fused = activation if isinstance(activation, str) else None
        x = L.Conv2D(width, 1, activation=fused, name=f"c{i + 1}")(x)
        x = x if fused else activation()(x)
    return keras.Model(inputs, L.Dense(2, name="out")(L.Flatten()(x)))


def guided_reference(model, x, target, **relu_args):
    """The guided rule in numpy: R = 1[upstream > 0] * f'(z) * upstream at each activation."""
    (w1, b1), (w2, b2) = model.get_layer("c1").get_weights(), model.get_layer("c2").get_weights()
    w1, w2, w3 = w1[0, 0], w2[0, 0], model.get_layer("out").get_weights()[0]
    z1 = x @ w1 + b1
    a1, d1 = relu_like(z1, **relu_args)
    z2 = a1 @ w2 + b2
    d2 = relu_like(z2, **relu_args)[1]
    up2 = w3[:, target].reshape(z2.shape[1:])[None]
    up1 = (up2 * (up2 > 0) * d2) @ w2.T
    return (up1 * (up1 > 0) * d1) @ w1.T, z1


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_guided_backprop_guides_every_relu_like_activation(name):
    activation, relu_args = ACTIVATIONS[name]
    model = two_activated_layers(activation)
    x = 4 * np.random.default_rng(3).normal(size=(8, 2, 2, 2)).astype(np.float32)
    expected, z1 = guided_reference(model, x, 1, **relu_args)
    if "max_value" in relu_args:
        assert (z1 > 6).any() and (z1 < 6).any()  # the upper gate matters on these inputs
    got = kgc.GuidedBackprop(model)(x, 1, normalize=False)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    plain = guided_reference(model, x, 1)[0]  # plain-ReLU gates: not the same gradient
    if relu_args:
        assert not np.allclose(got, plain, atol=1e-3)


def test_relu6_guides_like_relu_below_six():
    relu6 = two_activated_layers(lambda: L.ReLU(6.0))
    relu = two_activated_layers(lambda: L.ReLU())
    relu.set_weights(relu6.get_weights())
    small = 0.5 * np.random.default_rng(4).normal(size=(6, 2, 2, 2)).astype(np.float32)
    assert (small @ relu6.get_layer("c1").get_weights()[0][0, 0] < 6).all()
    np.testing.assert_allclose(
        kgc.GuidedBackprop(relu6)(small, 0, normalize=False),
        kgc.GuidedBackprop(relu)(small, 0, normalize=False),
        atol=1e-6,
    )


def mobilenet_like():
    """conv -> BN -> ReLU(6) -> depthwise -> ReLU(6) -> GAP -> dense, as in MobileNetV2."""
    inputs = keras.Input((16, 16, 3))
    x = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(8, 3, padding="same")(inputs)))
    x = L.ReLU(6.0, name="last")(L.DepthwiseConv2D(3, padding="same")(x))
    return keras.Model(inputs, L.Dense(3)(L.GlobalAveragePooling2D()(x)))


def test_guided_gradcam_on_relu6_model_is_guided(images):
    model = mobilenet_like()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guided = kgc.GuidedBackprop(model)(images, 1, normalize=False)
        product = kgc.GuidedGradCAM(model)(images, 1, normalize=False)
    grad = kgc.GradCAM(model)(images, 1)
    np.testing.assert_allclose(product, guided * grad[..., None], atol=1e-5)
    image = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(image)
        score = model(image)[:, 1]
    plain = tape.gradient(score, image).numpy()
    assert not np.allclose(guided, plain, atol=1e-4)


@pytest.mark.parametrize("method", [kgc.GuidedBackprop, kgc.GuidedGradCAM])
def test_guided_methods_warn_on_a_model_without_relu_like_activations(method, images):
    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(4, 3, padding="same", activation="tanh", name="conv")(inputs)
    model = keras.Model(inputs, L.Dense(3)(L.GlobalAveragePooling2D()(x)), name="tanh_net")
    with pytest.warns(UserWarning, match="'tanh_net'.*no ReLU"):
        method(model)
