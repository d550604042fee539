"""The core: layer resolution, the sub-model over every kind of Keras model, the compiled step."""

import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
from conftest import small_cnn

import keras_gradcam as kgc

# ---- exact oracles -----------------------------------------------------------------------------

SEED_A = np.stack(
    [np.array([[1, 0, 2], [3, 5, 0], [1, 1, 1]]), np.array([[0, 1, 0], [3, 1, 0], [1, 0, 1]])],
    axis=-1,
).astype(np.float32)  # (3, 3, 2): channel k=1 and k=2 of seed 000
SEED_GRAD = np.stack(
    [
        np.array([[0, 1, 0], [0, 0, 0], [1, 0, 1]]),
        np.array([[0, -1, -1], [-1, -1, 0], [0, -1, -1]]),
    ],
    axis=-1,
).astype(np.float32)


def seed_model():
    """Target layer outputs A (identity 1x1 conv); class 0's score is sum(Â * A)."""
    inputs = keras.Input((3, 3, 2))
    conv = keras.layers.Conv2D(2, 1, use_bias=False, name="features")
    dense = keras.layers.Dense(2, name="scores")
    outputs = dense(keras.layers.Flatten()(conv(inputs)))
    conv.set_weights([np.eye(2, dtype=np.float32)[None, None]])
    kernel = np.zeros((18, 2), np.float32)
    kernel[:, 0] = SEED_GRAD.reshape(-1)
    dense.set_weights([kernel, np.zeros(2, np.float32)])
    return keras.Model(inputs, outputs)


def test_seed_worked_example_gives_the_slides_map():
    cam = kgc.GradCAM(seed_model(), layer="features")
    explanation = cam.explain(SEED_A[None], targets=0, resize=False, normalize=False)
    expected = np.array([[1 / 3, 0, 2 / 3], [0, 1, 0], [0, 1 / 3, 0]], np.float32)
    np.testing.assert_allclose(explanation.heatmaps[0], expected, atol=1e-6)
    np.testing.assert_allclose(explanation.scores, [np.sum(SEED_A * SEED_GRAD)], atol=1e-5)


def test_seed_alpha_is_the_spatial_mean_of_the_gradient():
    import tensorflow as tf

    weights = kgc.GradCAM(seed_model()).channel_weights(None, tf.constant(SEED_GRAD[None]))
    np.testing.assert_allclose(weights.numpy()[0], [1 / 3, -2 / 3], atol=1e-7)


def test_gradcam_equals_cam_on_conv_gap_dense(cnn, images):
    heatmaps = kgc.GradCAM(cnn, layer="conv2")(images, targets=2, resize=False)
    features = keras.Model(cnn.inputs[0], cnn.get_layer("conv2").output)(images).numpy()
    kernel = cnn.get_layer("dense").get_weights()[0]
    cam = np.maximum(np.einsum("bhwk,k->bhw", features, kernel[:, 2]), 0)
    cam /= cam.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(heatmaps, cam, atol=1e-5)


# ---- batching, tracing, XLA ------------------------------------------------------------------


def test_batch_equals_one_by_one(cnn, images):
    cam = kgc.GradCAM(cnn)
    batch = cam(images, targets=[0, 1, 2, 3])
    single = np.concatenate([cam(images[i : i + 1], targets=[i]) for i in range(4)])
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_one_trace_for_all_batch_sizes_and_splits(cnn):
    cam = kgc.GradCAM(cnn, batch_size=4)
    for n in (1, 3, 8, 5):
        assert cam(np.random.rand(n, 16, 16, 3)).shape == (n, 16, 16)
    assert cam.trace_count == 1


@pytest.mark.parametrize("n", [4, 3])  # 3 rows are padded to 4 under XLA
def test_xla_equals_plain_graph(cnn, n):
    images = np.random.default_rng(1).random((n, 16, 16, 3), dtype=np.float32)
    plain = kgc.GradCAM(cnn, jit_compile=False).explain(images, targets=[0, 1, 2, 3][:n])
    xla = kgc.GradCAM(cnn, jit_compile=True).explain(images, targets=[0, 1, 2, 3][:n])
    assert xla.heatmaps.shape == (n, 16, 16)
    np.testing.assert_allclose(plain.heatmaps, xla.heatmaps, atol=1e-5)
    np.testing.assert_allclose(plain.scores, xla.scores, atol=1e-5)


def test_output_range_dtype_and_top1(cnn, images):
    explanation = kgc.GradCAM(cnn).explain(images)
    assert explanation.heatmaps.dtype == np.float32
    assert explanation.heatmaps.shape == (4, 16, 16)
    assert 0.0 <= explanation.heatmaps.min() and explanation.heatmaps.max() <= 1.0
    np.testing.assert_array_equal(explanation.targets, cnn.predict(images, verbose=0).argmax(-1))


