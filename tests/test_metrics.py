"""keras_gradcam.metrics: hand-made oracles, known-linear models, the randomisation check."""

import keras
import numpy as np
import pytest

from keras_gradcam import GradCAM, metrics


def blob_maps(n=2, size=12):
    """Maps with all their mass in rows 2:5, cols 3:7; masks and boxes of that region."""
    maps = np.zeros((n, size, size), np.float32)
    maps[:, 2:5, 3:7] = np.linspace(0.2, 1.0, 12, dtype=np.float32).reshape(3, 4)
    masks = np.zeros((n, size, size), bool)
    masks[:, 2:5, 3:7] = True
    boxes = np.tile([2, 3, 5, 7], (n, 1))
    return maps, masks, boxes


# ---- energy in mask and the pointing game -----------------------------------------------------


@pytest.mark.parametrize("kind", ["masks", "boxes", "int_masks"])
def test_map_inside_object_scores_energy_one_and_a_hit(kind):
    maps, masks, boxes = blob_maps()
    objects = {"masks": masks, "boxes": boxes, "int_masks": masks.astype(np.uint8)}[kind]
    np.testing.assert_array_equal(metrics.energy_in_mask(maps, objects), [1.0, 1.0])
    np.testing.assert_array_equal(metrics.pointing_game(maps, objects, tolerance=0), [1.0, 1.0])
    assert metrics.mean_energy_in_mask(maps, objects) == 1.0
    assert metrics.mean_pointing_game(maps, objects, tolerance=0) == 1.0


def test_energy_is_the_share_of_mass_inside():
    maps = np.zeros((1, 4, 4), np.float32)
    maps[0, 0, 0] = 3.0
    maps[0, 3, 3] = 1.0
    np.testing.assert_allclose(metrics.energy_in_mask(maps, np.array([[0, 0, 2, 2]])), [0.75])
    np.testing.assert_allclose(metrics.energy_in_mask(maps * 7, np.array([[2, 2, 4, 4]])), [0.25])


@pytest.mark.parametrize("value", [0.0, 0.5])
def test_all_zero_or_constant_map_scores_zero_without_nan(value):
    maps = np.full((2, 6, 6), value, np.float32)
    boxes = np.array([[0, 0, 6, 6], [1, 1, 3, 3]])
    energy = metrics.energy_in_mask(maps, boxes)
    assert not np.isnan(energy).any()
    if value == 0.0:
        np.testing.assert_array_equal(energy, [0.0, 0.0])
    np.testing.assert_array_equal(metrics.pointing_game(maps, boxes), [0.0, 0.0])


@pytest.mark.parametrize(("tolerance", "hit"), [(0, 0.0), (2.9, 0.0), (3, 1.0), (15, 1.0)])
def test_pointing_game_tolerance_is_euclidean_distance_to_the_object(tolerance, hit):
    maps = np.zeros((1, 20, 20), np.float32)
    maps[0, 10, 13] = 1.0  # 3 pixels right of the box's last column (x = 10)
    boxes = np.array([[5, 5, 15, 11]])
    np.testing.assert_array_equal(metrics.pointing_game(maps, boxes, tolerance=tolerance), [hit])


@pytest.mark.parametrize(("size", "distance", "hit"),
                         [(224, 15, 1.0), (224, 16, 0.0), (32, 2, 1.0), (32, 3, 0.0),
                          (448, 30, 1.0), (448, 31, 0.0)])
def test_pointing_game_default_tolerance_scales_15_pixels_at_224(size, distance, hit):
    maps = np.zeros((1, size, size), np.float32)
    maps[0, 0, distance] = 1.0  # `distance` pixels right of the one-pixel object at (0, 0)
    boxes = np.array([[0, 0, 1, 1]])
    np.testing.assert_array_equal(metrics.pointing_game(maps, boxes), [hit])
    assert metrics.mean_pointing_game(maps, boxes) == hit
    # an explicit number still means pixels
    np.testing.assert_array_equal(metrics.pointing_game(maps, boxes, tolerance=15),
                                  [float(distance <= 15)])


def test_a_miss_and_a_hit_in_one_batch():
    maps, masks, _ = blob_maps()
    maps[1] = 0.0
    maps[1, 10, 10] = 1.0
    np.testing.assert_array_equal(metrics.pointing_game(maps, masks, tolerance=0), [1.0, 0.0])
    assert metrics.mean_pointing_game(maps, masks, tolerance=0) == 0.5


