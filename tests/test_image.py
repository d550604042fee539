"""Pictures: overlay, colour maps, PNG export, plots."""

import matplotlib.image
import numpy as np
import pytest

import keras_gradcam as kgc
from keras_gradcam.image import displayable


@pytest.fixture
def heatmaps():
    maps = np.zeros((2, 4, 4), np.float32)
    maps[:, 1, 2] = 1.0
    return maps


def test_overlay_accepts_uint8_and_float_scales_alike(heatmaps):
    rng = np.random.default_rng(0)
    uint8 = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    out = kgc.overlay(uint8, heatmaps)
    assert out.dtype == np.uint8 and out.shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(kgc.overlay(uint8 / 255.0, heatmaps), out)
    np.testing.assert_array_equal(kgc.overlay(uint8.astype(np.float32), heatmaps), out)


def test_overlay_grayscale_single_and_larger_display_image(heatmaps):
    gray = np.full((2, 32, 32), 0.5, np.float32)
    out = kgc.overlay(gray, heatmaps)
    assert out.shape == (2, 32, 32, 3)
    assert kgc.overlay(gray[0, ..., None], heatmaps[0]).shape == (32, 32, 3)
    hot = out[0, 8:16, 16:24].astype(float)  # where the heatmap peaks, jet is red
    assert hot[..., 0].mean() > hot[..., 2].mean()


def test_overlay_follows_the_seed_display_steps():
    image = np.zeros((1, 2, 2, 3), np.uint8)
    image[0, 0, 0] = 255
    heatmap = np.array([[[0.0, 0.0], [0.0, 2.0]]], np.float32)  # scaled to its max first
    colour = kgc.colorize(np.array([[[0.0, 0.0], [0.0, 1.0]]]))
    mixed = image / 255.0 + 0.4 * colour
    expected = np.round((mixed - mixed.min()) / (mixed.max() - mixed.min()) * 255)
    np.testing.assert_allclose(kgc.overlay(image, heatmap, alpha=0.4), expected, atol=1)


def test_overlay_rejects_mismatched_counts(heatmaps):
    with pytest.raises(ValueError, match="one map per image"):
        kgc.overlay(np.zeros((3, 8, 8, 3)), heatmaps)


def test_save_png_round_trip(tmp_path, heatmaps):
    picture = kgc.overlay(np.zeros((2, 8, 8, 3), np.uint8), heatmaps)
    path = kgc.save_png(tmp_path / "sub" / "a.png", picture[0])
    loaded = matplotlib.image.imread(path)
    np.testing.assert_array_equal(np.round(loaded[..., :3] * 255).astype(np.uint8), picture[0])


def test_plot_returns_a_grid_figure(heatmaps):
    figure = kgc.plot(np.zeros((2, 8, 8, 3)), heatmaps, titles=["a", "b"], cols=1)
    assert len(figure.axes) == 2 and figure.axes[1].get_title() == "b"


def test_draw_overlays_heatmaps_and_shows_guided_images_as_they_are(heatmaps):
    images = np.zeros((2, 8, 8, 3))
    np.testing.assert_array_equal(kgc.image.draw(images, heatmaps), kgc.overlay(images, heatmaps))
    guided = np.full((2, 8, 8, 1), 0.5, np.float32)  # a guided image: zero gradient everywhere
    guided[0, 2, 3] = 1.0
    pictures = kgc.image.draw(images, guided)
    assert pictures.shape == (2, 8, 8, 3) and pictures.dtype == np.uint8
    assert (pictures[0, 2, 3] == 255).all() and (pictures[1] == 128).all()
    figure = kgc.plot(images, guided)
    assert (figure.axes[0].images[0].get_array() == pictures[0]).all()


@pytest.mark.parametrize("name", ["gradcam", "guided-backprop", "guided-gradcam"])
def test_overlay_draws_every_methods_result_like_plot(name, images):
    # The README's methods loop followed by its overlay example.
    from conftest import small_cnn

    explainer = kgc.get_method(name)(small_cnn())
    maps = explainer(images)
    pictures = kgc.overlay(images, maps)
    assert pictures.shape == (4, 16, 16, 3) and pictures.dtype == np.uint8
    np.testing.assert_array_equal(kgc.overlay(images, explainer.explain(images)), pictures)
    np.testing.assert_array_equal(kgc.image.draw(images, maps), pictures)
    if maps.ndim == 4:  # guided images are shown as they are, as `plot` shows them
        expected = np.round(np.clip(maps, 0, 1) * 255).astype(np.uint8)
        np.testing.assert_array_equal(pictures, expected)


def test_overlay_names_the_fix_for_several_classes_per_image():
    with pytest.raises(ValueError, match=r"one class at a time.*heatmaps\[:, k\]"):
        kgc.overlay(np.zeros((2, 8, 8, 3)), np.zeros((2, 3, 4, 4), np.float32))


def test_panels_and_grid_cells_are_separated_by_dark_lines():
    from keras_gradcam.image import GAP, grid, side_by_side

    white = np.full((3, 4, 4, 3), 255, np.uint8)
    pair = side_by_side([white[0], white[1]])
    assert pair.shape == (4, 8 + GAP, 3)
    assert (pair[:, 4 : 4 + GAP] == 32).all() and (pair[:, :4] == 255).all()
    cells = grid(white)  # 2 x 2 cells, the last one empty
    assert (cells[4 : 4 + GAP] == 32).all() and (cells[:, 4 : 4 + GAP] == 32).all()
    assert (cells[-4:, -4:] == 32).all()


def test_displayable_scales_preprocessed_inputs_per_image():
    ramp = np.linspace(0, 1, 48).reshape(4, 4, 3)
    x = np.stack([2 * ramp - 1, 2 * ramp - 3])  # in [-1, 1] and [-3, -1]
    out = displayable(x.astype(np.float32))
    assert out.shape == (2, 4, 4, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)  # each image min-max scaled alone
    assert out.min() == 0.0 and out.max() == 1.0
    plain = np.full((1, 5, 6), 0.5, np.float32)  # no negative value: as to_unit_rgb
    np.testing.assert_array_equal(displayable(plain), kgc.image.to_unit_rgb(plain))
    with pytest.raises(ValueError, match="5 channels cannot be drawn"):
        displayable(np.zeros((1, 4, 4, 5)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_save_png_refuses_non_finite_images_and_writes_nothing(tmp_path, bad):
    image = np.full((4, 4, 3), 0.5, np.float32)
    image[1, 2, 0] = bad
    with pytest.raises(ValueError, match=r"NaN or infinite.*Received: 1 of 48 values"):
        kgc.save_png(tmp_path / "a.png", image)
    assert not (tmp_path / "a.png").exists()
