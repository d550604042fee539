"""Ablation-CAM, KPCA-CAM, FEM, Finer-CAM and Shapley-CAM against numpy references written from
their papers' formulas (the method x model x setting matrix in test_methods.py covers them too:
batches equal their samples one by one, nested and multi-input models, mixed precision)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gradcam as kgc

RNG = np.random.default_rng(0)
# Hand-made feature maps: 2 samples, 3x3 positions, 4 channels, with zeros and repeats.
A = RNG.integers(0, 4, (2, 3, 3, 4)).astype(np.float32)


def relu(x):
    return np.maximum(x, 0)


def conv_gap_dense(classes=3, size=8, skip=False):
    """conv1 -> features (-> + conv1 when `skip`) -> GAP -> dense (softmax)."""
    inputs = keras.Input((size, size, 3), name="image")
    first = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="features")(first)
    if skip:
        x = keras.layers.Add(name="add")([first, x])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax", name="dense")(x))


def outputs_of(model, names, x):
    return keras.Model(model.inputs[0], [model.get_layer(n).output for n in names])(x)


# ---- Ablation-CAM ----------------------------------------------------------------------------


def np_ablation_cam(features, logits_of, targets, channels=None):
    """The paper's eq. 2-3: w_k = (y^c - y^c_k) / y^c with channel k of A zeroed."""
    maps = []
    for i, target in enumerate(targets):
        a = features[i]
        score = logits_of(a, i)[target]
        chosen = range(a.shape[-1]) if channels is None else channels[i]
        weights = []
        for k in chosen:
            ablated = a.copy()
            ablated[..., k] = 0
            weights.append((score - logits_of(ablated, i)[target]) / score)
        maps.append(relu(np.einsum("hwk,k->hw", a[..., list(chosen)], np.array(weights))))
    return np.stack(maps)


@pytest.mark.parametrize("max_channels", [None, 2])
def test_ablation_cam_matches_the_papers_formula(max_channels):
    model = conv_gap_dense()
    x = np.random.default_rng(2).random((2, 8, 8, 3), dtype=np.float32)
    targets = [0, 2]
    cam = kgc.AblationCAM(model, batch_size=3, max_channels=max_channels)  # 3 does not divide 8
    got = cam(x, targets, resize=False, normalize=False)
    features = outputs_of(model, ["features"], x).numpy()
    kernel, bias = model.get_layer("dense").get_weights()
    channels = None
    if max_channels:
        channels = [np.argsort(-f.var(axis=(0, 1)), kind="stable")[:max_channels] for f in features]
    expected = np_ablation_cam(features, lambda a, i: a.mean(axis=(0, 1)) @ kernel + bias,
                               targets, channels)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert got.max() > 0


def test_ablation_cam_keeps_what_a_skip_connection_carries_past_the_layer():
    model = conv_gap_dense(skip=True)  # the ablated layer's input also reaches the head
    x = np.random.default_rng(3).random((3, 8, 8, 3), dtype=np.float32)
    got = kgc.AblationCAM(model, layer="features")(x, 1, resize=False, normalize=False)
    first, features = (t.numpy() for t in outputs_of(model, ["conv1", "features"], x))
    kernel, bias = model.get_layer("dense").get_weights()
    head = lambda a, i: (first[i] + a).mean(axis=(0, 1)) @ kernel + bias  # noqa: E731
    np.testing.assert_allclose(got, np_ablation_cam(features, head, [1, 1, 1]), rtol=1e-4,
                               atol=1e-5)


def test_ablation_cam_zero_score_gives_zero_weights():
    inputs = keras.Input((4, 4, 1))
    x = keras.layers.Conv2D(2, 1, use_bias=False, kernel_initializer="ones", name="features")(
        inputs)  # two equal channels A
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(2, use_bias=False)
    model = keras.Model(inputs, dense(x))
    dense.set_weights([np.array([[1.0, 0.5], [-1.0, 0.5]], np.float32)])  # y = [0, mean A]
    x = np.random.default_rng(4).random((2, 4, 4, 1), dtype=np.float32) + 0.1
    cam = kgc.AblationCAM(model)
    np.testing.assert_array_equal(cam(x, 0, normalize=False), 0)  # y^0 = 0: no inf, no NaN
    # y^1 = m, each channel's ablation leaves m / 2: w = 1/2 and the map is A.
    np.testing.assert_allclose(cam(x, 1, resize=False, normalize=False), x[..., 0], rtol=1e-5)