@pytest.mark.parametrize(
    ("maps_shape", "objects", "message"),
    [
        ((2, 8, 8), np.zeros((2, 8, 9), bool),
         r"shape \(2, 8, 8\).*Received: masks_or_boxes.shape=\(2, 8, 9\)"),
        ((2, 8, 8), np.zeros((3, 4)),
         r"expected shape \(2, 4\).*Received: masks_or_boxes.shape=\(3, 4\)"),
        ((2, 8, 8), np.array([[0, 0, 2, 2], [3, 3, 1, 5]]),
         r"y1 >= y0.*Received: masks_or_boxes\[1\]"),
        ((2, 8, 8), np.full((2, 8, 8), 0.5), r"must be bool"),
        ((8, 8), np.zeros((1, 4)), r"\(n, height, width\).*Received: heatmaps.shape=\(8, 8\)"),
    ],
)
@pytest.mark.parametrize("metric", [metrics.energy_in_mask, metrics.pointing_game])
def test_shape_mismatch_errors_name_expected_and_received(metric, maps_shape, objects, message):
    with pytest.raises(ValueError, match=message):
        metric(np.ones(maps_shape, np.float32), objects)


def test_negative_maps_and_tolerance_are_rejected():
    maps, masks, _ = blob_maps()
    with pytest.raises(ValueError, match="non-negative"):
        metrics.energy_in_mask(-maps, masks)
    with pytest.raises(ValueError, match="Received: tolerance=-1"):
        metrics.pointing_game(maps, masks, tolerance=-1)



# ---- boxes from maps, IoU, localisation accuracy ----------------------------------------------


@pytest.mark.parametrize("box", [(0, 0, 3, 4), (5, 2, 12, 9), (9, 11, 16, 16), (7, 7, 8, 8)])
@pytest.mark.parametrize("connectivity", [4, 8])
def test_box_from_a_single_blob_is_the_blob_box(box, connectivity):
    maps = np.zeros((1, 16, 16), np.float32)
    y0, x0, y1, x1 = box
    maps[0, y0:y1, x0:x1] = np.random.default_rng(0).uniform(0.5, 1.0, (y1 - y0, x1 - x0))
    maps[0] += 0.1  # below 15% of the maximum: background
    np.testing.assert_array_equal(
        metrics.box_from_heatmap(maps, connectivity=connectivity), [box]
    )


def test_box_keeps_the_larger_of_two_blobs_whatever_their_values():
    maps = np.zeros((2, 16, 16), np.float32)
    maps[:, 1:3, 1:3] = 1.0  # small and bright
    maps[:, 8:14, 6:15] = 0.5  # large and dimmer, still above 15% of the maximum
    maps[1] = maps[1, ::-1]  # the large blob first in row-major order
    np.testing.assert_array_equal(
        metrics.box_from_heatmap(maps), [[8, 6, 14, 15], [2, 6, 8, 15]]
    )


def test_threshold_and_connectivity():
    maps = np.zeros((1, 8, 8), np.float32)
    maps[0, 0:2, 0:2] = 1.0
    maps[0, 2:4, 2:5] = 0.5  # touches the first blob at a corner only
    np.testing.assert_array_equal(metrics.box_from_heatmap(maps), [[0, 0, 4, 5]])
    np.testing.assert_array_equal(
        metrics.box_from_heatmap(maps, connectivity=4), [[2, 2, 4, 5]]
    )
    np.testing.assert_array_equal(metrics.box_from_heatmap(maps, 0.6), [[0, 0, 2, 2]])


def test_box_of_an_all_zero_map_is_empty():
    boxes = metrics.box_from_heatmap(np.zeros((2, 5, 5), np.float32))
    np.testing.assert_array_equal(boxes, np.zeros((2, 4)))
    np.testing.assert_array_equal(metrics.iou(boxes, [[0, 0, 5, 5]] * 2), [0.0, 0.0])


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 4, 4), (0, 0, 4, 4), 1.0),
        ((0, 0, 4, 4), (4, 4, 8, 8), 0.0),  # exclusive ends: touching corners share nothing
        ((0, 0, 4, 4), (0, 2, 4, 6), 8 / 24),
        ((0, 0, 10, 10), (2, 2, 4, 4), 4 / 100),
        ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),
    ],
)
def test_iou_hand_values(a, b, expected):
    np.testing.assert_allclose(metrics.iou([a], [b]), [expected])
    np.testing.assert_allclose(metrics.mean_iou([a, b], [b, a]), expected)


