r"""Store scikit-learn's handwritten digits in a dense associative memory and recall them.

Run it with

    pip install -e ".[examples]" && python -m hamux_lagr.demo

All 1797 digits of `sklearn.datasets.load_digits` (8x8 images that ship inside
scikit-learn: nothing is downloaded) are stored in a `DenseMemory`. Each stored image is
then corrupted in two ways, its lower half masked, or 30% of its pixels replaced by
uniform noise, and recalled by descending the memory's energy with `descend`. For each
corruption and memory Lagrangian the demo prints

- **exact**: how often the stored image nearest to the recalled one is the original;
- **class**: how often that nearest stored image has the original's digit label;
- **pixel err**: the mean absolute pixel error of the recalled image (pixels in [0, 1]);
- **NN exact / NN class**: the same two accuracies of a plain nearest-neighbour lookup
  of the corrupted query among the stored images, the ceiling to read them against.
  (The lookup of a half-masked digit compares the known pixels only, as the memory
  does.)

and writes a figure (query, recall and truth for a few digits, and the energy curves).
Recall follows the dynamics for a set time, `--steps` Euler steps of `--dt`, with
`descend`, whose energy trace the figure draws; `fixed_point` runs them to the end
instead (the README's retrieval).

## The memories

**Softmax rows** (Ramsauer et al. 2020, with a Euclidean similarity). The image layer
has two channels of 64 neurons with the identity Lagrangian: the pixels $x$ and a
*confidence* $c \in \{0, 1\}$ per pixel (1 where the pixel is known). Each digit $p_\mu$
is stored as the two-channel pattern $\xi_\mu = (p_\mu, -\tfrac12 p_\mu^2)$, so the
similarity is

$$\langle \xi_\mu, (x, c)\rangle = \sum_i x_i p_{\mu i} - \tfrac12 c_i p_{\mu i}^2,$$

which, for $c = 1$, is $\tfrac12\lVert x\rVert^2 - \tfrac12\lVert x - p_\mu\rVert^2$:
the memory ranks the patterns by Euclidean distance. With `LSoftmax(beta)` the energy is
$E = \tfrac12\lVert x\rVert^2 - \frac1\beta\log\sum_\mu e^{\beta\langle\xi_\mu, (x,
c)\rangle}$ (plus the constant energy of the clamped confidence channel).

Recall is one concave-convex step (`dt = tau = 1`, Ramsauer et al.'s update
$x \leftarrow \Xi^\top\operatorname{softmax}(\beta\,\Xi x)$) in which the confidence is
0 on the unknown pixels, so that only the known ones decide which memory is read, then
`steps` Euler steps of the full energy ($c = 1$). The known pixels of a masked digit are
clamped throughout; noisy pixels are all free. Reading with $c = 0$ on the unknown
pixels is what makes inpainting exact: with $c = 1$ from the start, the zeros of the
masked half count as evidence and pull towards digits with a light lower half.

**RePU rows** (Krotov & Hopfield 2016). A polynomial energy $-\sum_\mu
\max(\langle\xi_\mu, g\rangle, 0)^n / n$ is unbounded below on identity neurons, so
these rows use a spherical layer (`LSphericalNorm`, $g = x/\lVert x\rVert$) over the
centred image and store the centred, unit-norm digits: the similarity is a cosine, and
the degree $n$ sharpens it as $\beta$ does for the softmax. The recalled direction is
rescaled to the median norm of the centred digits to be shown as an image.

**Sparse rows** (`LSparsemax`, Hu et al. 2023; `LEntmax(alpha=1.5)`, Santos et al.
2024). The softmax memory above with the sparsemax or the 1.5-entmax in place of the
softmax, read the same way. Their weights have exact zeros: when one pattern is left,
the read step returns it exactly, a fixed point of the full energy, so these rows read
only (`--steps` does not apply: settling would sort the $K$ similarities of every query
at every step, for nothing).

**L2 rows** (`LSoftmax(beta)/l2`, Millidge et al. 2022). A one-channel memory with the
distance similarity, `DenseMemory(digits, LSoftmax(beta), similarity="l2")`, energy
$E(x) = -\frac1\beta\log\sum_\mu e^{-\beta\lVert x - p_\mu\rVert^2/2}$. Its energy
already holds $\tfrac12\lVert x\rVert^2$, so it is descended on its own (no neuron
layer, whose energy would move the fixed points to half the patterns): one step of
size 1, $x \leftarrow x - \nabla E(x) = \sum_\mu w_\mu p_\mu$ with
$w = \operatorname{softmax}(-\tfrac\beta2\lVert x - p_\mu\rVert^2)$ (the read of the
softmax rows, but with every pixel trusted), then `steps` steps
of size `dt`. With no confidence channel, the zeros of a masked half count as
evidence: the rows show what the confidence channel buys.
"""

