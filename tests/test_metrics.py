"""keras_gradcam.metrics: hand-made oracles, known-linear models, the randomisation check."""

import keras
import numpy as np
import pytest

from keras_gradcam import metrics


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


_ = keras