def test_localization_accuracy_uses_the_iou_threshold():
    maps, _, boxes = blob_maps()  # the map's box is (2, 3, 5, 7): 12 pixels
    truth = np.array([[2, 3, 5, 7], [2, 3, 5, 11]])  # IoU 1 and 12 / 24
    np.testing.assert_array_equal(metrics.localization_accuracy(maps, truth), [1.0, 1.0])
    np.testing.assert_array_equal(metrics.localization_accuracy(maps, truth, 0.6), [1.0, 0.0])
    assert metrics.mean_localization_accuracy(maps, truth, 0.6) == 0.5


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: metrics.iou(np.zeros((2, 4)), np.zeros((3, 4))),
         r"expected shape \(2, 4\).*Received: boxes_b.shape=\(3, 4\)"),
        (lambda: metrics.iou(np.zeros((2, 5)), np.zeros((2, 4))),
         r"\(n, 4\).*Received: boxes_a.shape=\(2, 5\)"),
        (lambda: metrics.localization_accuracy(np.ones((2, 4, 4)), np.zeros((1, 4))),
         r"expected shape \(2, 4\).*Received: true_boxes.shape=\(1, 4\)"),
        (lambda: metrics.box_from_heatmap(np.ones((2, 4, 4)), threshold=1.5),
         r"Received: threshold=1.5"),
        (lambda: metrics.box_from_heatmap(np.ones((2, 4, 4)), connectivity=6),
         r"Received: connectivity=6"),
        (lambda: metrics.box_from_heatmap(np.ones((4, 4, 3))[None]),
         r"Received: heatmaps.shape=\(1, 4, 4, 3\)"),
    ],
)
def test_box_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---- faithfulness on a model whose score is a known linear function of one region -----------

SIZE = 16
REGION = (slice(4, 8), slice(8, 12))


def region_mask():
    mask = np.zeros((SIZE, SIZE), bool)
    mask[REGION] = True
    return mask


def linear_model(activation="softmax"):
    """logit_0 - logit_1 = 4 * mean(region pixels) - 2; the rest of the image is ignored."""
    weights = np.zeros((SIZE * SIZE, 2), np.float32)
    weights[region_mask().ravel(), 0] = 4.0 / region_mask().sum()
    inputs = keras.Input((SIZE, SIZE, 1))
    dense = keras.layers.Dense(2, activation=activation)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([weights, np.array([0.0, 2.0], np.float32)])
    return model


def probability_of_class_0(images):
    """The oracle: softmax of the linear model's logits, class 0."""
    return 1.0 / (1.0 + np.exp(-(4.0 * images[:, REGION[0], REGION[1], 0].mean(axis=(1, 2)) - 2)))


@pytest.fixture
def linear_case():
    rng = np.random.default_rng(0)
    images = rng.random((5, SIZE, SIZE, 1), dtype=np.float32) * 0.5
    images[:, REGION[0], REGION[1]] += 0.5  # a bright object where the model looks
    true = np.where(region_mask(), 1.0, 0.1)[None] * rng.uniform(0.8, 1.0, (5, SIZE, SIZE))
    inverted = 1.0 - true
    return images, true.astype(np.float32), inverted.astype(np.float32)


@pytest.mark.parametrize("baseline", [0.0, "blur"])
def test_true_map_beats_inverted_map_on_deletion_and_insertion(linear_case, baseline):
    images, true, inverted = linear_case
    model = linear_model()
    kwargs = {"steps": 16, "baseline": baseline, "batch_size": 8}
    assert (metrics.deletion(model, images, true, 0, **kwargs)
            < metrics.deletion(model, images, inverted, 0, **kwargs)).all()
    assert (metrics.insertion(model, images, true, 0, **kwargs)
            > metrics.insertion(model, images, inverted, 0, **kwargs)).all()
    assert metrics.mean_deletion(model, images, true, 0, **kwargs) < metrics.mean_deletion(
        model, images, inverted, 0, **kwargs
    )