def test_ablation_cam_rejects_bad_max_channels():
    with pytest.raises(ValueError, match="max_channels"):
        kgc.AblationCAM(conv_gap_dense(), max_channels=0)


# ---- KPCA-CAM --------------------------------------------------------------------------------


def np_kpca_cam(a, gamma=None):
    """Kernel PCA (Schoelkopf et al. 1998) over positions: the projection of each centred
    feature-space point on the first unit principal axis, signed to correlate with sum_k A.
    `gamma=None`: 1 / the mean squared distance between positions."""
    out = []
    for sample in a:
        x = sample.reshape(-1, sample.shape[-1]).astype(np.float64)
        n = len(x)
        squared = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        kernel = np.exp(-(1 / squared.mean() if gamma is None else gamma) * squared)
        centring = np.eye(n) - np.full((n, n), 1 / n)
        centred = centring @ kernel @ centring
        values, vectors = np.linalg.eigh(centred)
        assert values[-1] - values[-2] > 1e-3 * values[-1]  # a well-defined first component
        axis = vectors[:, -1]  # v = sum_i axis_i phi~(x_i) / sqrt(lambda) has unit norm
        projection = centred @ axis / np.sqrt(values[-1])  # <phi~(x_j), v>
        strength = x.sum(-1)
        if projection @ (strength - strength.mean()) < 0:
            projection = -projection
        out.append(projection.reshape(sample.shape[:-1]))
    return np.stack(out)


@pytest.mark.parametrize("gamma", [None, 0.3])
def test_kpca_cam_matches_kernel_pca(gamma):
    cam = kgc.KPCACAM(conv_gap_dense(), gamma=gamma)
    maps = cam.compute_maps(tf.constant(A), None).numpy()
    np.testing.assert_allclose(maps, np_kpca_cam(A, gamma), atol=2e-5)


def test_kpca_cam_default_gamma_follows_the_activations_scale():
    cam = kgc.KPCACAM(conv_gap_dense())
    maps = cam.compute_maps(tf.constant(A), None).numpy()
    scaled = cam.compute_maps(tf.constant(A * 50), None).numpy()
    np.testing.assert_allclose(scaled, maps, rtol=1e-3, atol=1e-5)  # gamma scales by 1/2500


def test_kpca_cam_highlights_the_strong_positions_and_ignores_the_target():
    a = np.full((1, 5, 5, 3), 0.1, np.float32)
    a[0, 1:3, 2:4] = [2.0, 1.0, 3.0]  # a strong object on a weak, uniform background
    cam = kgc.KPCACAM(conv_gap_dense())
    maps = tf.nn.relu(cam.compute_maps(tf.constant(a), None)).numpy()[0]
    assert maps[1:3, 2:4].min() > 0 and maps.sum() == pytest.approx(maps[1:3, 2:4].sum())
    flat = np.zeros_like(a)
    np.testing.assert_allclose(cam.compute_maps(tf.constant(flat), None).numpy(), 0, atol=1e-6)
    x = np.random.default_rng(5).random((2, 8, 8, 3), dtype=np.float32)
    np.testing.assert_allclose(cam(x, 0), cam(x, 2), atol=1e-6)


@pytest.mark.parametrize("gamma", [0, -1.0, float("nan"), "auto", True])
def test_kpca_cam_rejects_bad_gamma(gamma):
    with pytest.raises(ValueError, match="gamma"):
        kgc.KPCACAM(conv_gap_dense(), gamma=gamma)


# ---- FEM -------------------------------------------------------------------------------------


