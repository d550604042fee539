"""Metrics for explanations: localisation, faithfulness and sanity checks.

Convention: every metric `f(...)` returns one value per sample, a float64 numpy array `(n,)`,
and its twin `mean_f(...)` (same arguments) returns the mean over the samples as a float, like
xplique's `detailed_evaluate` / `evaluate` split. (`box_from_heatmap` returns one box per
sample, `deletion_curve`/`insertion_curve` the whole curves.)

Objects are bool masks `(n, H, W)` or boxes `(n, 4)` in pixel coordinates `(y0, x0, y1, x1)`,
start inclusive and end exclusive (the box covers `mask[y0:y1, x0:x1]`).

Example:

>>> cam = keras_gradcam.GradCAM(model)
>>> maps = cam(images)
>>> metrics.pointing_game(maps, boxes)      # (n,) of 1.0 / 0.0; tolerance 15 px at 224x224
>>> metrics.mean_energy_in_mask(maps, boxes)                 # a float in [0, 1]
>>> metrics.mean_deletion(model, images, maps, steps=50)     # RISE deletion area, lower is better
>>> metrics.mean_road(model, images, maps, order="morf")     # ROAD, lower is better
"""

from keras_gradcam.metrics.faithfulness import (
    average_drop,
    increase_in_confidence,
    mean_average_drop,
    mean_increase_in_confidence,
)
from keras_gradcam.metrics.localization import (
    box_from_heatmap,
    energy_in_mask,
    iou,
    localization_accuracy,
    mean_energy_in_mask,
    mean_iou,
    mean_localization_accuracy,
    mean_pointing_game,
    pointing_game,
)
from keras_gradcam.metrics.perturbation import (
    PerturbationCurve,
    deletion,
    deletion_curve,
    gaussian_blur,
    insertion,
    insertion_curve,
    mean_deletion,
    mean_insertion,
)
from keras_gradcam.metrics.road import (
    RoadCurve,
    mean_road,
    noisy_linear_imputation,
    road,
    road_curve,
)
from keras_gradcam.metrics.sanity import (
    mean_randomization_check,
    randomization_check,
    randomized_copy,
    spearman,
)

__all__ = [
    "PerturbationCurve",
    "RoadCurve", "mean_road", "noisy_linear_imputation", "road", "road_curve",  # issue 18 B
    "average_drop",
    "box_from_heatmap",
    "deletion",
    "deletion_curve",
    "energy_in_mask",
    "gaussian_blur",
    "increase_in_confidence",
    "insertion",
    "insertion_curve",
    "iou",
    "localization_accuracy",
    "mean_average_drop",
    "mean_deletion",
    "mean_energy_in_mask",
    "mean_increase_in_confidence",
    "mean_insertion",
    "mean_iou",
    "mean_localization_accuracy",
    "mean_pointing_game",
    "mean_randomization_check",
    "pointing_game",
    "randomization_check",
    "randomized_copy",
    "spearman",
]
