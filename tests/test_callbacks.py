"""GradCAMCallback: real fits, event files read by TensorBoard's own reader, a real server."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from callback_helpers import SIZE, objects, read_events, tiny_cnn, written  # noqa: E402

import keras_gradcam as kgc  # noqa: E402
from keras_gradcam.callbacks import grid_shape  # noqa: E402

NAMES = ["horizontal", "vertical"]
HERE = os.path.dirname(os.path.abspath(__file__))


def steps_of(pairs, tag):
    return sorted(step for t, step in pairs if t == tag)


def decode(tensor_proto) -> np.ndarray:
    """The PNG of an image summary tensor (TF2: [width, height, png...]) as uint8 (H, W, C)."""
    strings = tf.make_ndarray(tensor_proto)
    return tf.io.decode_png(strings[2]).numpy()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real fit: 5 epochs, freq=2 (logs epochs 0, 2, 4), labels, names, masks, 'both'."""
    log_dir = str(tmp_path_factory.mktemp("run"))
    x, y, _ = objects(256, shortcut=False, seed=1)
    probes, labels, masks = objects(6, shortcut=False, seed=2)
    model = tiny_cnn()
    cb = kgc.GradCAMCallback(
        probes, log_dir, probe_labels=labels, class_names=NAMES, masks=masks,
        freq=2, explain_classes="both", pointing_tolerance=0,
    )
    history = model.fit(
        x, y, epochs=5, batch_size=32, verbose=0,
        callbacks=[cb, keras.callbacks.TensorBoard(log_dir)],
    )
    return {"log_dir": log_dir, "cb": cb, "labels": labels, "history": history}


# ---- construction and train-begin checks (fast) --------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"freq": 0}, "`freq` must be a positive int"),
        ({"targets": "top1"}, "`targets` must be one of"),
        ({"method": "no-such-method"}, "no-such-method"),
        ({"probe_labels": None, "targets": "label"}, "needs `probe_labels`"),
        ({"num_probes": 0}, "`num_probes` must be a positive int"),
    ],
)
def test_bad_options_raise_at_construction(tmp_path, kwargs, match):
    options = {"probe_labels": np.zeros(4, int), **kwargs}
    with pytest.raises(ValueError, match=match):
        kgc.GradCAMCallback(np.zeros((4, SIZE, SIZE, 3), np.float32), tmp_path, **options)


def test_method_must_be_name_or_class(tmp_path):
    with pytest.raises(TypeError, match="BaseCAM subclass"):
        kgc.GradCAMCallback(np.zeros((2, SIZE, SIZE, 3)), tmp_path, method=object())


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"probe_images": np.zeros((4, 20, 20, 3), np.float32)}, ValueError,
         r"matching the model input shape .*Received: images.shape=\(4, 20, 20, 3\)"),
        ({"layer": "no_such_layer"}, kgc.LayerNotFoundError, "no_such_layer"),
        ({"probe_labels": np.zeros(3, int)}, ValueError, "one label per probe: expected 4"),
        ({"probe_labels": np.array([0, 1, 2, 5])}, ValueError, r"must lie in \[0, 1\]"),
        ({"masks": np.zeros((4, 12, 12), bool)}, ValueError,
         r"`masks` must be object masks of shape \(4, 24, 24\).*masks.shape=\(4, 12, 12\)"),
        ({"masks": np.zeros((3, 4))}, ValueError, r"boxes of shape \(4, 4\)"),
        ({"display_images": np.zeros((2, 24, 24, 3))}, ValueError, "one image per probe"),
        ({"class_names": ["only-one"]}, ValueError, "name all 2 classes"),
    ],
)
def test_misconfiguration_raises_before_the_first_step(tmp_path, change, error, match):
    x, y, masks = objects(4, shortcut=False, seed=0)
    options = {"probe_images": x, "probe_labels": y, "masks": masks, **change}
    cb = kgc.GradCAMCallback(log_dir=tmp_path, **options)
    model = tiny_cnn()
    before = [w.copy() for w in model.get_weights()]
    batches = []
    spy = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: batches.append(b))
    with pytest.raises(error, match=match):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[cb, spy])
    assert batches == []
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert not os.path.exists(tmp_path / "gradcam")


@pytest.mark.slow
@pytest.mark.parametrize("batched", [True, False])
def test_dataset_probes_take_the_first_n_and_their_labels(tmp_path, batched):
    x, y, _ = objects(10, shortcut=False, seed=0)
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if batched:
        dataset = dataset.batch(4)
    cb = kgc.GradCAMCallback(dataset, tmp_path, num_probes=6)
    model = tiny_cnn()
    model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    assert cb.explain_classes == "label"
    np.testing.assert_array_equal(cb.probes.labels, y[:6])
    np.testing.assert_allclose(cb.probes.inputs.numpy(), x[:6])
    pairs = written(str(tmp_path / "gradcam"))
    assert {t for t, _ in pairs["images"]} == {f"gradcam/probe_{i:02d}" for i in range(6)} | {
        "gradcam/grid"
    }
    assert ("gradcam/probe_accuracy", 0) in pairs["scalars"]


