"""Regenerate the README's pictures from the demo's data: `python docs/make_pictures.py`.

Writes `docs/images/shortcut_vs_control.png` (Grad-CAM of the same probes by the model that
learned the planted shortcut and by the control) and `docs/images/methods_gallery.png` (every
method of `kgc.METHODS` on four probes of the control model). Fashion-MNIST is used where it
is installed, else the demo's generated data; the pictures say which.
"""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from matplotlib.figure import Figure  # noqa: E402

import keras_gradcam as kgc  # noqa: E402
from keras_gradcam.demo import load_demo_data, train_and_watch  # noqa: E402
from keras_gradcam.image import draw, side_by_side  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main(out: str = os.path.join(HERE, "images"), epochs: int = 6) -> int:
    d = load_demo_data()
    probes = d["x_probe"][:8]
    models, rows = {}, []
    with tempfile.TemporaryDirectory() as logs:
        for run, x in (("shortcut", d["x_train"]), ("control", d["x_control"])):
            models[run], callback = train_and_watch(d, x, os.path.join(logs, run), epochs, run)
            maps = callback.last_explanation.heatmaps[:8]
            energy = kgc.metrics.energy_in_mask(maps, d["probe_masks"][:8])
            rows.append((f"{run}: energy in object {energy.mean():.2f}", draw(probes, maps)))
    figure = Figure(figsize=(12, 3.4), layout="constrained")
    figure.suptitle(f"Grad-CAM of the same probes after {epochs} epochs ({d['source']} data)")
    for r, (label, pictures) in enumerate(rows):
        for c, picture in enumerate(pictures):
            axis = figure.add_subplot(2, 8, r * 8 + c + 1)
            axis.imshow(picture)
            axis.set_xticks([]), axis.set_yticks([])
            if c == 0:
                axis.set_ylabel(label.replace(": ", "\n"), fontsize=8)
            if r == 0:
                axis.set_title(d["class_names"][d["y_probe"][c]], fontsize=8)
    os.makedirs(out, exist_ok=True)
    figure.savefig(os.path.join(out, "shortcut_vs_control.png"), dpi=72)

    images, labels = d["x_probe"][:2], d["y_probe"][:2]
    names = ["input", *kgc.METHODS]
    cols = 6
    rows_needed = -(-len(names) // cols)
    gallery = Figure(figsize=(2.4 * cols, 1.45 * rows_needed + 0.4), layout="constrained")
    gallery.suptitle(f"Every method on two probes of the control model ({d['source']} data), "
                     "explaining the true class")
    for i, name in enumerate(names):
        if name == "input":
            pictures = draw(images)
        else:
            explanation = kgc.get_method(name)(models["control"]).explain(images, labels)
            pictures = draw(images, explanation)
        axis = gallery.add_subplot(rows_needed, cols, i + 1)
        axis.imshow(side_by_side(list(pictures), gap_value=255)), axis.axis("off")
        axis.set_title(name, fontsize=8)
    gallery.savefig(os.path.join(out, "methods_gallery.png"), dpi=72)
    print(f"wrote {out}/shortcut_vs_control.png and {out}/methods_gallery.png "
          f"({d['source']} data; {rows[0][0]}; {rows[1][0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
