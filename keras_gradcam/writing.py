"""Write the explanations of a whole dataset: overlay PNGs and a `.npy` of the maps
(`write_explanations`); and `explain_dataset`, which streams or writes.

Built on `iter_explanations`. Nothing is left looking complete when it is not: the maps are
written to `<name>.partial.npy` and renamed to `maps_path` only when every sample is in; each
PNG is written to a temporary name and renamed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_gradcam.image import classes_per_image, displayable, draw, save_png
from keras_gradcam.streaming import DatasetJob, iter_explanations

_OVERLAY_NAME = re.compile(r"^\d{6,}(_\d+)?\.png$")


@dataclasses.dataclass
class DatasetExplanation:
    """What `write_explanations` returns.

    Attributes:
        count: Number of samples explained.
        indices: int64 `(count,)`, the position of each explained sample in the dataset
            (`0..count-1` on one worker; a worker's own share under multi-worker strategies).
        targets: int32 `(count,)`, the class explained per sample (-1 for callable targets).
        scores: float32 `(count,)`, the differentiated score per sample.
        predicted: int32 `(count,)`, the top-1 class per sample.
        maps: The maps `(count, *spatial)` as a read-only memmap of `maps_path`, or `None`.
        files: Paths of the overlay PNGs written to `out_dir`, in dataset order.
    """

    count: int
    indices: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    predicted: np.ndarray
    maps: np.ndarray | None
    files: list[str]


def write_explanations(
    explainer,
    dataset: tf.data.Dataset,
    *,
    out_dir: str | os.PathLike | None = None,
    maps_path: str | os.PathLike | None = None,
    targets: Any = None,
    progress: bool = True,
    strategy: tf.distribute.Strategy | None = None,
    count: int | None = None,
    batch_size: int | None = None,
    resize: bool = True,
    normalize: bool = True,
    colormap: str = "jet",
    alpha: float = 0.4,
) -> DatasetExplanation:
    """Explain every sample of a dataset (as `iter_explanations`), writing as it goes.

    Args:
        explainer, dataset, targets, progress, strategy, count, batch_size, resize, normalize:
            As for `iter_explanations`.
        out_dir: Folder to write one overlay PNG per sample into, named by dataset position
            (`000123.png`). Needs image inputs `(batch, H, W, 1|3)`. PNGs of an earlier, larger
            run left in the folder are reported with a warning (they are not deleted).
        maps_path: A `.npy` file to write the maps into, float32 `(count, *spatial)`. Needs the
            number of samples: `count=`, or a dataset of known cardinality. The file appears
            only when complete; an interrupted run leaves `<name>.partial.npy` (or nothing,
            when interrupted by an exception such as Ctrl-C). A dataset with fewer samples
            than `count` gives a file with the samples it held, and a warning.
        colormap, alpha: Of the overlays, as for `keras_gradcam.overlay`.

    Returns:
        A `DatasetExplanation`.

    Raises:
        ValueError: as `iter_explanations`; `out_dir` without image inputs; `maps_path`
            without a known number of samples.
    """
    if out_dir is None and maps_path is None:
        raise ValueError(
            "`write_explanations` needs `out_dir=` and/or `maps_path=`; to get the "
            "explanations in memory, iterate over `iter_explanations(explainer, dataset)`."
        )
    job = DatasetJob(explainer, dataset, targets, strategy, count, batch_size, resize, normalize)
    image = job.drawable_index() if out_dir is not None else None
    maps = _MapsFile(maps_path, job.require_count("`maps_path`")) if maps_path else None
    files: list[str] = []
    parts: dict[str, list] = {"indices": [], "targets": [], "scores": [], "predicted": []}
    width = max(6, len(str((job.count or 1) - 1)))
    try:
        for batch in job.run(progress):
            explanation = batch.explanation
            if maps is not None:
                maps.write(batch.indices, explanation.heatmaps)
            if out_dir is not None:
                display = displayable(keras.tree.flatten(batch.inputs)[image])
                pictures = draw(display, explanation, colormap, alpha)
                k = classes_per_image(explanation)  # several classes: one PNG per class
                names = [f"{int(i):0{width}d}" + (f"_{slot}" if k else "")
                         for i in batch.indices for slot in range(k or 1)]
                for name, picture in zip(names, pictures):
                    files.append(save_png(os.path.join(out_dir, f"{name}.png"), picture))
            parts["indices"].append(batch.indices)
            parts["targets"].append(explanation.targets)
            parts["scores"].append(explanation.scores)
            parts["predicted"].append(explanation.predicted)
    except BaseException:
        if maps is not None:
            maps.discard()
        raise
    seen = sum(len(i) for i in parts["indices"])
    array = maps.finish(seen, trim=job.strategy is None) if maps is not None else None
    if out_dir is not None:
        _warn_stale(out_dir, files)

    def join(key, dtype):
        return np.concatenate(parts[key]).astype(dtype) if parts[key] else np.zeros((0,), dtype)

    return DatasetExplanation(
        count=seen, indices=join("indices", np.int64), targets=join("targets", np.int32),
        scores=join("scores", np.float32), predicted=join("predicted", np.int32), maps=array,
        files=files,
    )


def explain_dataset(
    explainer,
    dataset: tf.data.Dataset,
    *,
    targets: Any = None,
    out_dir: str | os.PathLike | None = None,
    maps_path: str | os.PathLike | None = None,
    progress: bool = True,
    strategy: tf.distribute.Strategy | None = None,
    count: int | None = None,
    batch_size: int | None = None,
    resize: bool = True,
    normalize: bool = True,
    colormap: str = "jet",
    alpha: float = 0.4,
):
    """Explain every sample of a `tf.data.Dataset`: `iter_explanations`, or with `out_dir` /
    `maps_path` (deprecated here: call `write_explanations`) `write_explanations`.

    Example:

    ```python
    cam = keras_gradcam.GradCAM(model)
    ds = tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(64)
    for explanation in explain_dataset(cam, ds, targets="label"):
        ...  # explanation.heatmaps: (64, H, W)
    ```
    """
    options = dict(targets=targets, progress=progress, strategy=strategy, count=count,
                   batch_size=batch_size, resize=resize, normalize=normalize)
    if out_dir is None and maps_path is None:
        return iter_explanations(explainer, dataset, **options)
    warnings.warn(
        "`explain_dataset(..., out_dir=/maps_path=)` is deprecated: call "
        "`keras_gradcam.write_explanations(explainer, dataset, out_dir=..., maps_path=...)`, "
        "which returns the same `DatasetExplanation`.",
        DeprecationWarning,
        stacklevel=2,
    )
    return write_explanations(explainer, dataset, out_dir=out_dir, maps_path=maps_path,
                              colormap=colormap, alpha=alpha, **options)


class _MapsFile:
    """A `.npy` memmap written under a temporary name and renamed when complete."""

    def __init__(self, path, count: int):
        self.path = os.fspath(path)
        stem = self.path[:-4] if self.path.endswith(".npy") else self.path
        self.partial = stem + ".partial.npy"
        self.count = count
        self.array = None
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)

    def write(self, indices: np.ndarray, maps: np.ndarray) -> None:
        if self.array is None:
            self.array = np.lib.format.open_memmap(
                self.partial, mode="w+", dtype=np.float32, shape=(self.count, *maps.shape[1:])
            )
        if indices.max() >= self.count:
            raise ValueError(
                f"The dataset holds more than count={self.count} samples; pass the right "
                "`count=`."
            )
        self.array[indices] = maps

    def discard(self) -> None:
        self.array = None
        if os.path.exists(self.partial):
            os.remove(self.partial)

    def finish(self, seen: int, trim: bool) -> np.ndarray | None:
        """Rename the complete file into place (trimmed to `seen` rows when the dataset held
        fewer samples than announced) and open it read-only."""
        if self.array is None:
            return None
        if trim and seen < self.count:
            kept = np.lib.format.open_memmap(
                self.partial + ".tmp", mode="w+", dtype=np.float32,
                shape=(seen, *self.array.shape[1:]),
            )
            kept[:] = self.array[:seen]
            kept.flush()
            del kept
            self.array = None
            os.replace(self.partial + ".tmp", self.partial)
        else:
            self.array.flush()
            self.array = None
        os.replace(self.partial, self.path)
        return np.load(self.path, mmap_mode="r")


def _warn_stale(out_dir, written: list[str]) -> None:
    if not os.path.isdir(out_dir):
        return
    ours = {os.path.basename(f) for f in written}
    stale = sorted(n for n in os.listdir(out_dir) if _OVERLAY_NAME.match(n) and n not in ours)
    if stale:
        warnings.warn(
            f"`out_dir` {os.fspath(out_dir)!r} also holds {len(stale)} overlay PNGs that this "
            f"run did not write ({', '.join(stale[:3])}{', ...' if len(stale) > 3 else ''}), "
            "left by an earlier run. Remove them or write into an empty folder.",
            stacklevel=3,
        )


__all__ = ["DatasetExplanation", "explain_dataset", "write_explanations"]
