"""The fast paths against the computations they replace: the first principal component from a
Gram matrix vs a full SVD, Guided Grad-CAM in one forward pass vs two, Score-CAM's masks built
per chunk vs all at once."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import first_component_reference

import keras_gradcam as kgc
from keras_gradcam.methods.smoothing import first_component, principal_axis


def relu_features(shape, seed=0):
    """Feature maps like a ReLU conv layer's: a random conv of random images, rectified."""
    rng = np.random.default_rng(seed)
    b, h, w, c = shape
    images = rng.random((b, h, w, 3)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 3, c)).astype(np.float32)
    return tf.nn.relu(tf.nn.conv2d(images, kernel, 1, "SAME")).numpy()


def spectrum(shape, ratio, seed=0):
    """`(batch, n, c)` features whose centred matrix has eigenvalue ratio `l2 / l1 = ratio`."""
    rng = np.random.default_rng(seed)
    b, n, c = shape
    out = []
    for _ in range(b):
        u, _ = np.linalg.qr(rng.normal(size=(n, n)))
        v, _ = np.linalg.qr(rng.normal(size=(c, c)))
        u = u - u.mean(axis=0)  # centred columns
        s = np.geomspace(1.0, 1e-3, min(n, c))
        s[1] = np.sqrt(ratio)
        out.append((u[:, : len(s)] * s) @ v[:, : len(s)].T + rng.random(c))
    return np.stack(out).astype(np.float32).reshape(b, n, 1, c)


def scaled(maps):
    return maps / np.abs(maps).max(axis=tuple(range(1, maps.ndim)), keepdims=True)


@pytest.mark.parametrize("shape", [(4, 16, 16, 128), (3, 7, 7, 256), (2, 5, 5, 8), (2, 1, 6, 3)])
def test_first_component_equals_the_svd_reference(shape):
    x = relu_features(shape)
    expected = first_component_reference(x)
    got = first_component(tf.constant(x)).numpy()
    np.testing.assert_allclose(scaled(got), scaled(expected), atol=1e-5)
    np.testing.assert_allclose(got, expected, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("ratio", [0.3, 0.9, 0.995])
def test_first_component_near_a_tie_equals_the_svd_reference(ratio):
    x = spectrum((2, 40, 24), ratio)
    expected = first_component_reference(x)
    np.testing.assert_allclose(scaled(first_component(tf.constant(x)).numpy()), scaled(expected),
                               atol=1e-5)


@pytest.mark.parametrize("n, c", [(10, 30), (30, 10)])
def test_principal_axis_uses_either_gram_matrix(n, c):
    x = spectrum((2, n, c), 0.5)[:, :, 0]
    centred = x - x.mean(axis=1, keepdims=True)
    expected = np.stack([np.linalg.svd(m.astype(np.float64))[2][0] for m in centred])
    got = principal_axis(tf.constant(centred)).numpy()
    signs = np.sign(np.sum(got * expected, axis=-1, keepdims=True))
    np.testing.assert_allclose(got * signs, expected, atol=1e-5)


def test_first_component_of_constant_features_is_zero():
    x = np.ones((2, 4, 4, 3), np.float32)
    np.testing.assert_array_equal(first_component(tf.constant(x)).numpy(), 0.0)


def test_eigen_methods_match_the_svd_reference_on_a_cnn():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(32, 3, activation="relu", name="features")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    images = np.random.default_rng(1).random((3, 32, 32, 3)).astype(np.float32)
    features = keras.Model(inputs, model.get_layer("features").output)(images).numpy()
    expected = np.maximum(first_component_reference(features), 0)
    got = kgc.EigenCAM(model, "features")(images, resize=False, normalize=False)
    np.testing.assert_allclose(got, expected, atol=1e-5 * expected.max())


def relu_head_cnn():
    """conv-ReLU -> conv-ReLU (the layer) -> GAP -> dense-ReLU -> dense: a ReLU after the layer,
    whose gradient Grad-CAM takes plain and guided backpropagation guided."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="features")(x)
    x = keras.layers.Dense(8, activation="relu")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


@pytest.mark.parametrize("targets", [None, 2])
def test_guided_gradcam_in_one_pass_equals_two_passes(targets):
    model = relu_head_cnn()
    images = np.random.default_rng(2).random((4, 16, 16, 3)).astype(np.float32)
    guided = kgc.GuidedBackprop(model)(images, targets, normalize=False)
    heatmaps = kgc.GradCAM(model, "features")(images, targets)
    expected = guided * heatmaps[..., None]
    got = kgc.GuidedGradCAM(model, "features")(images, targets, normalize=False)
    np.testing.assert_allclose(got, expected, atol=1e-5 * np.abs(expected).max())
    # The two-pass path (taken with several layers) gives the same product.
    two = kgc.GuidedGradCAM(model, ["features", "features"])(images, targets, normalize=False)
    np.testing.assert_allclose(two, expected, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("size", [(16, 16), (9, 13)])
def test_score_cam_masks_per_chunk_equal_the_masks_built_at_once(size):
    from keras_gradcam.maps import resize_maps
    from keras_gradcam.methods.masking import pair_masks

    activations = tf.constant(relu_features((3, 4, 5, 6)))
    # What was built before: every channel of every sample upsampled and min-max scaled at once.
    every = resize_maps(tf.reshape(tf.transpose(activations, [0, 3, 1, 2]), [-1, 4, 5]), size)
    every = tf.reshape(every, [3, 6, *size]).numpy()
    low, high = every.min(axis=(2, 3), keepdims=True), every.max(axis=(2, 3), keepdims=True)
    every = np.divide(every - low, high - low, out=np.zeros_like(every), where=high > low)
    sample, channel = tf.constant([0, 2, 1, 2, 0]), tf.constant([5, 0, 3, 3, 1])
    got = pair_masks(activations, sample, channel, size).numpy()
    np.testing.assert_allclose(got, every[sample.numpy(), channel.numpy()], atol=1e-7)
