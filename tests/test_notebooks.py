"""The notebooks in notebooks/: stored stripped with a Colab badge, and they run top to bottom.

Execution (slow, about 1.5-2 minutes per notebook on two CPU cores) uses nbclient with the
`python3` kernel of this interpreter, in a temporary working directory, with `MPLBACKEND=Agg`,
`TF_CPP_MIN_LOG_LEVEL=2` and `CI=true` (the bias notebook then prints the TensorBoard command
instead of starting a server).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["01_quickstart.ipynb", "02_bias_detection.ipynb", "03_methods_gallery.ipynb",
         "04_segmentation_detection.ipynb", "05_vision_transformers.ipynb"]
BADGE = (
    "https://colab.research.google.com/github/keras-gradcam/keras-gradcam/blob/main/notebooks/{}"
)


def _read(name: str):
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def _text(cell) -> str:
    """Everything a code cell printed, as one string."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output:
            parts.append(output.data.get("text/plain", ""))
    return "".join(parts)


def test_every_notebook_is_listed():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stripped_and_opens_with_a_colab_badge(name):
    nb = _read(name)
    nbformat.validate(nb)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    assert BADGE.format(name) in first.source
    assert "colab-badge.svg" in first.source
    install = nb.cells[1].source
    assert '"google.colab" in sys.modules' in install and "%pip install" in install
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]


def _check_quickstart(text: str) -> None:
    assert re.search(r"heatmaps: \(\d+, \d+, \d+\) float32 in \[0\.00, 1\.00\]", text)
    assert "quickstart done:" in text
    # Offline the notebook must say why it trains its own model.
    if "MobileNetV2 (ImageNet)" not in text:
        assert "could not be downloaded" in text
        assert "data: " in text  # and which data it trained on
        assert "Downloading data from" not in text  # no doomed download attempt


def _check_bias(text: str) -> None:
    match = re.search(r"energy in object: biased ([0-9.]+), fair ([0-9.]+)", text)
    assert match, "the final bias numbers were not printed"
    biased, fair = float(match.group(1)), float(match.group(2))
    assert 0.0 <= biased <= 1.0 and 0.0 <= fair <= 1.0
    assert fair > biased, f"the maps did not return to the object: biased {biased}, fair {fair}"
    assert "gradcam/energy_in_mask per epoch (event file)" in text
    assert "what the numbers say:" in text and "returned to the object" in text
    assert "TensorBoard not started" in text  # CI=true: no server


def _check_gallery(text: str) -> None:
    import keras_gradcam as kgc

    match = re.search(r"gallery: (\d+) images x (\d+) methods \((\d+) columns", text)
    assert match, "the gallery summary was not printed"
    assert int(match.group(2)) == len(kgc.METHODS)
    assert int(match.group(3)) == len(kgc.METHODS) + 1  # one column per method, plus the input
    table = text[text.index("energy in object  pointing game") :]
    for method in kgc.METHODS:
        assert re.search(rf"^{re.escape(method)}\s+[0-9.]+\s+[0-9.]+", table, re.M), method


def _check_segmentation_detection(text: str) -> None:
    number = r"([0-9.]+)"
    seg = re.search(rf"segmentation energy inside the mask: given masks {number} \(lowest "
                    rf"{number}\), predicted masks {number}", text)
    assert seg, "the segmentation energies were not printed"
    given, lowest, predicted = (float(v) for v in seg.groups())
    assert 0.0 <= lowest <= given <= 1.0 and 0.0 <= predicted <= 1.0
    assert given >= 0.7, f"the maps of the given masks are not on the squares: {given}"
    det = re.search(rf"detection energy inside the box: {number}", text)
    assert det and 0.0 <= float(det.group(1)) <= 1.0, "the detection energy was not printed"
    assert "explained layer: 'decoder'" in text  # the automatic pick skips the 1x1 head
    assert re.search(r"multi-label energy inside each colour's square: red [0-9.]+", text)
    assert re.search(r"maps \(6, 3, 32, 32\), present \d+ of 18 slots", text)
    assert "notebook done:" in text


def _check_vision_transformers(text: str) -> None:
    accuracy = re.search(r"held-out accuracy ([0-9.]+)", text)
    assert accuracy and float(accuracy.group(1)) >= 0.95, "the tiny ViT did not learn"
    assert "explained layer: vi_t_backbone/vit_encoder/transformer_block_2/ln_1" in text
    assert "token grid: TokenGrid(prefix=1, grid=(8, 8))" in text
    assert "method 'auto' picks: gradcam-elementwise" in text
    assert "largest HiResCAM value at the encoder output: 0.0" in text
    match = re.search(r"auto \(gradcam-elementwise\): ([0-9.]+) vs Grad-CAM ([0-9.]+), "
                      r"([0-9.]+)x chance", text)
    assert match, "the pointing-game comparison was not printed"
    assert float(match.group(3)) >= 3.0, "the default does not beat chance clearly"
    assert "same maps as inferred: True" in text and "notebook done:" in text


CHECKS = {
    "01_quickstart.ipynb": _check_quickstart,
    "02_bias_detection.ipynb": _check_bias,
    "03_methods_gallery.ipynb": _check_gallery,
    "04_segmentation_detection.ipynb": _check_segmentation_detection,
    "05_vision_transformers.ipynb": _check_vision_transformers,
}


@pytest.mark.slow
@pytest.mark.parametrize("name, data", [*((n, "auto") for n in NAMES),
                                        ("02_bias_detection.ipynb", "shapes")])
def test_notebook_runs(name, data, tmp_path, monkeypatch):
    """Each notebook end to end; the bias story also on the generated data a new user without
    Fashion-MNIST gets (`KERAS_GRADCAM_DATA=shapes`)."""
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("KERAS_GRADCAM_DATA", data)
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")

    nb = _read(name)
    # The kernel must be this interpreter (jupyter_client maps the spec's "python" to
    # sys.executable); a first cell reports which one ran.
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    executable = _text(nb.cells[0]).strip()
    assert os.path.realpath(executable) == os.path.realpath(sys.executable)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    figures = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert figures, "no figure was drawn"
    CHECKS[name]("".join(_text(cell) for cell in code))
