"""Speed and memory of keras-gradcam, as ratios against baselines measured in the same process.

Run from the repository root:

    python benchmarks/bench_explain.py                 # full run (~15 min on 2 CPU cores)
    python benchmarks/bench_explain.py --smoke         # tiny model, 1 repeat, seconds
    python benchmarks/bench_explain.py --models small --methods gradcam,hirescam --repeats 7

Every timing is the median of `--repeats` runs after one warm-up call; the runs of the things
compared are interleaved (forward, Grad-CAM, forward, Grad-CAM, ...) so that drift of the
machine hits both. Baselines:

- `forward`: a compiled forward pass, `tf.function(lambda x: model(x, training=False))` (with
  the same `jit_compile` as the explainer), its output fetched as numpy.
- `recipe`: the keras.io Grad-CAM recipe, eager, one image at a time (grad model built once).

Sections (select with `--sections`): `speed` (public `GradCAM.__call__` vs forward, with a
breakdown: compiled step alone, no resize/normalise, full call), `methods` (every method vs
Grad-CAM), `scorecam` (Score-CAM vs k forward passes, with `max_channels`), `trace` (100 calls
with varying batch sizes), `classes` (several classes per image in one call vs one call per
class, small CNN), `rss` (peak RSS, forward vs Grad-CAM, separate processes), `stream`
(`iter_explanations`/`write_explanations`, 10,000 images: RSS over time, separate process),
`callback` (`GradCAMCallback`'s share of the epoch time).

Prints a table and writes a Markdown report (`--results`, default `benchmarks/RESULTS.md`);
`benchmarks/analysis.md`, where present, is appended to it verbatim.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gradcam as kgc  # noqa: E402
from keras_gradcam import iter_explanations, write_explanations  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_more  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ALL_SECTIONS = ("speed", "methods", "scorecam", "classes", "trace", "rss", "stream",
                "callback", *bench_more.BLOCK_SECTIONS)
DEFAULT_SECTIONS = ALL_SECTIONS[:8]  # the block sections (bench_more) run when named
TARGETS = {
    "gradcam_vs_forward": {"resnet50": 1.05, "small": 1.3},
    "method_vs_gradcam": 1.1,
    "rss": 1.2,
    "callback": 0.03,
    "call_vs_forward": 1.15,  # at batch 1, 16, 64
    "eigencam": 1.1,
    "eigengradcam": 1.15,
    "guided_vs_backprop": 1.1,
}
TARGETED_METHODS = ("gradcam++", "hirescam", "xgradcam", "layercam")
# The `methods` section's constructor options per method, with its cost vs Grad-CAM measured on
# the small CNN (b=16, CPU, no XLA); the section times every method in kgc.METHODS.
METHOD_OPTIONS = {
    "scorecam": {"max_channels": 16},  # ~10x; full Score-CAM is timed in its own section
    "ablationcam": {},  # 3.7x: a pass through the layers after the target per channel, image
    "kpcacam": {},  # 6-7x: an eigendecomposition of a (positions, positions) matrix per image
    "fem": {},  # 1.0x: one forward pass, no gradients
    "finercam": {},  # 1.0x: Grad-CAM plus a top-k over the classes
    "shapleycam": {},  # 1.0x (linear head; 1.25x from conv2): a Hessian-vector product
    "sscam": {"max_channels": 16},  # 360-400x: Score-CAM's passes times 35 noisy masks
    "iscam": {"max_channels": 16},  # 85-100x: Score-CAM's passes times 10 scaled masks
    "smoothgradcam++": {},  # 19-25x: 16 noisy copies and the clean input in one batch
    "fullgrad": {},  # 2.5x: one backward pass to the input and every biased layer
}


# ---- models --------------------------------------------------------------------------------


def small_cnn(size: int = 64, classes: int = 10, width: int = 32) -> keras.Model:
    """conv-pool-conv-pool-conv -> GAP -> dense softmax; the 'small CNN' of the issue."""
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(2 * width, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(name="pool2")(x)
    x = keras.layers.Conv2D(4 * width, 3, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="dense")(x)
    return keras.Model(inputs, outputs, name=f"small_cnn_{size}")


def nested_model(size: int = 96, classes: int = 10) -> keras.Model:
    """A MobileNetV2 backbone (weights=None) nested inside a functional classifier."""
    backbone = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=0.35, include_top=False, weights=None
    )
    inputs = keras.Input((size, size, 3), name="image")
    x = backbone(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="nested_mobilenetv2")


def resnet50() -> keras.Model:
    return keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))


ON_GPU = (True,) if tf.config.list_physical_devices("GPU") else ()  # XLA pays there
# name -> builder, input size, batch sizes, XLA settings, batch sizes run with XLA on (each is
# another XLA compilation), the layer for the keras.io recipe (None: it cannot run)
MODELS = {
    "tiny": dict(build=lambda: small_cnn(16, 5, 4), size=16, batches=(1, 8), xla=(False,),
                 xla_batches=(8,), recipe="conv3"),
    "small": dict(build=small_cnn, size=64, batches=(1, 16, 64), xla=(False, True),
                  xla_batches=(1, 16, 64), recipe="conv3"),
    "nested": dict(build=nested_model, size=96, batches=(16,), xla=(False, True),
                   xla_batches=(16,), recipe=None),
    "resnet50": dict(build=resnet50, size=224, batches=(1, 16), xla=(False, *ON_GPU),
                     xla_batches=(16,), recipe="conv5_block3_out"),
}
# Per model: which (batch, xla) pairs the methods section runs (the rest is Grad-CAM only).
# "all": every method in keras_gradcam.METHODS; "targeted": those with a target (XLA on CPU
# compiles Eigen-CAM's SVD for minutes, and ResNet50 traces take long on 2 cores).
METHOD_SETTINGS = {
    "tiny": [(8, False, "all")],
    "small": [(16, False, "all"), (16, True, "targeted")],
    "nested": [(16, False, "targeted")],
    "resnet50": [(16, False, "targeted")] + [(16, True, "targeted")] * len(ON_GPU),
}


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32)


# ---- timing --------------------------------------------------------------------------------


class Timings(dict):
    """Median seconds per call by name, and paired ratios over the rounds they ran in."""

    def __init__(self, times: dict[str, list[float]]):
        super().__init__({name: float(np.median(t)) for name, t in times.items()})
        self.times = times

    def ratio(self, name: str, ref: str) -> float:
        """Median over rounds of `name / ref` timed in the same round (one after the other):
        slow drifts of a shared machine's load cancel in each pair."""
        return float(np.median(np.asarray(self.times[name]) / np.asarray(self.times[ref])))