def test_all_zero_map_stays_zero_without_nan(images):
    model = small_cnn(activation=None)
    dense = model.get_layer("dense")
    kernel, bias = dense.get_weights()
    kernel[:, 1] = 0.0
    dense.set_weights([kernel, bias])
    heatmaps = kgc.GradCAM(model)(images, targets=1)
    assert np.isfinite(heatmaps).all() and not heatmaps.any()


# ---- model kinds -----------------------------------------------------------------------------


def backbone(name="backbone"):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="b_conv1")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", name="b_conv2")(x)
    x = keras.layers.Activation("relu", name="b_out")(x)
    return keras.Model(inputs, x, name=name)


def test_nested_backbone_matches_flat_wiring(images):
    inner = backbone()
    gap, dense = keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4, activation="softmax")
    inputs = keras.Input((16, 16, 3))
    nested = keras.Model(inputs, dense(gap(inner(inputs))))
    flat_inputs = keras.Input((16, 16, 3))
    x = flat_inputs
    for layer in inner.layers[1:]:
        x = layer(x)
    flat = keras.Model(flat_inputs, dense(gap(x)))
    expected = kgc.GradCAM(flat, layer="b_out")(images)
    by_path = kgc.GradCAM(nested, layer="backbone/b_out")
    auto = kgc.GradCAM(nested)
    assert [layer.name for layer in auto.path] == ["backbone", "b_out"]
    np.testing.assert_allclose(by_path(images), expected, atol=1e-5)
    np.testing.assert_allclose(auto(images), expected, atol=1e-5)
    np.testing.assert_allclose(kgc.GradCAM(nested, layer="b_conv1")(images),
                               kgc.GradCAM(flat, layer="b_conv1")(images), atol=1e-5)


def test_keras_applications_backbone_inside_sequential_picks_last_spatial_layer():
    base = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    model = keras.Sequential(
        [base, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")]
    )
    model.build((None, 32, 32, 3))
    cam = kgc.GradCAM(model)
    assert cam.layer.name == "conv5_block3_out"
    assert kgc.GradCAM(model, layer="resnet50/conv5_block3_out").layer is cam.layer
    heatmaps = cam(np.random.rand(2, 32, 32, 3).astype("float32"))
    assert heatmaps.shape == (2, 32, 32) and np.isfinite(heatmaps).all()


@pytest.mark.parametrize("with_input", [True, False])
def test_sequential_with_and_without_input(with_input, images):
    layers = [
        keras.layers.Conv2D(4, 3, activation="relu", name="c"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ]
    model = keras.Sequential(([keras.Input((16, 16, 3))] if with_input else []) + layers)
    if not with_input:
        model.build((None, 16, 16, 3))
    heatmaps = kgc.GradCAM(model)(images)
    assert heatmaps.shape == (4, 16, 16) and heatmaps.max() == pytest.approx(1.0)


def test_unbuilt_model_is_a_clear_error():
    model = keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.Dense(2)])
    with pytest.raises(kgc.ModelNotSupportedError, match="not built"):
        kgc.GradCAM(model, layer=0)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(6, 3, padding="same", activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(3, activation="softmax")

    def call(self, x):
        return self.head(self.pool(self.conv(x)))


def test_subclassed_model_matches_its_functional_twin(images):
    model = Subclassed()
    model(images)
    inputs = keras.Input((16, 16, 3))
    twin = keras.Model(inputs, model.head(model.pool(model.conv(inputs))))
    cam = kgc.GradCAM(model)
    assert cam.layer is model.conv
    np.testing.assert_allclose(cam(images), kgc.GradCAM(twin)(images), atol=1e-5)
    assert "call" not in vars(model.conv) and "call" not in vars(model.head)
    assert model.head.activation.__name__ == "softmax"


def multi_input_model():
    image = keras.Input((16, 16, 3), name="image")
    meta = keras.Input((2,), name="meta")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(image)
    x = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(x), meta])
    return keras.Model([image, meta], keras.layers.Dense(3, activation="softmax")(x))


def test_multi_input_as_list_and_dict(images):
    model = multi_input_model()
    meta = np.random.rand(4, 2).astype("float32")
    cam = kgc.GradCAM(model)
    as_list = cam([images, meta], targets=1)
    as_dict = cam({"meta": meta, "image": images}, targets=1)
    assert as_list.shape == (4, 16, 16)
    np.testing.assert_allclose(as_list, as_dict, atol=1e-6)


