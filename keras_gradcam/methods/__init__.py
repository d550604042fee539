"""The CAM family on one core, and the registry of methods by name."""

from __future__ import annotations

from keras_gradcam.explanation import Explanation
from keras_gradcam.methods.ablation_cam import AblationCAM
from keras_gradcam.methods.base import BaseCAM
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


__all__ = [
    "AblationCAM", "FEM", "FinerCAM", "KPCACAM", "ShapleyCAM",
    "CAM", "METHODS", "BaseCAM", "EigenCAM", "EigenGradCAM", "Explanation", "GradCAM",
    "GradCAMElementWise", "GradCAMPlusPlus", "GuidedBackprop", "GuidedGradCAM", "HiResCAM",
    "LayerCAM", "ScoreCAM", "XGradCAM", "get_method",
    "DeepFeatureFactorization", "FullGrad", "ISCAM", "SSCAM", "SmoothGradCAMPlusPlus",
]