import argparse
import dataclasses
import math
import os
import pathlib
import sys
import time
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._dynamics.descend import descend
from ._ham import HAM
from ._lagrangians.base import Lagrangian
from ._lagrangians.norms import LSphericalNorm
from ._lagrangians.polynomial import LIdentity, LRepu
from ._lagrangians.softmax import LSoftmax
from ._lagrangians.sparse import LEntmax, LSparsemax
from ._neurons import NeuronLayer
from ._synapses.dense_memory import DenseMemory


SIDE = 8  # the digits are SIDE x SIDE images
NOISE_FRACTION = 0.3
CORRUPTIONS = ("half-masked", "30% noise")
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


def load_data() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (shipped with the package): images in [0, 1] and labels."""
    from sklearn.datasets import load_digits

    data, labels = load_digits(return_X_y=True)
    images = (np.asarray(data) / 16.0).astype(np.float32)  # (1797, 64), pixels 0..16
    return images, np.asarray(labels)


def corrupt(
    images: np.ndarray, kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Corrupts `images`; returns the queries, the known-pixel mask and whether the
    known pixels are to be held fixed.

    - `"half-masked"`: the lower half of each image is unknown (set to 0); the upper
      half is known and clamped.
    - `"30% noise"`: 30% of the pixels, chosen at random, are replaced by uniform noise
      in [0, 1]; every pixel counts as known (the corrupted ones are not flagged) and
      every pixel is free to change.
    """
    if kind == "half-masked":
        known = np.ones((SIDE, SIDE), bool)
        known[SIDE // 2 :] = False
        known = np.broadcast_to(known.reshape(-1), images.shape).copy()
        return np.where(known, images, 0.0).astype(np.float32), known, True
    if kind == "30% noise":
        replaced = rng.random(images.shape) < NOISE_FRACTION
        noise = rng.random(images.shape, dtype=np.float32)
        queries = np.where(replaced, noise, images).astype(np.float32)
        return queries, np.ones(images.shape, bool), False
    raise ValueError(f"`kind` must be one of {CORRUPTIONS}, got {kind!r}.")


def nearest(queries: np.ndarray, patterns: np.ndarray, known=None) -> np.ndarray:
    """Index of the Euclidean-nearest pattern to each query (over `known` pixels)."""
    if known is None:
        known = np.ones_like(queries, dtype=bool)
    w = known.astype(np.float32)
    # ||w * (q - p)||^2 = sum w q^2 - 2 (w q) . p + w . p^2, for 0/1 weights.
    d2 = (
        (w * queries**2).sum(1)[:, None]
        - 2.0 * (w * queries) @ patterns.T
        + w @ (patterns**2).T
    )
    return np.argmin(d2, axis=1)


@dataclasses.dataclass
class Recall:
    """What one memory made of one corruption."""

    memory: str
    corruption: str
    recalled: np.ndarray  # (B, 64) images
    energies: np.ndarray  # (B, T) energy along the descent
    seconds: float


def softmax_memory(images: np.ndarray, beta: float) -> HAM:
    """A one-layer HAM: two-channel identity image layer, `DenseMemory(LSoftmax)`."""
    return euclidean_memory(images, LSoftmax(beta))


def euclidean_memory(images: np.ndarray, lagrangian: Lagrangian) -> HAM:
    """A one-layer HAM: two-channel identity image layer (pixels, confidence) and
    `DenseMemory(lagrangian)` of the two-channel patterns $(p, -p^2/2)$."""
    patterns = np.stack([images, -0.5 * images**2], axis=1)  # (K, 2, 64)
    return HAM(
        neurons={"image": NeuronLayer(LIdentity(), (2, images.shape[1]))},
        synapses={"memory": DenseMemory(jnp.asarray(patterns), lagrangian)},
        connections=[(("image",), "memory")],
    )


def sparse_lagrangian(name: str, beta: float) -> Lagrangian:
    """`LSparsemax(beta)` (`name="sparsemax"`) or `LEntmax(1.5, beta)` (`"entmax"`)."""
    return LSparsemax(beta) if name == "sparsemax" else LEntmax(alpha=1.5, beta=beta)


def l2_memory(images: np.ndarray, beta: float) -> DenseMemory:
    """`DenseMemory(images, LSoftmax(beta), similarity="l2")`, one channel."""
    return DenseMemory(jnp.asarray(images), LSoftmax(beta), similarity="l2")


def recall_l2(
    memory: DenseMemory, queries, known, hold: bool, *, steps: int, dt: float
) -> tuple[np.ndarray, np.ndarray]:
    r"""Descends the memory's own energy from the query: one step of size 1 (the
    read, $x = \Xi^\top p$), then `steps` steps of size `dt`; known pixels of a
    masked query are clamped."""
    mask = jnp.asarray(known & hold)
    final, energies = _recall_l2(memory, jnp.asarray(queries), mask, steps=steps, dt=dt)
    return np.asarray(final), np.asarray(energies)


@eqx.filter_jit
def _recall_l2(memory: DenseMemory, x0, mask, *, steps: int, dt: float):
    # One query per call, batched with `jax.vmap`, with its clamp mask.
    def one(x, held):
        def step(x, size):
            x = jnp.where(held, x, x - size * jax.grad(memory)(x))
            return x, memory(x)

        sizes = jnp.concatenate(
            [jnp.ones((1,), x.dtype), jnp.full((steps,), dt, x.dtype)]
        )
        final, energies = jax.lax.scan(step, x, sizes)
        # The energy of the query itself, then after the read and each step.
        return final, jnp.concatenate([memory(x)[None], energies])

    return jax.vmap(one)(x0, mask)


def recall_softmax(
    ham: HAM, queries, known, hold: bool, *, steps: int, dt: float
) -> tuple[np.ndarray, np.ndarray]:
    """Reads with confidence = known pixels (one step, dt = 1), then settles (c = 1)."""
    conf = known.astype(np.float32)
    held = np.stack([known & hold, np.ones_like(known)], axis=1)
    read = np.stack([queries, conf], axis=1)
    final, energies = _recall_softmax(
        ham, jnp.asarray(read), jnp.asarray(held), steps=steps, dt=dt
    )
    return np.asarray(final), np.asarray(energies)


@eqx.filter_jit
def _recall_softmax(ham: HAM, read, held, *, steps: int, dt: float):
    # One query per call, batched with `jax.vmap`; the clamp mask is per query too.
    def one(query, mask):
        clamp = {"image": mask}
        read = descend(ham, {"image": query}, steps=1, dt=1.0, clamp=clamp, trace=False)
        trusted = {"image": read.xs["image"].at[1].set(1.0)}
        sol = descend(ham, trusted, steps=steps, dt=dt, clamp=clamp)
        assert sol.energies is not None
        # The energy of the query itself (all pixels trusted), then along the descent.
        start = ham.energy({"image": query.at[1].set(1.0)})
        return sol.xs["image"][0], jnp.concatenate([start[None], sol.energies])

    return jax.vmap(one)(read, held)


def polynomial_memory(images: np.ndarray, n: float) -> HAM:
    """A one-layer HAM: spherical image layer, `DenseMemory(LRepu(n))` of the
    centred, unit-norm images."""
    centred = images - images.mean(0)
    patterns = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    return HAM(
        neurons={"image": NeuronLayer(LSphericalNorm(), (images.shape[1],))},
        synapses={"memory": DenseMemory(jnp.asarray(patterns), LRepu(n))},
        connections=[(("image",), "memory")],
    )


def recall_polynomial(
    ham: HAM, images: np.ndarray, queries, known, hold: bool, *, steps: int, dt: float
) -> tuple[np.ndarray, np.ndarray]:
    """Descends from the centred query (unknown pixels at the mean image)."""
    mean = images.mean(0)
    scale = np.median(np.linalg.norm(images - mean, axis=1))
    x0 = np.where(known, queries - mean, 0.0).astype(np.float32)
    mask = jnp.asarray(known & hold) if hold else None
    final, energies = _recall_polynomial(ham, jnp.asarray(x0), mask, steps=steps, dt=dt)
    x = np.asarray(final)
    direction = x / np.linalg.norm(x, axis=1, keepdims=True)
    return mean + scale * direction, np.asarray(energies)


@eqx.filter_jit
def _recall_polynomial(ham: HAM, x0, mask, *, steps: int, dt: float):
    # One query per call, batched with `jax.vmap` (with its clamp mask, if any).
    def one(x, mask):
        clamp = None if mask is None else {"image": mask}
        sol = descend(ham, {"image": x}, steps=steps, dt=dt, clamp=clamp)
        assert sol.energies is not None
        return sol.xs["image"], sol.energies

    if mask is None:
        return jax.vmap(lambda x: one(x, None))(x0)
    return jax.vmap(one)(x0, mask)


def accuracies(recalled, images, labels, targets) -> tuple[float, float]:
    """(exact, class) recall: the nearest stored image is the target / has its label."""
    j = nearest(recalled, images)
    return float(np.mean(j == targets)), float(np.mean(labels[j] == labels[targets]))


def run(
    *,
    betas: Sequence[float],
    degrees: Sequence[float],
    sparse_betas: Sequence[float] = (),
    l2_betas: Sequence[float] = (),
    steps: int,
    dt: float,
    num_queries: int | None,
    seed: int,
    progress=None,
) -> tuple[list[dict], dict]:
    """Stores every digit, corrupts `num_queries` of them, recalls them with each memory.

    Returns the table's rows (dicts) and what the figure needs.
    """
    images, labels = load_data()
    rng = np.random.default_rng(seed)
    targets = np.arange(len(images))
    if num_queries is not None and num_queries < len(images):
        targets = np.sort(rng.choice(len(images), num_queries, replace=False))
    memories = [(f"LSoftmax(beta={b:g})", "softmax", b) for b in betas]
    memories += [(f"LRepu(n={n:g})", "repu", n) for n in degrees]
    memories += [(f"LSparsemax(beta={b:g})", "sparsemax", b) for b in sparse_betas] + [
        (f"LEntmax(alpha=1.5,beta={b:g})", "entmax", b) for b in sparse_betas
    ]
    memories += [(f"LSoftmax(beta={b:g})/l2", "l2", b) for b in l2_betas]
    queries = {}
    for kind in CORRUPTIONS:
        queries[kind] = corrupt(images[targets], kind, rng)
    jobs = [(kind, memory) for kind in CORRUPTIONS for memory in memories]
    bar = progress(jobs, desc="recall", unit="memory") if progress else jobs
    rows, recalls = [], []
    for kind, (name, family, param) in bar:
        q, known, hold = queries[kind]
        start = time.perf_counter()
        if family in ("softmax", "sparsemax", "entmax"):
            if family == "softmax":
                ham = softmax_memory(images, param)
            else:
                ham = euclidean_memory(images, sparse_lagrangian(family, param))
            # A sparse read is the memory's answer: settling (each step sorts the K
            # similarities of every query) would not move a one-pattern read, a fixed
            # point of the energy.
            settle = steps if family == "softmax" else 0
            recalled, energies = recall_softmax(
                ham, q, known, hold, steps=settle, dt=dt
            )
        elif family == "l2":
            recalled, energies = recall_l2(
                l2_memory(images, param), q, known, hold, steps=steps, dt=dt
            )
        else:
            ham = polynomial_memory(images, param)
            recalled, energies = recall_polynomial(
                ham, images, q, known, hold, steps=steps, dt=dt
            )
        seconds = time.perf_counter() - start
        exact, klass = accuracies(recalled, images, labels, targets)
        j_nn = nearest(q, images, known)
        rows.append(
            dict(
                corruption=kind,
                memory=name,
                exact=exact,
                klass=klass,
                pixel_error=float(np.mean(np.abs(recalled - images[targets]))),
                nn_exact=float(np.mean(j_nn == targets)),
                nn_class=float(np.mean(labels[j_nn] == labels[targets])),
                seconds=seconds,
                monotone=bool(
                    np.all(
                        np.diff(energies, axis=1)
                        <= 1e-4 * (1 + np.abs(energies[:, :-1]))
                    )
                ),
            )
        )
        recalls.append(Recall(name, kind, recalled, energies, seconds))
    blind = nearest(queries["half-masked"][0], images)
    extra = dict(
        images=images,
        labels=labels,
        targets=targets,
        queries={k: v[0] for k, v in queries.items()},
        known={k: v[1] for k, v in queries.items()},
        recalls=recalls,
        blind_nn_exact=float(np.mean(blind == targets)),
        blind_nn_class=float(np.mean(labels[blind] == labels[targets])),
    )
    return rows, extra


def format_table(rows: list[dict]) -> str:
    """The results as a fixed-width text table."""
    head = (
        f"{'corruption':<12} {'memory':<28} {'exact':>6} {'class':>6} "
        f"{'pixel err':>9} {'NN exact':>9} {'NN class':>9} {'time':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['corruption']:<12} {r['memory']:<28} {r['exact']:>6.3f} "
            f"{r['klass']:>6.3f} {r['pixel_error']:>9.3f} {r['nn_exact']:>9.3f} "
            f"{r['nn_class']:>9.3f} {r['seconds']:>5.1f}s"
        )
    return "\n".join(lines)


def _is_two_channel_softmax(memory: str) -> bool:
    return memory.startswith("LSoftmax") and not memory.endswith("/l2")


def best_softmax(rows: list[dict], recalls: list[Recall], kind: str) -> Recall:
    candidates = [
        (r["exact"], rec)
        for r, rec in zip(rows, recalls)
        if r["corruption"] == kind and _is_two_channel_softmax(rec.memory)
    ]
    if not candidates:
        candidates = [
            (r["exact"], rec)
            for r, rec in zip(rows, recalls)
            if r["corruption"] == kind
        ]
    return max(candidates, key=lambda c: c[0])[1]


def make_figure(rows: list[dict], extra: dict, output: pathlib.Path) -> pathlib.Path:
    """Draws the figure (see `draw_figure`) and writes it to `output`; returns the path
    written."""
    import matplotlib.pyplot as plt

    fig = draw_figure(rows, extra)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return output


def draw_figure(rows: list[dict], extra: dict):
    """Query -> recall -> truth for one digit of each class and each corruption (by the
    best softmax memory), and the energy curves of every memory; returns the
    matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, targets, recalls = extra["images"], extra["targets"], extra["recalls"]
    labels = extra["labels"][targets]
    pick = [int(np.flatnonzero(labels == k)[0]) for k in np.unique(labels)][:10]
    fig = plt.figure(figsize=(14, 6.4))
    outer = fig.add_gridspec(1, 2, width_ratios=(len(pick), 4.5), wspace=0.12)
    left = outer[0].subgridspec(
        7, len(pick), hspace=0.08, wspace=0.08, height_ratios=(1, 1, 1, 0.35, 1, 1, 1)
    )
    right = outer[1].subgridspec(2, 1, hspace=0.45)
    for block, kind in enumerate(CORRUPTIONS):
        best = best_softmax(rows, recalls, kind)
        triples = [
            (f"{kind}\nquery", extra["queries"][kind]),
            (f"recall\n{best.memory}", best.recalled),
            ("truth", images[targets]),
        ]
        cmap = matplotlib.colormaps["gray_r"].with_extremes(bad="#f6c6c6")
        for r, (label, data) in enumerate(triples):
            for c, i in enumerate(pick):
                ax = fig.add_subplot(left[4 * block + r, c])
                image = np.clip(data[i], 0, 1)
                if r == 0:  # unknown pixels of the query in pink
                    image = np.ma.masked_where(~extra["known"][kind][i], image)
                ax.imshow(
                    image.reshape(SIDE, SIDE),
                    cmap=cmap,
                    vmin=0,
                    vmax=1,
                )
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0:
                    ax.set_ylabel(
                        label, fontsize=8, rotation=0, ha="right", va="center"
                    )
        ax = fig.add_subplot(right[block])
        for rec in recalls:
            if rec.corruption != kind:
                continue
            gap = np.mean(rec.energies - rec.energies[:, -1:], axis=0)[:-1]
            ax.semilogy(np.maximum(gap, 1e-12), marker=".", label=rec.memory)
        reads = [
            name
            for name in ("LSparsemax", "LEntmax", "LSoftmax")
            if any(r.corruption == kind and r.memory.startswith(name) for r in recalls)
        ]
        xlabel = "step (0 = the query"
        if reads:  # these memories' first step is the read, of size 1
            ax.axvline(1, color="0.6", lw=0.8, ls=":", zorder=0)
            xlabel += f"; {', '.join(reads)}: 1 = the read step, dt = 1"
        ax.set_title(f"{kind}: energy along the descent", fontsize=9)
        ax.set_xlabel(xlabel + ")", fontsize=8)
        ax.set_ylabel("mean $E(t) - E(T)$", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"hamux_lagr: {len(images)} digits stored in a dense associative memory, "
        f"{len(targets)} corrupted and recalled by energy descent",
        fontsize=11,
    )
    return fig


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
