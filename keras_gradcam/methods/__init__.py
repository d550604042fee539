"""The CAM family on one core, and the registry of methods by name."""

from __future__ import annotations

from keras_gradcam.explanation import Explanation
from keras_gradcam.layers import resolve_layer
from keras_gradcam.methods.ablation_cam import AblationCAM
from keras_gradcam.methods.base import BaseCAM, _output_index
from keras_gradcam.methods.cam import CAM
from keras_gradcam.methods.deep_feature_factorization import DeepFeatureFactorization
from keras_gradcam.methods.eigen_cam import EigenCAM, EigenGradCAM
from keras_gradcam.methods.fem import FEM
from keras_gradcam.methods.finer_cam import FinerCAM
from keras_gradcam.methods.full_grad import FullGrad
from keras_gradcam.methods.grad_cam import GradCAM
from keras_gradcam.methods.grad_cam_elementwise import GradCAMElementWise
from keras_gradcam.methods.grad_cam_plus_plus import GradCAMPlusPlus
from keras_gradcam.methods.guided_backprop import GuidedBackprop, GuidedGradCAM
from keras_gradcam.methods.hires_cam import HiResCAM
from keras_gradcam.methods.is_cam import ISCAM
from keras_gradcam.methods.kpca_cam import KPCACAM
from keras_gradcam.methods.layer_cam import LayerCAM
from keras_gradcam.methods.score_cam import ScoreCAM
from keras_gradcam.methods.shapley_cam import ShapleyCAM
from keras_gradcam.methods.smooth_grad_cam_plus_plus import SmoothGradCAMPlusPlus
from keras_gradcam.methods.ss_cam import SSCAM
from keras_gradcam.methods.xgrad_cam import XGradCAM
from keras_gradcam.tokens import is_token_layer

METHODS: dict[str, type[BaseCAM]] = {
    cls.name: cls
    for cls in (
        GradCAM, GradCAMPlusPlus, HiResCAM, GradCAMElementWise, XGradCAM, LayerCAM, CAM,
        ScoreCAM, EigenCAM, EigenGradCAM, GuidedGradCAM, GuidedBackprop,
        AblationCAM, KPCACAM, FEM, FinerCAM, ShapleyCAM,
        SSCAM, ISCAM, SmoothGradCAMPlusPlus, FullGrad,  # issue 18, part B
    )
}
"""Every method by name. All return a heatmap `(batch, *spatial)` per sample except the guided
ones (`guided-gradcam`, `guided-backprop`), which return images `(batch, H, W, C)`."""


def get_method(name: str) -> type[BaseCAM]:
    """The method class for a name in `METHODS` (case, `_` and `-` are ignored; class names too).

    Example:

    >>> maps = get_method("gradcam++")(model)(images)

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str. Received: {name!r} of type {type(name).__name__}.")

    def key(text: str) -> str:
        return text.lower().replace("_", "").replace("-", "").replace(" ", "")

    known = {key(n): cls for n, cls in METHODS.items()}
    known.update({key(cls.__name__): cls for cls in METHODS.values()})
    if key(name) in known:
        return known[key(name)]
    raise ValueError(f"Unknown method {name!r}. Known methods: {', '.join(METHODS)}.")


AUTO = "auto"
TRANSFORMER_DEFAULT = "gradcam-elementwise"


def method_for(model, method: str | type[BaseCAM] = AUTO, layer=None,
               output: int | str = 0) -> type[BaseCAM]:
    """The method class for a name or class; `"auto"` picks by the explained layer.

    `"auto"` is Grad-CAM, except on a vision transformer's tokens, where it is element-wise
    Grad-CAM: there Grad-CAM's channel-mean weights point near chance and the element-wise
    product `ReLU(dA * A)` points at the evidence (README, "Vision transformers").

    Args:
        model: The model to explain.
        method: `"auto"`, a method name (see `get_method`) or a `BaseCAM` subclass.
        layer: The layer to explain, as for `BaseCAM` (the first one of a list).
        output: The explained output, as for `BaseCAM`.

    Raises:
        ValueError: unknown name. LayerNotFoundError, NotSpatialLayerError: bad `layer`.
    """
    if isinstance(method, type) and issubclass(method, BaseCAM):
        return method
    if not (isinstance(method, str) and method.lower() == AUTO):
        return get_method(method)
    first = layer[0] if isinstance(layer, (list, tuple)) and layer else layer
    path = resolve_layer(model, first, output=_output_index(model, output))
    return get_method(TRANSFORMER_DEFAULT if is_token_layer(model, path) else "gradcam")


__all__ = [
    "AUTO",
    "method_for",
    "AblationCAM", "FEM", "FinerCAM", "KPCACAM", "ShapleyCAM",
    "CAM", "METHODS", "BaseCAM", "EigenCAM", "EigenGradCAM", "Explanation", "GradCAM",
    "GradCAMElementWise", "GradCAMPlusPlus", "GuidedBackprop", "GuidedGradCAM", "HiResCAM",
    "LayerCAM", "ScoreCAM", "XGradCAM", "get_method",
    "DeepFeatureFactorization", "FullGrad", "ISCAM", "SSCAM", "SmoothGradCAMPlusPlus",
]
