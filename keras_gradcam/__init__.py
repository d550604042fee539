"""keras-gradcam: Grad-CAM and the CAM family for Keras 3 / TensorFlow models.

Example:

>>> import keras_gradcam as kgc
>>> cam = kgc.GradCAM(model)            # the last spatial layer, nested backbones included
>>> heatmaps = cam(images)              # float32 (batch, H, W) in [0, 1], top-1 class
>>> pictures = kgc.overlay(images, heatmaps)
"""

import importlib as _importlib
import json as _json
import os as _os
import sys as _sys

__version__ = "0.1.0"

from keras_gradcam import errors  # noqa: E402  (no keras inside)
from keras_gradcam.errors import (  # noqa: E402
    BackendError,
    InvalidInputError,
    InvalidTargetError,
    LayerNotFoundError,
    ModelNotSupportedError,
    NotSpatialLayerError,
)


def _check_backend(name: str) -> None:
    if name != "tensorflow":
        raise BackendError(
            "keras-gradcam needs the TensorFlow backend of Keras, but Keras is set to "
            f"{name!r}. Set the environment variable KERAS_BACKEND=tensorflow before importing "
            "keras (or edit ~/.keras/keras.json), then restart Python."
        )


def _configured_backend() -> str:
    """The backend keras will pick, read as keras does (`KERAS_BACKEND`, else keras.json).

    Read without importing keras, so that `import keras_gradcam` (and the command line's
    `--help`) stays fast; `_load` checks again with keras itself.
    """
    if "KERAS_BACKEND" in _os.environ:
        return _os.environ["KERAS_BACKEND"]
    home = _os.path.expanduser("~")
    folder = _os.environ.get("KERAS_HOME") or _os.path.join(
        home if _os.access(home, _os.W_OK) else "/tmp", ".keras"
    )
    try:
        with open(_os.path.join(_os.path.expanduser(folder), "keras.json")) as f:
            backend = _json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"  # keras also falls back to its default
    return backend if isinstance(backend, str) else "tensorflow"


# Check before importing keras: with another backend, keras may fail on a missing jax/torch.
_check_backend(_configured_backend())
if "keras" in _sys.modules:  # already imported: ask keras itself, it costs nothing
    _check_backend(_sys.modules["keras"].backend.backend())

# The public names, imported on first use (PEP 562): `import keras_gradcam` and the command
# line's `--help` do not import TensorFlow; `kgc.GradCAM` or `from keras_gradcam import GradCAM`
# imports the library then.
_LAZY = {
    "GradCAMCallback": "keras_gradcam.callbacks",
    "colorize": "keras_gradcam.image",
    "overlay": "keras_gradcam.image",
    "plot": "keras_gradcam.image",
    "save_png": "keras_gradcam.image",
    "iter_explanations": "keras_gradcam.streaming",
    "explain_dataset": "keras_gradcam.writing",
    "write_explanations": "keras_gradcam.writing",
    "DatasetExplanation": "keras_gradcam.writing",
    "TokenGrid": "keras_gradcam.tokens",
    **dict.fromkeys(
        [
            "CAM", "METHODS", "BaseCAM", "EigenCAM", "EigenGradCAM", "Explanation", "GradCAM",
            "GradCAMElementWise", "GradCAMPlusPlus", "GuidedBackprop", "GuidedGradCAM",
            "HiResCAM", "LayerCAM", "ScoreCAM", "XGradCAM", "get_method", "method_for",
            "AblationCAM", "KPCACAM", "FEM", "FinerCAM", "ShapleyCAM",
            "DeepFeatureFactorization", "FullGrad", "ISCAM", "SSCAM", "SmoothGradCAMPlusPlus",
        ],
        "keras_gradcam.methods",
    ),
}
_SUBMODULES = ("metrics",)


def _load() -> None:
    """Import keras (checking its backend first) and every public name, once."""
    import keras

    _check_backend(keras.backend.backend())
    for name, module in _LAZY.items():
        globals()[name] = getattr(_importlib.import_module(module), name)
    for name in _SUBMODULES:
        globals()[name] = _importlib.import_module(f"keras_gradcam.{name}")


def __getattr__(name: str):
    if name in _LAZY or name in _SUBMODULES:
        _load()
        return globals()[name]
    raise AttributeError(f"module 'keras_gradcam' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
    "method_for",
    "AblationCAM",
    "KPCACAM",
    "FEM",
    "FinerCAM",
    "ShapleyCAM",
    "DeepFeatureFactorization",
    "FullGrad",
    "ISCAM",
    "SSCAM",
    "SmoothGradCAMPlusPlus",
    "TokenGrid",
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
