"""Issue 12: no silent wrong answer. Each test guards one case that misled users before."""

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from callback_helpers import objects, tiny_cnn

import keras_gradcam as kgc
from keras_gradcam.errors import InvalidInputError, InvalidTargetError, NotSpatialLayerError

# ---- target callables --------------------------------------------------------------------


def test_callable_target_with_nan_scores_is_an_error_naming_the_images(cnn, images):
    def nan_for_two(out):  # the score of images 1 and 3 is NaN
        return out[:, 1] * tf.constant([1.0, np.nan, 1.0, np.inf])

    with pytest.raises(InvalidTargetError, match=r"NaN or infinite for images \[1, 3\]"):
        kgc.GradCAM(cnn)(images, nan_for_two)


def test_callable_target_must_return_one_score_per_sample(cnn, images):
    with pytest.raises(InvalidTargetError, match="returned 2 scores for 4 samples"):
        kgc.GradCAM(cnn)(images, lambda out: out[:2, 1])
    with pytest.raises(InvalidTargetError, match="returned 2 scores for 3 samples"):
        kgc.GradCAM(cnn, batch_size=3)(images, lambda out: out[:2, 1])  # chunks of 3 and 1


@pytest.mark.parametrize(
    "target, shown",
    [(lambda out: [1.0, 2.0, 3.0, 4.0], "list"), (lambda out: tf.ones([4]), "does not depend")],
)
def test_callable_target_returning_a_constant_is_blamed_on_the_callable(cnn, images, target,
                                                                       shown):
    with pytest.raises(InvalidTargetError, match=f"target callable.*{shown}") as error:
        kgc.GradCAM(cnn)(images, target)
    assert "layer" not in str(error.value).split("(")[0]


# ---- images -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [object, str])
def test_string_or_object_images_name_the_expected_dtype(cnn, dtype):
    bad = np.full((2, 16, 16, 3), "0.5", dtype=dtype)
    with pytest.raises(InvalidInputError, match="must hold numbers.*float32"):
        kgc.GradCAM(cnn)(bad)


