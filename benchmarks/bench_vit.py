"""Grad-CAM on a ViT-B/16-sized vision transformer against its compiled forward pass.

keras-hub's `ViTImageClassifier` with ViT-B/16's configuration (224 x 224, patch 16, 12
blocks of width 768, 1000 classes), random weights (presets cannot be downloaded here),
batch 8. The compared calls run interleaved round by round; a ratio is the median over rounds
of the two times measured in the same round. The result replaces the "Vision transformer"
section of `benchmarks/RESULTS.md` (its `<!-- section:vit -->` block, which the main benchmark
keeps), or is printed with `--print`.

    python benchmarks/bench_vit.py [--repeats 7] [--batch 8] [--xla off|on|both] [--print]
    python benchmarks/bench_vit.py --tiny --repeats 1 --batch 2     # a smoke run, prints only
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from bench_explain import interleaved  # noqa: E402
from bench_more import merge_blocks  # noqa: E402

import keras_gradcam as kgc  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def vit_b16(size: int = 224, classes: int = 1000, tiny: bool = False) -> keras.Model:
    """ViT-B/16's configuration (or, with `tiny`, 2 narrow blocks for a smoke run)."""
    import keras_hub

    keras.utils.set_random_seed(0)
    width = dict(num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64) if tiny else dict(
        num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072)
    backbone = keras_hub.models.ViTBackbone(image_shape=(size, size, 3), patch_size=16, **width)
    return keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=classes)


def measure(batch: int, rounds: int, jit: bool,
            tiny: bool = False) -> list[tuple[str, float, float]]:
    model = vit_b16(tiny=tiny)
    x = np.random.default_rng(0).random((batch, 224, 224, 3), dtype=np.float32)
    forward = tf.function(lambda v: model(v, training=False), jit_compile=jit)
    explainers = {
        "GradCAM call (public)": kgc.GradCAM(model, jit_compile=jit),
        "GradCAMElementWise call (the 'auto' default)": kgc.GradCAMElementWise(
            model, jit_compile=jit),
    }
    cam = explainers["GradCAM call (public)"]
    inputs, _ = cam.prepare_inputs(x)
    targets = cam.resolve_targets(None, batch)
    step, ids_data = cam.step(inputs, targets), targets.rows(np.arange(batch))
    # Both sides get the numpy batch: converting it is part of either call.
    fns = {"compiled forward": lambda: forward(tf.convert_to_tensor(x)).numpy(),
           "GradCAM compiled step only": lambda: step(
               cam.prepare_inputs(x)[0], *ids_data)["heatmaps"].numpy()}
    fns.update({name: (lambda e=e: e(x)) for name, e in explainers.items()})
    timings = interleaved(fns, rounds)
    rows = [(name, seconds * 1e3, timings.ratio(name, "compiled forward"))
            for name, seconds in timings.items()]
    grid = cam.token_grid
    rows.append((f"token grid inferred: {grid}", float("nan"), float("nan")))
    return rows


def section(results: dict, batch: int, rounds: int, seconds: float) -> list[str]:
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [
        f"`python benchmarks/bench_vit.py` ({seconds / 60:.1f} minutes, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, load average at the end {load}): keras-hub "
        f"`ViTImageClassifier` with ViT-B/16's configuration, random weights, 224 x 224, batch "
        f"{batch}, {rounds} paired rounds; the automatic layer is the last block's first "
        "LayerNorm. Target: the public call <= 1.1x the compiled forward pass.",
        "",
        "| XLA | measured | median ms | ratio vs forward |",
        "|---|---|---:|---:|",
    ]
    for jit, rows in results.items():
        for name, ms, ratio in rows:
            if np.isnan(ms):
                lines.append(f"| {'on' if jit else 'off'} | {name} | | |")
            else:
                lines.append(f"| {'on' if jit else 'off'} | {name} | {ms:.0f} | {ratio:.2f}x |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="paired rounds (default 7)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--xla", choices=["off", "on", "both"], default="off")
    parser.add_argument("--print", action="store_true", help="print, do not write RESULTS.md")
    parser.add_argument("--tiny", action="store_true", help="2 narrow blocks: a smoke run")
    args = parser.parse_args(argv)
    begin = time.perf_counter()
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.xla]
    results = {jit: measure(args.batch, args.repeats, jit, args.tiny) for jit in modes}
    lines = section(results, args.batch, args.repeats, time.perf_counter() - begin)
    print("\n".join(lines))
    if args.print or args.tiny:
        return
    path = os.path.join(HERE, "RESULTS.md")
    old = open(path).read() if os.path.exists(path) else ""
    with open(path + ".tmp", "w") as f:
        f.write(merge_blocks(old, {"vit": lines}).rstrip() + "\n")
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
