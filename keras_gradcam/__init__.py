"""keras-gradcam: Grad-CAM and the CAM family for Keras 3 / TensorFlow models.

Example:

>>> import keras_gradcam as kgc
>>> cam = kgc.GradCAM(model)            # the last spatial layer, nested backbones included
>>> heatmaps = cam(images)              # float32 (batch, H, W) in [0, 1], top-1 class
>>> pictures = kgc.overlay(images, heatmaps)
"""

import os as _os

__version__ = "0.1.0"

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras as _keras  # noqa: E402

from keras_gradcam.errors import BackendError  # noqa: E402

if _keras.backend.backend() != "tensorflow":
    raise BackendError(
        "keras-gradcam needs the TensorFlow backend of Keras, but Keras is running on "
        f"{_keras.backend.backend()!r}. Set the environment variable KERAS_BACKEND=tensorflow "
        "before importing keras (or in ~/.keras/keras.json), then restart Python."
    )

from keras_gradcam import errors  # noqa: E402
from keras_gradcam.errors import (  # noqa: E402
    InvalidInputError,
    InvalidTargetError,
    LayerNotFoundError,
    ModelNotSupportedError,
    NotSpatialLayerError,
)
from keras_gradcam.image import colorize, overlay, plot, save_png  # noqa: E402
from keras_gradcam.methods import BaseCAM, Explanation, GradCAM  # noqa: E402

__all__ = [
    "BackendError",
    "BaseCAM",
    "Explanation",
    "GradCAM",
    "InvalidInputError",
    "InvalidTargetError",
    "LayerNotFoundError",
    "ModelNotSupportedError",
    "NotSpatialLayerError",
    "__version__",
    "colorize",
    "errors",
    "overlay",
    "plot",
    "save_png",
]