def test_true_map_beats_inverted_map_on_average_drop(linear_case):
    images, true, inverted = linear_case
    model = linear_model()
    good = metrics.average_drop(model, images, true, 0)
    bad = metrics.average_drop(model, images, inverted, 0)
    assert (good < bad).all()
    assert metrics.mean_average_drop(model, images, true, 0) < 0.1 < 0.5 < bad.mean()


def test_average_drop_and_increase_match_the_formula(linear_case):
    images, true, _ = linear_case
    model = linear_model()
    before = probability_of_class_0(images)
    after = probability_of_class_0(images * true[..., None])
    np.testing.assert_allclose(
        metrics.average_drop(model, images, true, 0),
        np.maximum(before - after, 0) / before, rtol=1e-5, atol=1e-6,
    )
    np.testing.assert_array_equal(
        metrics.increase_in_confidence(model, images, true, 0), (after > before).astype(float)
    )
    brighter = np.full_like(true, 1.0)  # the image unchanged: no drop, no increase
    np.testing.assert_allclose(metrics.average_drop(model, images, brighter, 0), 0, atol=1e-6)
    assert metrics.mean_increase_in_confidence(model, images, brighter, 0) == 0.0


def test_deletion_curve_matches_the_oracle_step_by_step(linear_case):
    images, true, _ = linear_case
    model = linear_model()
    curve = metrics.deletion_curve(model, images, true, 0, steps=8, batch_size=3)
    np.testing.assert_allclose(curve.fractions, np.arange(9) / 8)
    order = np.argsort(-true.reshape(5, -1), axis=1, kind="stable")
    expected = np.empty((5, 9))
    for step in range(9):
        removed = np.ones((5, SIZE * SIZE), bool)
        np.put_along_axis(removed, order[:, step * 32 :], False, axis=1)
        expected[:, step] = probability_of_class_0(
            np.where(removed.reshape(5, SIZE, SIZE, 1), 0.0, images)
        )
    np.testing.assert_allclose(curve.scores, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        curve.areas, ((expected[:, 1:] + expected[:, :-1]) / 2).sum(axis=1) / 8, rtol=1e-5
    )


@pytest.mark.parametrize("batch_size", [1, 4, 1000])
def test_batch_size_does_not_change_the_curves(linear_case, batch_size):
    images, true, _ = linear_case
    model = linear_model()
    reference = metrics.insertion_curve(model, images, true, steps=5, batch_size=7)
    curve = metrics.insertion_curve(model, images, true, steps=5, batch_size=batch_size)
    np.testing.assert_allclose(curve.scores, reference.scores, rtol=1e-6)
    assert curve.scores.shape == (5, 6)


def test_logits_model_is_scored_with_a_softmax(linear_case):
    images, true, _ = linear_case
    with_softmax = metrics.deletion(linear_model("softmax"), images, true, 0, steps=4)
    with_logits = metrics.deletion(linear_model(None), images, true, 0, steps=4)
    np.testing.assert_allclose(with_logits, with_softmax, rtol=1e-5)
    raw = metrics.deletion(linear_model(None), images, true, 0, steps=4, activation=None)
    assert not np.allclose(raw, with_softmax)


@pytest.mark.parametrize("activation", ["sigmoid", None])
def test_a_single_unit_is_a_binary_classifier_with_class_1_the_unit(linear_case, activation):
    images, true, _ = linear_case
    inputs = keras.Input((SIZE, SIZE, 1))
    dense = keras.layers.Dense(1, activation=activation)  # z = logit_0 - logit_1 above
    single = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    kernel = np.zeros((SIZE * SIZE, 1), np.float32)
    kernel[region_mask().ravel(), 0] = 4.0 / region_mask().sum()
    dense.set_weights([kernel, np.array([-2.0], np.float32)])
    for unit_class, pair_class in ((1, 0), (0, 1)):
        got = metrics.deletion(single, images, true, unit_class, steps=4)
        expected = metrics.deletion(linear_model(), images, true, pair_class, steps=4)
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    drop = metrics.average_drop(single, images, true, 1)
    np.testing.assert_allclose(drop, metrics.average_drop(linear_model(), images, true, 0),
                               rtol=1e-5)


