"""The `keras-gradcam` command on models and PNG files written in the test."""

import csv
import os
import re
import subprocess
import sys

import keras
import matplotlib.image
import numpy as np
import pytest
from conftest import small_cnn

import keras_gradcam as kgc
from keras_gradcam.cli import main


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    keras.utils.set_random_seed(0)
    small_cnn(classes=3, size=16).save(root / "model.keras")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    for i, size in enumerate([(16, 16), (30, 20), (16, 16)]):
        matplotlib.image.imsave(root / "images" / f"img{i}.png",
                                rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    (root / "images" / "broken.png").write_bytes(b"not a png")
    return root


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_explain_writes_overlays_and_csv(workdir, tmp_path):
    images = [str(workdir / "images" / f"img{i}.png") for i in range(3)]
    code = main(["explain", str(workdir / "model.keras"), *images, "--out", str(tmp_path),
                 "--target", "2"])
    assert code == 0
    rows = read_csv(tmp_path / "explanations.csv")
    assert [os.path.basename(r["file"]) for r in rows] == ["img0.png", "img1.png", "img2.png"]
    assert {r["explained"] for r in rows} == {"2"}
    assert all(0.0 <= float(r["score"]) <= 1.0 and r["predicted"] in "012" for r in rows)
    picture = matplotlib.image.imread(tmp_path / "img1_gradcam.png")
    assert picture.shape[:2] == (30, 20)  # the image's own size, not the model's 16 x 16


def test_explain_draws_the_map_on_the_original_image_or_at_size_out(workdir, tmp_path):
    image = str(workdir / "images" / "img1.png")  # 30 x 20, the model takes 16 x 16
    assert main(["explain", str(workdir / "model.keras"), image, "--out", str(tmp_path / "own"),
                 "--target", "1"]) == 0
    model = keras.saving.load_model(workdir / "model.keras")
    original = matplotlib.image.imread(image)[..., :3]
    from keras_gradcam.cli import _read_image

    heatmap = kgc.GradCAM(model)(_read_image(image, (16, 16), 3)[None] / 255.0, targets=1)
    expected = kgc.overlay(original, heatmap[0])  # the map upsampled to 30 x 20
    drawn = matplotlib.image.imread(tmp_path / "own" / "img1_gradcam.png")[..., :3]
    np.testing.assert_allclose(drawn * 255, expected, atol=1.01)
    assert main(["explain", str(workdir / "model.keras"), image, "--out", str(tmp_path / "out"),
                 "--size-out", "45", "12"]) == 0
    assert matplotlib.image.imread(tmp_path / "out" / "img1_gradcam.png").shape[:2] == (45, 12)



def test_explain_scores_are_the_model_probabilities(workdir, tmp_path):
    images = [str(workdir / "images" / f"img{i}.png") for i in (0, 2)]
    assert main(["explain", str(workdir / "model.keras"), *images, "--out", str(tmp_path)]) == 0
    model = keras.saving.load_model(workdir / "model.keras")
    batch = np.stack([matplotlib.image.imread(p)[..., :3] for p in images]).astype(np.float32)
    probabilities = model.predict(batch, verbose=0)  # the default --preprocess scale01: 0-1
    for row, p in zip(read_csv(tmp_path / "explanations.csv"), probabilities):
        assert int(row["predicted"]) == int(p.argmax())
        assert float(row["score"]) == pytest.approx(float(p.max()), rel=1e-4)


def test_explain_a_single_sigmoid_unit_and_repeated_file_names(tmp_path):
    keras.utils.set_random_seed(0)
    small_cnn(classes=1, activation="sigmoid", size=16).save(tmp_path / "binary.keras")
    rng = np.random.default_rng(1)
    files = []
    for folder in ("a", "b"):
        for i in range(4):
            (tmp_path / folder).mkdir(exist_ok=True)
            files.append(str(tmp_path / folder / f"x{i}.png"))
            matplotlib.image.imsave(files[-1], rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    out = tmp_path / "out"
    assert main(["explain", str(tmp_path / "binary.keras"), *files, "--out", str(out)]) == 0
    rows = read_csv(out / "explanations.csv")
    assert len(rows) == 8 and {r["predicted"] for r in rows} <= {"0", "1"}
    assert all(0.5 <= float(r["score"]) <= 1.0 for r in rows)  # the predicted class's probability
    assert len(list(out.glob("*.png"))) == 8  # same names in two folders do not overwrite


@pytest.mark.parametrize("method", ["guided-backprop", "guided-gradcam"])
@pytest.mark.parametrize(("stem", "size"), [("img0", (16, 16)), ("img1", (30, 20))])
def test_explain_with_a_guided_method_writes_the_guided_image(workdir, tmp_path, method, stem,
                                                              size):
    image = str(workdir / "images" / f"{stem}.png")
    code = main(["explain", str(workdir / "model.keras"), image, "--out", str(tmp_path),
                 "--method", method])
    assert code == 0
    picture = matplotlib.image.imread(tmp_path / f"{stem}_{method}.png")
    assert picture.shape[:2] == size  # the image's own size (guided images are resized to it)
    assert picture[..., :3].std() > 0  # a gradient image, not a blank canvas


def test_explain_each_file_once_when_patterns_overlap(workdir, tmp_path, monkeypatch):
    folder = workdir / "images"
    monkeypatch.chdir(workdir)
    patterns = [str(folder / "img1.png"), str(folder / "*.png"), str(folder),
                os.path.join("images", "img0.png"), str(folder / "." / "img2.png")]
    assert main(["explain", str(workdir / "model.keras"), *patterns, "--out", str(tmp_path)]) == 1
    rows = read_csv(tmp_path / "explanations.csv")  # broken.png fails once: exit code 1
    assert [os.path.basename(r["file"]) for r in rows] == ["img1.png", "img0.png", "img2.png"]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "img0_gradcam.png", "img1_gradcam.png", "img2_gradcam.png"]


@pytest.mark.parametrize(
    "text",
    ["cat\ndog\nbird\n\n", '["cat", "dog", "bird"]',
     '{"1": ["n02", "dog"], "0": ["n01", "cat"], "2": ["n03", "bird"]}'],
    ids=["lines", "json-list", "imagenet-json"],
)
def test_explain_labels_name_the_classes_in_the_csv(workdir, tmp_path, text):
    (tmp_path / "labels.txt").write_text(text)
    images = [str(workdir / "images" / f"img{i}.png") for i in range(3)]
    assert main(["explain", str(workdir / "model.keras"), *images, "--out", str(tmp_path / "o"),
                 "--target", "1", "--labels", str(tmp_path / "labels.txt")]) == 0
    with open(tmp_path / "o" / "explanations.csv") as f:
        assert next(csv.reader(f)) == ["file", "predicted", "score", "explained", "overlay",
                                       "predicted_name", "explained_name"]
    names = ["cat", "dog", "bird"]
    for row in read_csv(tmp_path / "o" / "explanations.csv"):
        assert row["predicted_name"] == names[int(row["predicted"])]
        assert row["explained_name"] == "dog"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cat\ndog\n", r"names 2 classes but the model has 3\. Give one name per class"),
        ("cat\n\ndog\nbird\n", "class 1 has an empty name"),
        ("", "no class names"),
        ('["cat", 2, "bird"]', "JSON labels must be a list of names"),
        ('{"0": "cat", "2": "bird"}', "every class index from 0 on"),
        ("[cat]", "not valid JSON"),
    ],
)
def test_explain_bad_labels_are_one_error_line(workdir, tmp_path, capsys, text, message):
    (tmp_path / "labels.txt").write_text(text)
    code = main(["explain", str(workdir / "model.keras"), str(workdir / "images" / "img0.png"),
                 "--out", str(tmp_path / "o"), "--labels", str(tmp_path / "labels.txt")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("keras-gradcam: error: --labels") and re.search(message, err), err
    assert not list(tmp_path.glob("o/*"))  # nothing written


def test_explain_help_says_what_each_preprocessing_does():
    result = subprocess.run([sys.executable, "-m", "keras_gradcam", "explain", "--help"],
                            capture_output=True, text=True)
    text = " ".join(result.stdout.split())
    for phrase in ["tf: scale to [-1, 1]", "caffe: RGB to BGR, then subtract the ImageNet",
                   "torch: scale to [0, 1], then normalise by the ImageNet mean and std",
                   "--labels FILE"]:
        assert phrase in text


def test_explain_a_folder_goes_on_past_an_unreadable_image(workdir, tmp_path, capsys):
    code = main(["explain", str(workdir / "model.keras"), str(workdir / "images"),
                 "--out", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot read image" in err and "broken.png" in err
    assert len(read_csv(tmp_path / "explanations.csv")) == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layer", "conv_9"], "No layer named 'conv_9'"),
        (["--target", "abc"], "--target must be 'auto' or a class index"),
        (["--target", "7"], r"Target classes must lie in \[0, 2\]"),
    ],
)
def test_explain_errors_are_one_clear_line(workdir, tmp_path, capsys, extra, message):
    code = main(["explain", str(workdir / "model.keras"), str(workdir / "images" / "img0.png"),
                 "--out", str(tmp_path), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("keras-gradcam: error:") and re.search(message, err)
    assert "Traceback" not in err


def test_a_model_that_cannot_load(tmp_path, capsys):
    (tmp_path / "bad.keras").write_bytes(b"junk")
    code = main(["explain", str(tmp_path / "bad.keras"), "x.png", "--out", str(tmp_path)])
    assert code == 2 and "cannot load model" in capsys.readouterr().err


def test_lambda_model_needs_unsafe(tmp_path, capsys):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    x = keras.layers.Conv2D(2, 3, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    model.save(tmp_path / "lambda.keras")
    matplotlib.image.imsave(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    args = ["explain", str(tmp_path / "lambda.keras"), str(tmp_path / "a.png"),
            "--out", str(tmp_path / "out")]
    assert main(args) == 2 and "--unsafe" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="safe_mode off"):
        assert main([*args, "--unsafe"]) == 0


def test_version_and_help_via_python_m():
    result = subprocess.run([sys.executable, "-m", "keras_gradcam", "--version"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"keras-gradcam {kgc.__version__}"
    result = subprocess.run([sys.executable, "-m", "keras_gradcam", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout and "explain" in result.stdout


# Runs `python -m keras_gradcam ARGS` in this process and reports what it imported.
FAST_ANSWER = """
import runpy, sys, time
sys.argv = ["keras-gradcam", *sys.argv[1:]]
started = time.perf_counter()
try:
    runpy.run_module("keras_gradcam", run_name="__main__")
except SystemExit as exit:
    code = exit.code
seconds = time.perf_counter() - started
heavy = sorted(m for m in ("tensorflow", "keras", "numpy", "matplotlib") if m in sys.modules)
print(f"code={code} heavy={heavy} seconds={seconds:.3f}", file=sys.stderr)
"""


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--help"], 0),
        (["--version"], 0),
        (["explain", "--help"], 0),
        (["demo", "--help"], 0),
        (["explain", "model.keras", "x.png"], 2),  # --out missing
        (["explain", "model.keras", "x.png", "--out", "o", "--batch-size", "0"], 2),
        (["explain", "model.keras", "x.png", "--out", "o", "--target", "abc"], 2),
        (["explain", "model.keras", "x.png", "--out", "o", "--labels", "missing.txt"], 2),
        (["bogus"], 2),
    ],
)
def test_help_version_and_argument_errors_do_not_import_tensorflow(tmp_path, args, code):
    result = subprocess.run([sys.executable, "-c", FAST_ANSWER, *args], capture_output=True,
                            text=True, cwd=tmp_path)
    report = result.stderr.strip().splitlines()[-1]
    assert report.startswith(f"code={code} heavy=[] "), result.stderr[-2000:]


def test_cli_method_names_are_the_library_methods():
    from keras_gradcam._names import METHOD_NAMES

    assert list(METHOD_NAMES) == list(kgc.METHODS)
    result = subprocess.run([sys.executable, "-m", "keras_gradcam", "explain", "--help"],
                            capture_output=True, text=True)
    assert ", ".join(kgc.METHODS) in " ".join(result.stdout.split())


def test_lazy_package_gives_every_public_name():
    code = ("import sys, keras_gradcam as kgc; assert 'tensorflow' not in sys.modules; "
            "from keras_gradcam import GradCAM; assert 'tensorflow' in sys.modules; "
            "missing = [n for n in kgc.__all__ if not hasattr(kgc, n)]; "
            "assert not missing and set(kgc.__all__) <= set(dir(kgc)), missing; "
            "assert GradCAM is kgc.METHODS['gradcam'] and kgc.metrics.energy_in_mask")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.slow
def test_demo_two_epochs_writes_event_files_tensorboard_reads(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = subprocess.run(
        [sys.executable, "-m", "keras_gradcam", "demo", "--epochs", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert [line.split(" epoch ")[0].strip() for line in lines if " epoch " in line] == [
        "shortcut", "shortcut", "control", "control"]
    assert lines[-1] == f"TensorBoard: tensorboard --logdir {tmp_path / 'logs'}"
    summary = (tmp_path / "summary.txt").read_text()
    assert summary.startswith("summary: shortcut: test accuracy") and "control:" in summary
    for run in ("shortcut", "control"):
        assert len(list((tmp_path / "overlays" / run).glob("probe_*.png"))) == 16
        events = EventAccumulator(str(tmp_path / "logs" / run / "gradcam"),
                                  size_guidance={"images": 0, "tensors": 0})
        events.Reload()
        assert {e.step for e in events.Tensors("gradcam/energy_in_mask")} == {0, 1}
        assert "gradcam/probe_00" in events.Tags()["tensors"]
        for keras_run in ("train", "validation"):  # the README: "next to train/validation"
            events = EventAccumulator(str(tmp_path / "logs" / run / keras_run),
                                      size_guidance={"tensors": 0})
            events.Reload()
            assert {e.step for e in events.Tensors("epoch_accuracy")} == {0, 1}


DEMO_SUMMARY = re.compile(
    r"shortcut: test accuracy (?P<s_with>[\d.]+) with class markers, (?P<s_without>[\d.]+) "
    r"without; Grad-CAM energy inside the object (?P<s_energy>[\d.]+); control: test accuracy "
    r"[\d.]+ with class markers, [\d.]+ without; Grad-CAM energy inside the object "
    r"(?P<c_energy>[\d.]+);"
)


@pytest.mark.slow
def test_demo_tells_the_shortcut_story_on_generated_data(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "keras_gradcam", "demo", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "KERAS_GRADCAM_DATA": "shapes"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    first = result.stdout.splitlines()[0]
    assert "generated images (KERAS_GRADCAM_DATA=shapes)" in first
    assert "apt-get install dataset-fashion-mnist" in first
    numbers = {k: float(v) for k, v in
               DEMO_SUMMARY.search((tmp_path / "summary.txt").read_text()).groupdict().items()}
    assert numbers["s_with"] - numbers["s_without"] >= 0.30, numbers  # fails without the marker
    assert numbers["s_energy"] <= 0.5 * numbers["c_energy"], numbers  # maps off the object


def test_demo_data_choice_explicit_then_environment_then_fashion_mnist(monkeypatch):
    from keras_gradcam.demo import choose_data

    monkeypatch.delenv("KERAS_GRADCAM_DATA", raising=False)
    assert choose_data() == ("fashion-mnist", "auto")
    monkeypatch.setenv("KERAS_GRADCAM_DATA", "shapes")
    assert choose_data() == ("shapes", "KERAS_GRADCAM_DATA=shapes")
    assert choose_data("fashion-mnist") == ("fashion-mnist", "--data fashion-mnist")
    monkeypatch.setenv("KERAS_GRADCAM_DATA", "mnist")
    with pytest.raises(ValueError, match="KERAS_GRADCAM_DATA must be one of auto, fashion-mnist"):
        choose_data()


def test_demo_without_fashion_mnist_says_so_and_how_to_get_it(monkeypatch, tmp_path, capsys):
    from keras_gradcam import datasets
    from keras_gradcam.demo import load_demo_data

    def missing(*args, **kwargs):
        raise FileNotFoundError("Fashion-MNIST is not in /nowhere and could not be downloaded. "
                                "Install it with `apt-get install dataset-fashion-mnist`.")

    monkeypatch.delenv("KERAS_GRADCAM_DATA", raising=False)
    monkeypatch.setattr(datasets, "load_fashion_mnist", missing)
    d = load_demo_data(n_train=40, n_probe=4)
    assert d["source"] == "generated look-alike" and d["class_names"] == list(
        datasets.STRIPE_CLASSES)
    assert d["note"].startswith("Fashion-MNIST is not installed")
    assert "apt-get install dataset-fashion-mnist" in d["note"]
    assert d["x_train"].shape == (40, 40, 40, 1) and d["probe_masks"].shape == (4, 40, 40)
    # asked for explicitly, its absence is one error line
    assert main(["demo", "--data", "fashion-mnist", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-gradcam: error: Fashion-MNIST is not in") and "apt-get" in err
    monkeypatch.setenv("KERAS_GRADCAM_DATA", "bogus")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "KERAS_GRADCAM_DATA must be one of" in capsys.readouterr().err


def test_explain_scales_16_bit_images_instead_of_clipping(workdir, tmp_path):
    from PIL import Image

    from keras_gradcam.cli import _read_image

    ramp8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for folder in ("8", "16"):
        (tmp_path / folder).mkdir()
    Image.fromarray(ramp8).save(tmp_path / "8" / "ramp.png")
    Image.fromarray(ramp8.astype(np.uint16) * 257).save(tmp_path / "16" / "ramp.png")  # 0..65535
    with Image.open(tmp_path / "16" / "ramp.png") as image:
        assert image.mode.startswith("I")  # really a 16-bit image
    seen8 = _read_image(str(tmp_path / "8" / "ramp.png"), (16, 16), 3)
    seen16 = _read_image(str(tmp_path / "16" / "ramp.png"), (16, 16), 3)
    np.testing.assert_array_equal(seen16, seen8)
    for folder in ("8", "16"):
        assert main(["explain", str(workdir / "model.keras"), str(tmp_path / folder / "ramp.png"),
                     "--out", str(tmp_path / f"out{folder}")]) == 0
    np.testing.assert_array_equal(matplotlib.image.imread(tmp_path / "out16" / "ramp_gradcam.png"),
                                  matplotlib.image.imread(tmp_path / "out8" / "ramp_gradcam.png"))
    row8, row16 = (read_csv(tmp_path / f"out{f}" / "explanations.csv")[0] for f in ("8", "16"))
    assert (row16["predicted"], row16["score"]) == (row8["predicted"], row8["score"])


def test_read_image_refuses_images_it_cannot_scale(tmp_path):
    from PIL import Image

    from keras_gradcam.cli import _read_image

    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "float.tiff")
    Image.fromarray(np.full((4, 4), 70000, np.int32)).save(tmp_path / "int32.tiff")
    with pytest.raises(ValueError, match="floating-point"):
        _read_image(str(tmp_path / "float.tiff"), (4, 4), 3)
    with pytest.raises(ValueError, match=r"0\.\.65535.*Received: values in \[70000, 70000\]"):
        _read_image(str(tmp_path / "int32.tiff"), (4, 4), 3)


def test_explain_output_names_are_unique_and_listed_in_the_csv(workdir, tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "a.jpg", "a_2.png"):
        matplotlib.image.imsave(folder / name, rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    out = tmp_path / "out"
    assert main(["explain", str(workdir / "model.keras"), str(folder), "--out", str(out)]) == 0
    with open(out / "explanations.csv") as f:
        assert next(csv.reader(f)) == ["file", "predicted", "score", "explained", "overlay"]
    rows = read_csv(out / "explanations.csv")
    written = [r["overlay"] for r in rows]
    assert len(rows) == 3 and len(set(written)) == 3
    assert sorted(p.name for p in out.glob("*.png")) == sorted(written)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--batch-size", "0"], "argument --batch-size: must be a positive integer"),
        (["--batch-size", "-1"], "argument --batch-size: must be a positive integer"),
        (["--batch-size", "x"], "argument --batch-size: must be a positive integer"),
        (["--size", "0", "0"], "argument --size: must be a positive integer"),
        (["--out", "FILE"], "argument --out: .* is a file, not a folder"),
    ],
)
def test_explain_bad_arguments_exit_2_with_one_error_line(workdir, tmp_path, capsys, extra,
                                                         message):
    (tmp_path / "file.txt").write_text("not a folder")
    extra = [str(tmp_path / "file.txt") if a == "FILE" else a for a in extra]
    args = ["explain", str(workdir / "model.keras"), str(workdir / "images" / "img0.png"),
            "--out", str(tmp_path / "out"), *extra]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and re.search(message, errors[0]), err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_explain_out_folder_that_cannot_be_created_is_one_error_line(workdir, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("not a folder")
    code = main(["explain", str(workdir / "model.keras"), str(workdir / "images" / "img0.png"),
                 "--out", str(tmp_path / "file.txt" / "sub")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot create the output folder" in err and "Traceback" not in err
