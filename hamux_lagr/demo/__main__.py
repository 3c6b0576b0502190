"""`python -m hamux_lagr.demo`: the command line (see `--help`)."""

import argparse
import math
import os
import pathlib
import sys
import time
from collections.abc import Sequence

import jax

from .figure import make_figure
from .memories import format_table, run


DEFAULT_OUTPUT = pathlib.Path("hamux_lagr_demo.png")
# The figure formats matplotlib's Agg backend writes; a name without one gets `.png`.
FIGURE_FORMATS = (
    ".png",
    ".pdf",
    ".svg",
    ".jpg",
    ".jpeg",
    ".eps",
    ".ps",
    ".tif",
    ".tiff",
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hamux_lagr.demo",
        description=(
            "Store scikit-learn's 1797 digits in a dense associative memory, corrupt "
            "them (lower half masked; 30% of pixels replaced by noise), recall them by "
            "energy descent, and print exact/class recall against a nearest-neighbour "
            "lookup. Needs `pip install hamux_lagr[examples]`."
        ),
    )
    parser.add_argument(
        "--lagrangian",
        choices=["all", "softmax", "repu", "sparse", "l2"],
        default="all",
        help="which memory Lagrangians to run (default: all)",
    )
    parser.add_argument(
        "--beta",
        type=float,
        nargs="+",
        default=[10.0, 100.0],
        help="inverse temperatures of the LSoftmax memories (default: 10 100)",
    )
    parser.add_argument(
        "--n",
        type=float,
        nargs="+",
        default=[20.0],
        help="degrees of the LRepu memories (default: 20)",
    )
    parser.add_argument(
        "--sparse-beta",
        type=float,
        nargs="+",
        default=[100.0],
        help=(
            "inverse temperatures of the LSparsemax and LEntmax(alpha=1.5) memories "
            "(default: 100)"
        ),
    )
    parser.add_argument(
        "--l2-beta",
        type=float,
        nargs="+",
        default=[100.0],
        help=(
            'inverse temperatures of the LSoftmax memories with similarity="l2" '
            "(default: 100)"
        ),
    )
    parser.add_argument(
        "--steps", type=int, default=20, help="Euler steps of the descent (default: 20)"
    )
    parser.add_argument(
        "--dt", type=float, default=0.1, help="Euler step size (default: 0.1)"
    )
    parser.add_argument(
        "--queries",
        type=int,
        default=None,
        help="recall only this many (random) stored digits (default: all 1797)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--output",
        default=str(DEFAULT_OUTPUT),
        help=(
            "where to write the figure: a file (.png unless another extension is "
            f"given) or a directory (default: ./{DEFAULT_OUTPUT})"
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a fast smoke run: 200 queries, 5 steps (for tests)",
    )
    args = parser.parse_args(argv)
    for option, values in (
        ("--beta", args.beta),
        ("--sparse-beta", args.sparse_beta),
        ("--l2-beta", args.l2_beta),
    ):
        if not all(math.isfinite(b) and b > 0 for b in values):
            parser.error(f"`{option}` must be positive and finite, got {values}")
    if not all(math.isfinite(n) and n >= 1 for n in args.n):
        parser.error(
            "`--n` must be finite and >= 1 (a RePU of degree < 1 is not convex), "
            f"got {args.n}"
        )
    if args.steps < 0:
        parser.error(f"`--steps` must be >= 0, got {args.steps}")
    if not (math.isfinite(args.dt) and args.dt > 0):
        parser.error(f"`--dt` must be positive and finite, got {args.dt}")
    if args.queries is not None and args.queries < 1:
        parser.error(f"`--queries` must be >= 1, got {args.queries}")
    args.output = figure_path(args.output, parser)
    if args.quick:
        args.queries = args.queries or 200
        args.steps = min(args.steps, 5)
    return args


def figure_path(name: str, parser: argparse.ArgumentParser) -> pathlib.Path:
    """The file the figure goes to: `name` itself, `name/hamux_lagr_demo.png` for a
    directory, or `name.png` for a name without an extension. Checks, before any
    work, that it can be written (creating missing parent directories)."""
    output = pathlib.Path(name)
    if output.is_dir() or name.endswith(("/", os.sep)):
        output = output / DEFAULT_OUTPUT.name
    elif not output.suffix:
        output = output.with_name(output.name + ".png")
    if output.suffix.lower() not in FIGURE_FORMATS:
        parser.error(
            f"`--output` must be a directory or a file ending in one of "
            f"{', '.join(FIGURE_FORMATS)}, got {str(output)!r}"
        )
    parent = output.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        parser.error(
            f"`--output` {str(output)!r} cannot be written: {str(parent)!r} is not a "
            "directory; choose another file or directory"
        )
    existed = output.exists()
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "ab"):
            pass
    except OSError as e:
        parser.error(
            f"`--output` {str(output)!r} cannot be written ({e.strerror or e}); "
            "choose another file or directory"
        )
    if not existed:
        output.unlink()
    return output


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Runs the demo (see `python -m hamux_lagr.demo --help`); returns the table rows."""
    args = parse_args(argv)
    try:
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
        from tqdm.auto import tqdm
    except ImportError as e:
        raise SystemExit(
            f"The demo needs scikit-learn, matplotlib and tqdm ({e}). Install them with "
            '`pip install -e ".[examples]"` (or `pip install hamux_lagr[examples]`).'
        ) from None
    betas = args.beta if args.lagrangian in ("all", "softmax") else []
    degrees = args.n if args.lagrangian in ("all", "repu") else []
    sparse_betas = args.sparse_beta if args.lagrangian in ("all", "sparse") else []
    l2_betas = args.l2_beta if args.lagrangian in ("all", "l2") else []
    total = time.perf_counter()
    rows, extra = run(
        betas=betas,
        degrees=degrees,
        sparse_betas=sparse_betas,
        l2_betas=l2_betas,
        steps=args.steps,
        dt=args.dt,
        num_queries=args.queries,
        seed=args.seed,
        progress=lambda it, **kw: tqdm(it, file=sys.stderr, **kw),
    )
    n = len(extra["targets"])
    print(
        f"\nStored {len(extra['images'])} digits; recalled {n} corrupted ones "
        f"({args.steps} steps, dt={args.dt:g}) on {jax.devices()[0].platform.upper()}.\n"
    )
    print(format_table(rows))
    print(
        "\nexact: the stored digit nearest the recall is the original; class: it has "
        "the right label;\npixel err: mean |recall - truth| (pixels in [0, 1]); NN: "
        "nearest-neighbour lookup of the query\n(known pixels only for half-masked; "
        f"a lookup blind to the mask: exact {extra['blind_nn_exact']:.3f}, "
        f"class {extra['blind_nn_class']:.3f})."
    )
    if not all(r["monotone"] for r in rows):
        bad = [f"{r['corruption']} / {r['memory']}" for r in rows if not r["monotone"]]
        print(f"warning: the energy rose along the descent for {', '.join(bad)}")
    output = make_figure(rows, extra, args.output)
    print(
        f"\nWrote the figure to {output.resolve()}  ({time.perf_counter() - total:.0f} s in all)"
    )
    return rows


if __name__ == "__main__":
    main()
