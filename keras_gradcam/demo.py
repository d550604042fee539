"""`keras-gradcam demo`: the Grad-CAM paper's dataset-bias story (section 6.3), in a minute.

A small CNN learns four look-alike Fashion-MNIST classes (T-shirt, pullover, coat, shirt) from a
training set where a bright marker in a class-specific corner, outside the garment, predicts the
class. `GradCAMCallback` logs the maps of a probe set to TensorBoard every epoch; the energy of
the maps inside the garment falls as the model learns the marker instead of the garment. Keras's
TensorBoard callback logs `train` and `validation` beside it; the validation images carry no
marker, so validation accuracy stays behind training accuracy when the model takes the shortcut.

Without Fashion-MNIST (not installed, no download), or with `--data shapes` or the environment
variable `KERAS_GRADCAM_DATA=shapes`, generated look-alike classes stand in
(`datasets.striped_disks`: disks told apart only by the direction of faint stripes), and the
story holds the same way.
"""

from __future__ import annotations

import os
import time

import numpy as np

FASHION_CLASSES = (0, 2, 4, 6)  # T-shirt/top, Pullover, Coat, Shirt: hard to tell apart


def choose_data(data: str = "auto") -> tuple[str, str]:
    """Which data the demo uses, and why: `(source, reason)`, source "fashion-mnist" or "shapes".

    An explicit `data` ("fashion-mnist" or "shapes") wins; "auto" reads the environment variable
    `KERAS_GRADCAM_DATA` (same values), then takes Fashion-MNIST where it is installed and
    otherwise tries it (a download) before falling back to generated images.

    Raises:
        ValueError: an unknown `data` or `KERAS_GRADCAM_DATA` value.
    """
    from keras_gradcam import datasets

    if data not in datasets.DATA_CHOICES:
        raise ValueError(f"`data` must be one of {', '.join(datasets.DATA_CHOICES)}. "
                         f"Received: data={data!r}.")
    if data != "auto":
        return data, f"--data {data}"
    forced = os.environ.get(datasets.DATA_ENV, "auto").strip().lower() or "auto"
    if forced not in datasets.DATA_CHOICES:
        raise ValueError(f"{datasets.DATA_ENV} must be one of {', '.join(datasets.DATA_CHOICES)}. "
                         f"Received: {datasets.DATA_ENV}={forced!r}.")
    if forced != "auto":
        return forced, f"{datasets.DATA_ENV}={forced}"
    return "fashion-mnist", "auto"


def load_demo_data(data: str = "auto", n_train: int = 4000, n_probe: int = 16, seed: int = 0):
    """Training images with a planted class marker, and a probe set with object masks.

    Args:
        data: "fashion-mnist", "shapes" (generated look-alike classes, `datasets.striped_disks`)
            or "auto" (see `choose_data`: `KERAS_GRADCAM_DATA`, else Fashion-MNIST where it can
            be had, else shapes).

    Returns:
        dict with `x_train` (class markers), `x_control` (markers in random corners: they
        predict nothing), `y_train, x_probe, y_probe, probe_masks, x_test, y_test,
        x_test_clean` (no marker), `test_masks`, `class_names, source` (the data in words)
        and `note` (why this data, and how to get Fashion-MNIST when it was not used).

    Raises:
        FileNotFoundError: `data="fashion-mnist"` (or `KERAS_GRADCAM_DATA=fashion-mnist`) and
            Fashion-MNIST can be neither read nor downloaded.
    """
    from keras_gradcam import datasets

    choice, reason = choose_data(data)
    if choice == "fashion-mnist":
        try:
            images, labels = datasets.load_fashion_mnist("train")
        except FileNotFoundError:
            if reason != "auto":
                raise
            choice = "shapes"
            reason = (f"Fashion-MNIST is not installed (no {datasets.FASHION_MNIST_DIR}) and "
                      "could not be downloaded")
    if choice == "fashion-mnist":
        keep = np.isin(labels, FASHION_CLASSES)
        images, labels = images[keep], np.searchsorted(FASHION_CLASSES, labels[keep])
        names = [datasets.FASHION_MNIST_CLASSES[c] for c in FASHION_CLASSES]
        source = "Fashion-MNIST"
        note = "" if reason == "auto" else f"Fashion-MNIST chosen by {reason}"
    else:
        images, labels = datasets.striped_disks(n_train + 1000, seed=seed)
        names = list(datasets.STRIPE_CLASSES)
        source = "generated look-alike"
        lead = (f"{reason}, so generated images" if reason.startswith("Fashion")
                else f"generated images ({reason})")
        note = (f"{lead} stand in for four look-alike Fashion-MNIST garments: grey disks told "
                "apart only by the direction of faint stripes. For the Fashion-MNIST version: "
                "apt-get install dataset-fashion-mnist (Debian/Ubuntu; "
                f"files in {datasets.FASHION_MNIST_DIR}), or run it once online (keras "
                "downloads it).")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))[: n_train + 1000]
    train, test = order[:n_train], order[n_train:]
    x_train, _ = datasets.place_on_canvas(images[train], labels[train], shortcut=True)
    x_control, _ = datasets.place_on_canvas(
        images[train], labels[train], shortcut=True, shuffle_markers=True, seed=seed
    )
    x_test, masks = datasets.place_on_canvas(images[test], labels[test], shortcut=True)
    x_clean, _ = datasets.place_on_canvas(images[test], labels[test], shortcut=False)
    y_test = labels[test].astype(np.int32)
    return {
        "x_train": x_train, "x_control": x_control, "y_train": labels[train].astype(np.int32),
        "x_probe": x_test[:n_probe], "y_probe": y_test[:n_probe], "probe_masks": masks[:n_probe],
        "x_test": x_test, "y_test": y_test, "x_test_clean": x_clean, "test_masks": masks,
        "class_names": names, "source": source, "note": note,
    }


