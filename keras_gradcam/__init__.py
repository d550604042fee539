"""keras-gradcam: Grad-CAM and the CAM family for Keras 3 / TensorFlow models.

Example:

>>> import keras_gradcam as kgc
>>> cam = kgc.GradCAM(model)            # the last spatial layer, nested backbones included
>>> heatmaps = cam(images)              # float32 (batch, H, W) in [0, 1], top-1 class
>>> pictures = kgc.overlay(images, heatmaps)
"""

import os as _os

__version__ = "0.1.0"

from keras_gradcam.errors import BackendError  # noqa: E402


def _check_backend(name: str) -> None:
    if name != "tensorflow":
        raise BackendError(
            "keras-gradcam needs the TensorFlow backend of Keras, but Keras is set to "
            f"{name!r}. Set the environment variable KERAS_BACKEND=tensorflow before importing "
            "keras (or edit ~/.keras/keras.json), then restart Python."
        )


# Check before importing keras: with another backend, keras may fail on a missing jax/torch.
_check_backend(_os.environ.get("KERAS_BACKEND", "tensorflow"))

import keras as _keras  # noqa: E402

_check_backend(_keras.backend.backend())

from keras_gradcam import errors, metrics  # noqa: E402
from keras_gradcam.callbacks import GradCAMCallback  # noqa: E402
from keras_gradcam.errors import (  # noqa: E402
    InvalidInputError,
    InvalidTargetError,
    LayerNotFoundError,
    ModelNotSupportedError,
    NotSpatialLayerError,
)
from keras_gradcam.explanation import Explanation  # noqa: E402
from keras_gradcam.image import colorize, overlay, plot, save_png  # noqa: E402
from keras_gradcam.methods import (  # noqa: E402
    CAM,
    METHODS,
    BaseCAM,
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    GuidedBackprop,
    GuidedGradCAM,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
    get_method,
)
from keras_gradcam.streaming import iter_explanations  # noqa: E402
from keras_gradcam.writing import (  # noqa: E402
    DatasetExplanation,
    explain_dataset,
    write_explanations,
)

__all__ = [
    "DatasetExplanation",
    "explain_dataset",
    "iter_explanations",
    "write_explanations",
    "CAM",
    "METHODS",
    "EigenCAM",
    "EigenGradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "LayerCAM",
    "ScoreCAM",
    "XGradCAM",
    "get_method",
    "BackendError",
    "BaseCAM",
    "Explanation",
    "GradCAM",
    "GradCAMCallback",
    "InvalidInputError",
    "InvalidTargetError",
    "LayerNotFoundError",
    "ModelNotSupportedError",
    "NotSpatialLayerError",
    "__version__",
    "colorize",
    "errors",
    "metrics",
    "overlay",
    "plot",
    "save_png",
]
