r"""Ramsauer et al. (2020): one update of the modern Hopfield network retrieves a
well-separated pattern with an error exponentially small in the separation; as beta
falls, metastable states and then one global fixed point replace the patterns.

Paper: H. Ramsauer, B. Schäfl, J. Lehner, P. Seidl, M. Widrich, T. Adler, L. Gruber,
M. Holzleitner, M. Pavlović, G. K. Sandve, V. Greiff, D. Kreil, M. Kopp, G.
Klambauer, J. Brandstetter and S. Hochreiter, "Hopfield Networks is All You Need",
ICLR 2021 (arXiv 2008.02217, 2020). The update $\xi \leftarrow X^\top
\operatorname{softmax}(\beta X\xi)$; the retrieval error after one update is bounded
(their one-update retrieval theorems, Theorems 4-5) by
$\lVert f(\xi) - x_i\rVert \le 2(N-1)\exp(-\beta(\Delta_i - 2\max\{\lVert\xi - x_i\rVert,
\lVert x_i^* - x_i\rVert\}M))\,M$, with the separation $\Delta_i = \langle x_i, x_i\rangle
- \max_{j\ne i}\langle x_i, x_j\rangle$, $M = \max_j\lVert x_j\rVert$ and $x_i^*$ the
fixed point near $x_i$; and the energy has three kinds of fixed points (their
Section 2 and the figure of fixed-point types): single patterns, metastable states
averaging a subset, and a global average of all patterns.

What we measure: (A) N = 128 random unit patterns in d = 64, each queried with a
perturbation of norm 0.05; one update is `hl.descend(ham, xs, steps=1, dt=1.0)` on
`hl.HAM` with an `LIdentity` layer and `hl.DenseMemory(X, hl.LSoftmax(beta))`; the
error against the bound over beta. (B) N = 32 random unit patterns in d = 16; from
each pattern the update is iterated to its fixed point, classified by the number of
patterns it averages (participation ratio of its softmax weights), over beta.

Where we differ: random Gaussian patterns on the unit sphere (M = 1) rather than the
paper's general patterns; the fixed-point types are counted over random patterns
rather than drawn for a hand-made 2-D example.
"""

import time

import jax


jax.config.update("jax_enable_x64", True)  # errors down to 1e-40 are compared

import _common  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import hamux_lagr as hl  # noqa: E402


def unit_patterns(rng, n, d):
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def hopfield(patterns, beta):
    d = patterns.shape[1]
    return hl.HAM(
        neurons={"x": hl.NeuronLayer(hl.LIdentity(), (d,))},
        synapses={"memory": hl.DenseMemory(jnp.asarray(patterns), hl.LSoftmax(beta))},
        connections=[(("x",), "memory")],
    )


@eqx.filter_jit
def update(ham, queries, steps):
    """`steps` updates xi <- X^T softmax(beta X xi) of each query (Euler, dt = tau)."""

    def one(q):
        return hl.descend(ham, {"x": q}, steps=steps, dt=1.0, trace=False).xs["x"]

    return jax.vmap(one)(queries)


@eqx.filter_jit
def weights(ham, queries):
    """The softmax weights p = softmax(beta X xi) that one update uses."""
    memory = ham.synapses["memory"]
    return jax.vmap(lambda q: memory.lagrangian.activation(memory.similarities(q)))(
        queries
    )


def one_update_error(rng, betas, num, dim, noise):
    X = unit_patterns(rng, num, dim)
    M = 1.0
    gram = X @ X.T
    np.fill_diagonal(gram, -np.inf)
    delta = 1.0 - gram.max(axis=1)  # separation of each pattern
    direction = rng.standard_normal((num, dim))
    queries = X + noise * direction / np.linalg.norm(direction, axis=1, keepdims=True)
    rows = []
    for beta in betas:
        ham = hopfield(X, beta)
        new = np.asarray(update(ham, jnp.asarray(queries), 1))
        p = np.asarray(weights(ham, jnp.asarray(queries)))
        # f(xi) - x_i = sum_{j != i} p_j (x_j - x_i): exact where the subtraction
        # f(xi) - x_i would round at 1e-16.
        diff = X[None, :, :] - X[:, None, :]  # (query i, pattern j, d)
        error = np.linalg.norm(np.einsum("ij,ijd->id", p, diff), axis=1)
        assert np.allclose(new, p @ X, atol=1e-13), "update != X^T softmax"
        fixed = np.asarray(update(ham, jnp.asarray(queries), 200))
        radius = np.maximum(
            np.linalg.norm(queries - X, axis=1), np.linalg.norm(fixed - X, axis=1)
        )
        exponent = delta - 2 * radius * M
        separated = exponent > 0
        bound = 2 * (num - 1) * np.exp(-beta * exponent) * M
        some = bool(np.any(separated))

        def stat(f, v):
            return float(f(v[separated])) if some else None

        rows.append(
            dict(
                beta=float(beta),
                separated=float(np.mean(separated)),
                error_median=float(np.median(error)),
                error_max=float(np.max(error)),
                bound_median=stat(np.median, bound),
                below_bound=stat(np.mean, error <= bound),
                exponent_median=stat(np.median, exponent),
            )
        )
    return rows