def test_targets_default_to_the_top1_class(linear_case):
    images, true, _ = linear_case
    model = linear_model()
    top1 = model.predict(images, verbose=0).argmax(axis=1)
    np.testing.assert_allclose(
        metrics.average_drop(model, images, true), metrics.average_drop(model, images, true, top1)
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, x, h: metrics.deletion(m, x[:, :8], h),
         r"spatial size \(5, 16, 16\).*Received: images.shape=\(5, 8, 16, 1\)"),
        (lambda m, x, h: metrics.average_drop(m, x[:3], h),
         r"Received: images.shape=\(3, 16, 16, 1\)"),
        (lambda m, x, h: metrics.average_drop(m, x, h * 3),
         r"\[0, 1\].*Received a maximum"),
        (lambda m, x, h: metrics.insertion(m, x, h, steps=0), r"Received: steps=0"),
        (lambda m, x, h: metrics.insertion(m, x, h, baseline="noise"), r"Received: 'noise'"),
        (lambda m, x, h: metrics.deletion(m, x, h, baseline=np.zeros((3, 3))),
         r"broadcast.*Received: baseline.shape=\(3, 3\)"),
        (lambda m, x, h: metrics.deletion(m, x, h, [0, 1]), r"expected 5 values, received 2"),
        (lambda m, x, h: metrics.deletion(m, x, h, 7), r"\[0, 1\]"),
        (lambda m, x, h: metrics.deletion(m, x, h, batch_size=0), r"Received: batch_size=0"),
        (lambda m, x, h: metrics.deletion(m, x, h, activation="tanh"),
         r"Received: activation='tanh'"),
        (lambda m, x, h: metrics.average_drop(m, x, h, output=1),
         r"one of the model's 1 outputs. Received: output=1"),
    ],
)
def test_faithfulness_errors(linear_case, call, message):
    images, true, _ = linear_case
    with pytest.raises(ValueError, match=message):
        call(linear_model(), images, true)


def test_gaussian_blur_keeps_constant_images():
    flat = np.full((2, 20, 20, 3), 0.25, np.float32)
    np.testing.assert_allclose(metrics.gaussian_blur(flat), flat, atol=1e-6)
    tiny = np.random.default_rng(0).random((1, 4, 4, 1), dtype=np.float32)
    np.testing.assert_allclose(metrics.gaussian_blur(tiny), np.full_like(tiny, tiny.mean()),
                               rtol=1e-6)


# ---- the randomisation check ------------------------------------------------------------------


def test_spearman_ranks_with_ties_and_constant_maps():
    a = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0],
                  [2.0, 2.0, 2.0, 2.0]])
    b = np.array([[10.0, 20.0, 30.0, 40.0], [1.0, 1.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0],
                  [0.0, 1.0, 2.0, 3.0]])
    np.testing.assert_allclose(metrics.spearman(a, b), [1.0, -1.0, 1.0, 0.0])
    np.testing.assert_allclose(metrics.spearman(a[:1], a[:1, ::-1]), [-1.0])


def test_randomized_copy_changes_only_the_chosen_layers(cnn_model):
    before = [w.copy() for w in cnn_model.get_weights()]
    copy = metrics.randomized_copy(cnn_model, [(len(cnn_model.layers) - 1,)])  # the head
    for layer, twin in zip(cnn_model.layers, copy.layers):
        if layer.weights:  # kernels redrawn in the head only (biases start at zero anyway)
            same = np.array_equal(layer.get_weights()[0], twin.get_weights()[0])
            assert same == (layer.name != "head")
    for w, v in zip(before, cnn_model.get_weights()):  # the user's model is untouched
        np.testing.assert_array_equal(w, v)


def cnn(classes=2):
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture
def cnn_model():
    return cnn()


def coloured_squares(n, size=24, side=6, seed=0):
    """Noise with one square per image; its colour channel is the class. Returns boxes too."""
    rng = np.random.default_rng(seed)
    images = rng.random((n, size, size, 3), dtype=np.float32) * 0.3
    labels = rng.integers(0, 2, n)
    corners = rng.integers(0, size - side + 1, (n, 2))
    for image, label, (y, x) in zip(images, labels, corners):
        image[y : y + side, x : x + side, label] = 1.0
    return images, labels, np.concatenate([corners, corners + side], axis=1)


@pytest.fixture(scope="module")
def trained_cnn():
    keras.utils.set_random_seed(0)
    model = cnn()
    images, labels, _ = coloured_squares(256)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=5, batch_size=32, verbose=0)
    return model


