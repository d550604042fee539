"""The CAM family: hooks against numpy references, identities, Score-CAM and guided backprop by
brute force, smoothing options, the registry, and one method x model x setting matrix."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import first_component_reference

import keras_gradcam as kgc
from keras_gradcam.methods.smoothing import FLIPS, SCALES

RNG = np.random.default_rng(0)
# Hand-made feature maps and gradients: 2 samples, 3x3 positions, 3 channels; zeros and signs.
A = RNG.integers(0, 4, (2, 3, 3, 3)).astype(np.float32)
G = RNG.integers(-2, 3, (2, 3, 3, 3)).astype(np.float32)


def relu(x):
    return np.maximum(x, 0)


def np_gradcam_plus_plus(a, g):
    g2, total = g**2, a.sum(axis=(1, 2), keepdims=True)
    denominator = 2 * g2 + total * g**3
    alpha = np.where(denominator != 0, g2 / np.where(denominator == 0, 1, denominator), 0)
    return np.einsum("bhwk,bk->bhw", a, (alpha * relu(g)).sum(axis=(1, 2)))


REFERENCES = {
    "gradcam": lambda a, g: np.einsum("bhwk,bk->bhw", a, g.mean(axis=(1, 2))),
    "gradcam++": np_gradcam_plus_plus,
    "hirescam": lambda a, g: (g * a).sum(-1),
    "gradcam-elementwise": lambda a, g: relu(g * a).sum(-1),
    "xgradcam": lambda a, g: np.einsum(
        "bhwk,bk->bhw", a, (g * a).sum(axis=(1, 2)) / (a.sum(axis=(1, 2)) + 1e-7)
    ),
    "layercam": lambda a, g: (relu(g) * a).sum(-1),
    "eigencam": lambda a, g: first_component_reference(a),
    "eigengradcam": lambda a, g: first_component_reference(g * a),
}


def conv_gap_dense(classes=3, activation="softmax", size=16, name="features"):
    inputs = keras.Input((size, size, 3), name="image")
    conv = keras.layers.Conv2D
    x = conv(4, 3, strides=2, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name=name)(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(classes, activation=activation, name="dense")(x)
    return keras.Model(inputs, outputs)


def feature_maps(model, layer, x):
    return keras.Model(model.inputs[0], model.get_layer(layer).output)(x).numpy()


@pytest.fixture(scope="module")
def tiny():
    return conv_gap_dense()


@pytest.fixture
def images():
    return np.random.default_rng(1).random((3, 16, 16, 3), dtype=np.float32)


# ---- hooks against numpy references on hand-made arrays -------------------------------------


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_hook_matches_numpy_reference(name, tiny):
    cam = kgc.get_method(name)(tiny)
    maps = cam.compute_maps(tf.constant(A), tf.constant(G)).numpy()
    np.testing.assert_allclose(maps, REFERENCES[name](A, G), atol=1e-5)


def test_gradcam_plus_plus_alpha_is_zero_where_the_denominator_is():
    a = np.ones((1, 1, 2, 1), np.float32)  # sum A = 2: denominators 2 g^2 + 2 g^3
    g = np.array([-1.0, 2.0], np.float32).reshape(1, 1, 2, 1)  # g=-1: 2 - 2 = 0 -> alpha 0
    weights = kgc.GradCAMPlusPlus.channel_weights(None, tf.constant(a), tf.constant(g)).numpy()
    np.testing.assert_allclose(weights, [[4 / (8 + 16) * 2]], atol=1e-7)
    # A positive gradient with a zero denominator: sum A = -2, g = 1 -> 2 - 2 = 0 -> alpha 0;
    # g = 0.5 -> alpha = 0.25 / (0.5 - 0.25) = 1, weight 0.5.
    a = np.full((1, 1, 2, 1), -1.0, np.float32)
    g = np.array([1.0, 0.5], np.float32).reshape(a.shape)
    weights = kgc.GradCAMPlusPlus.channel_weights(None, tf.constant(a), tf.constant(g))
    np.testing.assert_allclose(weights.numpy(), [[0.5]], atol=1e-7)
    reference = np_gradcam_plus_plus(a, g)
    np.testing.assert_allclose(reference, -0.5 * np.ones((1, 1, 2)), atol=1e-7)


@pytest.mark.parametrize("name", ["gradcam", "hirescam", "layercam"])
def test_eigen_smooth_projects_the_weighted_maps(name, tiny):
    cam = kgc.get_method(name)(tiny, eigen_smooth=True)
    weighted = cam.weighted_activations(tf.constant(A), tf.constant(G)).numpy()
    maps = cam.compute_maps(tf.constant(A), tf.constant(G)).numpy()
    np.testing.assert_allclose(maps, first_component_reference(weighted), atol=1e-5)
    np.testing.assert_allclose(weighted.sum(-1), REFERENCES[name](A, G), atol=1e-5)


def test_cam_weights_are_kernel_columns():
    kernel = tf.constant(np.arange(12, dtype=np.float32).reshape(4, 3))
    weights = kgc.CAM.class_weights(kernel, tf.constant([2, 0])).numpy()
    np.testing.assert_array_equal(weights, [[2, 5, 8, 11], [0, 3, 6, 9]])


def test_max_channels_keeps_the_highest_variance_channels(tiny):
    a = np.zeros((2, 2, 2, 4), np.float32)
    a[0, 0, 0] = [1, 5, 3, 0]  # variances grow with the spread: channel 1, then 2, then 0
    a[1, 1, 1] = [0, 2, 7, 9]
    chosen = kgc.ScoreCAM(tiny, max_channels=2).selected_channels(tf.constant(a)).numpy()
    np.testing.assert_array_equal(chosen, [[1, 2], [3, 2]])


# ---- identities ------------------------------------------------------------------------------


def test_cam_equals_gradcam_on_conv_gap_dense(tiny, images):
    cam = kgc.CAM(tiny)(images, targets=[0, 1, 2], resize=False)
    grad = kgc.GradCAM(tiny)(images, targets=[0, 1, 2], resize=False)
    np.testing.assert_allclose(cam, grad, atol=1e-5)
    assert cam.max() == pytest.approx(1.0)


@pytest.mark.parametrize("targets", [[0, 1, 0], None])
def test_cam_equals_gradcam_on_a_single_sigmoid_unit(targets, images):
    from conftest import small_cnn

    binary = small_cnn(classes=1, activation="sigmoid")
    cam = kgc.CAM(binary).explain(images, targets, resize=False)
    grad = kgc.GradCAM(binary).explain(images, targets, resize=False)
    np.testing.assert_array_equal(cam.targets, grad.targets)
    np.testing.assert_allclose(cam.heatmaps, grad.heatmaps, atol=1e-5)
    assert cam.heatmaps.max() > 0


def test_hirescam_map_sums_to_logit_minus_bias(tiny, images):
    cam = kgc.HiResCAM(tiny)
    maps, scores, _, _ = cam.raw_maps(tf.constant(images), tf.constant([0, 1, 2]), None)
    bias = tiny.get_layer("dense").bias.numpy()
    np.testing.assert_allclose(maps.numpy().sum(axis=(1, 2)), scores.numpy() - bias, atol=1e-5)
    assert (maps.numpy() < 0).any()  # a real test of the sum, not of the ReLU'd map


def test_layercam_equals_hirescam_where_gradients_are_positive(images):
    model = conv_gap_dense(activation=None)
    dense = model.get_layer("dense")
    dense.set_weights([np.abs(dense.kernel.numpy()) + 0.1, dense.bias.numpy()])
    layer = kgc.LayerCAM(model)(images, 1, normalize=False)
    hires = kgc.HiResCAM(model)(images, 1, normalize=False)
    np.testing.assert_allclose(layer, hires, atol=1e-6)
    assert layer.max() > 0


def test_eigencam_ignores_the_target(tiny, images):
    cam = kgc.EigenCAM(tiny)
    np.testing.assert_allclose(cam(images, 0), cam(images, 2), atol=1e-6)


# ---- Score-CAM by brute force ---------------------------------------------------------------


@pytest.mark.parametrize("max_channels", [None, 2])
def test_scorecam_equals_brute_force_loop(max_channels):
    model = conv_gap_dense(activation="softmax", size=8)
    x = np.random.default_rng(2).random((2, 8, 8, 3), dtype=np.float32)
    targets = [0, 2]
    cam = kgc.ScoreCAM(model, batch_size=3, max_channels=max_channels)  # 3 does not divide 2*k
    got = cam(x, targets, resize=False, normalize=False)
    features = feature_maps(model, "features", x)
    kernel, bias = model.get_layer("dense").get_weights()
    pooled = keras.Model(model.inputs[0], model.get_layer("gap").output)
    expected = []
    for i, target in enumerate(targets):
        channels = range(features.shape[-1])
        if max_channels:
            channels = np.argsort(-features[i].var(axis=(0, 1)), kind="stable")[:max_channels]
        scores = []
        for k in channels:
            up = tf.image.resize(features[i, :, :, k][None, :, :, None], (8, 8)).numpy()[0, :, :, 0]
            span = up.max() - up.min()
            mask = (up - up.min()) / span if span > 0 else np.zeros_like(up)
            masked = x[i : i + 1] * mask[None, :, :, None]
            scores.append((pooled(masked).numpy() @ kernel + bias)[0, target])
        weights = np.exp(scores - np.max(scores))
        weights /= weights.sum()
        expected.append(relu(np.einsum("hwk,k->hw", features[i][..., list(channels)], weights)))
    np.testing.assert_allclose(got, np.stack(expected), atol=1e-5)


# ---- guided backpropagation -----------------------------------------------------------------


def two_relu_layers():
    inputs = keras.Input((2, 2, 2))
    x = keras.layers.Conv2D(4, 1, activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(3, 1, name="c2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(x)))


def hand_gradient(model, x, target, guided):
    (w1, b1), (w2, b2) = model.get_layer("c1").get_weights(), model.get_layer("c2").get_weights()
    w1, w2, w3 = w1[0, 0], w2[0, 0], model.get_layer("out").get_weights()[0]
    z1 = x @ w1 + b1
    z2 = relu(z1) @ w2 + b2
    up2 = w3[:, target].reshape(z2.shape[1:])[None]
    r2 = up2 * (z2 > 0) * ((up2 > 0) if guided else 1)
    up1 = r2 @ w2.T
    r1 = up1 * (z1 > 0) * ((up1 > 0) if guided else 1)
    return r1 @ w1.T


def test_guided_backprop_gates_like_the_hand_derived_gradient():
    model = two_relu_layers()
    x = np.random.default_rng(3).normal(size=(4, 2, 2, 2)).astype(np.float32)
    before = model.predict(x, verbose=0)
    got = kgc.GuidedBackprop(model)(x, 1, normalize=False)
    np.testing.assert_allclose(got, hand_gradient(model, x, 1, guided=True), atol=1e-6)
    assert not np.allclose(got, hand_gradient(model, x, 1, guided=False), atol=1e-3)
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)
    assert model.get_layer("c1").activation.__name__ == "relu"
    assert kgc.GuidedBackprop(model)(x).shape == (4, 2, 2, 2)


def test_guided_gradcam_is_guided_backprop_times_gradcam(tiny, images):
    guided = kgc.GuidedBackprop(tiny)(images, 1, normalize=False)
    grad = kgc.GradCAM(tiny)(images, 1)
    got = kgc.GuidedGradCAM(tiny)(images, 1, normalize=False)
    np.testing.assert_allclose(got, guided * grad[..., None], atol=1e-6)


# ---- smoothing and several layers -----------------------------------------------------------


def test_aug_smooth_averages_the_deaugmented_views(tiny, images):
    plain = kgc.GradCAM(tiny)
    targets = plain.explain(images).targets
    views = []
    for flip in FLIPS:
        for scale in SCALES:
            view = (images[:, :, ::-1] if flip else images) * np.float32(scale)
            maps = plain(view, targets, normalize=False)
            views.append(maps[:, :, ::-1] if flip else maps)
    expected = np.mean(views, axis=0)
    expected /= expected.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(kgc.GradCAM(tiny, aug_smooth=True)(images), expected, atol=1e-4)


def test_several_layers_average_their_normalised_maps(tiny, images):
    maps = [kgc.LayerCAM(tiny, layer=name)(images, 2) for name in ("conv1", "features")]
    expected = np.mean(maps, axis=0)
    expected /= expected.max(axis=(1, 2), keepdims=True)
    cam = kgc.LayerCAM(tiny, layer=["conv1", "features"])
    np.testing.assert_allclose(cam(images, 2), expected, atol=1e-5)
    assert [layer.name for layer in cam.layers] == ["conv1", "features"]
    assert cam(images, 2, resize=False).shape == (3, 8, 8)  # the larger of 8x8 and 8x8


# ---- registry and errors --------------------------------------------------------------------


def test_registry_names_every_method():
    assert list(kgc.METHODS) == [
        "gradcam", "gradcam++", "hirescam", "gradcam-elementwise", "xgradcam", "layercam",
        "cam", "scorecam", "eigencam", "eigengradcam", "guided-gradcam", "guided-backprop",
        "ablationcam", "kpcacam", "fem", "finercam", "shapleycam",
        "sscam", "iscam", "smoothgradcam++", "fullgrad",
    ]
    for name, cls in kgc.METHODS.items():
        assert kgc.get_method(name) is cls and kgc.get_method(cls.__name__) is cls
    assert kgc.get_method("Grad_CAM++") is kgc.GradCAMPlusPlus
    assert kgc.get_method("guided-backprop") is kgc.GuidedBackprop


def test_unknown_method_lists_the_names():
    with pytest.raises(ValueError, match=r"Unknown method 'gradcam3'.*gradcam\+\+.*scorecam"):
        kgc.get_method("gradcam3")


def test_cam_needs_gap_then_dense(tiny, images):
    with pytest.raises(kgc.ModelNotSupportedError, match="global average.*conv1 -> features"):
        kgc.CAM(tiny, layer="conv1")
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    flat = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    with pytest.raises(kgc.ModelNotSupportedError, match="Flatten"):
        kgc.CAM(flat)
    with pytest.raises(kgc.ModelNotSupportedError, match="callable target"):
        kgc.CAM(tiny)(images, targets=lambda y: y[:, 0])


# ---- one matrix: methods x model kinds x (batch size, targets, dtype policy) ------------------


def make_model(kind):
    conv = keras.layers.Conv2D
    if kind == "sequential":
        return keras.Sequential([
            keras.Input((16, 16, 3)), conv(4, 3, strides=2, activation="relu"),
            conv(5, 3, padding="same", activation="relu"), keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dropout(0.2), keras.layers.Dense(3), keras.layers.Activation("softmax"),
        ])
    if kind == "functional":
        return conv_gap_dense()
    image = keras.Input((16, 16, 3), name="image")
    if kind == "nested":
        inner = keras.Input((16, 16, 3))
        x = conv(4, 3, strides=2, activation="relu")(inner)
        backbone = keras.Model(inner, conv(5, 3, activation="relu")(x), name="backbone")
        x = keras.layers.GlobalAveragePooling2D()(backbone(image))
        return keras.Model(image, keras.layers.Dense(3, activation="softmax")(x))
    meta = keras.Input((2,), name="meta")
    x = conv(5, 3, strides=2, padding="same", activation="relu")(image)
    x = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(x), meta])
    return keras.Model([image, meta], keras.layers.Dense(3, activation="softmax")(x))


KINDS = ["sequential", "functional", "nested", "multi-input"]
SETTINGS = [  # (samples per compiled run, targets, policy): each axis value appears for each method
    (3, None, "float32"), (1, 2, "mixed_float16"), (3, [0, 2, 1], "float32"),
    (1, None, "mixed_float16"), (3, 1, "float32"), (1, [2, 2, 0], "mixed_float16"),
]
CASES = [
    pytest.param(name, kind, *SETTINGS[(m + 2 * k) % len(SETTINGS)], id=f"{name}-{kind}")
    for m, name in enumerate(kgc.METHODS)
    for k, kind in enumerate(KINDS)
]


@pytest.mark.parametrize(("method", "kind", "batch_size", "targets", "policy"), CASES)
def test_matrix(method, kind, batch_size, targets, policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = make_model(kind)
        rng = np.random.default_rng(4)
        x = rng.random((3, 16, 16, 3), dtype=np.float32)
        inputs = [x, rng.random((3, 2), dtype=np.float32)] if kind == "multi-input" else x
        if method == "cam" and kind == "multi-input":
            with pytest.raises(kgc.ModelNotSupportedError, match="global average pooling"):
                kgc.get_method(method)(model)
            return
        cam = kgc.get_method(method)(model, batch_size=batch_size)
        maps = cam(inputs, targets)
        one_by_one = np.concatenate([
            cam(keras.tree.map_structure(lambda v, i=i: v[i : i + 1], inputs),
                targets[i : i + 1] if isinstance(targets, list) else targets)
            for i in range(3)
        ])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    shape = (3, 16, 16, 3) if method.startswith("guided") else (3, 16, 16)
    assert maps.shape == shape and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1 + 1e-6
    np.testing.assert_allclose(maps, one_by_one, atol=2e-2 if policy != "float32" else 1e-5)
    assert cam.trace_count == 1