def test_multi_output_picks_output_by_index_and_name(images):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    a = keras.layers.Dense(3, activation="softmax", name="kind")(pooled)
    b = keras.layers.Dense(5, name="colour")(pooled)
    model = keras.Model(inputs, [a, b])
    by_name = kgc.GradCAM(model, output="colour").explain(images, targets=4)
    by_index = kgc.GradCAM(model, output=1).explain(images, targets=4)
    assert by_name.class_scores.shape == (4, 5)
    np.testing.assert_allclose(by_name.heatmaps, by_index.heatmaps, atol=1e-6)
    with pytest.raises(kgc.InvalidTargetError, match=r"\[0, 2\]"):
        kgc.GradCAM(model, output=0)(images, targets=4)


@pytest.mark.parametrize(
    ("conv", "shape", "map_shape"),
    [
        (keras.layers.Conv1D, (20, 2), (20,)),
        (keras.layers.Conv3D, (6, 8, 8, 1), (6, 8, 8)),
    ],
)
def test_conv1d_and_conv3d_give_maps_of_their_rank(conv, shape, map_shape):
    pool = keras.layers.GlobalAveragePooling1D if conv is keras.layers.Conv1D else (
        keras.layers.GlobalAveragePooling3D
    )
    model = keras.Sequential([keras.Input(shape), conv(4, 3, strides=2, padding="same",
                                                       activation="relu"), pool(),
                              keras.layers.Dense(2)])
    x = np.random.rand(3, *shape).astype("float32")
    cam = kgc.GradCAM(model)
    assert cam(x).shape == (3, *map_shape)
    raw = cam(x, resize=False, normalize=False)
    assert raw.shape == (3, *(s // 2 for s in map_shape)) and (raw >= 0).all()


def test_callable_target_for_regression(images):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(x)))
    explanation = kgc.GradCAM(model).explain(images, targets=lambda y: y[:, 0])
    np.testing.assert_allclose(explanation.scores, model.predict(images, verbose=0)[:, 0],
                               atol=1e-5)
    assert (explanation.targets == -1).all()


def test_mixed_float16_computes_in_float32(images):
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = small_cnn()
    heatmaps = kgc.GradCAM(model)(images)
    assert heatmaps.dtype == np.float32 and np.isfinite(heatmaps).all()
    keras.mixed_precision.set_global_policy("float32")
    reference = small_cnn()
    reference.set_weights(model.get_weights())
    np.testing.assert_allclose(heatmaps, kgc.GradCAM(reference)(images), atol=0.05)


# ---- the user's model is never changed; pre-softmax scores -----------------------------------


@pytest.mark.parametrize("separate_softmax", [False, True])
def test_softmax_model_gives_the_maps_of_its_linear_twin(separate_softmax, images):
    linear = small_cnn(activation=None)
    if separate_softmax:
        probabilities = keras.layers.Softmax()(linear.outputs[0])
        model = keras.Model(linear.inputs, probabilities)
    else:
        model = small_cnn(activation="softmax")
        model.set_weights(linear.get_weights())
    weights = [w.copy() for w in model.get_weights()]
    before = model.predict(images, verbose=0)
    explanation = kgc.GradCAM(model).explain(images, targets=[0, 1, 2, 3])
    twin = kgc.GradCAM(linear).explain(images, targets=[0, 1, 2, 3])
    np.testing.assert_allclose(explanation.heatmaps, twin.heatmaps, atol=1e-6)
    np.testing.assert_allclose(explanation.scores, twin.scores, atol=1e-6)
    np.testing.assert_array_equal(model.predict(images, verbose=0), before)
    for old, new in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert model.layers[-1].get_config().get("activation", "softmax") == "softmax"


def test_probability_score_differentiates_the_activated_output(images):
    model = small_cnn()
    probability = kgc.GradCAM(model, score="probability").explain(images, targets=0)
    np.testing.assert_allclose(probability.scores, model.predict(images, verbose=0)[:, 0],
                               atol=1e-6)


# ---- errors ----------------------------------------------------------------------------------


def test_unknown_layer_lists_close_names_and_candidates(cnn):
    with pytest.raises(kgc.LayerNotFoundError, match=r"Did you mean 'conv2'.*'conv1', 'conv2'"):
        kgc.GradCAM(cnn, layer="conv_2")


def test_unknown_layer_suggests_each_name_once(cnn):
    with pytest.raises(kgc.LayerNotFoundError) as raised:
        kgc.GradCAM(cnn, layer="conv_2")
    hint = str(raised.value).split("Did you mean ")[1].split("?")[0]
    suggestions = [name.strip(" '") for name in hint.split(",")]
    assert suggestions[0] == "conv2"
    assert len(suggestions) == len(set(suggestions)), hint


