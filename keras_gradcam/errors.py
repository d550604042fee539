"""Errors raised by keras-gradcam. Each message names the problem and the fix."""

from __future__ import annotations


class KerasGradCAMError(Exception):
    """Base class of every error raised on purpose by keras-gradcam."""


class BackendError(KerasGradCAMError, ImportError):
    """Keras runs on a backend other than TensorFlow."""


class LayerNotFoundError(KerasGradCAMError, ValueError):
    """The requested layer does not exist in the model."""


class NotSpatialLayerError(KerasGradCAMError, ValueError):
    """The requested layer has no spatial output to explain."""


class InvalidInputError(KerasGradCAMError, ValueError):
    """Images (or other model inputs) of the wrong rank, shape or values."""


class InvalidTargetError(KerasGradCAMError, ValueError):
    """Targets of the wrong length, type or class range."""


class ModelNotSupportedError(KerasGradCAMError, ValueError):
    """The model cannot be explained as asked (e.g. unbuilt; not conv -> GAP -> dense for CAM)."""
