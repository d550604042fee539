"""Small vision transformers for the tests, built from configs with random weights (no
download): keras-hub's ViT, DeiT, DINOv2 (with a head) and Swin, and the keras.io ViT."""

from __future__ import annotations

import keras


def keras_hub_vit(size=(32, 32), classes: int = 3, patch: int = 8, layers: int = 2):
    import keras_hub

    backbone = keras_hub.models.ViTBackbone(
        image_shape=(*size, 3), patch_size=patch, num_layers=layers, num_heads=2,
        hidden_dim=16, mlp_dim=32)
    return keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=classes)


def keras_hub_deit(size=(32, 32), classes: int = 3):
    import keras_hub
    from keras_hub.src.models.deit.deit_backbone import DeiTBackbone

    backbone = DeiTBackbone(image_shape=(*size, 3), patch_size=8, num_layers=2, num_heads=2,
                            hidden_dim=16, intermediate_dim=32)
    return keras_hub.models.DeiTImageClassifier(backbone=backbone, num_classes=classes)


def keras_hub_dinov2(size=(32, 32), classes: int = 3):
    """DINOv2 (4 register tokens) with a linear head on its class token, as keras-hub 0.32
    ships only the backbone."""
    from keras_hub.src.models.dinov2.dinov2_backbone import DINOV2Backbone

    backbone = DINOV2Backbone(
        patch_size=8, num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32,
        num_register_tokens=4, image_shape=(*size, 3), position_embedding_shape=(*size, 3))
    tokens = backbone(backbone.inputs)
    return keras.Model(backbone.inputs, keras.layers.Dense(classes)(tokens[:, 0]))


def keras_hub_swin(size=(32, 32), classes: int = 3):
    import keras_hub
    from keras_hub.src.models.swin_transformer.swin_transformer_backbone import (
        SwinTransformerBackbone,
    )

    backbone = SwinTransformerBackbone(image_shape=(*size, 3), embed_dim=16, depths=(2, 2),
                                       num_heads=(2, 2), window_size=4, patch_size=4)
    return keras_hub.models.SwinTransformerImageClassifier(backbone=backbone,
                                                           num_classes=classes)


class Patches(keras.layers.Layer):
    """keras.io's patch extraction: `(batch, patches, patch * patch * channels)`."""

    def __init__(self, patch_size, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = patch_size

    def call(self, images):
        patches = keras.ops.image.extract_patches(images, size=self.patch_size)
        rows, cols, depth = patches.shape[1], patches.shape[2], patches.shape[3]
        return keras.ops.reshape(patches, (-1, rows * cols, depth))


class PatchEncoder(keras.layers.Layer):
    """keras.io's linear projection plus a learned position embedding."""

    def __init__(self, num_patches, projection_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_patches = num_patches
        self.projection = keras.layers.Dense(projection_dim)
        self.position_embedding = keras.layers.Embedding(num_patches, projection_dim)

    def call(self, patch):
        positions = keras.ops.expand_dims(keras.ops.arange(0, self.num_patches), 0)
        return self.projection(patch) + self.position_embedding(positions)


def keras_io_vit(size: int = 32, resize: int = 48, patch: int = 6, classes: int = 3,
                 dim: int = 16, layers: int = 2):
    """The keras.io "Image classification with Vision Transformer" model, small: inputs
    resized inside the model, patches without a class token, a flatten head."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Resizing(resize, resize)(inputs)
    x = PatchEncoder((resize // patch) ** 2, dim)(Patches(patch)(x))
    for _ in range(layers):
        x1 = keras.layers.LayerNormalization(epsilon=1e-6)(x)
        attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=dim)(x1, x1)
        x2 = keras.layers.Add()([attention, x])
        x3 = keras.layers.LayerNormalization(epsilon=1e-6)(x2)
        x3 = keras.layers.Dense(2 * dim, activation="gelu")(x3)
        x3 = keras.layers.Dense(dim, activation="gelu")(x3)
        x = keras.layers.Add()([x3, x2])
    x = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    x = keras.layers.Dropout(0.5)(keras.layers.Flatten()(x))
    x = keras.layers.Dense(32, activation="gelu")(x)
    return keras.Model(inputs, keras.layers.Dense(classes)(x))


BUILDERS = {
    "vit": keras_hub_vit, "deit": keras_hub_deit, "dinov2": keras_hub_dinov2,
    "swin": keras_hub_swin, "keras_io_vit": keras_io_vit,
}
