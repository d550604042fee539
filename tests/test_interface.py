"""Issue 13: one explainer interface, used by every client; checks anyone can run."""

import ast
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import keras_gradcam as kgc

PACKAGE = os.path.dirname(kgc.__file__)
ROOT = os.path.dirname(PACKAGE)


def modules() -> dict[str, str]:
    """Dotted module name -> path, for every module of the package."""
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[dotted.removesuffix(".__init__")] = path
    return out


def imports_of(path: str, known: set[str]) -> set[str]:
    """Package modules imported anywhere in a file (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {n for n in names if n in known}
    return found


def test_no_import_cycle():
    table = modules()
    graph = {name: imports_of(path, set(table)) - {name} for name, path in table.items()}
    state: dict[str, int] = {}

    def visit(name, trail):
        state[name] = 1
        for target in graph[name]:
            if state.get(target) == 1:
                cycle = trail[trail.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, trail + [target])
        state[name] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def private_members_of_explainers(cnn) -> set[str]:
    names = set()
    for cls in kgc.METHODS.values():
        names |= {n for n in dir(cls) if n.startswith("_") and not n.startswith("__")}
    names |= {n for n in vars(kgc.GradCAM(cnn)) if n.startswith("_")}
    names |= {n for n in vars(kgc.CAM(cnn)) if n.startswith("_")}
    return names


def test_no_module_outside_methods_touches_an_explainers_private_members(cnn):
    private = private_members_of_explainers(cnn)
    pattern = re.compile(r"\.(" + "|".join(map(re.escape, sorted(private))) + r")\b")
    files = [p for name, p in modules().items() if not name.startswith("keras_gradcam.methods")]
    files.append(os.path.join(ROOT, "benchmarks", "bench_explain.py"))
    hits = []
    for path in files:
        for number, line in enumerate(open(path), 1):
            for match in pattern.finditer(line):
                if not line[: match.start()].rstrip().endswith("self"):
                    hits.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()}")
    assert hits == []


def test_modules_under_400_lines_and_classes_under_250():
    for path in modules().values():
        source = open(path).read()
        assert source.count("\n") < 400, path
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno - node.lineno + 1 < 250, (path, node.name)


def test_import_sets_no_process_wide_environment():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = "import os, keras_gradcam; print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "None"


# ---- the step interface -------------------------------------------------------------------


def test_step_and_collect_give_what_explain_gives(cnn, images):
    cam = kgc.GradCAM(cnn)
    inputs, n = cam.prepare_inputs(images)
    ids = cam.class_ids([0, 1, 2, 3], n)
    step = cam.step(inputs)
    explanation = cam.collect(step(inputs, tf.constant(ids)))
    expected = cam.explain(images, [0, 1, 2, 3])
    for field in ("heatmaps", "targets", "scores", "class_scores", "probabilities"):
        np.testing.assert_allclose(getattr(explanation, field), getattr(expected, field),
                                   rtol=1e-6, atol=1e-7)
    assert cam.step(inputs) is step and cam.trace_count == 1
    assert cam.num_classes == 5


def test_explanations_say_what_they_hold(cnn, images):
    heat = kgc.GradCAM(cnn, score="probability").explain(images)
    guided = kgc.GuidedBackprop(cnn).explain(images)
    assert (heat.kind, heat.score_space) == ("heatmap", "probability")
    np.testing.assert_allclose(heat.class_scores, heat.probabilities, rtol=1e-6)
    assert guided.kind == "image" and guided.heatmaps.shape == images.shape
    np.testing.assert_array_equal(kgc.image.draw(images, guided),
                                  kgc.image.draw(images, guided.heatmaps))
    single = guided.take([0])  # an image explanation drawn as an image, even of one sample
    assert kgc.image.draw(images[:1], single).shape == (1, 16, 16, 3)


def test_logits_is_a_deprecated_name_of_class_scores(cnn, images):
    explanation = kgc.GradCAM(cnn).explain(images)
    with pytest.warns(DeprecationWarning, match="class_scores"):
        np.testing.assert_array_equal(explanation.logits, explanation.class_scores)


def test_callback_targets_is_a_deprecated_name_of_explain_classes(tmp_path, images):
    with pytest.warns(DeprecationWarning, match="explain_classes"):
        cb = kgc.GradCAMCallback(images, tmp_path, probe_labels=[0, 1, 2, 3], targets="both")
    assert cb.explain_classes == "both"
    with pytest.warns(DeprecationWarning, match="explain_classes"):
        assert cb.targets == "both"


def test_explain_dataset_writing_is_deprecated_for_write_explanations(cnn, images, tmp_path):
    cam = kgc.GradCAM(cnn)
    data = tf.data.Dataset.from_tensor_slices(images)
    with pytest.warns(DeprecationWarning, match="write_explanations"):
        old = kgc.explain_dataset(cam, data, maps_path=tmp_path / "a.npy", progress=False)
    new = kgc.write_explanations(cam, data, maps_path=tmp_path / "b.npy", progress=False)
    np.testing.assert_array_equal(np.asarray(old.maps), np.asarray(new.maps))
    streamed = list(kgc.explain_dataset(cam, data.batch(3), progress=False))
    assert [len(e) for e in streamed] == [4]  # re-batched to the explainer's batch size


def test_callback_refuses_image_methods_by_asking_the_method(tmp_path, images):
    from callback_helpers import objects, tiny_cnn

    x, y, _ = objects(4, shortcut=False, seed=0)
    cb = kgc.GradCAMCallback(x, tmp_path, probe_labels=y, method="guided-backprop")
    with pytest.raises(ValueError, match="GuidedBackprop returns images"):
        tiny_cnn().fit(x, y, epochs=1, verbose=0, callbacks=[cb])


def test_every_public_name_resolves():
    for name in kgc.__all__:
        assert getattr(kgc, name) is not None, name
    assert kgc.Explanation is kgc.explanation.Explanation
    assert kgc.write_explanations.__module__ == "keras_gradcam.writing"
