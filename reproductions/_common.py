"""Shared plumbing of the reproduction scripts: options, tables, JSON, figures.

Each script in this folder is run as `python reproductions/NAME.py [--quick]
[--out DIR] [--json PATH]`; this module is imported from the script's folder.
"""

import argparse
import json
import pathlib
import time

import matplotlib


matplotlib.use("Agg")  # figures are written to files, never shown

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


ROOT = pathlib.Path(__file__).resolve().parent.parent
# A full run writes the figures the documentation shows; a `--quick` one writes
# beside the scripts (git-ignored), so that it never replaces them.
DEFAULT_OUT = ROOT / "docs" / "assets" / "reproductions"
QUICK_OUT = ROOT / "reproductions" / "figures"


def parse_args(doc: str) -> argparse.Namespace:
    """The options every reproduction takes; `doc` is the script's docstring."""
    parser = argparse.ArgumentParser(
        description=doc.strip().splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small version of the experiment (under a minute on 2 CPU cores)",
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=None,
        help=f"folder for the figure (default: {DEFAULT_OUT.relative_to(ROOT)}, or "
        f"{QUICK_OUT.relative_to(ROOT)} with --quick)",
    )
    parser.add_argument(
        "--json", type=pathlib.Path, default=None, help="write the results here"
    )
    args = parser.parse_args()
    if args.out is None:
        args.out = QUICK_OUT if args.quick else DEFAULT_OUT
    return args


def print_table(title: str, headers: list[str], rows: list[list]) -> None:
    """Prints a Markdown table (the docs page shows the same tables)."""

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    print(f"\n{title}\n")
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for row in cells:
        print("| " + " | ".join(row) + " |")


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    return obj


def finish(args, name: str, fig, results: dict, start: float) -> None:
    """Saves the figure as `NAME.png` in `--out`, writes `--json`, prints timing."""
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{name}.png"
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    seconds = time.perf_counter() - start
    results = dict(results, quick=bool(args.quick), seconds=seconds)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_plain(results), indent=1))
    print(f"\nfigure: {path}\n{'quick' if args.quick else 'full'} run: {seconds:.1f} s")
