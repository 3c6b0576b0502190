"""Runs every notebook in `examples/` end to end, as a user would (a fresh kernel).

The notebooks are stored without outputs; each must finish without an error. They need
the `[examples]` extra and a Jupyter kernel (`nbclient`, `ipykernel`, from `[test]`);
without those the tests are skipped, naming what is missing.
"""

import importlib.util
import pathlib
import time

import pytest


EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
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
# Each notebook must run in under 2 minutes on 2 CPU cores (measured: 25-50 s).
TIMEOUT_S = 600


def test_every_notebook_is_listed():
    names = [p.name for p in NOTEBOOKS]
    assert names == [
        "01_lagrangians.ipynb",
        "02_dense_associative_memory.ipynb",
        "03_train_a_ham.ipynb",
        "04_energy_transformer_block.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    import json

    notebook = json.loads(path.read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs", []) == [], f"{path.name} has stored outputs"
            assert cell.get("execution_count") is None, f"{path.name} has counts"


@pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} ([test] extra)")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # from jupyter_client/zmq
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        # Run in a scratch directory: a notebook must not write into the repository.
        resources={"metadata": {"path": str(tmp_path)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the traceback, on any error
    seconds = time.perf_counter() - start
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
    assert seconds < TIMEOUT_S


@pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib"
)
def test_gallery_script_draws_every_lagrangian(tmp_path):
    import subprocess
    import sys

    script = EXAMPLES.parent / "docs" / "scripts" / "make_gallery.py"
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
