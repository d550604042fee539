"""Vision transformers: token sequences laid out as grids, layers inside keras-hub encoders,
the automatic pick, and the evidence that the maps are right (not only their shapes)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import vit_models  # noqa: E402

import keras_gradcam as kgc  # noqa: E402
from keras_gradcam.graph import path_name  # noqa: E402

pytest.importorskip("keras_hub")

IMAGES = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")

# model -> (automatic layer, inferred grid)
EXPECTED = {
    "vit": ("vi_t_backbone/vit_encoder/transformer_block_2/ln_1", kgc.TokenGrid(1, (4, 4))),
    "deit": ("dei_t_backbone/deit_encoder/transformer_block_2/ln_1", kgc.TokenGrid(2, (4, 4))),
    "dinov2": ("dinov2_backbone/encoder/layers_1/norm1", kgc.TokenGrid(5, (4, 4))),
    "swin": ("swin_transformer_backbone/stage_1/blocks_1/norm1", kgc.TokenGrid(0, (4, 4))),
    # resized to 48 inside, patches of 6: 8 x 8, not the 5 x 5 the 32 x 32 input suggests
    "keras_io_vit": ("layer_normalization_2", kgc.TokenGrid(0, (8, 8))),
}


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    return {name: build() for name, build in vit_models.BUILDERS.items()}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_defaults_pick_the_last_blocks_first_norm_and_infer_the_grid(models, name):
    cam = kgc.GradCAM(models[name])
    heatmaps = cam(IMAGES)
    layer, grid = EXPECTED[name]
    assert path_name(cam.path) == layer
    assert cam.token_grid == grid
    assert heatmaps.shape == (2, 32, 32) and np.isfinite(heatmaps).all()
    raw = cam(IMAGES, resize=False, normalize=False)
    assert raw.shape == (2, *grid.grid)


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(kgc.METHODS))
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_method_gives_image_maps_with_the_defaults(models, name, method):
    if method == "cam":  # no GAP -> Dense head after a transformer block: a clear error
        with pytest.raises(kgc.ModelNotSupportedError, match="GradCAM"):
            kgc.CAM(models[name])
        return
    if method in ("guided-backprop", "guided-gradcam"):  # GELU: no ReLU to guide, it says so
        with pytest.warns(UserWarning, match="no ReLU-like activation"):
            explainer = kgc.get_method(method)(models[name])
    else:
        explainer = kgc.get_method(method)(models[name])
    result = explainer(IMAGES)
    assert result.shape[:3] == (2, 32, 32) and np.isfinite(result).all()


def test_a_non_square_image_gives_a_non_square_grid():
    model = vit_models.keras_hub_vit(size=(32, 48))
    cam = kgc.HiResCAM(model)
    images = np.random.default_rng(1).uniform(0, 1, (3, 32, 48, 3)).astype("float32")
    assert cam(images).shape == (3, 32, 48)
    assert cam.token_grid == kgc.TokenGrid(1, (4, 6))


def test_an_earlier_swin_stage_has_its_own_grid(models):
    cam = kgc.GradCAM(models["swin"], layer="swin_transformer_backbone/stage_0/blocks_1/norm1")
    assert cam(IMAGES, resize=False).shape == (2, 8, 8)
    assert cam.token_grid == kgc.TokenGrid(0, (8, 8))


def test_inner_layers_are_reached_by_path_and_ambiguous_names_say_so(models):
    model = models["vit"]
    path = "vi_t_backbone/vit_encoder/transformer_block_1/ln_2"
    assert path_name(kgc.GradCAM(model, layer=path).path) == path
    with pytest.raises(kgc.LayerNotFoundError, match="ambiguous"):
        kgc.GradCAM(model, layer="ln_1")  # one per block
    with pytest.raises(kgc.LayerNotFoundError, match="transformer_block_1"):
        kgc.GradCAM(model, layer="vi_t_backbone/vit_encoder/transformer_block_1/ln_9")


def test_tokens_none_keeps_the_sequence_and_an_explicit_grid_is_checked(models):
    model = models["vit"]
    flat = kgc.GradCAM(model, tokens=None)(IMAGES, resize=False)
    assert flat.shape == (2, 17)  # the class token and 16 patches, as a 1-D map
    explicit = kgc.GradCAM(model, tokens=kgc.TokenGrid(prefix=1, grid=(4, 4)))(IMAGES)
    np.testing.assert_allclose(explicit, kgc.GradCAM(model)(IMAGES), atol=1e-6)
    with pytest.raises(kgc.NotSpatialLayerError, match=r"17 tokens.*TokenGrid"):
        kgc.GradCAM(model, tokens=kgc.TokenGrid(prefix=0, grid=(4, 4)))(IMAGES)
    with pytest.raises(TypeError, match="tokens"):
        kgc.GradCAM(model, tokens="grid")
    with pytest.raises(ValueError, match="grid"):
        kgc.TokenGrid(grid=(4, 0))


def test_token_grid_inference_arithmetic():
    fit = kgc.TokenGrid().fit
    assert fit(197, (224, 224), (14, 14)) == kgc.TokenGrid(1, (14, 14))  # ViT-B/16
    assert fit(261, (224, 224), (16, 16)) == kgc.TokenGrid(5, (16, 16))  # 4 registers
    assert fit(49, (224, 224), (56, 56)) == kgc.TokenGrid(0, (7, 7))  # Swin, 3 merges
    assert fit(145, (32, 32), None) == kgc.TokenGrid(1, (12, 12))  # no patch conv
    assert fit(24, (32, 48), None) == kgc.TokenGrid(0, (4, 6))
    assert fit(20, (32, 32), None) == kgc.TokenGrid(4, (4, 4))  # not 4 x 5
    with pytest.raises(kgc.NotSpatialLayerError, match="TokenGrid"):
        fit(3, (32, 32), None)  # no grid of at least 2 x 2


def token_head_model():
    """A conv layer whose 8 x 8 map is reshaped into 64 tokens, then a transformer-like head."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv")(
        inputs)
    tokens = keras.layers.Reshape((64, 8), name="tokens")(x)
    attended = keras.layers.MultiHeadAttention(2, 4)(tokens, tokens)
    x = keras.layers.LayerNormalization()(keras.layers.Add()([tokens, attended]))
    x = keras.layers.Dense(8, activation="gelu")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "gradcam++", "layercam", "xgradcam",
                                    "eigencam", "scorecam", "ablationcam"])
