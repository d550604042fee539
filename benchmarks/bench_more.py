"""Sections of `bench_explain.py` that write their own block of RESULTS.md: `first` (first call in
fresh processes), `peers` (tf-keras-vis and the keras.io recipe beside keras-gradcam), `dataset`
(`write_explanations` over 10,000 images vs `model.predict`), `growth` (the public call's ratio
over batch sizes and image sizes).

Each block sits between `<!-- section:NAME -->` markers; a run of some sections replaces their
blocks and keeps the others (`merge_blocks`), so sections can be run separately.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

import keras_gradcam as kgc

BLOCK_SECTIONS = ("first", "peers", "dataset", "growth")
HERE = os.path.dirname(os.path.abspath(__file__))


def child(args_list: list[str]) -> dict:
    """Run `bench_explain.py` with these (hidden) arguments in a fresh process; its last JSON
    line."""
    out = subprocess.run([sys.executable, os.path.join(HERE, "bench_explain.py"), *args_list],
                         capture_output=True, text=True, check=False)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1][:300]}


def peak_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ---- first call ----------------------------------------------------------------------------


def child_first(bench, model_name: str, mode: str, xla: str) -> None:
    """In a fresh process: seconds from a built model to the first result (construction,
    tracing, compilation, the run), by part."""
    spec = bench.MODELS[model_name]
    model = spec["build"]()
    x = bench.images(16 if 16 in spec["batches"] else spec["batches"][-1], spec["size"])
    jit = xla == "on"
    start = time.perf_counter()
    parts = {}
    if mode == "forward":
        fn = bench.compiled_forward(model, jit)
        fn(x)
    else:
        cam = kgc.GradCAM(model, jit_compile=jit)
        parts["construct"] = time.perf_counter() - start
        inputs, _ = cam.prepare_inputs(x)
        cam.step(inputs, cam.resolve_targets(None, len(x)))
        parts["trace"] = time.perf_counter() - start - parts["construct"]
        cam(x)
        parts["run"] = time.perf_counter() - start - parts["construct"] - parts["trace"]
        parts["traces"] = cam.trace_count
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, **parts}))


def section_first(report, args, bench) -> list[str]:
    lines = ["| model | XLA | forward first call s | GradCAM first call s | ratio | GradCAM: "
             "construct / trace / run s | traces |", "|---|---|---:|---:|---:|---|---:|"]
    models = ["tiny"] if args.smoke else [m for m in ("small", "resnet50") if m in args.models]
    for name in models:
        for xla in ("off", "on"):
            if (xla == "on") not in args.xla:
                continue
            fwd = child(["--child-first", name, "forward", xla])
            cam = child(["--child-first", name, "gradcam", xla])
            if "error" in fwd or "error" in cam:
                lines.append(f"| {name} | {xla} | {fwd.get('error', '')} | "
                             f"{cam.get('error', '')} | | | |")
                continue
            ratio = cam["seconds"] / fwd["seconds"]
            report.row("first", name, 16, xla == "on", "GradCAM first call (fresh process)",
                       cam["seconds"], "forward first call", ratio,
                       1.5 if xla == "off" else None)
            if xla == "off":
                report.check(f"first call GradCAM / forward, {name} xla=off", ratio, 1.5,
                             ratio <= 1.5)
            lines.append(f"| {name} | {xla} | {fwd['seconds']:.2f} | {cam['seconds']:.2f} | "
                         f"{ratio:.2f}x | {cam['construct']:.2f} / {cam['trace']:.2f} / "
                         f"{cam['run']:.2f} | {cam['traces']} |")
    return ["Each number from its own fresh process (model already built): the compiled "
            "forward pass's first call (`tf.function` trace + run) vs `GradCAM(model)` "
            "construction + its first call (batch 16).", ""] + lines


# ---- peers -----------------------------------------------------------------------------------


def tf_keras_vis_gradcam(model, layer_name):
    """tf-keras-vis's `Gradcam` with the top-1 class of each image (its `model_modifier`
    replaces the final softmax by a linear activation, on a clone it makes)."""
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

    gradcam = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)

    def run(x):
        top = np.argmax(model(x, training=False).numpy(), axis=-1)
        return gradcam(lambda out: tf.gather(out, top, axis=1, batch_dims=1), x,
                       penultimate_layer=layer_name)

    return run


def peer_fn(bench, tool: str, model, spec):
    if tool == "keras-gradcam":
        cam = kgc.GradCAM(model, jit_compile=False)
        return lambda x: cam(x)
    if tool == "tf-keras-vis":
        return tf_keras_vis_gradcam(model, spec["recipe"])
    if tool == "keras.io recipe":
        return bench.keras_io_recipe(model, spec["recipe"])
    return bench.compiled_forward(model, False)


def child_peer(bench, model_name: str, tool: str, batch: int) -> None:
    spec = bench.MODELS[model_name]
    model = spec["build"]()
    x = bench.images(batch, spec["size"])
    fn = peer_fn(bench, tool, model, spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(2):
            fn(x)
    print(json.dumps({"peak_mib": peak_mib()}))


PEERS = ("keras-gradcam", "tf-keras-vis", "keras.io recipe")


def section_peers(report, args, bench) -> list[str]:
    models = ["tiny"] if args.smoke else [m for m in ("small", "resnet50") if m in args.models]
    lines = ["| model | batch | tool | median ms | vs forward | vs keras-gradcam | peak RSS MiB "
             "| RSS vs forward |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    notes = []
    for name in models:
        spec = bench.MODELS[name]
        batch = 16 if 16 in spec["batches"] else spec["batches"][-1]
        model = spec["build"]()
        x = bench.images(batch, spec["size"])
        fns = {"forward": bench.compiled_forward(model, False)}
        for tool in PEERS:
            try:
                fn = peer_fn(bench, tool, model, spec)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fn(x)
                fns[tool] = fn
            except Exception as error:  # a peer that cannot run: say why
                notes.append(f"- {tool} on {name}: {type(error).__name__}: "
                             f"{str(error).strip().splitlines()[0][:300]}")
        reps = max(1, min(args.repeats, args.recipe_repeats))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = bench.interleaved({k: (lambda f=f, x=x: f(x)) for k, f in fns.items()}, reps)
        memory = {tool: child(["--child-peer", name, tool, str(batch)]) for tool in fns}
        fwd_mib = memory["forward"].get("peak_mib", float("nan"))
        for tool in ("forward", *PEERS):
            if tool not in t:
                continue
            mib = memory.get(tool, {}).get("peak_mib", float("nan"))
            vs_cam = t.ratio(tool, "keras-gradcam") if "keras-gradcam" in t else float("nan")
            lines.append(f"| {name} | {batch} | {tool} | {t[tool] * 1e3:.1f} | "
                         f"{t.ratio(tool, 'forward'):.2f}x | {vs_cam:.2f}x | {mib:.0f} | "
                         f"{mib / fwd_mib:.2f}x |")
            if tool != "forward":
                report.row("peers", name, batch, False, tool, t[tool], "forward",
                           t.ratio(tool, "forward"))
    return ["Speed: medians of interleaved calls in one process (the forward pass is a compiled "
            "`tf.function`; keras-gradcam with XLA off). Peak RSS: each tool in its own fresh "
            "process, two calls. tf-keras-vis: `Gradcam(model, ReplaceToLinear(), "
            "clone=True)` with the top-1 class as score, `penultimate_layer` the recipe's "
            "layer. xplique pins an older TensorFlow (it cannot be installed beside "
            "TensorFlow 2.21) and is not measured.", ""] + lines + [""] + notes


# ---- dataset throughput ----------------------------------------------------------------------


def section_dataset(report, args, bench) -> list[str]:
    total = 640 if args.smoke else args.stream_images
    size = 16 if args.smoke else 64
    model = bench.small_cnn(16, 5, 4) if args.smoke else bench.small_cnn(size)
    cam = kgc.GradCAM(model, batch_size=64)
    data = tf.data.Dataset.range(total).map(
        lambda i: tf.random.stateless_uniform((size, size, 3), seed=tf.stack([i, i * 0 + 7])))
    png_total = min(total, 1000)
    with tempfile.TemporaryDirectory() as tmp:
        maps = os.path.join(tmp, "maps.npy")
        kgc.write_explanations(cam, data.take(128), progress=False, maps_path=maps)  # warm-up
        model.predict(data.take(128).batch(64), verbose=0)
        times = {"predict": [], "explain": []}
        for _ in range(max(1, min(args.repeats, 5))):
            start = time.perf_counter()
            model.predict(data.batch(64), verbose=0)
            times["predict"].append(time.perf_counter() - start)
            start = time.perf_counter()
            result = kgc.write_explanations(cam, data, progress=False, maps_path=maps)
            times["explain"].append(time.perf_counter() - start)
        pngs = {"png": [], "no_png": []}  # paired rounds: one run alone is too noisy here
        for round_ in range(5):
            start = time.perf_counter()
            kgc.write_explanations(cam, data.take(png_total), progress=False, maps_path=maps,
                                   out_dir=os.path.join(tmp, f"png{round_}"))
            pngs["png"].append(time.perf_counter() - start)
            start = time.perf_counter()
            kgc.write_explanations(cam, data.take(png_total), progress=False, maps_path=maps)
            pngs["no_png"].append(time.perf_counter() - start)
        png, no_png = (float(np.median(pngs[k])) for k in ("png", "no_png"))
    t = bench.Timings(times)
    ratio = t.ratio("explain", "predict")
    name = "tiny" if args.smoke else "small"
    report.row("dataset", name, 64, False, f"write_explanations, {total} images", t["explain"],
               "model.predict", ratio, 1.2)
    report.check(f"write_explanations / model.predict over {total} images", ratio, 1.2,
                 ratio <= 1.2, f"{result.count} maps")
    per_png = (png - no_png) / png_total
    return [f"{total} images {size}x{size} from a `tf.data` pipeline, batch 64: "
            f"`model.predict` {t['predict']:.2f} s, `write_explanations` (maps to a `.npy` "
            f"memmap, no PNG) "
            f"{t['explain']:.2f} s: **{ratio:.2f}x** (median of {len(times['explain'])} paired "
            f"runs). Writing overlay PNGs (`out_dir=`) on {png_total} images: {png:.2f} s vs "
            f"{no_png:.2f} s without (medians of 5 alternated runs), i.e. "
            f"{per_png * 1e3:.2f} ms per PNG "
            f"({png / no_png:.1f}x the explanation itself)."]


# ---- growth ----------------------------------------------------------------------------------

GROWTH = {
    "small": [(1, 64), (16, 64), (64, 64), (256, 64), (16, 128), (16, 256), (4, 512)],
    "resnet50": [(1, 224), (16, 224), (4, 64), (4, 128), (4, 512)],
    "tiny": [(1, 16), (8, 16), (8, 32)],
}


def section_growth(report, args, bench) -> list[str]:
    models = ["tiny"] if args.smoke else [m for m in ("small", "resnet50") if m in args.models]
    lines = ["| model | batch | image | forward ms | call ms | call / forward | step / forward |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name in models:
        for batch, size in GROWTH[name]:
            if name == "small":
                model = bench.small_cnn(size)
            elif name == "tiny":
                model = bench.small_cnn(size, 5, 4)
            else:
                model = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3))
            x = bench.images(batch, size)
            cam = kgc.GradCAM(model, jit_compile=False, batch_size=max(batch, 32))
            forward = bench.compiled_forward(model, False)
            inputs, _ = cam.prepare_inputs(x)
            step = cam.step(inputs)
            ids = tf.fill([batch], -1)
            t = bench.interleaved({
                "forward": lambda f=forward, x=x: f(x),
                "step": lambda s=step, i=inputs, ids=ids: s(i, ids, {})["heatmaps"].numpy(),
                "call": lambda c=cam, x=x: c(x)}, args.repeats)
            ratio = t.ratio("call", "forward")
            report.row("growth", name, batch, False, f"GradCAM.__call__ {size}x{size}",
                       t["call"], "forward", ratio)
            lines.append(f"| {name} | {batch} | {size} | {t['forward'] * 1e3:.1f} | "
                         f"{t['call'] * 1e3:.1f} | {ratio:.2f}x | "
                         f"{t.ratio('step', 'forward'):.2f}x |")
            keras.backend.clear_session()
    return ["`GradCAM.__call__` (resize and normalise on, `batch_size` >= the batch) vs the "
            "compiled forward pass, interleaved in one process; 'step' is the compiled step "
            "alone (no host work).", ""] + lines


SECTIONS = {"first": section_first, "peers": section_peers, "dataset": section_dataset,
            "growth": section_growth}


def merge_blocks(text: str, blocks: dict[str, list[str]]) -> str:
    """`text` with each `<!-- section:NAME -->` block replaced by `blocks[NAME]` (appended
    before the analysis when absent)."""
    for name, lines in blocks.items():
        block = (f"<!-- section:{name} -->\n## {TITLES[name]}\n\n" + "\n".join(lines)
                 + f"\n<!-- /section:{name} -->")
        pattern = re.compile(rf"<!-- section:{name} -->.*?<!-- /section:{name} -->", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _m, b=block: b, text)
        elif "\n## Analysis" in text:
            head, _, tail = text.partition("\n## Analysis")
            text = head.rstrip("\n") + "\n\n" + block + "\n\n## Analysis" + tail
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    return text


def kept_blocks(text: str, skip) -> dict[str, list[str]]:
    """The blocks of `text` not in `skip`, as `merge_blocks` takes them."""
    out = {}
    for name in re.findall(r"<!-- section:(\w+) -->", text):  # bench_vit.py's block too
        if name in skip:
            continue
        found = re.search(rf"<!-- section:{name} -->\n## [^\n]*\n\n(.*?)\n<!-- /section:{name} "
                          "-->", text, re.S)
        if found:
            out[name] = found.group(1).split("\n")
    return out


TITLES = {"first": "First call (fresh process)", "peers": "keras-gradcam vs peers",
          "dataset": "Dataset throughput", "growth": "How cost grows (batch and image size)",
          "vit": "Vision transformer (ViT-B/16 size)"}


# ---- Score-CAM memory ----------------------------------------------------------------------


def child_scoremem(bench, mode: str, limit: str) -> None:
    """Peak RSS of ResNet50: the compiled forward pass over `mode` = "forward2"/"forward16"
    images, or Score-CAM with all 2048 channels on 2 images (`batch_size=16`), watched for at
    most `limit` seconds (every chunk of the scoring loop holds the same tensors, so the peak
    is reached in the first chunks)."""
    import threading

    model = bench.resnet50()
    if mode.startswith("forward"):
        forward = bench.compiled_forward(model, False)
        for _ in range(2):
            forward(bench.images(int(mode[7:]), 224))
        print(json.dumps({"peak_mib": peak_mib(), "done": True}))
        return
    cam = kgc.ScoreCAM(model, batch_size=16, jit_compile=False)
    done = threading.Event()
    threading.Thread(target=lambda: (cam(bench.images(2, 224)), done.set()), daemon=True).start()
    finished = done.wait(float(limit))
    print(json.dumps({"peak_mib": peak_mib(), "done": finished}), flush=True)
    os._exit(0)  # the call may still run: leave without waiting for it


def section_scoremem(report, args, bench) -> list[str]:
    limit = "20" if args.smoke else "90"
    runs = {mode: child(["--child-scoremem", mode, limit])
            for mode in ("forward2", "forward16", "scorecam")}
    if any("error" in r for r in runs.values()):
        return [f"failed: {runs}"]
    cam, f2, f16 = (runs[m]["peak_mib"] for m in ("scorecam", "forward2", "forward16"))
    report.row("scoremem", "resnet50", 2, False, "peak RSS Score-CAM (2048 ch) / forward b=16",
               None, "forward b=16", cam / f16, 1.5)
    report.check("peak RSS Score-CAM all 2048 channels b=2 / forward (chunk of 16)", cam / f16,
                 1.5, cam / f16 <= 1.5, f"{cam:.0f} vs {f16:.0f} MiB; forward b=2 {f2:.0f} MiB")
    state = "finished" if runs["scorecam"]["done"] else f"first {limit} s of the call"
    return [f"ResNet50 (weights=None), Score-CAM with all 2048 channels on 2 images, masked "
            f"passes 16 at a time (`batch_size=16`), peak RSS ({state}), each in a fresh "
            "process:", "", "| what | peak RSS MiB | Score-CAM / it |", "|---|---:|---:|",
            f"| compiled forward, batch 2 | {f2:.0f} | {cam / f2:.2f}x |",
            f"| compiled forward, batch 16 (one chunk) | {f16:.0f} | {cam / f16:.2f}x |",
            f"| Score-CAM, 2 images x 2048 channels | {cam:.0f} | |"]


BLOCK_SECTIONS = (*BLOCK_SECTIONS, "scoremem")
SECTIONS["scoremem"] = section_scoremem
TITLES["scoremem"] = "Score-CAM memory, all channels"