def fixed_point_types(rng, betas, num, dim, steps):
    X = unit_patterns(rng, num, dim)
    rows = []
    for beta in betas:
        ham = hopfield(X, beta)
        fixed = np.asarray(update(ham, jnp.asarray(X), steps))
        residual = np.linalg.norm(
            np.asarray(update(ham, jnp.asarray(fixed), 1)) - fixed, axis=1
        )
        p = np.asarray(weights(ham, jnp.asarray(fixed)))
        participation = 1.0 / np.sum(p**2, axis=1)  # how many patterns it averages
        single = participation < 1.5
        global_ = participation > num / 2
        meta = ~single & ~global_
        # distinct fixed points among the endpoints
        distinct = []
        for f in fixed:
            if all(np.linalg.norm(f - g) > 1e-4 for g in distinct):
                distinct.append(f)
        rows.append(
            dict(
                beta=float(beta),
                single=float(np.mean(single)),
                metastable=float(np.mean(meta)),
                global_average=float(np.mean(global_)),
                distinct=len(distinct),
                max_residual=float(residual.max()),
            )
        )
    return rows


def main():
    args = _common.parse_args(__doc__)
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    if args.quick:
        betas_a = np.array([2.0, 8.0, 32.0, 128.0])
        betas_b = np.geomspace(0.5, 64.0, 8)
        num_a, num_b, steps = 64, 32, 300
    else:
        betas_a = np.geomspace(1.0, 256.0, 17)
        betas_b = np.geomspace(0.25, 128.0, 28)
        num_a, num_b, steps = 128, 32, 2000
    rows_a = one_update_error(rng, betas_a, num_a, 64, 0.05)
    rows_b = fixed_point_types(rng, betas_b, num_b, 16, steps)

    _common.print_table(
        f"(A) One update from a query 0.05 from a pattern (N = {num_a}, d = 64, "
        "unit patterns)",
        [
            "beta",
            "paper: bound (median)",
            "ours: error median",
            "ours: error max",
            "error <= bound",
            "queries in the theorem's range",
        ],
        [
            [
                r["beta"],
                "n/a" if r["bound_median"] is None else r["bound_median"],
                r["error_median"],
                r["error_max"],
                "n/a" if r["below_bound"] is None else r["below_bound"],
                r["separated"],
            ]
            for r in rows_a
        ],
    )
    betas = np.array([r["beta"] for r in rows_a])
    med = np.array([r["error_median"] for r in rows_a])
    covered = np.array([r["separated"] == 1.0 for r in rows_a])
    rate = -np.polyfit(betas[covered], np.log(med[covered]), 1)[0]
    bound_rate = float(
        np.median([r["exponent_median"] for r in np.array(rows_a)[covered]])
    )
    print(
        f"\nexponential rate of the median error in beta: ours {rate:.3f}; "
        f"the bound's rate Delta - 2 max(...) M: {bound_rate:.3f}"
    )
    _common.print_table(
        f"(B) Fixed points reached from each of N = {num_b} random unit patterns "
        "(d = 16), by type",
        [
            "beta",
            "single pattern",
            "metastable",
            "global average",
            "distinct fixed points",
        ],
        [
            [
                r["beta"],
                r["single"],
                r["metastable"],
                r["global_average"],
                r["distinct"],
            ]
            for r in rows_b
        ],
    )

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.semilogy(
        betas,
        [np.nan if r["bound_median"] is None else r["bound_median"] for r in rows_a],
        "k--",
        label="Theorem bound (median)",
    )
    a1.semilogy(betas, med, "o-", ms=3, label="ours: error, median")
    a1.set_xlabel(r"inverse temperature $\beta$")
    a1.set_ylabel(r"$\|f(\xi) - x_i\|$ after one update")
    a1.legend(fontsize=7)
    a1.set_title("(A) one update: error below the bound for every query", fontsize=10)
    bb = [r["beta"] for r in rows_b]
    a2.stackplot(
        bb,
        [r["global_average"] for r in rows_b],
        [r["metastable"] for r in rows_b],
        [r["single"] for r in rows_b],
        labels=["global average", "metastable", "single pattern"],
        colors=["0.7", "C1", "C0"],
    )
    a2.set_xscale("log")
    a2.set_xlabel(r"inverse temperature $\beta$")
    a2.set_ylabel("fraction of fixed points")
    a2.legend(fontsize=7, loc="center right")
    a2.set_title("(B) fixed points reached from the patterns", fontsize=10)
    fig.suptitle("Ramsauer et al. (2020): modern Hopfield network", fontsize=11)
    fig.tight_layout()

    _common.finish(
        args,
        "ramsauer_2020",
        fig,
        dict(
            paper="Ramsauer et al. (2020)",
            one_update=rows_a,
            error_rate=float(rate),
            bound_rate=bound_rate,
            fixed_points=rows_b,
        ),
        start,
    )


if __name__ == "__main__":
    main()
