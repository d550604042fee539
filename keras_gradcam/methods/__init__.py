"""The CAM family on one core."""

from keras_gradcam.methods.base import BaseCAM, Explanation
from keras_gradcam.methods.grad_cam import GradCAM

__all__ = ["BaseCAM", "Explanation", "GradCAM"]
