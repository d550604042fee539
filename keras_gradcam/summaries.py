"""What one logged epoch of `GradCAMCallback` writes, built as plain dicts first.

A summary is `{"kind": "image" | "text" | "scalar", "tag": ..., ...}`; nothing is written
until all of an epoch's summaries are computed, and `write_summaries` marks each one written,
so a failure can say exactly what of the epoch reached the event file.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from keras_gradcam.explanation import Explanation
from keras_gradcam.image import grid, overlay, png_bytes, side_by_side
from keras_gradcam.probes import ProbeSet


@dataclasses.dataclass
class EpochLog:
    """The explanations of one logged epoch and what they say.

    Attributes:
        epoch: The epoch (the summaries' step).
        probes: The probe set.
        primary: The explanation behind the scalars (of the label, or of the prediction).
        predicted: With `explain_classes="both"`, the explanation of the prediction.
        localisation: `(energy_in_mask, pointing_hits)` per probe, or None without masks.
        class_name: Class id -> display name.
        of_label: Whether `primary` explains the labels (else the predictions).
    """

    epoch: int
    probes: ProbeSet
    primary: Explanation
    predicted: Explanation | None
    localisation: tuple[np.ndarray, np.ndarray] | None
    class_name: Callable[[int], str]
    of_label: bool

    @property
    def explained(self) -> str:
        return "label" if self.of_label else "prediction"

    def scalars(self, previous_maps: np.ndarray | None) -> dict[str, float]:
        """Drift, zero maps, probe accuracy and, with masks, energy and pointing game
        (overall and per class: by label, or by prediction without labels)."""
        primary, labels = self.primary, self.probes.labels
        maps = primary.heatmaps
        scalars: dict[str, float] = {}
        if previous_maps is not None and previous_maps.shape == maps.shape:
            scalars["gradcam/drift"] = float(np.mean(np.abs(maps - previous_maps)))
        scalars["gradcam/zero_maps"] = float(np.mean(maps.reshape(len(maps), -1).max(axis=1) <= 0))
        if labels is not None:
            scalars["gradcam/probe_accuracy"] = float(np.mean(primary.predicted == labels))
        if self.localisation is not None:
            groups = labels if labels is not None else primary.predicted
            for name, values in zip(("energy_in_mask", "pointing_game"), self.localisation):
                scalars[f"gradcam/{name}"] = float(np.mean(values))
                for cls in np.unique(groups):
                    tag = f"gradcam/{name}/{tag_part(self.class_name(int(cls)))}"
                    scalars[tag] = float(np.mean(values[groups == cls]))
        return scalars

    def rows(self) -> list[dict[str, str]]:
        """One dict per probe: column -> text, for descriptions and the predictions table."""
        primary, labels = self.primary, self.probes.labels
        rows = []
        for i in range(self.probes.count):
            pred = int(primary.predicted[i])
            row = {}
            if labels is not None:
                row["label"] = self.class_name(int(labels[i]))
            row["prediction"] = self.class_name(pred)
            row["probability"] = f"{primary.probabilities[i, pred]:.3f}"
            row[f"score of {self.explained}"] = f"{primary.scores[i]:.3f}"
            if self.localisation is not None:
                energy, hits = self.localisation
                row["energy in mask"] = f"{energy[i]:.3f}"
                row["pointing hit"] = "yes" if hits[i] else "no"
            rows.append(row)
        return rows

    def summaries(self, colormap: str, alpha: float) -> list[dict]:
        """The probe images, the grid and the predictions table."""
        probes, primary, predicted = self.probes, self.primary, self.predicted
        overlays = overlay(probes.display, primary.heatmaps, colormap, alpha)
        originals = np.round(probes.display * 255).astype(np.uint8)
        differs = np.zeros(probes.count, bool)
        if predicted is not None:
            differs = predicted.targets != primary.targets
        rows = self.rows()
        digits = max(2, len(str(probes.count - 1)))
        out = []
        for i in range(probes.count):
            panels = [originals[i], overlays[i]]
            if differs[i]:
                panels.append(overlay(probes.display[i], predicted.heatmaps[i], colormap, alpha))
            text = "; ".join(f"{k}: {v}" for k, v in rows[i].items())
            out.append({"kind": "image", "tag": f"gradcam/probe_{i:0{digits}d}",
                        "image": side_by_side(panels), "text": f"Epoch {self.epoch}. {text}"})
        out.append({"kind": "image", "tag": "gradcam/grid", "image": grid(overlays),
                    "text": f"Grad-CAM of all {probes.count} probes at epoch {self.epoch}, "
                            f"explaining the {self.explained}."})
        out.append({"kind": "text", "tag": "gradcam/predictions", "text": table(rows, digits)})
        return out


def class_namer(class_names: list[str] | None) -> Callable[[int], str]:
    """Class id -> its name in `class_names`, or the id as text."""

    def name(index: int) -> str:
        if class_names is not None and 0 <= index < len(class_names):
            return class_names[index]
        return str(index)

    return name


def scalar_summaries(scalars: dict[str, float]) -> list[dict]:
    return [{"kind": "scalar", "tag": tag, "value": value} for tag, value in scalars.items()]


def tag_part(text: str) -> str:
    """`text` made safe for a TensorBoard tag."""
    return re.sub(r"[^\w.\-]+", "_", str(text)).strip("_") or "class"


def table(rows: list[dict[str, str]], digits: int) -> str:
    """A markdown table of one row per probe."""
    header = ["probe", *rows[0]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, row in enumerate(rows):
        lines.append("| " + " | ".join([f"{i:0{digits}d}", *row.values()]) + " |")
    return "\n".join(lines)


def open_writer(path: str):
    """`tf.summary.create_file_writer(path)`, or a ValueError of one line saying why not."""
    try:
        return tf.summary.create_file_writer(path)
    except (tf.errors.OpError, OSError) as error:
        reason = getattr(error, "message", str(error)).split("}}")[-1].strip()
        raise ValueError(
            f"GradCAMCallback cannot write TensorBoard events to {path!r}: "
            f"{reason.splitlines()[0] if reason else type(error).__name__}. Pass a `log_dir` "
            "in a writable folder."
        ) from None


def write_summaries(writer, summaries: list[dict], step: int) -> None:
    """Write `summaries` at `step` in order, marking each `"written"`, then flush."""
    with writer.as_default(), tf.summary.record_if(True):
        for summary in summaries:
            if summary["kind"] == "image":
                write_image(summary["tag"], summary["image"], step, summary["text"])
            elif summary["kind"] == "text":
                tf.summary.text(summary["tag"], summary["text"], step=step)
            else:
                tf.summary.scalar(summary["tag"], summary["value"], step=step)
            summary["written"] = True
    writer.flush()


SHORTCUT_CHART = "accuracy vs energy inside the object"
SHORTCUT_TAGS = (  # regular expressions over the tags of all runs in the log directory
    r"^gradcam/probe_accuracy$",
    r"^gradcam/energy_in_mask$",
    r"^epoch_(\w+_)?accuracy$",  # keras.callbacks.TensorBoard's train/validation accuracy
)


def layout():
    """The custom-scalars layout (TensorBoard's CUSTOM SCALARS tab): one chart with the probe
    accuracy, the energy inside the object and the epoch accuracy of Keras's TensorBoard
    callback when it logs one, so that a shortcut (accuracy up, energy down) is one glance."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    chart = layout_pb2.Chart(
        title=SHORTCUT_CHART, multiline=layout_pb2.MultilineChartContent(tag=SHORTCUT_TAGS)
    )
    return layout_pb2.Layout(category=[layout_pb2.Category(title="gradcam", chart=[chart])])


def write_layout(writer) -> bool:
    """Write `layout()` with TensorBoard's custom_scalar summary (step 0). Returns True."""
    from tensorboard.plugins.custom_scalar import summary

    with writer.as_default(), tf.summary.record_if(True):
        tf.summary.experimental.write_raw_pb(summary.pb(layout()).SerializeToString(), step=0)
    writer.flush()
    return True


def write_image(tag: str, image: np.ndarray, step: int, description: str) -> None:
    """What `tf.summary.image(tag, image[None], step, description=...)` writes, encoded once
    (Pillow: ~10x faster here than one eager `tf.summary.image` per picture)."""
    from tensorboard.plugins.image import metadata

    height, width = image.shape[:2]
    tf.summary.write(
        tag,
        tf.constant([str(width).encode(), str(height).encode(), png_bytes(image)], tf.string),
        step=step,
        metadata=metadata.create_summary_metadata(display_name=None, description=description),
    )
