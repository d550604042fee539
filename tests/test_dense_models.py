"""Issue 14 on real dense-prediction models: keras-hub's DeepLabV3 (segmentation) and RetinaNet
(detection), built from configs with random weights at 64x64; and the parts of a layer that
such models need named: one level of a feature pyramid (`"fpn[P3]"`), one call of a head
shared across levels (`"classification_head@0"`)."""

import warnings

import keras
import numpy as np
import pytest

import keras_gradcam as kgc
from keras_gradcam.targets import Box, Segmentation, anchor_decoder

SIZE = 64


def assert_same(a, b, atol=1e-5):
    for field in ("heatmaps", "targets", "scores"):
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), atol=atol, rtol=1e-4)


# ---- naming a pyramid level or a call, on toy models (no keras-hub) ---------------------------


class Pyramid(keras.layers.Layer):
    """Returns a dict of two levels, as keras-hub's FeaturePyramid does."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.fine = keras.layers.Conv2D(4, 3, padding="same")
        self.coarse = keras.layers.Conv2D(4, 3, strides=2, padding="same")

    def build(self, shape):
        self.fine.build(shape)
        self.coarse.build(shape)

    def call(self, x):
        return {"P3": self.fine(x), "P4": self.coarse(x)}

    def compute_output_shape(self, shape):
        half = (shape[0], shape[1] // 2, shape[2] // 2, 4)
        return {"P3": (*shape[:3], 4), "P4": half}


def toy_detector():
    """A pyramid of two levels and one 1x1 conv head shared across them (called twice)."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="stem")(inputs)
    levels = Pyramid(name="fpn")(x)
    head = keras.layers.Conv2D(3, 1, name="head")
    scores = [keras.layers.Reshape((-1, 3))(head(levels[k])) for k in ("P3", "P4")]
    return keras.Model(inputs, keras.layers.Concatenate(axis=1, name="scores")(scores))


def level_target(first: bool):
    """Class 1 summed over the anchors of one level (P3: the first 256, P4: the last 64)."""
    return lambda out: keras.ops.sum(out[:, :256, 1] if first else out[:, 256:, 1], axis=1)


def test_a_pyramid_layer_is_refused_whole_and_explained_by_naming_a_level(images):
    model = toy_detector()
    with pytest.raises(kgc.NotSpatialLayerError, match=r"returns 2 outputs.*'fpn\[P3\]'"):
        kgc.GradCAM(model, layer="fpn")
    with pytest.raises(kgc.LayerNotFoundError, match="no output 'P9'.*'P3'"):
        kgc.GradCAM(model, layer="fpn[P9]")
    with pytest.raises(kgc.NotSpatialLayerError, match="not a list or dict"):
        kgc.GradCAM(model, layer="stem[P3]")
    fine = kgc.GradCAM(model, layer="fpn[P3]")
    coarse = kgc.GradCAM(model, layer="fpn[P4]")
    assert fine.layer.name == "fpn" and fine.path.key == "P3"
    # a level explains what it feeds: P3's maps of a P4-only score are empty, and back
    assert fine(images, level_target(False), normalize=False).max() == 0
    assert coarse(images, level_target(True), normalize=False).max() == 0
    maps = coarse.explain(images, level_target(False), normalize=False)
    assert maps.heatmaps.shape == (4, 16, 16) and np.abs(maps.heatmaps).max() > 0


def test_a_shared_head_warns_at_its_last_call_and_explains_a_named_call(images):
    model = toy_detector()
    with pytest.warns(UserWarning, match=r"called 2 times.*'head@1', is explained"):
        last = kgc.GradCAM(model, layer="head")(images, level_target(False), normalize=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = kgc.GradCAM(model, layer="head@0")
        second = kgc.GradCAM(model, layer="head@1")
        assert first(images, level_target(False), normalize=False).max() == 0  # P3's call
        np.testing.assert_allclose(second(images, level_target(False), normalize=False), last)
        assert np.abs(first(images, level_target(True), normalize=False)).max() > 0
    with pytest.raises(kgc.LayerNotFoundError, match="called 2 time.*no call @2"):
        kgc.GradCAM(model, layer="head@2")


# ---- keras-hub: DeepLabV3 and RetinaNet with random weights ----------------------------------


def resnet(keras_hub):
    """A small ResNet (basic blocks, one per stage): pyramid P2..P5 at 16, 8, 4, 2 pixels."""
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 32, 32, 32], stackwise_num_blocks=[1, 1, 1, 1],
        stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        image_shape=(SIZE, SIZE, 3),
    )


def probe_images(n=5):
    return np.random.default_rng(3).random((n, SIZE, SIZE, 3), dtype=np.float32)