# Hand-made maps with peaks: 2 samples, 4x4 positions, 3 channels.
PEAKED = RNG.integers(0, 3, (2, 4, 4, 3)).astype(np.float32)
PEAKED[0, 1, 2, 0] = PEAKED[0, 3, 0, 1] = PEAKED[1, 0, 0, 2] = PEAKED[1, 2, 3, 0] = 12.0


def np_fem(a, k):
    """The paper's k-sigma rule: B^k = 1[A^k > mu_k + k sigma_k], L = sum_k mu_k B^k."""
    mean = a.mean(axis=(1, 2), keepdims=True)
    threshold = mean + k * a.std(axis=(1, 2), keepdims=True)  # population std over positions
    assert np.abs(a - threshold).min() > 1e-3  # no response at the threshold itself
    return ((a > threshold) * mean).sum(-1)


@pytest.mark.parametrize("k", [2.0, 1.0, 0.5])
def test_fem_matches_the_k_sigma_rule(k):
    cam = kgc.FEM(conv_gap_dense(), k=k)
    maps = cam.compute_maps(tf.constant(PEAKED), None).numpy()
    expected = np_fem(PEAKED.astype(np.float64), k)
    np.testing.assert_allclose(maps, expected, atol=1e-5)
    assert (expected > 0).mean() < 0.5 and expected.max() > 0


def test_fem_drops_constant_channels_and_ignores_the_target():
    a = np.zeros((1, 3, 3, 2), np.float32)
    a[..., 0] = 5.0  # constant: sigma = 0, nothing is above the mean
    a[0, 1, 1, 1] = 9.0  # one outlier: mean 1, std 2 sqrt(2) ~ 2.83, 9 > 1 + 2 * 2.83
    maps = kgc.FEM(conv_gap_dense()).compute_maps(tf.constant(a), None).numpy()
    expected = np.zeros((1, 3, 3), np.float32)
    expected[0, 1, 1] = 1.0
    np.testing.assert_allclose(maps, expected, atol=1e-6)
    x = np.random.default_rng(6).random((2, 8, 8, 3), dtype=np.float32)
    cam = kgc.FEM(conv_gap_dense())
    np.testing.assert_allclose(cam(x, 0), cam(x, 1), atol=1e-6)


def test_fem_rejects_a_bad_k():
    with pytest.raises(ValueError, match="`k` must be"):
        kgc.FEM(conv_gap_dense(), k="2")


# ---- Finer-CAM -------------------------------------------------------------------------------


def np_contrast(scores, ids, references, alpha):
    """The paper's score y^c - alpha * mean(y^d), d the classes closest to y^c in score."""
    out = []
    for row, c in zip(scores, ids):
        others = [d for d in np.argsort(np.abs(row - row[c]), kind="stable") if d != c]
        out.append(row[c] - alpha * row[others[:references]].mean())
    return np.array(out)


@pytest.mark.parametrize(("references", "alpha"), [(3, 1.0), (1, 0.5), (9, 1.0)])
def test_finer_cam_contrast_score_matches_the_paper(references, alpha):
    from keras_gradcam.methods.finer_cam import contrast_scores

    scores = np.array([[5.0, 4.4, 1.0, 4.9, -2.0, 3.2], [0.0, 1.1, 2.3, 3.6, 4.0, 5.0]], np.float32)
    ids = np.array([0, 3], np.int32)
    got = contrast_scores(tf.constant(scores), tf.constant(ids), references, alpha).numpy()
    np.testing.assert_allclose(got, np_contrast(scores, ids, references, alpha), rtol=1e-6)


