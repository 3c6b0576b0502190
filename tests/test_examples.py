"""Runs every notebook in `examples/` end to end, as a user would (a fresh kernel).

The notebooks are stored with the outputs of such a run (the documentation site shows
them); `docs/scripts/run_notebooks.py` refreshes them. Each notebook must run without an
error and reproduce what its prose claims, and its stored outputs must be those of a
complete, top-to-bottom run. Running them needs the `[examples]` extra and a Jupyter
kernel (`nbclient`, `ipykernel`, from `[test]`); without those the runs are skipped,
naming what is missing.
"""

import importlib.util
import json
import pathlib
import re
import sys

import pytest


ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
NEEDED = [
    "nbclient",
    "nbformat",
    "ipykernel",
    "sklearn",
    "matplotlib",
    "optax",
    "diffrax",
]
MISSING = [name for name in NEEDED if importlib.util.find_spec(name) is None]
# The README promises each notebook runs in under 2 minutes on 2 CPU cores (measured:
# 40-80 s each on 2 cores shared with other jobs, load average 5-7).
TIMEOUT_S = 120
# What each notebook's prose claims, as it must appear in its outputs (stored and
# fresh). Patterns, matched against the text a notebook prints, or functions of the
# printed lines that raise if a relation between printed numbers does not hold.
CLAIMS = {
    "01_lagrangians": [
        r"^\(7,\)$",
        r"^\[-1\. -1\.  0\.  1\.  1\.\]$",  # tanh of huge inputs: no NaN
        r"^\[inf inf  0\. inf inf\]$",  # the naive log cosh overflows
        r"^8\.217218$",  # the user documentation's value
        r"^\[0\.79066116 0\.634871   0\.13261071 3\.3233747 \]$",
        r"^learned beta = 3\.00\d\d, ",
    ],
    "02_dense_associative_memory": [
        r"^Euclidean memory, beta=100 +exact 0\.712  class 0\.936$",
        r"^Euclidean memory, beta=100, fixed_point +exact 0\.712  class 0\.936$",
        r"^all converged: True; iterations: ",
        r"^read with confidence = known, then settle +exact 1\.000  class 1\.000$",
        r"^energy never rises: True$",
        r"^energy never rises while settling: True$",
        r"^LSoftmax\(beta=10\)$",
    ],
    "03_train_a_ham": [
        r"^backprop through descend \(10 steps\) +0\.9[6-9]\d ",
        r"^fixed_point, exact implicit gradient +0\.9[6-9]\d ",
        r"^fixed_point, phantom gradient +0\.9[6-9]\d ",
        r"^fixed points converged in training \(max \|dE/dg\| < 1e-4\): 100\.0% ",
        r"^fixed points: all converged: True, ",
        r"^energy never rises: True$",
        r"^descend ends at the fixed point's energy: True$",
        r"^held-out accuracy: 0\.9[6-9]\d$",
        # training through the fixed point's gradients loses no accuracy
        lambda lines: implicit_gradient_loses_no_accuracy(lines, margin=0.01),
    ],
    "04_energy_transformer_block": [
        r"^energy never rises: True$",
        r"^clamped tokens unchanged: True$",
        r"^Tsit5 energy never rises: True$",
    ],
    "05_sparse_and_distance_memories": [
        # softmax: a blur of every digit; sparsemax: one digit, exactly
        r"^LSoftmax +1797\.0 +0\.000 +0\.0\d+$",
        r"^LEntmax\(alpha=1\.5\) +1\.\d +0\.[89]\d\d +0\.00\d+$",
        r"^LSparsemax +1\.0 +0\.99\d +0\.000\d$",
        r"^LNormmax\(alpha=2\) +1\.\d +0\.9\d\d +0\.000\d$",
        # the distance reaches the nearest-neighbour ceiling on noise, the dot does not
        r"^30% noise +dot, LSoftmax\(beta=100\) +0\.0\d\d +0\.\d+$",
        r"^30% noise +l2, LSoftmax\(beta=100\) +0\.694 +0\.952$",
        r"^30% noise +nearest neighbour +0\.694 +0\.952$",
        r"^half-masked +nearest neighbour +1\.000 +1\.000$",
        r"^6 stored patterns; 11 minima: 6 stored, 5 emergent$",
        r"^each is a local minimum: True$",
        r"^log-log slope of the energy error: -0\.(4[5-9]|5[0-5]) ",
        r"^parameters of the random-feature memory: 1024 ",
    ],
    "07_energy_transformer_model": [
        r"^mean patch +\d\.\d{3}$",
        r"^nearest visible patch +\d\.\d{3}$",
        r"^Energy Transformer +\d\.\d{3}$",
        r"^beats both baselines: True$",
        # the table's numbers: the model's masked-patch error is below both baselines'
        lambda lines: energy_transformer_beats_the_baselines(lines),
        r"^energy never rises: True$",
        r"^round trip bit-exact: True$",
    ],
    "06_hopfield_layers": [
        # hopfield-layers' bit-pattern task: its tuned heads reach about 0.85
        r"^Hopfield +0\.[7-9]\d\d$",
        r"^HopfieldPooling +0\.[7-9]\d\d$",
        r"^HopfieldLayer +0\.[6-9]\d\d$",
        r"^HopfieldPooling, LSparsemax +0\.[6-9]\d\d$",
        r"^latch, HopfieldPooling held-out accuracy 1\.000$",
        r"^digits, HopfieldPooling held-out accuracy 0\.9\d\d$",
        r"^converged: \[(True|False)(, (True|False)){3}\]$",  # one flag per head
        r"^energy never rises: True$",
        r"^\[(.*\s)?0\.\s",  # the sparse association holds exact zeros
    ],
}