MIN_SECONDS = [3.0]  # per comparison: fast calls get more rounds (set by --min-seconds)


def interleaved(fns: dict, repeats: int, warmup: int = 1, max_rounds: int = 200) -> Timings:
    """Seconds per call of each function, the runs of all interleaved round by round: at least
    `repeats` rounds, more (up to `max_rounds`) until the comparison has run `MIN_SECONDS`."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    begin = time.perf_counter()
    rounds = 0
    while rounds < repeats or (
        rounds < max_rounds and time.perf_counter() - begin < MIN_SECONDS[0]
    ):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
        rounds += 1
    return Timings(times)


def compiled_forward(model, jit: bool):
    function = tf.function(lambda x: model(x, training=False), jit_compile=jit,
                           reduce_retracing=True)
    return lambda x: function(x).numpy()


def keras_io_recipe(model, layer_name):
    """The keras.io Grad-CAM recipe, eager, one image at a time (grad model built once here)."""
    grad_model = keras.Model(model.inputs, [model.get_layer(layer_name).output, model.outputs[0]])

    def one(img_array):
        with tf.GradientTape() as tape:
            with warnings.catch_warnings():  # keras warns about the input structure
                warnings.simplefilter("ignore")
                last_conv_layer_output, preds = grad_model(img_array)
            pred_index = tf.argmax(preds[0])
            class_channel = preds[:, pred_index]
        grads = tape.gradient(class_channel, last_conv_layer_output)
        pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
        heatmap = last_conv_layer_output[0] @ pooled_grads[..., tf.newaxis]
        heatmap = tf.squeeze(heatmap)
        heatmap = tf.maximum(heatmap, 0) / tf.math.reduce_max(heatmap)
        return heatmap.numpy()

    return lambda x: [one(x[i : i + 1]) for i in range(len(x))]


# ---- results -------------------------------------------------------------------------------


class Report:
    def __init__(self):
        self.rows: list[dict] = []
        self.sections: dict[str, list[str]] = {}
        self.checks: list[dict] = []

    def row(self, section, model, batch, xla, what, seconds, ref=None, ratio=None, target=None):
        met = None if target is None or ratio is None else ratio <= target
        self.rows.append(dict(section=section, model=model, batch=batch, xla=xla, what=what,
                              ms=None if seconds is None else seconds * 1e3, ref=ref,
                              ratio=ratio, target=target, met=met))
        line = (f"{section:9s} {model:9s} b={str(batch):>4s} xla={'on ' if xla else 'off'} "
                f"{what:34s} {fmt_ms(seconds):>10s}")
        if ratio is not None:
            line += f"  {ratio:6.2f}x {ref or ''}"
        if target is not None:
            line += f"  (target <= {target}x: {'met' if met else 'MISSED'})"
        print(line, flush=True)

    def note(self, section, text):
        self.sections.setdefault(section, []).append(text)
        print(f"  [{section}] {text}", flush=True)

    def check(self, name, value, target, met, detail=""):
        self.checks.append(dict(name=name, value=value, target=target, met=met, detail=detail))

    def table(self) -> str:
        head = ("| section | model | batch | XLA | measured | median ms | ratio | vs | target |\n"
                "|---|---|---:|---|---|---:|---:|---|---|\n")
        lines = []
        for r in self.rows:
            ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}x"
            target = "" if r["target"] is None else (
                f"<= {r['target']}x {'met' if r['met'] else '**missed**'}")
            lines.append(f"| {r['section']} | {r['model']} | {r['batch']} | "
                         f"{'on' if r['xla'] else 'off'} | {r['what']} | "
                         f"{fmt_ms(r['ms'] / 1e3 if r['ms'] is not None else None)} | {ratio} | "
                         f"{r['ref'] or ''} | {target} |")
        return head + "\n".join(lines) + "\n"


def fmt_ms(seconds) -> str:
    if seconds is None:
        return "n/a"
    ms = seconds * 1e3
    return f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


# ---- sections ------------------------------------------------------------------------------


def section_speed(report, name, spec, args):
    model = spec["build"]()
    for xla in spec["xla"]:
        if xla not in args.xla:
            continue
        cam = kgc.GradCAM(model, jit_compile=xla)
        forward = compiled_forward(model, xla)
        for batch in spec["batches"]:
            if args.batches and batch not in args.batches:
                continue
            x = images(batch, spec["size"])
            inputs, _ = cam.prepare_inputs(x)
            step_fn = cam.step(inputs)
            ids = tf.fill([batch], -1)
            if xla and batch not in spec["xla_batches"]:
                continue
            fns = {
                "forward": lambda x=x, f=forward: f(x),
                "step": lambda inputs=inputs, ids=ids, step_fn=step_fn: step_fn(inputs, ids, {})[
                    "heatmaps"].numpy(),
                "call": lambda x=x, cam=cam: cam(x),
            }
            if not xla:  # with XLA every variant is another (slow) compilation: skip this one
                fns["noresize"] = lambda x=x, cam=cam: cam(x, resize=False, normalize=False)
            t = interleaved(fns, args.repeats)
            target = TARGETS["gradcam_vs_forward"].get(name)
            report.row("speed", name, batch, xla, "compiled forward", t["forward"])
            report.row("speed", name, batch, xla, "GradCAM compiled step only", t["step"],
                       "forward", t.ratio("step", "forward"))
            if "noresize" in t:
                report.row("speed", name, batch, xla, "GradCAM call, no resize/normalise",
                           t["noresize"], "forward", t.ratio("noresize", "forward"))
            report.row("speed", name, batch, xla, "GradCAM.__call__ (public)", t["call"],
                       "forward", t.ratio("call", "forward"), TARGETS["call_vs_forward"])
            ratio = t.ratio("call", "forward")
            report.check(f"public call / forward, {name} b={batch} xla={'on' if xla else 'off'}",
                         ratio, TARGETS["call_vs_forward"], ratio <= TARGETS["call_vs_forward"])
            if target is not None and batch == 16:
                ratio = t.ratio("call", "forward")
                report.check(f"GradCAM call / forward, {name} b=16 xla={'on' if xla else 'off'}",
                             ratio, target, ratio <= target)
        if args.recipe_repeats < 1:
            pass
        elif spec["recipe"] and not xla and 16 in spec["batches"] or name == "tiny" and not xla:
            batch = 16 if 16 in spec["batches"] else spec["batches"][-1]
            x = images(batch, spec["size"])
            recipe = keras_io_recipe(model, spec["recipe"])
            reps = min(args.repeats, args.recipe_repeats)
            t = interleaved({"forward": lambda x=x, f=forward: f(x),
                             "recipe": lambda x=x, r=recipe: r(x),
                             "call": lambda x=x, cam=cam: cam(x)}, reps)
            report.row("speed", name, batch, xla, "keras.io recipe (eager, 1 image/step)",
                       t["recipe"], "forward", t.ratio("recipe", "forward"))
            report.row("speed", name, batch, xla, "GradCAM.__call__ vs recipe", t["call"],
                       "recipe", t.ratio("call", "recipe"))
        elif not xla and spec["recipe"] is None:
            try:
                keras_io_recipe(model, model.layers[1].layers[-1].name)
            except Exception as error:  # the recipe cannot reach a layer in a nested backbone
                report.note("speed", f"{name}: the keras.io recipe fails on the nested backbone: "
                                     f"{type(error).__name__}: {str(error).splitlines()[0][:120]}")


def section_methods(report, name, spec, args):
    model = spec["build"]()
    methods = [m for m in args.methods if m in kgc.METHODS and m != "gradcam"]
    if name == "resnet50":  # 16 x 16 masked ResNet50 passes per call: see the scorecam section
        methods = [m for m in methods if m != "scorecam"]
    for batch, xla, which in METHOD_SETTINGS[name]:
        if xla not in args.xla or args.batches and batch not in args.batches:
            continue
        x = images(batch, spec["size"])
        base = kgc.GradCAM(model, jit_compile=xla)
        chosen = methods if which == "all" else [m for m in methods if m in TARGETED_METHODS]
        for method in chosen:
            cls = kgc.METHODS[method]
            kwargs = METHOD_OPTIONS.get(method, {})
            try:
                cam = cls(model, jit_compile=xla, **kwargs)
                t = interleaved({"gradcam": lambda x=x, b=base: b(x),
                                 "m": lambda x=x, cam=cam: cam(x)}, args.repeats)
            except Exception as error:
                report.note("methods", f"{name} {method}: failed: {type(error).__name__}: "
                                       f"{str(error).splitlines()[0][:160]}")
                continue
            ratio = t.ratio("m", "gradcam")
            target = TARGETS["method_vs_gradcam"] if method in TARGETED_METHODS else None
            target = TARGETS.get(method, target)
            label = method + "".join(f" ({k}={v})" for k, v in kwargs.items())
            report.row("methods", name, batch, xla, label, t["m"], "GradCAM", ratio, target)
            if target is not None:
                report.check(f"{method} / GradCAM, {name} b={batch} xla={'on' if xla else 'off'}",
                             ratio, target, ratio <= target)
        if which == "all" and {"guided-gradcam", "guided-backprop"} <= set(methods):
            guided = kgc.GuidedBackprop(model, jit_compile=xla)
            product = kgc.GuidedGradCAM(model, jit_compile=xla)
            t = interleaved({"backprop": lambda x=x, g=guided: g(x),
                             "product": lambda x=x, p=product: p(x)}, args.repeats)
            ratio, target = t.ratio("product", "backprop"), TARGETS["guided_vs_backprop"]
            report.row("methods", name, batch, xla, "guided-gradcam vs guided-backprop",
                       t["product"], "guided-backprop", ratio, target)
            report.check(f"guided-gradcam / guided-backprop, {name} b={batch}", ratio, target,
                         ratio <= target)


def section_scorecam(report, name, spec, args):
    if "scorecam" not in args.methods:
        return
    model = spec["build"]()
    channels = int(kgc.GradCAM(model).layer.output.shape[-1])
    settings = {"resnet50": [(1, 16)], "small": [(16, None), (16, 16)], "tiny": [(8, None)],
                "nested": [(16, 16)]}[name]
    forward = compiled_forward(model, False)
    for batch, max_channels in settings:
        x = images(batch, spec["size"])
        k = min(max_channels or channels, channels)
        cam = kgc.ScoreCAM(model, max_channels=max_channels, jit_compile=False, batch_size=16)
        xf = images(16, spec["size"])
        reps = max(1, min(args.repeats, 3))
        t = interleaved({"forward16": lambda xf=xf: forward(xf),
                         "score": lambda x=x, cam=cam: cam(x)}, reps)
        passes = batch * k  # masked forward passes (images), run 16 at a time
        equivalent = passes / 16 * t["forward16"]
        report.row("scorecam", name, batch, False,
                   f"Score-CAM k={k}{' (max_channels)' if max_channels else ''}", t["score"],
                   f"{passes} fwd imgs", t["score"] / equivalent)


CLASSES_PER_IMAGE = 4


def section_classes(report, name, spec, args):
    """Several classes per image (ids `(n, K)`, maps `(n, K, H, W)`) in one call vs K calls of
    one class each, and vs one call of one class; the small CNN only (and tiny for --smoke)."""
    if name not in ("small", "tiny"):
        return
    model = spec["build"]()
    batch = 16 if 16 in spec["batches"] else spec["batches"][-1]
    if args.batches and batch not in args.batches:
        return
    k, x = CLASSES_PER_IMAGE, images(batch, spec["size"])
    classes = int(model.output.shape[-1])
    ids = np.stack([(np.arange(batch) + j) % classes for j in range(k)], axis=1)
    for xla in spec["xla"]:
        if xla not in args.xla:
            continue
        cam = kgc.GradCAM(model, jit_compile=xla)
        t = interleaved({
            "one": lambda cam=cam: cam(x, ids[:, 0]),
            "several": lambda cam=cam: cam(x, ids),
            "separate": lambda cam=cam: [cam(x, ids[:, j]) for j in range(k)],
        }, args.repeats)
        report.row("classes", name, batch, xla, f"{k} classes per image, one call", t["several"],
                   f"{k} calls", t.ratio("several", "separate"))
        report.row("classes", name, batch, xla, f"{k} calls of one class each", t["separate"],
                   "1 call", t.ratio("separate", "one"))
        report.row("classes", name, batch, xla, f"{k} classes per image, one call",
                   t["several"], "1 call", t.ratio("several", "one"))


def section_trace(report, args):
    model = MODELS["tiny" if args.smoke else "small"]["build"]()
    size = 16 if args.smoke else 64
    cam = kgc.GradCAM(model, batch_size=64)
    records = []

    class Catch(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Catch()
    tf.get_logger().addHandler(handler)
    calls = 20 if args.smoke else 100
    rng = np.random.default_rng(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        for i in range(calls):
            batch = int(rng.integers(1, 65))
            cam(images(batch, size, seed=i), targets=None if i % 2 else 3)
        seconds = time.perf_counter() - start
    tf.get_logger().removeHandler(handler)
    retrace = [m for m in records + [str(w.message) for w in caught] if "retrac" in m]
    report.row("trace", "small" if not args.smoke else "tiny", "1-64", False,
               f"{calls} calls, varying batch", seconds / calls)
    report.note("trace", f"trace_count after {calls} calls with batch sizes 1..64: "
                         f"{cam.trace_count}; retracing warnings: {len(retrace)}")
    report.check(f"one trace over {calls} calls of varying batch size", cam.trace_count, 1,
                 cam.trace_count == 1 and not retrace,
                 f"{len(retrace)} retracing warnings")


def run_child(args_list) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *args_list],
                         capture_output=True, text=True, check=False)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"child {args_list} failed:\n{out.stderr[-2000:]}")


def rss_now() -> dict:
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024  # MiB
    return fields


def child_rss(model_name, mode, batch, calls=3):
    spec = MODELS[model_name]
    model = spec["build"]()
    x = images(batch, spec["size"])
    before = rss_now()["VmRSS"]
    if mode == "forward":
        fn = compiled_forward(model, False)
    else:
        cam = kgc.GradCAM(model, jit_compile=False)
        fn = cam
    for _ in range(calls):
        fn(x)
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork+exec, so a child
    # would report the (larger) parent's peak.
    peak = rss_now()["VmHWM"]
    print(json.dumps({"peak_mib": peak, "before_mib": before}))


def section_rss(report, args):
    settings = [("tiny", 8)] if args.smoke else [
        (m, 16) for m in ("small", "resnet50") if m in args.models]
    for model_name, batch in settings:
        fwd = run_child(["--child-rss", model_name, "forward", str(batch)])
        cam = run_child(["--child-rss", model_name, "gradcam", str(batch)])
        ratio = cam["peak_mib"] / fwd["peak_mib"]
        report.note("rss", f"{model_name} b={batch}: peak RSS forward {fwd['peak_mib']:.0f} MiB, "
                           f"Grad-CAM {cam['peak_mib']:.0f} MiB ({ratio:.2f}x); above the state "
                           f"after building the model: forward "
                           f"{fwd['peak_mib'] - fwd['before_mib']:.0f} MiB, Grad-CAM "
                           f"{cam['peak_mib'] - cam['before_mib']:.0f} MiB")
        report.row("rss", model_name, batch, False, "peak RSS Grad-CAM / forward", None,
                   "forward", ratio, TARGETS["rss"])
        report.check(f"peak RSS Grad-CAM / forward, {model_name} b={batch}", ratio,
                     TARGETS["rss"], ratio <= TARGETS["rss"],
                     f"{cam['peak_mib']:.0f} vs {fwd['peak_mib']:.0f} MiB")


def child_stream(total: int, mode: str, size: int):
    model = small_cnn(size) if size != 16 else small_cnn(16, 5, 4)
    cam = kgc.GradCAM(model, batch_size=64)
    data = tf.data.Dataset.range(total).map(
        lambda i: tf.random.stateless_uniform((size, size, 3), seed=tf.stack([i, i * 0 + 7])))
    samples = []
    every = max(total // 10, 1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if mode == "generator":
            seen, mark = 0, 0
            for explanation in iter_explanations(cam, data.batch(64), progress=False, count=total):
                seen += len(explanation.heatmaps)
                if seen >= mark:
                    samples.append((seen, rss_now()))
                    mark += every
        else:  # runs to the end: a thread samples RSS while it writes the memmap
            # Warm-up on a few batches first (tracing, thread pools, tf.data buffers), so the
            # measured run shows what the dataset size costs, not what the first call costs.
            write_explanations(cam, data.take(256), progress=False,
                               maps_path=os.path.join(tmp, "warm-up.npy"))
            done = threading.Event()

            def sample():
                begin = time.perf_counter()
                while not done.wait(0.25):
                    samples.append((round(time.perf_counter() - begin, 2), rss_now()))

            thread = threading.Thread(target=sample, daemon=True)
            thread.start()
            result = write_explanations(cam, data, progress=False,
                                        maps_path=os.path.join(tmp, "maps.npy"))
            done.set()
            thread.join()
            samples.append((round(time.perf_counter() - start, 2), rss_now()))
            if result.count != total:
                raise RuntimeError(f"explained {result.count} of {total} images")
    seconds = time.perf_counter() - start
    print(json.dumps({"samples": samples, "seconds": seconds, "trace_count": cam.trace_count}))


def section_stream(report, args):
    total = 640 if args.smoke else args.stream_images
    size = 16 if args.smoke else 64
    for mode in ("generator", "memmap"):
        out = run_child(["--child-stream", str(total), mode, str(size)])
        samples = out["samples"]
        unit = "images" if mode == "generator" else "s"
        # Flat means no growth with the number of images: compare the middle of the run with
        # its end (one-off steps while the pipeline warms up, e.g. tf.data's autotuned buffers,
        # show in the max-min of the note).
        first = samples[len(samples) // 2]
        last = samples[-1]
        anon = [s[1].get("RssAnon", s[1]["VmRSS"]) for s in samples]
        growth = last[1].get("RssAnon", 0) - first[1].get("RssAnon", 0)
        report.row("stream", "small" if not args.smoke else "tiny", 64, False,
                   f"explain_dataset {mode}, per image", out["seconds"] / total)
        trail = ", ".join(f"{s[0]}: {s[1]['VmRSS']:.0f}/{s[1].get('RssAnon', 0):.0f}"
                          for s in samples)
        report.note("stream", f"{mode}, {total} images of {size}x{size}: VmRSS/RssAnon MiB at "
                              f"({unit}) {trail}. RssAnon change from {first[0]} to "
                              f"{last[0]} {unit}: {growth:+.1f} MiB (max-min over the run "
                              f"{max(anon) - min(anon):.1f} MiB); {out['seconds']:.1f} s.")
        report.check(f"flat memory, explain_dataset {mode} over {total} images",
                     growth, "< 5% growth in the second half", growth < 0.05 * first[1].get(
                         "RssAnon", 1e9),
                     f"MiB; RssAnon {first[1].get('RssAnon', 0):.0f} -> "
                     f"{last[1].get('RssAnon', 0):.0f} MiB; "
                     f"max-min over the run {max(anon) - min(anon):.0f} MiB")


def section_callback(report, args):
    if args.smoke:
        n, size, epochs = 256, 16, 2
    else:
        n, size, epochs = args.callback_images, 64, args.callback_epochs
    rng = np.random.default_rng(0)
    x = rng.random((n, size, size, 3), dtype=np.float32)
    y = rng.integers(0, 10, n)

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    # One fit, the callback logging every other epoch (freq=2): epochs with and without it
    # alternate, so load changes on a shared machine hit both alike. Epoch 0 (tracing) and the
    # callback's set-up at train begin are left out.
    epochs = max(epochs, 5)
    with tempfile.TemporaryDirectory() as tmp:
        keras.utils.set_random_seed(0)
        model = small_cnn(size) if size == 64 else small_cnn(16, 10, 4)
        model.compile("adam", "sparse_categorical_crossentropy")
        timer = EpochTimer()
        cb = kgc.GradCAMCallback(x[:32], tmp, probe_labels=y[:32], num_probes=32, freq=2)
        # The timer's epoch end runs after the callback's, so logged epochs include its work.
        model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[cb, timer])
    logged = [t for e, t in enumerate(timer.times) if e and e % 2 == 0]
    plain_epochs = [t for e, t in enumerate(timer.times) if e % 2 == 1]
    plain, with_cb = float(np.median(plain_epochs)), float(np.median(logged))
    cb_times = cb.timings[1:] or cb.timings
    cb_median = float(np.median(cb_times)) if cb_times else float("nan")
    overhead = (with_cb - plain) / plain
    own = cb_median / plain
    name = "small" if size == 64 else "tiny"
    report.row("callback", name, 64, False, f"epoch, {n} imgs, callback idle", plain)
    report.row("callback", name, 64, False, "epoch with GradCAMCallback logging (32 probes)",
               with_cb, "idle epoch", with_cb / plain)
    report.row("callback", name, 64, False, "callback's own time per logged epoch", cb_median,
               "epoch", own)
    times = ", ".join(f"{t:.2f}" for t in timer.times)
    report.note("callback", f"{n} images {size}x{size}, one fit of {epochs} epochs with "
                            f"`freq=2`: epoch times {times} s (epoch 0 traces). Median of the "
                            f"logged epochs 2, 4, ...: {with_cb:.2f} s; of the idle epochs 1, "
                            f"3, ...: {plain:.2f} s ({overhead:+.1%}); the callback's own time "
                            f"(callback.timings) {cb_median * 1e3:.0f} ms = {own:.1%} of an epoch.")
    report.check("GradCAMCallback share of epoch time", own, "<= 3%", own <= TARGETS["callback"],
                 f"logged vs idle epochs of the same fit {overhead:+.1%}")


# ---- main ----------------------------------------------------------------------------------


def machine() -> dict:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    mem = ""
    with contextlib.suppress(OSError):
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 ** 2:.0f} GiB"
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": f"{cpu}, {os.cpu_count()} cores visible, {mem} RAM",
        "gpu": ", ".join(g.name for g in gpus) or "none",
        "versions": f"Python {platform.python_version()}, TensorFlow {tf.__version__}, "
                    f"Keras {keras.__version__}, NumPy {np.__version__}, "
                    f"keras-gradcam {kgc.__version__}",
        "platform": platform.platform(),
        "load": "load average (1, 5, 15 min) at start: "
                + ", ".join(f"{v:.1f}" for v in os.getloadavg()),
    }


def write_results(path, report, info, args, seconds):
    lines = [
        "# keras-gradcam benchmark results",
        "",
        "Written by `benchmarks/bench_explain.py` "
        f"(`{' '.join(['python benchmarks/bench_explain.py', *args.argv])}`), "
        f"{seconds / 60:.1f} minutes. Times are medians of at least {args.repeats} runs "
        f"(more for fast calls: each comparison runs at least {args.min_seconds:g} s) after a "
        "warm-up call, the compared things interleaved round by round; a ratio is the median "
        "over rounds of the two times measured in the same round (paired, so that a shared "
        "machine's load drifts cancel). Ratios are what the targets are about (absolute times "
        "depend on the machine).",
        "",
        f"- Date: {info['date']}",
        f"- Machine: {info['machine']}; GPU: {info['gpu']}",
        f"- Platform: {info['platform']}",
        f"- Versions: {info['versions']}",
        f"- Other work on the machine: {info['load']}; at the end: "
        + ", ".join(f"{v:.1f}" for v in os.getloadavg()),
        "",
        "## Targets",
        "",
        "| target | measured | goal | met |",
        "|---|---|---|---|",
    ]
    for c in report.checks:
        value = c["value"]
        value = f"{value:.3g}" if isinstance(value, float) else str(value)
        lines.append(f"| {c['name']} | {value} {('(' + c['detail'] + ')') if c['detail'] else ''}"
                     f" | {c['target']} | {'yes' if c['met'] else '**no**'} |")
    lines += ["", "## All measurements", "", report.table()]
    for section, notes in report.sections.items():
        lines += [f"### Notes: {section}", ""] + [f"- {n}" for n in notes] + [""]
    analysis = os.path.join(HERE, "analysis.md")
    if os.path.exists(analysis) and not args.smoke:
        with open(analysis) as f:
            lines += ["", f.read()]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, 1 repeat, seconds")
    parser.add_argument("--models", default="small,nested,resnet50",
                        help="comma list of: tiny, small, nested, resnet50")
    parser.add_argument("--methods", default="all", help="comma list of method names, or all")
    parser.add_argument("--sections", default=",".join(DEFAULT_SECTIONS),
                        help=f"comma list of: {', '.join(ALL_SECTIONS)} (default: the first "
                             "eight; the others replace their own block of the results file)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=3.0,
                        help="run each comparison at least this long (more rounds for fast "
                             "calls; default %(default)s, 0 in --smoke)")
    parser.add_argument("--recipe-repeats", type=int, default=5,
                        help="repeats of the slow keras.io recipe baseline (0: skip it)")
    parser.add_argument("--xla", default="off,on", help="off, on or off,on")
    parser.add_argument("--batches", default="", help="restrict batch sizes, e.g. 16")
    parser.add_argument("--stream-images", type=int, default=10_000)
    parser.add_argument("--callback-images", type=int, default=10_000)
    parser.add_argument("--callback-epochs", type=int, default=5)
    parser.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"),
                        help="where to write the Markdown report")
    parser.add_argument("--child-rss", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--child-stream", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--child-first", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--child-peer", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--child-scoremem", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(argv)
    if args.smoke:
        args.models, args.repeats, args.recipe_repeats = "tiny", 1, 1
        args.min_seconds = 0.0
        if "--sections" not in argv:
            args.sections = "speed,methods,scorecam,trace"
        if args.methods == "all":
            args.methods = "gradcam,gradcam++,scorecam"
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(MODELS)}")
    methods = getattr(kgc, "METHODS", {"gradcam": kgc.GradCAM})
    args.methods = list(methods) if args.methods == "all" else [
        m.strip().lower() for m in args.methods.split(",") if m.strip()]
    bad = sorted(set(args.methods) - set(methods))
    if bad:
        parser.error(f"unknown methods {bad}; choose from {sorted(methods)}")
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if set(args.sections) - set(ALL_SECTIONS):
        parser.error(f"unknown sections; choose from {ALL_SECTIONS}")
    args.xla = [{"off": False, "on": True}[v.strip()] for v in args.xla.split(",")]
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.child_rss:
        return child_rss(args.child_rss[0], args.child_rss[1], int(args.child_rss[2]))
    if args.child_stream:
        return child_stream(int(args.child_stream[0]), args.child_stream[1],
                            int(args.child_stream[2]))
    if args.child_first:
        return bench_more.child_first(sys.modules[__name__], *args.child_first)
    if args.child_peer:
        name, tool, batch = args.child_peer
        return bench_more.child_peer(sys.modules[__name__], name, tool, int(batch))
    if args.child_scoremem:
        return bench_more.child_scoremem(sys.modules[__name__], *args.child_scoremem)
    MIN_SECONDS[0] = args.min_seconds
    start = time.perf_counter()
    info = machine()
    print(f"{info['machine']} | {info['versions']} | GPU: {info['gpu']}", flush=True)
    report = Report()
    for name in args.models:
        spec = MODELS[name]
        if "speed" in args.sections:
            section_speed(report, name, spec, args)
        if "methods" in args.sections:
            section_methods(report, name, spec, args)
        if "scorecam" in args.sections:
            section_scorecam(report, name, spec, args)
        if "classes" in args.sections:
            section_classes(report, name, spec, args)
        keras.backend.clear_session()
    if "trace" in args.sections:
        section_trace(report, args)
    if "rss" in args.sections:
        section_rss(report, args)
    if "stream" in args.sections:
        section_stream(report, args)
    if "callback" in args.sections:
        section_callback(report, args)
    blocks = {name: bench_more.SECTIONS[name](report, args, sys.modules[__name__])
              for name in bench_more.BLOCK_SECTIONS if name in args.sections}
    for lines in blocks.values():
        print("\n".join(lines))
    seconds = time.perf_counter() - start
    print("\n" + report.table())
    old = ""
    if os.path.exists(args.results):
        with open(args.results) as f:
            old = f.read()
    if set(args.sections) <= set(bench_more.BLOCK_SECTIONS) and old:
        text = old  # only block sections ran: merge them into the existing report
        analysis = os.path.join(HERE, "analysis.md")
        if "\n## Analysis" in text and os.path.exists(analysis) and not args.smoke:
            with open(analysis) as f:  # and refresh the analysis appended to it
                text = text.partition("\n## Analysis")[0].rstrip("\n") + "\n\n\n" + f.read()
    else:
        write_results(args.results, report, info, args, seconds)
        with open(args.results) as f:
            text = f.read()
        blocks = {**bench_more.kept_blocks(old, blocks), **blocks}
    with open(args.results, "w") as f:
        f.write(bench_more.merge_blocks(text, blocks))
    print(f"wrote {args.results} ({seconds:.0f} s)")
    return report


if __name__ == "__main__":
    main()
