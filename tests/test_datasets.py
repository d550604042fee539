"""Offline datasets with a plantable shortcut (demo, notebooks, tests)."""

import socket

import numpy as np
import pytest

from keras_gradcam import datasets


def test_generated_shapes_are_seeded_and_labelled():
    images, labels = datasets.generated_shapes(40, size=28, seed=3)
    again, _ = datasets.generated_shapes(40, size=28, seed=3)
    assert images.shape == (40, 28, 28) and images.dtype == np.uint8
    assert set(labels) <= set(range(len(datasets.SHAPE_CLASSES)))
    np.testing.assert_array_equal(images, again)


def test_striped_disks_differ_only_in_stripe_direction():
    images, labels = datasets.striped_disks(400, seed=0, contrast=0.3)
    again, _ = datasets.striped_disks(400, seed=0, contrast=0.3)
    np.testing.assert_array_equal(images, again)
    assert images.shape == (400, 28, 28) and images.dtype == np.uint8
    assert set(labels) == set(range(len(datasets.STRIPE_CLASSES)))
    x = images.astype(np.float64)

    def along(dy, dx, cls):  # correlation of each pixel with its neighbour at (dy, dx)
        part = x[labels == cls]
        a = part[:, max(dy, 0):28 + min(dy, 0), max(dx, 0):28 + min(dx, 0)]
        b = part[:, max(-dy, 0):28 + min(-dy, 0), max(-dx, 0):28 + min(-dx, 0)]
        return np.corrcoef(a.ravel(), b.ravel())[0, 1]

    steps = [(1, 0), (1, -1), (0, 1), (1, 1)]  # along vertical, "/", horizontal, "\\" stripes
    for cls in range(4):  # each class's stripes run in its named direction
        strongest = max(range(4), key=lambda k: along(*steps[k], cls))
        assert strongest == cls, datasets.STRIPE_CLASSES[cls]
    images, labels = datasets.striped_disks(2000, seed=1)
    means = [images[labels == cls].mean() for cls in range(4)]  # same brightness and size
    assert max(means) - min(means) < 0.03 * np.mean(means)


def test_marker_sits_in_the_class_corner_outside_the_object():
    images = np.zeros((4, 28, 28), np.uint8)
    images[:, 10:18, 10:18] = 200
    labels = np.arange(4)
    x, masks = datasets.place_on_canvas(images, labels, canvas=40, shortcut=True, marker=5)
    assert x.shape == (4, 40, 40, 1) and masks.shape == (4, 40, 40)
    corners = [(slice(0, 5), slice(0, 5)), (slice(0, 5), slice(35, 40)),
               (slice(35, 40), slice(0, 5)), (slice(35, 40), slice(35, 40))]
    for i, (rows, cols) in enumerate(corners):
        assert (x[i, rows, cols, 0] == 1.0).all()
        assert x[i, ..., 0][~masks[i]].sum() == pytest.approx(25.0)  # only the marker outside
    assert masks[:, 16:24, 16:24].all() and masks.sum() == 4 * 64
    clean, _ = datasets.place_on_canvas(images, labels, canvas=40)
    assert clean[..., 0][~masks].sum() == 0


@pytest.mark.skipif(not datasets.fashion_mnist_available(),
                    reason="needs Debian's dataset-fashion-mnist (installed by .ci/run)")
def test_fashion_mnist_from_debian_files():
    images, labels = datasets.load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert np.bincount(labels).tolist() == [1000] * 10


def test_offline_without_files_is_a_clear_error(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        datasets.load_fashion_mnist("train", directory=str(tmp_path))