def test_non_spatial_layer_says_which_qualify(cnn):
    with pytest.raises(kgc.NotSpatialLayerError, match=r"'gap' has no spatial output.*'conv2'"):
        kgc.GradCAM(cnn, layer="gap")


def test_layer_of_another_model_and_bad_index(cnn):
    with pytest.raises(kgc.LayerNotFoundError, match="not part of model"):
        kgc.GradCAM(cnn, layer=keras.layers.Conv2D(2, 3))
    with pytest.raises(kgc.LayerNotFoundError, match="out of range"):
        kgc.GradCAM(cnn, layer=99)
    with pytest.raises(TypeError, match="`layer` must be"):
        kgc.GradCAM(cnn, layer=1.5)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((16, 16, 3), r"batched 4D.*\(None, 16, 16, 3\).*=\(16, 16, 3\).*images\[None\]"),
        ((2, 8, 8, 3), r"model input shape \(None, 16, 16, 3\).*\(2, 8, 8, 3\)"),
    ],
)
def test_wrong_image_shape_names_the_expected_shape(cnn, shape, message):
    with pytest.raises(kgc.InvalidInputError, match=message):
        kgc.GradCAM(cnn)(np.zeros(shape, np.float32))


def test_non_finite_images_are_rejected(cnn, images):
    images[1, 2, 3, 0] = np.nan
    with pytest.raises(kgc.InvalidInputError, match="NaN or infinite"):
        kgc.GradCAM(cnn)(images)


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ([0, 1], r"expected 4 values, received 2"),
        ([0, 1, 2, 9], r"\[0, 4\].*\[9\]"),
        (-3, r"out-of-range classes: \[-3\]"),
        ([[0, 1]], "one int class per sample"),
    ],
)
def test_bad_targets_say_what_was_expected(cnn, images, targets, message):
    with pytest.raises(kgc.InvalidTargetError, match=message):
        kgc.GradCAM(cnn)(images, targets=targets)


def test_errors_found_while_tracing_reach_the_user_unwrapped(cnn, images):
    with pytest.raises(kgc.InvalidTargetError, match=r"one score per sample") as info:
        kgc.GradCAM(cnn)(images, targets=lambda outputs: outputs[:, :1])
    assert "in user code" not in str(info.value)  # not tf.function's StagingError trace
    inputs = keras.Input((16, 16, 3))
    a = keras.layers.Conv2D(2, 3, name="conv_a")(inputs)
    b = keras.layers.Conv2D(2, 3, name="conv_b")(inputs)
    heads = [keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)) for x in (a, b)]
    two_heads = keras.Model(inputs, heads)
    with pytest.raises(kgc.ModelNotSupportedError, match="does not depend on layer 'conv_a'"):
        kgc.GradCAM(two_heads, layer="conv_a", output=1)(images)


@pytest.mark.parametrize("backend", ["jax", "numpy"])
def test_non_tensorflow_backend_explains_how_to_switch(backend):
    result = subprocess.run(
        [sys.executable, "-c", "import keras_gradcam"],
        env={"KERAS_BACKEND": backend, "PATH": "", "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "KERAS_BACKEND=tensorflow" in result.stderr and "BackendError" in result.stderr


def test_single_sigmoid_unit_is_a_binary_classifier(images):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    p = model.predict(images, verbose=0)[:, 0]
    cam = kgc.GradCAM(model)
    top1 = cam.explain(images)
    np.testing.assert_array_equal(top1.predicted, (p > 0.5).astype(int))
    np.testing.assert_array_equal(top1.targets, top1.predicted)
    np.testing.assert_allclose(top1.probabilities, np.stack([1 - p, p], -1), atol=1e-6)
    positive, negative = cam.explain(images, 1), cam.explain(images, 0)
    np.testing.assert_allclose(negative.scores, -positive.scores, atol=1e-6)
    with pytest.raises(kgc.InvalidTargetError, match=r"\[0, 1\]"):
        cam(images, 2)


def test_probabilities_match_the_models_softmax(cnn, images):
    explanation = kgc.GradCAM(cnn).explain(images)
    np.testing.assert_allclose(explanation.probabilities, cnn.predict(images, verbose=0),
                               atol=1e-6)


def test_model_built_on_a_dict_of_inputs(images):
    image = keras.Input((16, 16, 3), name="image")
    meta = keras.Input((2,), name="meta")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(image)
    x = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(x), meta])
    model = keras.Model({"image": image, "meta": meta}, keras.layers.Dense(3)(x))
    meta_values = np.random.rand(4, 2).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        heatmaps = kgc.GradCAM(model)({"meta": meta_values, "image": images}, targets=2)
    assert heatmaps.shape == (4, 16, 16) and np.isfinite(heatmaps).all()