@pytest.mark.parametrize("targets", [None, [4, 1, 0]])
def test_finer_cam_is_gradcam_of_the_contrast(targets):
    model = conv_gap_dense(classes=6)
    x = np.random.default_rng(7).random((3, 8, 8, 3), dtype=np.float32)
    explanation = kgc.FinerCAM(model).explain(x, targets, resize=False, normalize=False)
    features = outputs_of(model, ["features"], x).numpy()
    kernel, bias = model.get_layer("dense").get_weights()
    logits = features.mean(axis=(1, 2)) @ kernel + bias
    ids = logits.argmax(-1) if targets is None else np.array(targets)
    np.testing.assert_array_equal(explanation.targets, ids)
    np.testing.assert_allclose(explanation.scores, np_contrast(logits, ids, 3, 1.0), rtol=1e-4,
                               atol=1e-5)
    # d s / dA = (W_c - mean_d W_d) / (h w) at every position: Grad-CAM's weights of s.
    expected = []
    for i, c in enumerate(ids):
        others = [d for d in np.argsort(np.abs(logits[i] - logits[i, c]), kind="stable") if d != c]
        weights = (kernel[:, c] - kernel[:, others[:3]].mean(-1)) / 64
        expected.append(relu(features[i] @ weights))
    np.testing.assert_allclose(explanation.heatmaps, np.stack(expected), rtol=1e-4, atol=1e-6)


def test_finer_cam_with_alpha_zero_is_gradcam_and_refuses_callables(images):
    model = conv_gap_dense(classes=6, size=16)
    np.testing.assert_allclose(kgc.FinerCAM(model, alpha=0)(images, 2),
                               kgc.GradCAM(model)(images, 2), atol=1e-6)
    with pytest.raises(kgc.ModelNotSupportedError, match="callable target"):
        kgc.FinerCAM(model)(images, lambda y: y[:, 0])


@pytest.mark.parametrize(("option", "value"), [("references", 0), ("alpha", "1"),
                                               ("alpha", float("inf"))])
def test_finer_cam_rejects_bad_options(option, value):
    with pytest.raises(ValueError, match=option):
        kgc.FinerCAM(conv_gap_dense(), **{option: value})


# ---- Shapley-CAM -----------------------------------------------------------------------------


def np_shapley_cam_softmax_head(features, kernel, bias, ids):
    """w = mean_ij (g - HA / 2) for y = softmax(W^T mean(A) + b)_c, from the closed forms
    dp_c/dz = p_c (e_c - p), d2p_c/dz2 = p_c ((e_c - p)(e_c - p)^T - diag(p) + p p^T) and
    dz/dA_ijk = W_k / (h w) (the same at every position)."""
    maps = []
    for a, c in zip(features, ids):
        positions = a.shape[0] * a.shape[1]
        z = a.mean(axis=(0, 1)) @ kernel + bias
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        e = np.eye(len(p))[c]
        gradient_z = p[c] * (e - p)
        hessian_z = p[c] * (np.outer(e - p, e - p) - np.diag(p) + np.outer(p, p))
        g = kernel @ gradient_z / positions  # d y / dA_ijk, per channel k
        hessian_times_a = kernel @ (hessian_z @ (a.mean(axis=(0, 1)) @ kernel)) / positions
        maps.append(relu(a @ (g - 0.5 * hessian_times_a)))
    return np.stack(maps)


def test_shapley_cam_matches_the_closed_form_on_a_softmax_head():
    model = conv_gap_dense(classes=4)
    dense = model.get_layer("dense")
    dense.set_weights([dense.kernel.numpy() * 8, dense.bias.numpy()])  # a curved softmax
    x = np.random.default_rng(8).random((3, 8, 8, 3), dtype=np.float32)
    ids = [1, 3, 0]
    got = kgc.ShapleyCAM(model, score="probability")(x, ids, resize=False, normalize=False)
    features = outputs_of(model, ["features"], x).numpy().astype(np.float64)
    kernel, bias = (w.astype(np.float64) for w in dense.get_weights())
    expected = np_shapley_cam_softmax_head(features, kernel, bias, ids)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
    grad = kgc.GradCAM(model, score="probability")(x, ids, resize=False, normalize=False)
    assert np.abs(got - grad).max() > 0.05 * np.abs(grad).max()  # HA / 2 matters here


def test_shapley_cam_is_gradcam_where_the_score_is_linear_in_the_maps(images):
    model = conv_gap_dense(classes=3, size=16)  # logits: linear in A
    np.testing.assert_allclose(kgc.ShapleyCAM(model)(images, [0, 1, 2, 1]),
                               kgc.GradCAM(model)(images, [0, 1, 2, 1]), atol=1e-6)
