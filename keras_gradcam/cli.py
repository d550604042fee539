"""The `keras-gradcam` command: `demo` and `explain`."""

from __future__ import annotations

import argparse
import csv
import glob
import os
import sys
import warnings

PREPROCESS = ("none", "scale01", "tf", "caffe", "torch")
PREPROCESS_HELP = (
    "input scaling the model expects, on pixels 0..255 (default: %(default)s). none: as they "
    "are; scale01: divide by 255; tf: scale to [-1, 1]; caffe: RGB to BGR, then subtract the "
    "ImageNet channel means; torch: scale to [0, 1], then normalise by the ImageNet mean and "
    "std. keras.applications: tf for MobileNet(V2), Inception, Xception, NASNet, ResNetV2; "
    "caffe for VGG and ResNet50/101/152; torch for DenseNet; none for EfficientNet, ConvNeXt "
    "(they scale inside)"
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `keras-gradcam` (and `python -m keras_gradcam`). Returns the exit code.

    TensorFlow is imported only once the arguments are parsed and checked: `--help`,
    `--version` and argument errors answer at once.
    """
    from keras_gradcam import __version__
    from keras_gradcam._names import METHOD_NAMES

    parser = argparse.ArgumentParser(
        prog="keras-gradcam", description="Grad-CAM and the CAM family for Keras models.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"keras-gradcam {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="train a small CNN with a planted shortcut and watch Grad-CAM find it",
        formatter_class=_HelpFormatter,
    )
    demo.add_argument("--out", type=_folder, default="gradcam-demo",
                      help="output folder (default: %(default)s)")
    demo.add_argument("--epochs", type=int, default=6, help="epochs (default: %(default)s)")
    demo.add_argument("--data", choices=("auto", "fashion-mnist", "shapes"), default="auto",
                      help="fashion-mnist: four look-alike garments (Debian's "
                           "dataset-fashion-mnist, or a download); shapes: generated look-alike "
                           "classes, no files needed; auto: the environment variable "
                           "KERAS_GRADCAM_DATA if set, else Fashion-MNIST if it can be had, "
                           "else shapes (default: %(default)s)")

    explain = commands.add_parser("explain", help="explain images with a saved .keras/.h5 model",
                                  formatter_class=_HelpFormatter)
    explain.add_argument("model", help="path of a .keras or .h5 model")
    explain.add_argument("images", nargs="+", help="image files, folders or globs (PNG/JPEG)")
    explain.add_argument("--out", type=_folder, required=True, help="output folder")
    explain.add_argument("--layer", default=None, help="layer name or 'outer/inner' path")
    explain.add_argument("--method", default="auto",
                         help=f"one of {', '.join(METHOD_NAMES)}, or 'auto' (default): "
                              "gradcam, or gradcam-elementwise on a vision transformer")
    explain.add_argument("--target", default="auto", help="'auto' (top-1) or a class index")
    explain.add_argument("--size", type=_positive_int, nargs=2, metavar=("H", "W"),
                         help="resize images to H W for the model (default: the model's "
                              "input size)")
    explain.add_argument("--size-out", type=_positive_int, nargs=2, metavar=("H", "W"),
                         help="size of the written pictures (default: each image's own size; "
                              "the map is upsampled to it)")
    explain.add_argument("--preprocess", choices=PREPROCESS, default="scale01",
                         help=PREPROCESS_HELP)
    explain.add_argument("--labels", metavar="FILE",
                         help="class names: one per line, or a JSON list (or an ImageNet-style "
                              "JSON object {\"0\": [id, name], ...}); adds predicted_name and "
                              "explained_name columns to the CSV")
    explain.add_argument("--batch-size", type=_positive_int, default=16,
                         help="images per model call (default: %(default)s)")
    explain.add_argument("--unsafe", action="store_true",
                         help="load with safe_mode off (only for models you trust: Lambda layers)")

    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from keras_gradcam.demo import choose_data, run_demo

            try:
                choose_data(args.data)  # a bad KERAS_GRADCAM_DATA value: before TensorFlow loads
            except ValueError as error:
                _error(str(error))
                return 2
            try:
                return run_demo(args.out, epochs=args.epochs, data=args.data)
            except FileNotFoundError as error:  # Fashion-MNIST asked for and not to be had
                _error(str(error))
                return 2
        return _explain(args)
    except KeyboardInterrupt:
        return 130


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps help text at spaces only, so that "guided-gradcam" stays one word."""

    def _split_lines(self, text, width):
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _positive_int(value: str) -> int:
    """argparse type: an int >= 1."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer. Received: {value!r}.")
    return number


def _folder(value: str) -> str:
    """argparse type: an output folder, existing or not, but not an existing file."""
    if os.path.exists(value) and not os.path.isdir(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is a file, not a folder. Pass a folder (it is created if missing)."
        )
    return value


def _error(message: str) -> None:
    print(f"keras-gradcam: error: {message}", file=sys.stderr)


def _expand(patterns: list[str]) -> list[str]:
    """The image files named by `patterns` (files, folders, globs), each once, in first-seen order.

    A file matched twice (`photos/` and `photos/*.png`, or two spellings of one path) is listed
    once, under its first spelling.
    """
    files, seen = [], set()
    for pattern in patterns:
        if os.path.isdir(pattern):
            matches = sorted(
                os.path.join(pattern, name) for name in os.listdir(pattern)
                if name.lower().endswith(IMAGE_SUFFIXES)
            )
        elif any(ch in pattern for ch in "*?["):
            matches = sorted(glob.glob(pattern))
        else:
            matches = [pattern]
        for path in matches:
            key = os.path.normcase(os.path.realpath(path))
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files


def _open_image(path: str, channels: int):
    """The image at `path` as a loaded PIL image, grayscale ("L") or "RGB" as `channels` asks.

    16-bit images (PIL modes "I;16*" and "I") are scaled to 0..255 (divided by 257), not
    clipped; floating-point images and integers outside 0..65535 are refused (ValueError).
    """
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        if image.mode == "F":
            raise ValueError(
                "floating-point images have no known value range. Received: PIL mode 'F'. "
                "Save the image as 8 or 16 bits per channel."
            )
        if image.mode.startswith("I"):  # 16-bit (or 32-bit integer) grayscale
            values = np.asarray(image, np.float64)
            low, high = values.min(), values.max()
            if low < 0 or high > 65535:
                raise ValueError(
                    "integer images must hold 16-bit values, 0..65535. "
                    f"Received: values in [{low:.0f}, {high:.0f}]. Save the image as 8 or 16 bits."
                )
            image = Image.fromarray(np.round(values / 257.0).astype(np.uint8))
        return image.convert("L" if channels == 1 else "RGB")


def _pixels(image, size: tuple[int, int] | None = None, dtype="float32"):
    """A PIL image as an array `(H, W, channels)`, bilinearly resized to `size` (H, W) if given."""
    import numpy as np
    from PIL import Image

    if size is not None and tuple(size) != (image.height, image.width):
        image = image.resize((size[1], size[0]), Image.BILINEAR)
    array = np.asarray(image, dtype)
    return array[..., None] if array.ndim == 2 else array


def _read_image(path: str, size: tuple[int, int] | None, channels: int):
    """The image at `path` as float32 `(H, W, channels)` in 0..255, resized to `size` (None: its
    own size). See `_open_image` for the accepted images."""
    return _pixels(_open_image(path, channels), size)


def _picture(image, heatmap):
    """uint8 RGB `(H, W, 3)` at the size of `image` (uint8 `(H, W, C)`): the heatmap, upsampled,
    drawn on it; a guided image (`(h, w, C)`, model input size) resized to it instead."""
    from PIL import Image

    from keras_gradcam.image import draw

    picture = draw(image[None], heatmap[None])[0]
    if picture.shape[:2] != image.shape[:2]:
        picture = _pixels(Image.fromarray(picture), image.shape[:2], "uint8")
    return picture


def _unique_name(path: str, method: str, written: set[str]) -> str:
    """`<stem>_<method>.png`, or `<stem>_<k>_<method>.png` (k = 2, 3, ...) when already written."""
    stem = os.path.splitext(os.path.basename(path))[0]
    name, k = f"{stem}_{method}.png", 1
    while name.casefold() in written:  # same stem in two folders, a.png + a.jpg, ...
        k += 1
        name = f"{stem}_{k}_{method}.png"
    written.add(name.casefold())
    return name


def _read_labels(path: str) -> list[str]:
    """Class names from `path`, in class-index order.

    Accepts one name per line (surrounding spaces and trailing empty lines dropped), a JSON list
    of names, or a JSON object mapping every index "0".."n-1" to a name or to a list ending with
    the name (Keras's imagenet_class_index.json).

    Raises:
        OSError: the file cannot be read.
        ValueError: no names, an empty name, or JSON of another shape (the message says which).
    """
    import json

    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    if text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"not valid JSON ({error}).") from None
        if isinstance(data, dict):
            try:
                ordered = sorted((int(key), value) for key, value in data.items())
            except (TypeError, ValueError):
                raise ValueError("a JSON object must map class indices \"0\", \"1\", ... to "
                                 "names.") from None
            if [index for index, _ in ordered] != list(range(len(ordered))):
                raise ValueError("a JSON object must map every class index from 0 on, without "
                                 "gaps.")
            data = [v[-1] if isinstance(v, list) and v else v for _, v in ordered]
        if not isinstance(data, list) or not all(isinstance(name, str) for name in data):
            raise ValueError("JSON labels must be a list of names, e.g. [\"cat\", \"dog\"].")
        names = [name.strip() for name in data]
    else:
        names = [line.strip() for line in text.splitlines()]
        while names and not names[-1]:
            names.pop()
    if not names:
        raise ValueError("no class names in the file.")
    if "" in names:
        raise ValueError(f"class {names.index('')} has an empty name. Give one name per class.")
    return names


def _load_model(path: str, unsafe: bool):
    """`keras.models.load_model`, importing keras-hub first when the model needs its classes
    (they register themselves on import)."""
    import importlib.util

    import keras

    try:
        return keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as error:
        if "keras_hub" not in str(error) or importlib.util.find_spec("keras_hub") is None:
            raise
    import keras_hub  # noqa: F401

    return keras.models.load_model(path, compile=False, safe_mode=not unsafe)


def _preprocess(batch, mode: str):
    if mode == "none":
        return batch
    if mode == "scale01":
        return batch / 255.0
    from keras.applications import imagenet_utils

    return imagenet_utils.preprocess_input(batch.copy(), mode=mode)


def _explain(args) -> int:
    if args.target != "auto" and not args.target.lstrip("-").isdigit():
        _error(f"--target must be 'auto' or a class index. Received: {args.target!r}.")
        return 2
    try:
        labels = _read_labels(args.labels) if args.labels else None
    except (OSError, ValueError) as error:
        _error(f"--labels {args.labels!r}: {error}")
        return 2
    import keras
    import numpy as np

    import keras_gradcam as kgc
    from keras_gradcam.methods import method_for

    if args.unsafe:
        warnings.warn("Loading the model with safe_mode off: it may run code stored in the file.",
                      stacklevel=1)
    try:
        model = _load_model(args.model, args.unsafe)
    except Exception as error:  # noqa: BLE001 - any load failure becomes one clear line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        hint = " (for Lambda layers you trust, add --unsafe)" if "safe_mode" in first else ""
        _error(f"cannot load model {args.model!r}: {first}{hint}")
        return 2
    try:
        explainer = method_for(model, args.method, args.layer)(model, layer=args.layer)
    except (kgc.errors.KerasGradCAMError, ValueError, TypeError) as error:
        _error(str(error))
        return 2
    shape = tuple(model.inputs[0].shape[1:]) if model.inputs else (None, None, 3)
    size = tuple(args.size) if args.size else shape[:2]
    if None in size:
        _error("the model's input size is not fixed; pass --size H W.")
        return 2
    channels = shape[-1] if shape[-1] in (1, 3) else 3
    files = _expand(args.images)
    if not files:
        _error("no images found in " + " ".join(args.images))
        return 2
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as error:
        _error(f"cannot create the output folder {args.out!r}: {error.strerror or error}")
        return 2
    failures = 0
    rows = []
    written: set[str] = set()  # case-folded names written in this run: never overwritten
    progress = keras.utils.Progbar(len(files), unit_name="image")
    for start in range(0, len(files), args.batch_size):
        names, raw, shown = [], [], []  # paths, model inputs, pictures to draw on
        for path in files[start : start + args.batch_size]:
            try:
                image = _open_image(path, channels)
                raw.append(_pixels(image, size))
                shown.append(_pixels(image, args.size_out, "uint8"))
                names.append(path)
            except Exception as error:  # noqa: BLE001 - report and go on with the others
                failures += 1
                _error(f"cannot read image {path!r}: {error}")
        if raw:
            batch = np.stack(raw)
            targets = None if args.target == "auto" else int(args.target)
            try:
                result = explainer.explain(_preprocess(batch, args.preprocess), targets)
            except kgc.errors.KerasGradCAMError as error:
                _error(str(error))
                return 2
            classes = result.probabilities.shape[-1]
            if labels is not None and len(labels) < classes:
                _error(f"--labels {args.labels!r} names {len(labels)} classes but the model has "
                       f"{classes}. Give one name per class, in class-index order.")
                return 2
            for i, path in enumerate(names):
                name = _unique_name(path, explainer.name, written)
                kgc.save_png(os.path.join(args.out, name), _picture(shown[i], result.heatmaps[i]))
                predicted = int(result.predicted[i])
                score = float(result.probabilities[i, predicted])
                explained = int(result.targets[i])
                rows.append([path, predicted, f"{score:.6g}", explained, name]
                            + ([labels[predicted], labels[explained]] if labels else []))
        progress.update(min(start + args.batch_size, len(files)))
    with open(os.path.join(args.out, "explanations.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "predicted", "score", "explained", "overlay"]
                        + (["predicted_name", "explained_name"] if labels else []))
        writer.writerows(rows)
    print(f"{len(rows)} overlays and explanations.csv written to {args.out}"
          + (f"; {failures} image(s) failed" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
