"""A tiny ViT trained on CPU on generated images whose class is the colour of one square at a
random position (the evidence region is known), as notebook 05 trains it."""

from __future__ import annotations

import numpy as np

from keras_gradcam.datasets import coloured_squares


def trained_vit(seed: int = 0, samples: int = 3000, epochs: int = 6):
    """A keras-hub ViT (patch 4, 8 x 8 tokens + class token, 2 blocks) trained on
    `coloured_squares`. Returns `(model, held-out accuracy)`."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3), patch_size=4, num_layers=2, num_heads=2, hidden_dim=32,
        mlp_dim=64)
    model = keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    x, y, _ = coloured_squares(samples, seed=seed)
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    xt, yt, _ = coloured_squares(300, seed=seed + 1000)
    accuracy = float((model.predict(xt, verbose=0).argmax(-1) == yt).mean())
    return model, accuracy


def pointing_game(maps: np.ndarray, boxes: np.ndarray) -> float:
    """Share of maps whose maximum lies inside the box (no tolerance)."""
    import keras_gradcam as kgc

    return kgc.metrics.mean_pointing_game(maps, boxes, tolerance=0)