@pytest.mark.slow
def test_dataset_without_labels_explains_predictions(tmp_path):
    x, y, _ = objects(5, shortcut=False, seed=0)
    cb = kgc.GradCAMCallback(tf.data.Dataset.from_tensor_slices(x), tmp_path)
    tiny_cnn().fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    assert cb.explain_classes == "predicted" and cb.probes.count == 5
    scalars = {t for t, _ in written(str(tmp_path / "gradcam"))["scalars"]}
    assert scalars == {"gradcam/drift", "gradcam/zero_maps"}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradcam++", "ScoreCAM", "hirescam-class"])
def test_method_by_name_or_class(tmp_path, method):
    if method == "hirescam-class":
        method = kgc.get_method("hirescam")
    x, y, _ = objects(8, shortcut=False, seed=0)
    cb = kgc.GradCAMCallback(x[:3], tmp_path, probe_labels=y[:3], method=method)
    tiny_cnn().fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    expected = method if isinstance(method, type) else kgc.get_method(method)
    assert type(cb.explainer) is expected
    assert cb.last_explanation.heatmaps.shape == (3, SIZE, SIZE)
    assert ("gradcam/grid", 0) in written(str(tmp_path / "gradcam"))["images"]


def test_pointing_tolerance_defaults_to_15_pixels_at_224_scaled_to_the_probes(tmp_path):
    from keras_gradcam.probes import ProbeSet

    cb = kgc.GradCAMCallback(np.zeros((1, SIZE, SIZE, 3), np.float32), tmp_path)
    masks = np.zeros((1, SIZE, SIZE), bool)
    masks[0, 0, 0] = True
    maps = np.zeros((1, SIZE, SIZE), np.float32)
    maps[0, 0, 3] = 1.0  # 3 pixels from the object: more than 15 * 24 / 224 = 1.6
    probes = ProbeSet(None, 1, None, np.zeros((1, SIZE, SIZE, 3), np.float32), masks)
    np.testing.assert_array_equal(probes.localisation(maps, cb.pointing_tolerance)[1], [0.0])
    np.testing.assert_array_equal(probes.localisation(maps, 3)[1], [1.0])  # pixels


def test_method_without_2d_maps_is_refused_at_train_begin(tmp_path):
    x, y, _ = objects(4, shortcut=False, seed=0)
    cb = kgc.GradCAMCallback(x, tmp_path, probe_labels=y, method="GuidedGradCAM")
    with pytest.raises(ValueError, match="one 2D heatmap per image"):
        tiny_cnn().fit(x, y, epochs=1, verbose=0, callbacks=[cb])


# ---- end to end (slow) ---------------------------------------------------------------------


@pytest.mark.slow
def test_exact_tags_and_steps_written(trained):
    log_dir, labels = trained["log_dir"], trained["labels"]
    assert {"gradcam", "train"} <= set(os.listdir(log_dir))  # beside TensorBoard's own runs
    pairs = written(os.path.join(log_dir, "gradcam"))
    steps = [0, 2, 4]
    images = {f"gradcam/probe_{i:02d}" for i in range(6)} | {"gradcam/grid"}
    scalars = {"gradcam/drift", "gradcam/zero_maps", "gradcam/probe_accuracy"}
    for name in ("energy_in_mask", "pointing_game"):
        scalars |= {f"gradcam/{name}"} | {f"gradcam/{name}/{NAMES[c]}" for c in set(labels)}
    assert pairs == {
        "images": {(t, s) for t in images for s in steps},
        "text": {("gradcam/predictions", s) for s in steps},
        "scalars": {(t, s) for t in scalars for s in steps},
        "custom_scalars": {("custom_scalars__config__", 0)},  # the layout, once
    }
    cb = trained["cb"]
    assert cb.explainer.trace_count == 1
    assert len(cb.timings) == 3
    assert set(cb.last_scalars) == scalars


