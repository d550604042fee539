"""A smoke run of the benchmark script: tiny model, one repeat, results to a temporary file."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_explain.py")


def run(*args, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout, check=False)


def test_smoke_run_prints_table_and_writes_results(tmp_path):
    results = tmp_path / "out" / "RESULTS.md"
    out = run("--smoke", "--sections", "speed,classes,trace", "--methods", "gradcam",
              "--results", str(results))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| section | model | batch | XLA | measured | median ms | ratio |" in out.stdout
    assert "GradCAM.__call__ (public)" in out.stdout
    assert "4 classes per image, one call" in out.stdout and "4 calls of one class" in out.stdout
    assert "trace_count after 20 calls with batch sizes 1..64: 1; retracing warnings: 0" in (
        out.stdout)
    text = results.read_text()
    assert text.startswith("# keras-gradcam benchmark results")
    for part in ("Machine:", "TensorFlow", "Keras", "## Targets", "compiled forward",
                 "one trace over 20 calls", "## All measurements"):
        assert part in text, part
    assert not os.path.exists(os.path.join(ROOT, "benchmarks", "RESULTS.md.tmp"))


@pytest.mark.slow
def test_smoke_run_memory_sections(tmp_path):
    results = tmp_path / "RESULTS.md"
    out = run("--smoke", "--sections", "methods,scorecam,rss,stream", "--results", str(results),
              timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = results.read_text()
    for part in ("peak RSS Grad-CAM / forward", "explain_dataset generator",
                 "explain_dataset memmap", "Score-CAM k=", "gradcam++"):
        assert part in text, part


def test_bad_options_fail_clearly():
    out = run("--models", "vgg99", "--results", os.devnull, timeout=120)
    assert out.returncode != 0
    assert "unknown models ['vgg99']" in out.stderr


def test_vit_benchmark_smoke_run_prints_its_block():
    pytest.importorskip("keras_hub")
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "bench_vit.py")
    result = subprocess.run([sys.executable, script, "--tiny", "--repeats", "1", "--batch", "2"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"\| off \| GradCAM call \(public\) \| \d+ \| \d+\.\d\dx \|", result.stdout)
    assert "token grid inferred: TokenGrid(prefix=1, grid=(14, 14))" in result.stdout