def test_tokens_of_a_reshaped_conv_map_give_the_conv_layers_maps(method):
    keras.utils.set_random_seed(3)
    model = token_head_model()
    images = np.random.default_rng(3).uniform(0, 1, (3, 16, 16, 3)).astype("float32")
    explainer = kgc.get_method(method)
    on_tokens = explainer(model, layer="tokens")
    from_tokens = on_tokens(images, normalize=False)
    from_conv = explainer(model, layer="conv")(images, normalize=False)
    assert on_tokens.token_grid == kgc.TokenGrid(0, (8, 8))
    assert from_tokens.max() > 0
    np.testing.assert_allclose(from_tokens, from_conv, rtol=1e-5, atol=1e-6)


def test_the_encoder_output_gives_zero_patch_maps_and_the_last_blocks_norm_does_not(models):
    model = models["vit"]  # the head reads the class token only
    for method in (kgc.HiResCAM, kgc.GradCAM):
        at_output = method(model, layer="vi_t_backbone/vit_encoder")
        maps = at_output(IMAGES, targets=[0, 1], resize=False, normalize=False)
        gradients = at_output.forward(*_ids(at_output, IMAGES, [0, 1])).gradients.numpy()
        assert maps.shape == (2, 4, 4) and np.all(gradients == 0.0)
        default = method(model)
        inner = default.forward(*_ids(default, IMAGES, [0, 1])).gradients.numpy()
        assert np.abs(inner).min(axis=-1).max() > 0  # every sample has patch gradients
        assert (np.abs(inner).sum(axis=-1) > 0).all()


def _ids(explainer, images, classes):
    inputs, _ = explainer.prepare_inputs(images)
    return inputs, explainer.class_ids(classes, len(images))