@pytest.mark.slow
def test_custom_scalars_chart_accuracy_against_energy_inside_the_object(trained):
    import re

    from tensorboard.plugins.custom_scalar import layout_pb2

    events = read_events(os.path.join(trained["log_dir"], "gradcam"))
    written_layouts = events.Tensors("custom_scalars__config__")
    assert [e.step for e in written_layouts] == [0]  # once per run, not per epoch
    layout = layout_pb2.Layout.FromString(tf.make_ndarray(written_layouts[0].tensor_proto).item())
    [category] = layout.category
    [chart] = category.chart
    assert chart.title == "accuracy vs energy inside the object"
    patterns = list(chart.multiline.tag)
    train_tags = set(read_events(os.path.join(trained["log_dir"], "train")).Tags()["tensors"])
    assert "epoch_accuracy" in train_tags  # keras's TensorBoard, beside the gradcam run
    for tag in ("gradcam/probe_accuracy", "gradcam/energy_in_mask", "epoch_accuracy"):
        assert any(re.search(p, tag) for p in patterns), tag
    for tag in ("gradcam/energy_in_mask/vertical", "gradcam/pointing_game", "epoch_loss"):
        assert not any(re.search(p, tag) for p in patterns), tag


@pytest.mark.slow
def test_images_decode_to_the_expected_size_with_descriptions(trained):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    directory = os.path.join(trained["log_dir"], "gradcam")
    seen = 0
    for name in os.listdir(directory):
        for event in EventFileLoader(os.path.join(directory, name)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "images":
                    continue
                image = decode(value.tensor)
                if value.tag == "gradcam/grid":
                    rows, cols = grid_shape(6)
                    assert image.shape == (rows * SIZE + (rows - 1) * 2,
                                           cols * SIZE + (cols - 1) * 2, 3)
                    continue
                description = value.metadata.summary_description
                assert description.startswith(f"Epoch {event.step}. label: ")
                parts = dict(p.split(": ", 1) for p in description.split(". ", 1)[1].split("; "))
                assert set(parts) >= {"label", "prediction", "probability", "score of label",
                                      "energy in mask"}
                panels = 2 if parts["label"] == parts["prediction"] else 3
                assert image.shape == (SIZE, panels * SIZE + (panels - 1) * 2, 3)
                seen += 1
    assert seen == 6 * 3


@pytest.mark.slow
def test_scalar_values_are_sane(trained):
    accumulator = read_events(os.path.join(trained["log_dir"], "gradcam"))
    for tag in accumulator.Tags()["tensors"]:
        if accumulator.SummaryMetadata(tag).plugin_data.plugin_name != "scalars":
            continue
        for event in accumulator.Tensors(tag):
            value = float(tf.make_ndarray(event.tensor_proto))
            assert 0.0 <= value <= 1.0, (tag, value)
    accuracy = [float(tf.make_ndarray(e.tensor_proto))
                for e in accumulator.Tensors("gradcam/probe_accuracy")]
    assert accuracy[-1] == pytest.approx(
        np.mean(trained["cb"].last_explanation.predicted == trained["labels"])
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


@pytest.mark.slow
def test_tensorboard_server_serves_the_images(trained, tmp_path):
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", trained["log_dir"],
               "--port", str(port), "--host", "127.0.0.1", "--load_fast", "false",
               "--reload_interval", "1"]
    log = open(tmp_path / "tensorboard.log", "wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline, tags = time.monotonic() + 90, {}
        while time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "tensorboard.log").read_text()
            try:
                tags = json.loads(_get(f"{base}/data/plugin/images/tags"))
                if "gradcam/grid" in tags.get("gradcam", {}):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert set(tags["gradcam"]) == {f"gradcam/probe_{i:02d}" for i in range(6)} | {
            "gradcam/grid"
        }
        entries = json.loads(_get(
            f"{base}/data/plugin/images/images?run=gradcam&tag=gradcam/grid&sample=0"
        ))
        assert [e["step"] for e in entries] == [0, 2, 4]
        png = _get(f"{base}/data/plugin/images/individualImage?{entries[-1]['query']}")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        rows, cols = grid_shape(6)
        assert tf.io.decode_png(png).shape == (rows * SIZE + (rows - 1) * 2,
                                               cols * SIZE + (cols - 1) * 2, 3)
        layout = json.loads(_get(f"{base}/data/plugin/custom_scalars/layout"))
        [chart] = layout["category"][0]["chart"]
        assert chart["title"] == "accuracy vs energy inside the object"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.mark.slow
def test_resumed_fit_continues_the_steps(tmp_path):
    x, y, _ = objects(64, shortcut=False, seed=0)
    probes, labels, _ = objects(3, shortcut=False, seed=1)
    cb = kgc.GradCAMCallback(probes, tmp_path, probe_labels=labels)
    seen = []  # what a reader finds on disk right after each logged epoch (flushed)
    reader = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(
        steps_of(written(str(tmp_path / "gradcam"))["images"], "gradcam/grid")))
    model = tiny_cnn()
    model.fit(x, y, epochs=2, verbose=0, callbacks=[cb, reader])
    assert seen == [[0], [0, 1]]
    model.fit(x, y, epochs=4, initial_epoch=2, verbose=0, callbacks=[cb])
    pairs = written(str(tmp_path / "gradcam"))
    assert steps_of(pairs["images"], "gradcam/grid") == [0, 1, 2, 3]
    assert steps_of(pairs["scalars"], "gradcam/drift") == [0, 1, 2, 3]
    assert cb.explainer.trace_count == 1  # one trace for both fits
    assert len(os.listdir(tmp_path / "gradcam")) == 2  # writer closed, a new one on resume


