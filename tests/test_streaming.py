"""explain_dataset: streamed results equal the explainer's, files written, labels, strategies."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import keras_gradcam as kgc
from keras_gradcam.errors import InvalidInputError, InvalidTargetError
from keras_gradcam.writing import DatasetExplanation, explain_dataset, write_explanations

N = 11  # not a multiple of the batch size: the last batch is partial


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.random((N, 16, 16, 3), dtype=np.float32)
    y = (np.arange(N) * 3 % 5).astype(np.int64)
    return x, y


@pytest.fixture
def cam(cnn):
    return kgc.GradCAM(cnn, batch_size=4)


def concat(explanations):
    explanations = list(explanations)
    return {
        key: np.concatenate([getattr(e, key) for e in explanations])
        for key in ("heatmaps", "targets", "scores", "class_scores")
    }, [len(e.heatmaps) for e in explanations]


def assert_same(got, expected):
    for key in ("heatmaps", "targets", "scores", "class_scores"):
        np.testing.assert_allclose(got[key], getattr(expected, key), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batched", [None, 3, 4], ids=["unbatched", "batch3", "batch4"])
def test_generator_equals_explainer(cam, data, batched):
    x, _ = data
    ds = tf.data.Dataset.from_tensor_slices(x)
    if batched:
        ds = ds.batch(batched)
    results = explain_dataset(cam, ds, progress=False)
    assert not isinstance(results, DatasetExplanation)  # a lazy generator
    got, sizes = concat(results)
    assert sizes == [4, 4, 3]  # re-batched to the explainer's batch_size
    assert_same(got, cam.explain(x))


def test_labels_as_targets_and_other_targets(cam, data):
    x, y = data
    pairs = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    got, _ = concat(explain_dataset(cam, pairs, targets="label", progress=False))
    assert_same(got, cam.explain(x, y))
    np.testing.assert_array_equal(got["targets"], y)
    onehot = tf.data.Dataset.from_tensor_slices((x, np.eye(5, dtype=np.float32)[y], np.ones(N)))
    got, _ = concat(explain_dataset(cam, onehot, targets="label", progress=False))
    assert_same(got, cam.explain(x, y))  # one-hot labels; sample weights ignored
    got, _ = concat(explain_dataset(cam, pairs, targets=2, progress=False))
    assert_same(got, cam.explain(x, 2))
    per_sample = (np.arange(N) % 5)[::-1].copy()
    got, _ = concat(explain_dataset(cam, pairs, targets=per_sample, progress=False))
    assert_same(got, cam.explain(x, per_sample))
    got, _ = concat(explain_dataset(cam, pairs, progress=False))  # default: top-1
    assert_same(got, cam.explain(x))


def test_callable_target(cam, data):
    x, _ = data

    def target(outputs):
        return outputs[:, 1] - outputs[:, 0]

    got, _ = concat(explain_dataset(cam, tf.data.Dataset.from_tensor_slices(x), targets=target,
                                    progress=False))
    assert_same(got, cam.explain(x, target))
    assert (got["targets"] == -1).all()


def test_png_folder_and_memmap(cam, data, tmp_path):
    x, y = data
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(3)
    maps_path = tmp_path / "maps.npy"
    summary = write_explanations(cam, ds, targets="label", out_dir=tmp_path / "png",
                                 maps_path=maps_path, progress=False)
    expected = cam.explain(x, y)
    assert isinstance(summary, DatasetExplanation)
    assert summary.count == N
    np.testing.assert_array_equal(summary.indices, np.arange(N))
    np.testing.assert_array_equal(summary.targets, y)
    np.testing.assert_allclose(summary.scores, expected.scores, rtol=1e-5)
    np.testing.assert_array_equal(summary.predicted, expected.predicted)
    assert isinstance(summary.maps, np.memmap)
    np.testing.assert_allclose(np.load(maps_path), expected.heatmaps, atol=1e-6)
    names = sorted(os.listdir(tmp_path / "png"))
    assert names == [f"{i:06d}.png" for i in range(N)]
    assert summary.files == [os.path.join(tmp_path / "png", n) for n in names]
    import matplotlib.image

    picture = matplotlib.image.imread(summary.files[5])
    assert picture.shape[:2] == (16, 16)
    reference = kgc.overlay(x[5:6], expected.heatmaps[5:6])[0]
    np.testing.assert_allclose(picture[..., :3] * 255, reference, atol=1)


def test_memmap_count_for_unknown_cardinality(cam, data, tmp_path):
    x, _ = data
    ds = tf.data.Dataset.from_tensor_slices(x).filter(lambda image: True)
    with pytest.raises(ValueError, match="count="):
        write_explanations(cam, ds, maps_path=tmp_path / "m.npy", progress=False)
    summary = write_explanations(cam, ds, maps_path=tmp_path / "m.npy", count=N, progress=False)
    np.testing.assert_allclose(summary.maps, cam(x), atol=1e-6)


def test_progress_bar(cam, data, capsys):
    x, _ = data
    list(explain_dataset(cam, tf.data.Dataset.from_tensor_slices(x), progress=True))
    out = capsys.readouterr().out
    assert f"{N}/{N}" in out
    list(explain_dataset(cam, tf.data.Dataset.from_tensor_slices(x), progress=False))
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("batch", [4, 11])
def test_progress_bar_knows_the_size_of_a_batched_dataset(cam, data, capsys, batch):
    x, _ = data  # batches of unknown size (the last one may be partial), a known number of them
    list(kgc.iter_explanations(cam, tf.data.Dataset.from_tensor_slices(x).batch(batch)))
    out = capsys.readouterr().out
    assert "Unknown" not in out and f"{N}/{N}" in out


def test_one_trace_for_the_whole_dataset(cnn, data):
    x, _ = data
    cam = kgc.GradCAM(cnn, batch_size=4)
    list(explain_dataset(cam, tf.data.Dataset.from_tensor_slices(x), progress=False))
    list(explain_dataset(cam, tf.data.Dataset.from_tensor_slices(x).batch(7), progress=False))
    assert cam.trace_count == 1


def test_uint8_images_and_dict_inputs(cnn, data):
    x, _ = data
    cam = kgc.GradCAM(cnn, batch_size=4)
    raw = (x * 255).astype(np.uint8)
    got, _ = concat(explain_dataset(cam, tf.data.Dataset.from_tensor_slices(raw), progress=False))
    assert_same(got, cam.explain(raw))
    as_dict = tf.data.Dataset.from_tensor_slices({"image": x})
    got, _ = concat(explain_dataset(cam, as_dict, progress=False))
    assert_same(got, cam.explain(x))


def test_errors(cam, data, tmp_path):
    x, y = data
    images = tf.data.Dataset.from_tensor_slices(x)
    with pytest.raises(TypeError, match="tf.data.Dataset"):
        explain_dataset(cam, x)
    with pytest.raises(TypeError, match="BaseCAM"):
        explain_dataset(cam.model, images)
    with pytest.raises(ValueError, match="needs a dataset of \\(inputs, labels\\)"):
        explain_dataset(cam, images, targets="label")
    with pytest.raises(ValueError, match="targets"):
        explain_dataset(cam, images, targets="labels")
    with pytest.raises(InvalidTargetError, match="one class per sample"):
        explain_dataset(cam, images, targets=[1, 2])
    with pytest.raises(InvalidTargetError, match=r"\[0, 4\]"):
        explain_dataset(cam, images, targets=7)
    with pytest.raises(ValueError, match="infinite"):
        explain_dataset(cam, images.repeat())
    with pytest.raises(InvalidInputError, match="shaped like the model input"):
        explain_dataset(cam, tf.data.Dataset.from_tensor_slices(x[:, :, 0, 0]))
    with pytest.raises(ValueError, match="positive int"):
        explain_dataset(cam, images, batch_size=0)
    with pytest.raises(TypeError, match="Strategy"):
        explain_dataset(cam, images, strategy="mirrored")
    with pytest.raises(InvalidInputError, match="no input looks like images"):
        flat = tf.data.Dataset.from_tensor_slices(np.zeros((4, 16, 16, 5), np.float32))
        write_explanations(kgc.GradCAM(small_cnn_channels(5)), flat, out_dir=tmp_path)
    with pytest.raises(ValueError, match="tuple of 4 parts"):
        explain_dataset(cam, tf.data.Dataset.from_tensor_slices((x, y, y, y)))
    bad_labels = tf.data.Dataset.from_tensor_slices((x, y + 3))
    with pytest.raises(InvalidTargetError, match="outside the explained output's range"):
        list(explain_dataset(cam, bad_labels, targets="label", progress=False))
    nan = x.copy()
    nan[2, 0, 0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        list(explain_dataset(cam, tf.data.Dataset.from_tensor_slices(nan), progress=False))


def small_cnn_channels(channels):
    import keras

    inputs = keras.Input((16, 16, channels))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def test_package_exports_explain_dataset():
    assert kgc.explain_dataset is explain_dataset


_MIRRORED = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    sys.path.insert(0, sys.argv[1])
    from conftest import small_cnn
    import keras_gradcam as kgc
    from keras_gradcam.writing import explain_dataset, write_explanations

    keras.utils.set_random_seed(0)
    model = small_cnn()
    rng = np.random.default_rng(0)
    x = rng.random((N, 16, 16, 3), dtype=np.float32)
    y = np.arange(N) % 5
    cam = kgc.GradCAM(model, batch_size=4)
    pairs = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    report = {"replicas": strategy.num_replicas_in_sync}
    for name, targets in (("top1", None), ("label", "label")):
        single = list(explain_dataset(cam, pairs, targets=targets, progress=False))
        multi = list(explain_dataset(cam, pairs, targets=targets, strategy=strategy,
                                     progress=False))
        report[name] = {
            "sizes": [len(e.heatmaps) for e in multi],
            **{key: float(np.abs(np.concatenate([getattr(e, key) for e in single])
                                 - np.concatenate([getattr(e, key) for e in multi])).max())
               for key in ("heatmaps", "scores", "class_scores")},
            "targets": bool((np.concatenate([e.targets for e in single])
                             == np.concatenate([e.targets for e in multi])).all()),
        }
    with strategy.scope():  # the active strategy is picked up without strategy=
        summary = write_explanations(cam, pairs, targets="label", progress=False,
                                     maps_path=os.path.join(sys.argv[2], "maps.npy"),
                                     out_dir=os.path.join(sys.argv[2], "png"))
    report["scope_maps"] = float(np.abs(np.asarray(summary.maps) - cam(x, y)).max())
    report["scope_indices"] = summary.indices.tolist()
    report["pngs"] = len(os.listdir(os.path.join(sys.argv[2], "png")))
    print(json.dumps(report))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_equals_single_device(tmp_path):
    n = 17  # two replicas x 4: the last global batch of 1 leaves one replica empty
    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED.replace("(N, 16", f"({n}, 16").replace("arange(N)", f"arange({n})"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run(
        [sys.executable, str(script), os.path.dirname(__file__), str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    for name in ("top1", "label"):
        assert report[name]["sizes"] == [8, 8, 1]  # 4 per replica and step, in order
        assert report[name]["targets"]
        for key in ("heatmaps", "scores", "class_scores"):
            assert report[name][key] < 1e-5, (name, key, report[name][key])
    assert report["scope_maps"] < 1e-5
    assert report["scope_indices"] == list(range(n))
    assert report["pngs"] == n