@pytest.mark.slow
def test_keras_hub_deeplab_v3_segmentation():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=resnet(keras_hub), spatial_pyramid_pooling_key="P4", upsampling_size=4,
        dilation_rates=[2, 4], low_level_feature_key="P2", projection_filters=8,
        image_shape=(SIZE, SIZE, 3),
    )
    model = keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=3)
    x = probe_images()
    cam = kgc.GradCAM(model)
    # the automatic pick: the decoder's last feature map, inside the backbone, not the head
    assert cam.path[0].name == "deep_lab_v3_backbone"
    assert cam.layer.name != "segmentation_output" and len(cam.path) == 2
    # no activation: the output is the logits. (Inference mode: this model's pooling block
    # computes another output when called without `training=False`.)
    logits = np.asarray(model(x, training=False))
    masks = np.zeros((5, SIZE, SIZE), bool)
    masks[:, 16:40, 8:48] = True
    for target, expected in (
        (Segmentation(1, masks=masks), (logits[..., 1] * masks).sum(axis=(1, 2))),
        (Segmentation(2), (logits[..., 2] * (logits.argmax(-1) == 2)).sum(axis=(1, 2))),
    ):
        whole = cam.explain(x, target)
        # random weights: the maps may be all zero (every weighted sum negative), but finite
        assert whole.heatmaps.shape == (5, SIZE, SIZE) and np.isfinite(whole.heatmaps).all()
        np.testing.assert_allclose(whole.scores, expected, rtol=1e-4, atol=1e-3)
        assert_same(cam.explain(x, target, batch_size=2), whole)


def retinanet(keras_hub):
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=resnet(keras_hub), min_level=3, max_level=5, use_p5=False,
        image_shape=(SIZE, SIZE, 3),
    )
    return keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=3, pre_logits_num_conv_layers=1
    )


def decode_center_xywh(anchors, deltas):
    """keras-hub RetinaNet's box decoding, by hand: anchors `(y0, x0, y1, x1)`, offsets
    `(dx, dy, dw, dh)` relative to the anchor's centre and size."""
    h, w = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    cy, cx = anchors[:, 0] + h / 2, anchors[:, 1] + w / 2
    y = cy + deltas[..., 1] * h
    x = cx + deltas[..., 0] * w
    hh, ww = np.exp(deltas[..., 3]) * h / 2, np.exp(deltas[..., 2]) * w / 2
    return np.stack([y - hh, x - ww, y + hh, x + ww], axis=-1)


@pytest.mark.slow
def test_keras_hub_retinanet_detection_with_decoded_boxes():
    keras_hub = pytest.importorskip("keras_hub")
    from test_targets import iou_np

    model = retinanet(keras_hub)
    x = probe_images()
    anchors = model.anchor_generator(x[:1])  # a dict per level, (y0, x0, y1, x1) pixels
    outputs = model(x, training=False)
    flat = np.concatenate([np.asarray(a) for a in anchors.values()])
    boxes = decode_center_xywh(flat, np.asarray(outputs["bbox_regression"]))
    decode = anchor_decoder(anchors)
    decoded, _ = decode([outputs["bbox_regression"], outputs["cls_logits"]])
    np.testing.assert_allclose(np.asarray(decoded), boxes, rtol=1e-4, atol=1e-3)

    area = np.prod(np.maximum(boxes[..., 2:] - boxes[..., :2], 0), axis=-1)
    given = boxes[np.arange(5), area.argmax(axis=1)]  # each image's largest decoded box
    classes = np.arange(5) % 3
    match = iou_np(boxes, given[:, None]) >= 0.5
    logits = np.asarray(outputs["cls_logits"])
    expected = (logits[np.arange(5), :, classes] * match).sum(axis=1)
    target = Box(given, classes, decode=decode)

    cam = kgc.GradCAM(model)
    assert cam.path[0].name == "retina_net_backbone"  # a backbone feature map, not a head
    whole = cam.explain(x, target)
    assert whole.heatmaps.shape == (5, SIZE, SIZE) and np.isfinite(whole.heatmaps).all()
    np.testing.assert_allclose(whole.scores, expected, rtol=1e-4, atol=1e-3)
    assert_same(cam.explain(x, target, batch_size=2), whole)

    with pytest.raises(kgc.NotSpatialLayerError, match=r"fpn\[P3\]"):
        kgc.GradCAM(model, layer="retina_net_backbone/fpn")
    level = kgc.GradCAM(model, layer="retina_net_backbone/fpn[P3]").explain(x, target)
    assert np.isfinite(level.heatmaps).all()
    with pytest.warns(UserWarning, match=r"called 3 times.*'classification_head@2'"):
        kgc.GradCAM(model, layer="classification_head")(x, target)
    for call in range(3):  # P3, P4, P5: the calls in the order the model was built
        head = kgc.GradCAM(model, layer=f"classification_head@{call}")
        maps = head(x, target, normalize=False)
        assert np.isfinite(maps).all()
        assert_same(head.explain(x, target, batch_size=2), head.explain(x, target))
