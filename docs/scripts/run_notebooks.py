"""Runs the notebooks of `examples/` from a fresh kernel and stores their outputs.

The documentation site renders the notebooks with the outputs stored in them (plots and
numbers), so that `mkdocs build` does not run them. After changing a notebook (or the
library), refresh its outputs with

    python docs/scripts/run_notebooks.py                      # every notebook
    python docs/scripts/run_notebooks.py examples/02_*.ipynb  # some of them

Each notebook runs top to bottom in a new kernel, in a scratch directory (a notebook
must not write into the repository); the test suite (`tests/test_examples.py`) runs
them the same way and checks that the stored outputs are those of such a run.
"""

import argparse
import pathlib
import sys
import tempfile
import time


ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def execute(path: pathlib.Path, workdir: pathlib.Path, timeout: float = 600.0):
    """Runs the notebook at `path` from a fresh kernel in `workdir`, each cell within
    `timeout` seconds; returns the executed notebook (outputs in it) and the seconds
    the run took. Raises `nbclient.exceptions.CellExecutionError` on a cell error."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:  # run from nothing: no stale outputs survive
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(workdir)}},
    )
    start = time.perf_counter()
    client.execute()
    return notebook, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "notebooks",
        nargs="*",
        type=pathlib.Path,
        help="notebooks to run (default: every notebook in examples/)",
    )
    args = parser.parse_args(argv)
    import nbformat

    for path in args.notebooks or sorted(EXAMPLES.glob("*.ipynb")):
        with tempfile.TemporaryDirectory() as workdir:
            notebook, seconds = execute(path, pathlib.Path(workdir))
        nbformat.write(notebook, path)
        print(f"{path}: ran in {seconds:.1f} s; outputs stored", file=sys.stderr)


if __name__ == "__main__":
    main()