@pytest.mark.slow
def test_a_failing_epoch_warns_and_training_goes_on(tmp_path):
    x, y, _ = objects(64, shortcut=False, seed=0)
    probes, labels, _ = objects(3, shortcut=False, seed=1)
    cb = kgc.GradCAMCallback(probes, tmp_path, probe_labels=labels)

    def boom(*args, **kwargs):
        raise RuntimeError("forced failure")

    def sabotage(epoch, logs):  # runs before `cb` in the same epoch
        if epoch == 1:
            cb.explainer.explain = boom
        else:
            vars(cb.explainer).pop("explain", None)

    breaker = keras.callbacks.LambdaCallback(on_epoch_end=sabotage)
    model = tiny_cnn()
    with pytest.warns(RuntimeWarning, match="at epoch 1.*RuntimeError: forced failure"):
        history = model.fit(x, y, epochs=3, verbose=0, callbacks=[breaker, cb])
    assert len(history.history["loss"]) == 3
    pairs = written(str(tmp_path / "gradcam"))
    assert steps_of(pairs["images"], "gradcam/grid") == [0, 2]


@pytest.mark.slow
def test_training_is_the_same_with_and_without_the_callback(tmp_path):
    x, y, _ = objects(96, shortcut=False, seed=0)
    probes, labels, masks = objects(4, shortcut=False, seed=1)

    def train(callbacks):
        model = tiny_cnn(seed=3)
        keras.utils.set_random_seed(7)
        history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=callbacks)
        return model.get_weights(), history.history["loss"]

    plain_weights, plain_loss = train([])
    cb = kgc.GradCAMCallback(probes, tmp_path, probe_labels=labels, masks=masks,
                             explain_classes="both")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no failed epoch either
        weights, loss = train([cb])
    assert len(cb.timings) == 2
    assert loss == plain_loss
    for a, b in zip(plain_weights, weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_bias_signal_energy_in_object_falls_with_a_shortcut(tmp_path):
    """A coloured corner marker that gives the class pulls Grad-CAM off the object."""
    probes, labels, masks = objects(32, shortcut=True, seed=99)  # marker agrees with label
    energy = {}
    for shortcut in (False, True):
        x, y, _ = objects(800, shortcut=shortcut, seed=10, agreement=0.6)
        cb = kgc.GradCAMCallback(
            probes, tmp_path / str(shortcut), probe_labels=labels, masks=masks, freq=7,
            pointing_tolerance=0,
        )
        history = tiny_cnn(seed=0).fit(x, y, epochs=8, batch_size=32, verbose=0, callbacks=[cb])
        assert history.history["accuracy"][-1] > 0.8, history.history  # both learn their task
        accumulator = read_events(str(tmp_path / str(shortcut) / "gradcam"))
        energy[shortcut] = [float(tf.make_ndarray(e.tensor_proto))
                            for e in accumulator.Tensors("gradcam/energy_in_mask")]
        assert len(energy[shortcut]) == 2  # epochs 0 and 7
    assert energy[False][-1] > 0.35
    assert energy[True][-1] < 0.25
    assert energy[False][-1] - energy[True][-1] > 0.2


MIRRORED = textwrap.dedent(
    """
    import os, sys, json
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    sys.path.insert(0, sys.argv[1])
    import keras_gradcam as kgc
    from callback_helpers import objects, tiny_cnn, written
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    x, y, _ = objects(64, shortcut=False, seed=0)
    probes, labels, masks = objects(3, shortcut=False, seed=1)
    with strategy.scope():
        model = tiny_cnn()
    cb = kgc.GradCAMCallback(probes, sys.argv[2], probe_labels=labels, masks=masks)
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error", RuntimeWarning)
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cb])
    pairs = written(os.path.join(sys.argv[2], "gradcam"))
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "variable": type(model.trainable_variables[0].value).__name__,
        "grid_steps": sorted(s for t, s in pairs["images"] if t == "gradcam/grid"),
        "energy_steps": sorted(s for t, s in pairs["scalars"] if t == "gradcam/energy_in_mask"),
        "traces": cb.explainer.trace_count,
    }))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED, HERE, str(tmp_path)],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["grid_steps"] == [0, 1] and report["energy_steps"] == [0, 1]
    assert report["traces"] == 1