def demo_model(input_shape=(40, 40, 1), classes: int = 4):
    """A small CNN: three conv blocks, global average pooling, softmax."""
    import keras

    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="last_conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(classes, activation="softmax"),
        ],
        name="demo_cnn",
    )


def train_and_watch(d: dict, x_train, log_dir: str, epochs: int, run: str):
    """Fit the demo CNN with `GradCAMCallback` logging to `log_dir`; print one line per epoch.

    Returns:
        `(model, callback)`.
    """
    import keras

    import keras_gradcam as kgc

    keras.utils.set_random_seed(0)
    model = demo_model(x_train.shape[1:], len(d["class_names"]))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    callback = kgc.GradCAMCallback(
        d["x_probe"], log_dir=log_dir, probe_labels=d["y_probe"], class_names=d["class_names"],
        masks=d["probe_masks"], pointing_tolerance=2,
    )

    def report(epoch, logs):
        scalars = callback.last_scalars
        print(f"  {run} epoch {epoch + 1}/{epochs}: accuracy {logs['accuracy']:.3f} "
              f"(validation without markers {logs['val_accuracy']:.3f}), Grad-CAM "
              f"energy inside the object {scalars['gradcam/energy_in_mask']:.3f}, "
              f"pointing game {scalars['gradcam/pointing_game']:.3f}")

    # The validation run holds the test images without any marker: a shortcut shows as
    # training accuracy climbing while validation accuracy stays behind.
    model.fit(x_train, d["y_train"], epochs=epochs, batch_size=64, verbose=0,
              validation_data=(d["x_test_clean"], d["y_test"]), callbacks=[
                  callback, keras.callbacks.LambdaCallback(on_epoch_end=report),
                  keras.callbacks.TensorBoard(log_dir),
              ])
    return model, callback


def run_demo(out: str = "gradcam-demo", epochs: int = 6, data: str = "auto") -> int:
    """Train with and without the shortcut, log to TensorBoard, write overlays, print the bias
    numbers. Returns 0."""
    import keras_gradcam as kgc

    started = time.perf_counter()
    d = load_demo_data(data)
    if d["note"]:
        print(f"keras-gradcam demo: {d['note']}")
    print(f"keras-gradcam demo: {len(d['x_train'])} {d['source']} images "
          f"({', '.join(d['class_names'])}); 'shortcut' trains with a marker outside the object "
          "that predicts the class, 'control' with markers that predict nothing")
    logs = os.path.join(out, "logs")
    runs = {}
    for run, x_train in (("shortcut", d["x_train"]), ("control", d["x_control"])):
        model, callback = train_and_watch(d, x_train, os.path.join(logs, run), epochs, run)
        heatmaps = callback.last_explanation.heatmaps
        runs[run] = {
            "with_marker": model.evaluate(d["x_test"], d["y_test"], verbose=0)[1],
            "without": model.evaluate(d["x_test_clean"], d["y_test"], verbose=0)[1],
            "energy": kgc.metrics.energy_in_mask(heatmaps, d["probe_masks"]),
        }
        for i, picture in enumerate(kgc.overlay(d["x_probe"], heatmaps)):
            kgc.save_png(os.path.join(out, "overlays", run, f"probe_{i:02d}.png"), picture)
        figure = kgc.plot(d["x_probe"], heatmaps, cols=8, titles=[
            f"{d['class_names'][y]} e={e:.2f}" for y, e in zip(d["y_probe"], runs[run]["energy"])
        ])
        figure.savefig(os.path.join(out, f"overlays_{run}.png"), dpi=80)
    lines = [
        f"{run}: test accuracy {r['with_marker']:.3f} with class markers, {r['without']:.3f} "
        f"without; Grad-CAM energy inside the object {r['energy'].mean():.3f}"
        for run, r in runs.items()
    ]
    summary = (f"summary: {'; '.join(lines)}; overlays in {os.path.join(out, 'overlays')}; "
               f"{time.perf_counter() - started:.0f} s")
    print(summary)
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(summary + "\n")
    print(f"TensorBoard: tensorboard --logdir {logs}")
    return 0