def _accuracy(lines: list[str], training: str) -> float:
    """The held-out accuracy printed in notebook 03's table row for `training`."""
    for line in lines:
        match = re.match(rf"^{re.escape(training)} +(\d\.\d+) ", line)
        if match:
            return float(match.group(1))
    raise AssertionError(f"03_train_a_ham: no table row for {training!r}")


def implicit_gradient_loses_no_accuracy(lines: list[str], margin: float) -> None:
    backprop = _accuracy(lines, "backprop through descend (10 steps)")
    for row in (
        "fixed_point, exact implicit gradient",
        "fixed_point, phantom gradient",
    ):
        accuracy = _accuracy(lines, row)
        assert accuracy >= backprop - margin, (
            f"03_train_a_ham: training with {row!r} reached {accuracy:.3f} held-out "
            f"accuracy, below backprop through descend's {backprop:.3f} by more than "
            f"{margin}"
        )


def _table_error(lines: list[str], method: str) -> float:
    """The masked-patch RMSE printed in notebook 07's table row for `method`."""
    for line in lines:
        match = re.match(rf"^{re.escape(method)} +(\d+\.\d+)$", line)
        if match:
            return float(match.group(1))
    raise AssertionError(f"07_energy_transformer_model: no table row for {method!r}")


def energy_transformer_beats_the_baselines(lines: list[str]) -> None:
    ours = _table_error(lines, "Energy Transformer")
    for baseline in ("mean patch", "nearest visible patch"):
        assert ours < _table_error(lines, baseline), (
            f"07_energy_transformer_model: the Energy Transformer's masked-patch error "
            f"{ours} is not below the {baseline} baseline's"
        )


def outputs(notebook) -> list[list[str]]:
    """Per code cell, the kinds of output it made, e.g. `["stdout", "image/png"]`."""
    kinds = []
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        cell_kinds = []
        for output in cell.get("outputs", []):
            if output["output_type"] == "stream":
                if output["name"] not in cell_kinds:
                    cell_kinds.append(output["name"])
            elif output["output_type"] == "error":
                cell_kinds.append(f"error: {output['ename']}")
            else:
                cell_kinds += [k for k in output["data"] if k != "text/plain"]
        kinds.append(cell_kinds)
    return kinds


def printed(notebook) -> list[str]:
    """Every line the notebook's cells printed."""
    lines = []
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            if output["output_type"] == "stream" and output["name"] == "stdout":
                text = output["text"]
                lines += (
                    "".join(text) if isinstance(text, list) else text
                ).splitlines()
    return lines


def check_claims(stem: str, lines: list[str]) -> None:
    for claim in CLAIMS.get(stem, ()):
        if callable(claim):  # a relation between printed numbers
            claim(lines)
            continue
        assert any(re.search(claim, line) for line in lines), (
            f"{stem}: no output line matches {claim!r}"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_stores_the_outputs_of_one_complete_run(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    # One run, top to bottom, from a fresh kernel: counts 1, 2, 3, ...
    assert [c.get("execution_count") for c in cells] == list(range(1, len(cells) + 1))
    kinds = outputs(notebook)
    assert not [k for cell in kinds for k in cell if k.startswith("error")]
    assert not [k for cell in kinds for k in cell if k == "stderr"], "warnings stored"
    for cell, cell_kinds in zip(cells, kinds):
        source = "".join(cell["source"])
        if re.search(r"^(plt\.|fig, )", source, re.M):  # a cell that draws
            assert "image/png" in cell_kinds, f"a plot is not stored:\n{source}"
        if re.search(r"^print\(", source, re.M):  # a cell that prints
            assert "stdout" in cell_kinds, f"printed numbers are not stored:\n{source}"
        assert "execution" not in cell.get("metadata", {})  # no timestamps stored
    check_claims(path.stem, printed(notebook))


@pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} ([test] extra)")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # from jupyter_client/zmq
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_reproduces_its_outputs(path, tmp_path):
    sys.path.insert(0, str(ROOT / "docs" / "scripts"))
    try:
        from run_notebooks import execute
    finally:
        sys.path.remove(str(ROOT / "docs" / "scripts"))

    # A fresh kernel, in a scratch directory: a notebook must not write into the
    # repository. `execute` clears the stored outputs first and raises
    # CellExecutionError, with the traceback, on any error.
    notebook, seconds = execute(path, tmp_path, timeout=TIMEOUT_S)
    assert seconds < TIMEOUT_S, f"{path.name} took {seconds:.0f} s"
    check_claims(path.stem, printed(notebook))
    # Every cell makes the same kinds of output as the stored run (the same plots and
    # printed numbers), so the site shows what the code does. (JAX may warn on stderr
    # on some machines; only the stored outputs must be free of it.)
    stored = outputs(json.loads(path.read_text(encoding="utf-8")))
    fresh = [[k for k in cell if k != "stderr"] for cell in outputs(notebook)]
    assert fresh == stored
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib"
)
def test_gallery_script_draws_every_lagrangian(tmp_path):
    import subprocess

    script = ROOT / "docs" / "scripts" / "make_gallery.py"
    output = tmp_path / "gallery.png"
    result = subprocess.run(
        [sys.executable, str(script), "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    import hamux_lagr

    sys.path.insert(0, str(script.parent))
    try:
        import make_gallery
    finally:
        sys.path.remove(str(script.parent))
    drawn = {type(lagr).__name__ for _, lagr, _ in make_gallery.GALLERY}
    every = {
        name
        for name in dir(hamux_lagr)
        if isinstance(getattr(hamux_lagr, name), type)
        and issubclass(getattr(hamux_lagr, name), hamux_lagr.Lagrangian)
        and name != "Lagrangian"
    }
    assert drawn == every