def edge_explainer(model):
    """Input-only: gradient magnitude of the image, whatever the model."""

    def explain(images, targets):
        gray = np.asarray(images).mean(axis=-1)
        return np.abs(np.diff(gray, axis=1, append=0)) + np.abs(np.diff(gray, axis=2, append=0))

    return explain


@pytest.mark.slow
def test_randomization_check_separates_gradcam_from_an_edge_map(trained_cnn):
    images, labels, boxes = coloured_squares(12, seed=1)
    assert (trained_cnn.predict(images, verbose=0).argmax(axis=1) == labels).mean() > 0.9
    weights = [w.copy() for w in trained_cnn.get_weights()]
    # The top three weighted layers (conv2, conv3, head): over eight random draws Grad-CAM's
    # mean correlation stayed in [0.09, 0.33]; the head alone gave anywhere in [-0.4, 0.95]
    # and the top two [-0.1, 0.6], depending on the draw (see the docstring).
    gradcam = metrics.randomization_check(GradCAM, trained_cnn, images, layers=3)
    edges = metrics.randomization_check(edge_explainer, trained_cnn, images, layers=3)
    assert gradcam.shape == edges.shape == (12,)
    assert gradcam.mean() < 0.5
    np.testing.assert_allclose(edges, 1.0)
    by_name = metrics.mean_randomization_check(
        lambda m: GradCAM(m, "conv3"), trained_cnn, images, labels,
        layers=["conv2", "conv3", "head"],
    )
    assert by_name < 0.5
    for w, v in zip(weights, trained_cnn.get_weights()):  # the user's model is untouched
        np.testing.assert_array_equal(w, v)
    maps = GradCAM(trained_cnn)(images)
    assert metrics.mean_pointing_game(maps, boxes, tolerance=0) > 0.8


@pytest.mark.parametrize(
    ("layers", "error", "message"),
    [
        (["nope"], ValueError, r"No layer 'nope'.*Received: layers=\['nope'\]"),
        ("gap", ValueError, r"'gap' has no weights"),
        (9, ValueError, r"between 1 and 4.*Received: layers=9"),
    ],
)
def test_randomization_check_errors(cnn_model, layers, error, message):
    with pytest.raises(error, match=message):
        metrics.randomization_check(GradCAM, cnn_model, np.zeros((1, 24, 24, 3)), layers=layers)


# ---- no silent wrong answer: non-finite boxes and images, empty inputs ------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize(
    "call",
    [
        lambda maps, boxes: metrics.energy_in_mask(maps, boxes),
        lambda maps, boxes: metrics.pointing_game(maps, boxes),
        lambda maps, boxes: metrics.iou(boxes, boxes),
        lambda maps, boxes: metrics.iou(np.tile([0, 0, 2, 2], (2, 1)), boxes),
        lambda maps, boxes: metrics.localization_accuracy(maps, boxes),
    ],
)
def test_non_finite_boxes_are_rejected(call, bad):
    maps, _, boxes = blob_maps()
    boxes = boxes.astype(np.float64)
    boxes[1, 2] = bad
    with pytest.raises(ValueError, match=r"NaN or infinite.*Received: .*\[1\]="):
        call(maps, boxes)


def test_mean_iou_of_no_boxes_is_an_error_not_nan():
    with pytest.raises(ValueError, match=r"`boxes_a` is empty. Received: boxes_a.shape=\(0, 4\)"):
        metrics.mean_iou(np.zeros((0, 4)), np.zeros((0, 4)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize(
    "call",
    [
        lambda m, x, h: metrics.average_drop(m, x, h, 0),
        lambda m, x, h: metrics.increase_in_confidence(m, x, h, 0),
        lambda m, x, h: metrics.deletion(m, x, h, 0, steps=4),
        lambda m, x, h: metrics.insertion(m, x, h, 0, steps=4),
    ],
)
def test_non_finite_images_are_rejected(linear_case, call, bad):
    images, true, _ = linear_case
    images = images.copy()
    images[3, 5, 9, 0] = bad
    with pytest.raises(ValueError, match=r"`images` contain NaN or infinite.*images\[3\]"):
        call(linear_model(), images, true)


def test_non_finite_baseline_is_rejected(linear_case):
    images, true, _ = linear_case
    with pytest.raises(ValueError, match=r"`baseline` contain NaN or infinite"):
        metrics.deletion(linear_model(), images, true, 0, steps=4, baseline=np.nan)
