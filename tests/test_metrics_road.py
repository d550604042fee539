"""ROAD (issue 18, part B): noisy linear imputation on hand-made images, and the metric's
behaviour on a linear model whose relevant region is known."""

import keras
import numpy as np
import pytest

import keras_gradcam as kgc
from keras_gradcam.metrics import noisy_linear_imputation, road, road_curve


def ramp(height=7, width=9):
    """Two channels, each a linear function of the position: 0.5 + 0.1 x - 0.05 y and 2 - 0.2 y."""
    y, x = np.mgrid[:height, :width].astype(np.float32)
    return np.stack([0.5 + 0.1 * x - 0.05 * y, 2.0 - 0.2 * y], axis=-1)[None]


def test_a_removed_pixel_inside_a_ramp_gets_the_ramp_value():
    image = ramp()
    removed = np.zeros((1, 7, 9), bool)
    removed[0, 3, 4] = True
    got = noisy_linear_imputation(image, removed, noise=0.0)
    np.testing.assert_allclose(got, image, atol=1e-6)
    holed = image.copy()
    holed[0, 3, 4] = -5.0  # the removed value itself is never read
    np.testing.assert_allclose(noisy_linear_imputation(holed, removed, noise=0.0), image,
                               atol=1e-6)


def test_a_removed_block_inside_a_ramp_is_the_ramp():
    # The weighted neighbour mean of a linear function is its centre value, so the ramp
    # solves the whole linear system: every pixel of a 3x4 hole gets its ramp value.
    image = ramp()
    removed = np.zeros((1, 7, 9), bool)
    removed[0, 2:5, 3:7] = True
    holed = np.where(removed[..., None], 0.0, image)
    np.testing.assert_allclose(noisy_linear_imputation(holed, removed, noise=0.0), image,
                               atol=1e-5)


def test_a_corner_pixel_is_the_mean_of_its_neighbours_inside_the_image():
    image = np.arange(12, dtype=np.float32).reshape(1, 3, 4) ** 2  # not linear
    removed = np.zeros((1, 3, 4), bool)
    removed[0, 0, 0] = True
    right, below, diagonal = image[0, 0, 1], image[0, 1, 0], image[0, 1, 1]
    expected = (right / 6 + below / 6 + diagonal / 12) / (1 / 6 + 1 / 6 + 1 / 12)
    got = noisy_linear_imputation(image, removed, noise=0.0)
    assert got[0, 0, 0] == pytest.approx(expected, rel=1e-6)
    np.testing.assert_array_equal(got[~removed], image[~removed])


def np_linear_imputation(image, removed):
    """The paper's system, dense: for each removed p, sum_q w_q (x_p - x_q) = 0 over its
    neighbours q inside the image (w = 1/6 direct, 1/12 diagonal), kept x_q known."""
    height, width = removed.shape
    unknown = {p: i for i, p in enumerate(zip(*np.nonzero(removed)))}
    system = np.zeros((len(unknown), len(unknown)))
    rhs = np.zeros((len(unknown), image.shape[-1]))
    for (y, x), i in unknown.items():
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                q = (y + dy, x + dx)
                if (dy, dx) == (0, 0) or not (0 <= q[0] < height and 0 <= q[1] < width):
                    continue
                w = 1 / 12 if dy and dx else 1 / 6
                system[i, i] += w
                if q in unknown:
                    system[i, unknown[q]] -= w
                else:
                    rhs[i] += w * image[q]
    out = image.astype(np.float64).copy()
    out[removed] = np.linalg.solve(system, rhs)
    return out


def test_imputation_solves_the_papers_linear_system():
    rng = np.random.default_rng(1)
    images = rng.random((2, 12, 10, 3)).astype(np.float32)
    removed = rng.random((2, 12, 10)) < 0.7
    got = noisy_linear_imputation(images, removed, noise=0.0)
    for i in range(2):
        np.testing.assert_allclose(got[i], np_linear_imputation(images[i], removed[i]),
                                   atol=1e-4)


def test_noise_lands_on_removed_pixels_only_and_is_seeded():
    image = np.repeat(ramp(16, 16), 2, axis=0)
    removed = np.zeros((2, 16, 16), bool)
    removed[:, 4:12, 4:12] = True
    clean = noisy_linear_imputation(image, removed, noise=0.0)
    noisy = noisy_linear_imputation(image, removed, noise=0.1, seed=3)
    np.testing.assert_array_equal(noisy[~removed], image[~removed])
    assert np.std(noisy[removed] - clean[removed]) == pytest.approx(0.1, rel=0.15)
    np.testing.assert_array_equal(noisy, noisy_linear_imputation(image, removed, noise=0.1,
                                                                 seed=3))
    first = noisy_linear_imputation(image[:1], removed[:1], noise=0.1, seed=3)
    np.testing.assert_array_equal(first, noisy[:1])  # a sample's noise does not depend on n


@pytest.fixture(scope="module")
def linear_model():
    """Class 1's logit is the sum of the 3x3 block at rows/cols 2..4; class 0's is 0."""
    inputs = keras.Input((8, 8, 1))
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    kernel = np.zeros((64, 2), np.float32)
    region = np.zeros((8, 8), bool)
    region[2:5, 2:5] = True
    kernel[region.reshape(-1), 1] = 1.0
    dense.set_weights([kernel, np.zeros(2, np.float32)])
    return model, region


def test_road_follows_the_known_relevant_region(linear_model):
    model, region = linear_model
    rng = np.random.default_rng(0)
    images = (0.5 * region + 0.05 * rng.random((3, 8, 8))).astype(np.float32)[..., None]
    good = np.broadcast_to(region + 0.01 * rng.random((8, 8)), (3, 8, 8)).astype(np.float32)
    bad = (1.02 - good).astype(np.float32)
    flat = np.repeat(0.5 * region[None, ..., None], 3, axis=0).astype(np.float32)
    curve = road_curve(model, flat, good, 1, order="morf", noise=0.0)
    assert (np.diff(curve.scores, axis=1) <= 1e-6).all()  # monotone: more removed, lower
    assert (curve.scores[:, 0] < curve.original - 0.01).all()
    np.testing.assert_allclose(curve.scores[:, 1:], 0.5, atol=1e-5)  # the region is gone
    curve = road_curve(model, images, good, 1, order="morf")
    assert (curve.scores[:, -1] < curve.original - 0.4).all()
    np.testing.assert_allclose(curve.changes, curve.scores - curve.original[:, None])
    morf_good, morf_bad = road(model, images, good, 1), road(model, images, bad, 1)
    lerf_good = road(model, images, good, 1, order="lerf")
    lerf_bad = road(model, images, bad, 1, order="lerf")
    assert (morf_good < morf_bad - 0.2).all() and (lerf_good > lerf_bad + 0.2).all()
    np.testing.assert_allclose(lerf_good, 0.0, atol=0.02)  # the background never counts
    assert kgc.metrics.mean_road(model, images, good, 1) == pytest.approx(morf_good.mean())


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"order": "first"}, "`order` must be 'morf' or 'lerf'"),
    ({"percentiles": [10, 120]}, r"`percentiles` must be numbers in \[0, 100\]"),
    ({"noise": -1.0}, "`noise` must be a finite number >= 0"),
])
def test_road_checks_its_arguments(kwargs, match, linear_model):
    model, _ = linear_model
    images = np.zeros((1, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match=match):
        road(model, images, np.ones((1, 8, 8), np.float32), **kwargs)