def test_uint8_model_refuses_float_images_holding_nan():
    inputs = keras.Input((16, 16, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    images = np.full((2, 16, 16, 3), 100.0, np.float32)
    images[1, 3, 3, 0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN or infinite.*uint8"):
        kgc.GradCAM(model)(images)


# ---- layers and options -------------------------------------------------------------------


def test_model_input_as_layer_says_inputs_cannot_be_explained(cnn):
    with pytest.raises(NotSpatialLayerError, match="is a model input.*'conv1', 'conv2'") as error:
        kgc.GradCAM(cnn, layer="image")
    assert "expected 3 to 5" not in str(error.value)


def test_numpy_int_layer_index_is_accepted(cnn):
    assert kgc.GradCAM(cnn, layer=np.int64(2)).layer.name == "conv2"


def test_jit_compile_must_be_a_bool(cnn):
    with pytest.raises(TypeError, match="`jit_compile` must be True, False or None"):
        kgc.GradCAM(cnn, jit_compile="no")


def two_branch_model():
    """Output 0 reads `a2` only; output 1 reads `b1` only (b1 comes later in model order)."""
    inputs = keras.Input((16, 16, 3))
    a = keras.layers.Conv2D(4, 3, activation="relu", name="a1")(inputs)
    a = keras.layers.Conv2D(4, 3, activation="relu", name="a2")(a)
    b = keras.layers.Conv2D(4, 3, activation="relu", name="b1")(inputs)
    out_a = keras.layers.Dense(3, name="out_a")(keras.layers.GlobalAveragePooling2D()(a))
    out_b = keras.layers.Dense(2, name="out_b")(keras.layers.GlobalAveragePooling2D()(b))
    return keras.Model(inputs, [out_a, out_b])


def test_automatic_layer_follows_the_explained_output(images):
    model = two_branch_model()
    assert kgc.GradCAM(model).layer.name == "a2"
    assert kgc.GradCAM(model, output=1).layer.name == "b1"
    assert kgc.GradCAM(model)(images).shape == (4, 16, 16)


def test_a_layer_called_twice_warns_that_the_last_call_is_explained(images):
    inputs = keras.Input((16, 16, 3))
    conv = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="twice")
    x = conv(conv(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    with pytest.warns(UserWarning, match="'twice' is called 2 times.*last call"):
        kgc.GradCAM(model, layer="twice")(images)


# ---- labels: one rule for explain_dataset and the callback ---------------------------------


def test_fractional_labels_are_refused_by_explain_dataset_and_the_callback(cnn, images, tmp_path):
    labels = np.array([0.0, 1.7, 2.0, 3.0], np.float32)
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
    with pytest.raises(InvalidTargetError, match=r"whole class numbers. Received 1.7.* position 1"):
        list(kgc.iter_explanations(kgc.GradCAM(cnn), data, targets="label", progress=False))
    cb = kgc.GradCAMCallback(images, tmp_path, probe_labels=labels)
    with pytest.raises(InvalidTargetError, match=r"whole class numbers. Received 1.7.* position 1"):
        cnn.compile("adam", "sparse_categorical_crossentropy")
        cnn.fit(images, labels.astype(int), epochs=1, verbose=0, callbacks=[cb])


def test_out_of_range_label_is_named_with_its_position_without_tf_internals(cnn, images):
    labels = np.array([0, 1, 2, 3, 4, 9, 1, 2])
    data = tf.data.Dataset.from_tensor_slices((np.concatenate([images, images]), labels)).batch(3)
    with pytest.raises(InvalidTargetError, match=r"\[9\], the first, 9, at position 5") as error:
        list(kgc.iter_explanations(kgc.GradCAM(cnn), data, targets="label", progress=False))
    assert "function_node" not in str(error.value)


def test_string_labels_are_refused_before_running(cnn, images):
    data = tf.data.Dataset.from_tensor_slices((images, np.array(["a", "b", "c", "d"])))
    with pytest.raises(InvalidTargetError, match="integer classes"):
        kgc.iter_explanations(kgc.GradCAM(cnn), data, targets="label", progress=False)


# ---- files: nothing looks complete when it is not ----------------------------------------


def test_interrupted_write_leaves_no_complete_looking_maps_file(cnn, images, tmp_path):
    data = tf.data.Dataset.from_tensor_slices(np.concatenate([images] * 5)).batch(4)
    cam = kgc.GradCAM(cnn)
    real, calls = cam.collect, []

    def ctrl_c_on_the_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    cam.collect = ctrl_c_on_the_third_batch
    maps = tmp_path / "maps.npy"
    with pytest.raises(KeyboardInterrupt):
        kgc.write_explanations(cam, data, maps_path=maps, progress=False, batch_size=4)
    assert len(calls) == 3
    assert os.listdir(tmp_path) == []  # neither maps.npy nor a partial file


def test_interrupted_write_by_a_failing_batch_leaves_no_maps_file(cnn, images, tmp_path):
    bad = np.concatenate([images, images])
    bad[6, 0, 0, 0] = np.nan  # the second batch fails
    data = tf.data.Dataset.from_tensor_slices(bad).batch(4)
    with pytest.raises(InvalidInputError, match="NaN"):
        kgc.write_explanations(kgc.GradCAM(cnn), data, maps_path=tmp_path / "m.npy",
                               progress=False, batch_size=4)
    assert os.listdir(tmp_path) == []


def test_count_larger_than_the_dataset_gives_a_file_of_the_samples_held(cnn, images, tmp_path):
    data = tf.data.Dataset.from_tensor_slices(images).filter(lambda x: True)
    with pytest.warns(UserWarning, match="held 4 samples, but count=10"):
        summary = kgc.write_explanations(kgc.GradCAM(cnn), data, maps_path=tmp_path / "m.npy",
                                         count=10, progress=False)
    assert summary.count == 4
    assert np.load(tmp_path / "m.npy").shape == (4, 16, 16)


def test_stale_overlays_of_an_earlier_run_are_reported(cnn, images, tmp_path):
    cam = kgc.GradCAM(cnn)
    big = tf.data.Dataset.from_tensor_slices(np.concatenate([images, images]))
    kgc.write_explanations(cam, big, out_dir=tmp_path, progress=False)
    with pytest.warns(UserWarning, match="4 overlay PNGs that this run did not write"):
        summary = kgc.write_explanations(cam, big.take(4), out_dir=tmp_path, progress=False)
    assert len(summary.files) == 4


# ---- the callback fails fast, and says what of an epoch was written ------------------------


def test_unwritable_log_dir_fails_at_train_begin(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    x, y, _ = objects(8, shortcut=False, seed=0)
    cb = kgc.GradCAMCallback(x[:2], blocker / "logs", probe_labels=y[:2])
    batches = []
    spy = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: batches.append(b))
    with pytest.raises(ValueError, match="cannot write TensorBoard events to .*file/logs"):
        tiny_cnn().fit(x, y, epochs=1, verbose=0, callbacks=[cb, spy])
    assert batches == []


def test_a_write_failure_mid_epoch_says_what_was_written(tmp_path, monkeypatch):
    import keras_gradcam.summaries as summaries

    x, y, _ = objects(8, shortcut=False, seed=0)
    cb = kgc.GradCAMCallback(x[:3], tmp_path, probe_labels=y[:3])
    real = summaries.write_image
    calls = []

    def disk_full_on_the_third_image(*args, **kwargs):  # a fault of the file system
        calls.append(1)
        if len(calls) == 3:
            raise OSError("No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(summaries, "write_image", disk_full_on_the_third_image)
    with pytest.warns(RuntimeWarning, match=r"epoch 0: it wrote 2 of its \d+ summaries"):
        tiny_cnn().fit(x, y, epochs=1, verbose=0, callbacks=[cb])


def test_callback_with_no_failure_emits_no_warning(tmp_path):
    x, y, _ = objects(8, shortcut=False, seed=0)
    cb = kgc.GradCAMCallback(x[:3], tmp_path, probe_labels=y[:3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_cnn().fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    assert cb.last_scalars


def test_numpy_integers_are_accepted_wherever_ints_are(cnn, images):
    cam = kgc.ScoreCAM(cnn, layer=np.int64(2), output=np.int64(0), batch_size=np.int64(8),
                       max_channels=np.int64(3))
    assert cam(images, targets=np.int64(1)).shape == (4, 16, 16)
