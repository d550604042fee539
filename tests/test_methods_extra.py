"""Issue 18, part B: SS-CAM, IS-CAM, Smooth Grad-CAM++, FullGrad and Deep Feature Factorization
against numpy references written from their papers' formulas. (The method x model x setting
matrix of test_methods.py covers every method of `kgc.METHODS`.)"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_methods import conv_gap_dense, feature_maps, relu

import keras_gradcam as kgc

# ---- SS-CAM and IS-CAM: Score-CAM with averaged mask scores, by brute force ------------------


def np_averaged_score_cam(model, x, targets, variants):
    """Score-CAM's loop with each channel's score averaged over `variants(mask, k)`: a list of
    masks per channel (noisy copies for SS-CAM, scaled ones for IS-CAM)."""
    features = feature_maps(model, "features", x)
    kernel, bias = model.get_layer("dense").get_weights()
    pooled = keras.Model(model.inputs[0], model.get_layer("gap").output)
    size = x.shape[1:3]
    expected = []
    for i, target in enumerate(targets):
        scores = []
        for k in range(features.shape[-1]):
            up = tf.image.resize(features[i, :, :, k][None, :, :, None], size).numpy()[0, ..., 0]
            span = up.max() - up.min()
            mask = (up - up.min()) / span if span > 0 else np.zeros_like(up)
            masked = np.stack([x[i] * m[:, :, None] for m in variants(mask, k)])
            scores.append(np.mean((pooled(masked).numpy() @ kernel + bias)[:, target]))
        weights = np.exp(scores - np.max(scores))
        weights /= weights.sum()
        expected.append(relu(np.einsum("hwk,k->hw", features[i], weights)))
    return np.stack(expected)


@pytest.fixture(scope="module")
def small():
    return conv_gap_dense(activation="softmax", size=8)


@pytest.fixture
def x8():
    return np.random.default_rng(2).random((2, 8, 8, 3), dtype=np.float32)


def test_sscam_averages_the_scores_of_noisy_masks(small, x8):
    cam = kgc.SSCAM(small, samples=3, sigma=0.5, seed=7, batch_size=4)
    got = cam(x8, [0, 2], resize=False, normalize=False)
    noise = [cam.mask_noise((5, 8, 8), j).numpy() for j in range(3)]
    assert not np.allclose(noise[0], noise[1])
    expected = np_averaged_score_cam(
        small, x8, [0, 2], lambda mask, k: [mask + 0.5 * n[k] for n in noise]
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_iscam_integrates_the_mask_from_zero_to_one(small, x8):
    got = kgc.ISCAM(small, samples=4, batch_size=3)(x8, [1, 0], resize=False, normalize=False)
    expected = np_averaged_score_cam(
        small, x8, [1, 0], lambda mask, k: [mask * i / 4 for i in range(1, 5)]
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("cam", [
    lambda m: kgc.SSCAM(m, sigma=0.0, samples=2), lambda m: kgc.ISCAM(m, samples=1),
])
def test_score_cam_variants_reduce_to_score_cam(cam, small, x8):
    expected = kgc.ScoreCAM(small)(x8, [0, 1])
    np.testing.assert_allclose(cam(small)(x8, [0, 1]), expected, atol=1e-5)


def test_sscam_noise_is_seeded(small, x8):
    a = kgc.SSCAM(small, samples=2, sigma=0.3, seed=1)(x8)
    np.testing.assert_array_equal(a, kgc.SSCAM(small, samples=2, sigma=0.3, seed=1)(x8))
    assert not np.allclose(a, kgc.SSCAM(small, samples=2, sigma=0.3, seed=2)(x8), atol=1e-4)


def test_noise_is_standard_normal_and_the_same_under_xla():
    from keras_gradcam.methods.noise import draw_noise

    def draws():  # inside a loop, where XLA's own stateless RNG kernels draw other numbers
        out = tf.TensorArray(tf.float32, size=2)
        body = lambda j, out: (j + 1, out.write(j, draw_noise((64, 64), 5, j)))  # noqa: E731
        return tf.while_loop(lambda j, _: j < 2, body, (tf.constant(0), out))[1].stack()

    plain = tf.function(draws)().numpy()
    np.testing.assert_allclose(tf.function(draws, jit_compile=True)().numpy(), plain, atol=1e-5)
    assert abs(plain.mean()) < 0.05 and abs(plain.std() - 1) < 0.03  # about 4 sigma
    assert abs(np.corrcoef(plain[0].ravel(), plain[1].ravel())[0, 1]) < 0.06


@pytest.mark.parametrize("name", ["sscam", "smoothgradcam++"])
def test_seeded_noise_gives_the_same_maps_with_xla(name, small, x8):
    plain = kgc.get_method(name)(small, samples=2, jit_compile=False)(x8)
    np.testing.assert_allclose(kgc.get_method(name)(small, samples=2, jit_compile=True)(x8),
                               plain, atol=1e-5)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"samples": 0}, "`samples` must be a positive int"),
    ({"sigma": -1.0}, "`sigma` must be a finite number >= 0"),
    ({"sigma": float("nan")}, "`sigma` must be a finite number >= 0"),
])
def test_sscam_checks_its_arguments(kwargs, match, small):
    with pytest.raises(ValueError, match=match):
        kgc.SSCAM(small, **kwargs)


# ---- Smooth Grad-CAM++: averaged gradient powers --------------------------------------------

RNG = np.random.default_rng(5)
A = RNG.integers(0, 4, (2, 3, 3, 3)).astype(np.float32)  # hand-made: zeros and signs
GS = RNG.integers(-2, 3, (4, 2, 3, 3, 3)).astype(np.float32)  # 4 noisy copies


def np_smooth_gradcam_plus_plus(a, gs):
    d1, d2, d3 = gs.mean(axis=0), (gs**2).mean(axis=0), (gs**3).mean(axis=0)
    denominator = 2 * d2 + a.sum(axis=(1, 2), keepdims=True) * d3
    alpha = np.where(denominator != 0, d2 / np.where(denominator == 0, 1, denominator), 0)
    return np.einsum("bhwk,bk->bhw", a, (alpha * relu(d1)).sum(axis=(1, 2)))


def test_smooth_gradcam_plus_plus_hook_matches_numpy(small):
    cam = kgc.SmoothGradCAMPlusPlus(small, samples=4)
    maps = cam.compute_maps(tf.constant(A), tf.constant(GS)).numpy()
    np.testing.assert_allclose(maps, np_smooth_gradcam_plus_plus(A, GS), atol=1e-5)
    assert (maps != 0).any()


def test_smooth_gradcam_plus_plus_on_the_noisy_copies_gradients(small, x8):
    cam = kgc.SmoothGradCAMPlusPlus(small, layer="conv1", samples=3, sigma=0.2, seed=3)
    got = cam(x8, [2, 1], resize=False, normalize=False)
    copies = cam.noisy_copies(tf.constant(x8)).numpy()
    spread = x8.max(axis=(1, 2, 3)) - x8.min(axis=(1, 2, 3))
    np.testing.assert_array_equal(copies[:2], x8)
    noise = (copies[2:].reshape(3, 2, 8, 8, 3) - x8) / (0.2 * spread[None, :, None, None, None])
    np.testing.assert_allclose(noise[:, 0], noise[:, 1], atol=1e-4)  # one pattern per copy
    conv1 = keras.Model(small.inputs[0], small.get_layer("conv1").output)
    kernel, bias = small.get_layer("dense").get_weights()
    grads = []
    for rows in np.split(copies, 4):
        a = tf.constant(conv1(rows).numpy())
        with tf.GradientTape() as tape:
            tape.watch(a)
            pooled = small.get_layer("gap")(small.get_layer("features")(a))
            logits = pooled @ kernel + bias
            score = tf.reduce_sum(tf.gather(logits, [2, 1], axis=1, batch_dims=1))
        grads.append(tape.gradient(score, a).numpy())
    expected = relu(np_smooth_gradcam_plus_plus(conv1(x8).numpy(), np.stack(grads[1:])))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_smooth_gradcam_plus_plus_without_noise_is_gradcam_plus_plus(small, x8):
    layer = "conv1"
    smooth = kgc.SmoothGradCAMPlusPlus(small, layer, sigma=0.0, samples=2)(x8)
    np.testing.assert_allclose(smooth, kgc.GradCAMPlusPlus(small, layer)(x8), atol=1e-5)


# ---- FullGrad: completeness, the per-position bias rule, and psi ----------------------------


def relu_network(head_activation=None):
    """A ReLU network with every kind of bias: conv (fused ReLU), depthwise conv, batch norm
    with non-trivial statistics, max pooling, a nested backbone, dense layers."""
    inner = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inner)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    backbone = keras.Model(inner, keras.layers.ReLU()(x), name="backbone")
    image = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(5, 1, activation="relu", name="c2")(backbone(image))
    x = keras.layers.Dense(6, activation="relu", name="pointwise")(x)  # dense on a map: spatial
    x = keras.layers.Dense(3, activation="relu", name="d1")(keras.layers.Flatten()(x))
    model = keras.Model(image, keras.layers.Dense(3, activation=head_activation, name="out")(x))
    rng = np.random.default_rng(6)
    bn = backbone.get_layer("bn")
    bn.set_weights([rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4),
                    rng.uniform(0.5, 2, 4)])
    for layer in (backbone.get_layer("c1"), backbone.get_layer("dw"), model.get_layer("c2"),
                  model.get_layer("pointwise"), model.get_layer("d1"), model.get_layer("out")):
        layer.bias.assign(rng.normal(0, 0.3, layer.bias.shape))
    return model


@pytest.mark.parametrize("head", [None, "softmax"])
def test_fullgrad_terms_sum_to_the_score(head):
    # The paper's completeness: f(x) = sum(x * df/dx) + sum_l sum(b_l * df/db_l) for a ReLU
    # network, the score taken before the softmax.
    model = relu_network(head)
    x = np.random.default_rng(7).normal(size=(3, 8, 8, 3)).astype(np.float32)
    cam = kgc.FullGrad(model)
    terms, scores = cam.gradient_terms(tf.constant(x), tf.constant([0, 1, 2]))
    assert len(terms) == 1 + 7  # input, c1, bn, dw, c2, pointwise, d1, out
    assert [t.shape.rank for t in terms] == [4, 4, 4, 4, 4, 4, 2, 2]
    total = sum(tf.reduce_sum(t, axis=list(range(1, t.shape.rank))) for t in terms).numpy()
    np.testing.assert_allclose(total, scores.scores.numpy(), rtol=1e-4, atol=1e-4)
    assert np.abs(scores.scores.numpy()).min() > 0.01  # a real test, not 0 = 0
    biases = total - tf.reduce_sum(terms[0], axis=[1, 2, 3]).numpy()
    assert np.abs(biases).min() > 0.01  # the bias terms carry part of the score


def test_fullgrad_conv_bias_term_is_bias_times_the_gradient_at_each_position(small, x8):
    # small: conv1 (relu) -> features (relu) -> GAP -> dense. For `features`, with z its
    # pre-activation output, df/dz_pc = 1[z_pc > 0] * W_c,target / positions.
    cam = kgc.FullGrad(small)
    terms, _ = cam.gradient_terms(tf.constant(x8), tf.constant([2, 0]))
    features = small.get_layer("features")
    before = keras.Model(small.inputs[0], small.get_layer("conv1").output)(x8).numpy()
    kernel, bias = features.get_weights()
    z = tf.nn.conv2d(before, kernel, 1, "SAME").numpy() + bias
    dense = small.get_layer("dense").get_weights()[0]
    expected = bias * (z > 0) * dense[:, [2, 0]].T[:, None, None, :] / (z.shape[1] * z.shape[2])
    np.testing.assert_allclose(terms[2].numpy(), expected, rtol=1e-5, atol=1e-7)


def np_fullgrad(terms, size):
    """The paper's S = sum over terms and channels of psi(term_c): |.|, bilinear upsampling to
    the input, min-max into [0, 1] (terms without spatial axes are left out)."""
    out = 0.0
    for term in terms:
        if term.ndim != 4:
            continue
        up = tf.image.resize(np.abs(term), size).numpy()
        low, high = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
        span = np.where(high > low, high - low, 1)
        out = out + np.where(high > low, (up - low) / span, 0).sum(-1)
    return out


def test_fullgrad_combines_the_terms_as_the_paper(small):
    rng = np.random.default_rng(8)
    terms = [rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 2, 2, 5)),
             rng.normal(size=(2, 7))]
    terms[1][0, :, :, 4] = 0.7  # a constant channel scales to 0
    terms = [t.astype(np.float32) for t in terms]
    got = kgc.FullGrad(small).combine([tf.constant(t) for t in terms], (4, 4)).numpy()
    # 2x2 -> 4x4 bilinear keeps each channel's minimum and maximum (the corners), so scaling
    # before or after the upsampling is the same here.
    np.testing.assert_allclose(got, np_fullgrad(terms, (4, 4)), atol=1e-5)


def test_fullgrad_has_no_layer_and_no_eigen_smooth(small):
    with pytest.raises(ValueError, match="FullGrad .* has no target layer.*layer='conv1'"):
        kgc.FullGrad(small, layer="conv1")
    with pytest.raises(ValueError, match="eigen_smooth"):
        kgc.FullGrad(small, eigen_smooth=True)


# ---- Deep Feature Factorization: NMF, concepts, class scores, pictures ----------------------

from keras_gradcam.methods.deep_feature_factorization import nmf, nmf_init  # noqa: E402


def np_multiplicative_nmf(v, w, h, iterations):
    """Lee & Seung (NIPS 2000), Frobenius norm: H <- H (W'V)/(W'WH), W <- W (VH')/(WHH')."""
    for _ in range(iterations):
        h = h * (w.T @ v) / (w.T @ w @ h + 1e-12)
        w = w * (v @ h.T) / (w @ h @ h.T + 1e-12)
    return w, h


def known_factorization():
    """12 positions x 6 channels = W (12 x 3) H (3 x 6): each position mostly one concept."""
    rng = np.random.default_rng(9)
    w = np.zeros((12, 3))
    w[np.arange(12), np.arange(12) % 3] = rng.uniform(1, 2, 12)
    w[:, :] += 0.05 * rng.random((12, 3))
    h = np.array([[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]], float)
    h += 0.02 * rng.random((3, 6))
    return w, h, (w @ h).astype(np.float32)


def test_nmf_matches_numpy_multiplicative_updates_and_finds_the_concepts():
    w_true, h_true, v = known_factorization()
    w0, h0 = nmf_init(tf.constant(v[None]), 3, seed=4)
    w, h = nmf(tf.constant(v[None]), w0, h0, 400)
    w, h = w.numpy()[0], h.numpy()[0]
    w_np, h_np = np_multiplicative_nmf(v.astype(np.float64), w0.numpy()[0].astype(np.float64),
                                       h0.numpy()[0].astype(np.float64), 400)
    np.testing.assert_allclose(w @ h, w_np @ h_np, rtol=1e-3, atol=1e-4)
    assert np.linalg.norm(v - w @ h) / np.linalg.norm(v) < 0.01
    # Concepts equal the true ones up to order and scale: cosine similarity of matched rows.
    unit = h / np.linalg.norm(h, axis=1, keepdims=True)
    true = h_true / np.linalg.norm(h_true, axis=1, keepdims=True)
    similarity = unit @ true.T
    assert sorted(similarity.argmax(axis=1)) == [0, 1, 2]
    assert similarity.max(axis=1).min() > 0.99


def test_nmf_start_is_seeded_and_batch_independent():
    _, _, v = known_factorization()
    one = nmf_init(tf.constant(v[None]), 3, seed=4)
    two = nmf_init(tf.constant(np.stack([v, 2 * v])), 3, seed=4)
    np.testing.assert_allclose(two[0].numpy()[0], one[0].numpy()[0], rtol=1e-6)
    np.testing.assert_allclose(two[1].numpy()[1], np.sqrt(2) * one[1].numpy()[0], rtol=1e-5)


@pytest.fixture(scope="module")
def logits_model():
    return conv_gap_dense(activation=None)


@pytest.fixture
def images16():
    return np.random.default_rng(10).random((3, 16, 16, 3), dtype=np.float32)


def test_dff_shapes_and_shared_concepts(logits_model, images16):
    dff = kgc.DeepFeatureFactorization(logits_model, n_components=3)
    result = dff(images16)
    assert result.maps.shape == (3, 3, 16, 16) and result.maps.dtype == np.float32
    assert result.concepts.shape == (3, 3, 5) and result.class_scores.shape == (3, 3, 3)
    np.testing.assert_allclose(result.maps.max(axis=(2, 3)), 1.0, atol=1e-6)
    np.testing.assert_allclose(result.concepts[0], result.concepts[1])  # shared across images
    np.testing.assert_allclose(np.linalg.norm(result.concepts, axis=-1), 1.0, atol=1e-5)
    totals = dff(images16, resize=False, normalize=False).maps.sum(axis=(0, 2, 3))
    assert (np.diff(totals) <= 1e-5).all()  # concepts sorted by total weight
    assert ((result.errors > 0) & (result.errors < 1)).all()
    np.testing.assert_array_equal(dff(images16).maps, result.maps)  # deterministic


def test_dff_per_image_is_the_images_one_by_one(logits_model, images16):
    dff = kgc.DeepFeatureFactorization(logits_model, n_components=2, per_image=True)
    batch = dff(images16)
    for i in range(3):
        single = dff(images16[i : i + 1])
        np.testing.assert_allclose(batch.maps[i], single.maps[0], atol=1e-5)
        np.testing.assert_allclose(batch.class_scores[i], single.class_scores[0], atol=1e-5)


def test_dff_class_scores_split_the_logits(logits_model, images16):
    dff = kgc.DeepFeatureFactorization(logits_model, n_components=5, iterations=500)
    raw = dff(images16, resize=False, normalize=False)
    kernel, bias = logits_model.get_layer("dense").get_weights()
    shares = raw.maps.mean(axis=(2, 3))[..., None] * (raw.concepts @ kernel)
    np.testing.assert_allclose(raw.class_scores, shares, rtol=1e-4, atol=1e-6)
    logits = logits_model(images16).numpy()
    bound = raw.errors.max() * np.abs(logits - bias).max() * 3
    np.testing.assert_allclose(raw.class_scores.sum(axis=1) + bias, logits, atol=bound)


def test_dff_without_a_gap_dense_head_has_no_class_scores(images16):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    result = kgc.DeepFeatureFactorization(model, n_components=2)(images16)
    assert result.class_scores is None and result.maps.shape == (3, 2, 16, 16)


def test_draw_concepts_colours_each_pixel_by_its_strongest_concept():
    import matplotlib

    maps = np.zeros((1, 2, 4, 4), np.float32)
    maps[0, 0, :, :2] = 1.0  # concept 0 on the left half
    maps[0, 1, :, 2:] = 0.5  # concept 1 on the right half, at half strength (scaled to 1)
    maps[0, 1, 0, 3] = 1.0
    picture = kgc.image.draw_concepts(np.zeros((1, 4, 4, 3), np.float32), maps, alpha=1.0)
    colours = np.round(matplotlib.colormaps["tab10"]([0, 1])[:, :3] * 255)
    np.testing.assert_array_equal(picture[0, 1, 0], colours[0])
    np.testing.assert_array_equal(picture[0, 0, 3], colours[1])
    np.testing.assert_allclose(picture[0, 1, 3], np.round(colours[1] / 2), atol=1)
    assert picture.dtype == np.uint8 and picture.shape == (1, 4, 4, 3)


# ---- targets with per-image data: chunked equals unchunked ----------------------------------


@pytest.mark.parametrize("method", [
    lambda m: kgc.SSCAM(m, layer="c2", samples=2, batch_size=3),
    lambda m: kgc.SmoothGradCAMPlusPlus(m, layer="c2", samples=2, batch_size=3),
    lambda m: kgc.FullGrad(m, aug_smooth=True, batch_size=3),
], ids=["sscam", "smoothgradcam++", "fullgrad-aug"])
@pytest.mark.parametrize("kind", ["segmentation-masks", "several"])
def test_data_targets_survive_chunks(method, kind):
    from test_targets import MASKS, N, X, seg_model

    from keras_gradcam.targets import Segmentation

    target = Segmentation(1, masks=MASKS) if kind == "segmentation-masks" else [
        [0, 2], [1, 2], [0, 1], [2, 0], [1, 1], [0, 2], [2, 1]]
    cam = method(seg_model())
    whole = cam.explain(X, target, batch_size=N)
    chunked = cam.explain(X, target)
    np.testing.assert_allclose(chunked.heatmaps, whole.heatmaps, atol=1e-5)
    np.testing.assert_allclose(chunked.scores, whole.scores, rtol=1e-5, atol=1e-6)
    assert np.isfinite(whole.heatmaps).all() and whole.heatmaps.max() > 0
