r"""Krotov & Hopfield (2016): the capacity of the dense associative memory grows as
D^(n-1) with the degree n of its rectified polynomial.

Paper: D. Krotov and J. J. Hopfield, "Dense Associative Memory for Pattern
Recognition", NeurIPS 2016, Section 2 (capacity $K_\max = \alpha_n D^{n-1}$ for the
energy $E = -\sum_\mu F(\langle\xi_\mu, \sigma\rangle)$, $F(x) = x^n$, from a
signal-to-noise analysis of their update rule, Eq. 2).

What we measure: $K$ random $\pm1$ patterns of $D \in \{50, 100\}$ neurons stored in
`hl.DenseMemory(xi, hl.LRepu(n))` ($F(x) = \max(x, 0)^n / n$), $n \in \{2, 3, 4\}$;
one synchronous sweep of the paper's rule (each neuron takes the sign of lower
energy, the others held) from (a) each pattern (is it a fixed point?) and (b) the
pattern with 10% of its bits flipped (is it retrieved?). The capacity is the largest
$K$ at which at least 90% of the patterns pass, found by doubling $K$, then
bisection. We compare it with the estimate of the paper's signal-to-noise analysis
(Gaussian crosstalk) at the same criterion, and the growth from D = 50 to D = 100
with the paper's $2^{n-1}$.

Where we differ: the rectified polynomial (our `LRepu`) instead of the paper's $x^n$
(half the crosstalk: the estimate below is the paper's analysis redone for it), a
synchronous sweep instead of asynchronous updates, and "90% of patterns" as the
capacity criterion.
"""

import math
import statistics
import time

import jax


jax.config.update("jax_enable_x64", True)  # exact integer overlaps, F up to 100**4

import _binary  # noqa: E402
import _common  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

import hamux_lagr as hl  # noqa: E402


THRESHOLD = 0.9
FLIP_RATE = 0.1


def double_factorial(k: int) -> int:
    return math.prod(range(k, 0, -2)) if k > 0 else 1


def predicted_capacity(D: int, n: int, flip_rate: float) -> float:
    r"""The K at which 90% of patterns pass, from the paper's signal-to-noise
    analysis for the rectified polynomial.

    A neuron's gap is a signal $2(D(1-2\rho))^{n-1}$ plus the crosstalk of the other
    patterns, Gaussian with variance $4K\,\mathbb{E}[\max(r,0)^{2n-2}] =
    2K(2n-3)!!D^{n-1}$ ($r \sim \mathcal{N}(0, D)$; half of the paper's, whose $x^n$
    counts both signs). A pattern passes when all $D$ neurons do.
    """
    per_neuron_error = 1.0 - THRESHOLD ** (1.0 / D)
    snr = -statistics.NormalDist().inv_cdf(per_neuron_error)
    signal2 = 4.0 * (D * (1 - 2 * flip_rate)) ** (2 * n - 2)
    noise_per_pattern = 2.0 * double_factorial(2 * n - 3) * D ** (n - 1)
    return signal2 / (noise_per_pattern * snr**2)


def main():
    args = _common.parse_args(__doc__)
    start = time.perf_counter()
    dims = (25, 50) if args.quick else (50, 100)
    degrees = (2, 3, 4)
    num_queries = 40 if args.quick else 200
    k_max = 2**13 if args.quick else 2**16

    for n in degrees:
        _binary.check_against_memory(
            lambda x, n=n: hl.lagr_repu(x, n),
            lambda xi, n=n: hl.DenseMemory(xi, hl.LRepu(n=n)),
        )

    rows, curves = [], {}
    for n in degrees:
        sweep = _binary.make_sweep(lambda x, n=n: hl.lagr_repu(x, n))
        for D in dims:
            for kind, rho in (("fixed point", 0.0), ("10% flips", FLIP_RATE)):
                seed = 1000 * n + D + (7 if rho else 0)
                measured, seen = _binary.capacity(
                    lambda K, D=D, rho=rho, seed=seed: _binary.recall_fraction(
                        sweep, K, D, flip_rate=rho, num_queries=num_queries, seed=seed
                    ),
                    threshold=THRESHOLD,
                    k_max=k_max,
                )
                predicted = predicted_capacity(D, n, rho)
                rows.append(
                    dict(D=D, n=n, test=kind, measured=measured, predicted=predicted)
                )
                curves[f"D={D}, n={n}, {kind}"] = seen
                print(
                    f"D={D:4d} n={n} {kind:12s} K_90 measured {measured:9.0f}"
                    f"   signal-to-noise estimate {predicted:9.0f}",
                    flush=True,
                )

    table = [
        [
            r["D"],
            r["n"],
            r["test"],
            r["predicted"],
            r["measured"],
            r["measured"] / r["predicted"],
        ]
        for r in rows
    ]
    _common.print_table(
        "Capacity K_90 (largest K with >= 90% of patterns passing one sweep)",
        ["D", "n", "start", "paper's analysis (Sec. 2)", "ours", "ours / paper"],
        table,
    )

    growth = []
    lo, hi = dims
    for n in degrees:
        for kind in ("fixed point", "10% flips"):
            k = {
                r["D"]: r["measured"] for r in rows if r["n"] == n and r["test"] == kind
            }
            p = {
                r["D"]: r["predicted"]
                for r in rows
                if r["n"] == n and r["test"] == kind
            }
            growth.append(
                dict(
                    n=n,
                    test=kind,
                    paper_exponent=n - 1,
                    predicted_exponent=math.log(p[hi] / p[lo], hi / lo),
                    measured_exponent=math.log(k[hi] / k[lo], hi / lo),
                )
            )
    _common.print_table(
        f"Growth exponent log(K(D={hi}) / K(D={lo})) / log({hi}/{lo})",
        ["n", "start", "paper: n - 1", "paper's analysis at finite D", "ours"],
        [
            [
                g["n"],
                g["test"],
                g["paper_exponent"],
                g["predicted_exponent"],
                g["measured_exponent"],
            ]
            for g in growth
        ],
    )

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, kind in zip(axes, ("fixed point", "10% flips")):
        for i, n in enumerate(degrees):
            for D, style in zip(dims, ("--", "-")):
                seen = curves[f"D={D}, n={n}, {kind}"]
                ax.semilogx(
                    [k for k, _ in seen],
                    [f for _, f in seen],
                    style,
                    marker="o",
                    ms=3,
                    color=f"C{i}",
                    label=f"n={n}, D={D}",
                )
        ax.axhline(THRESHOLD, color="k", lw=0.8, ls=":")
        ax.set_xlabel("stored patterns K")
        ax.set_title(f"one sweep from the pattern ({kind})", fontsize=10)
    axes[0].set_ylabel("fraction of patterns recalled exactly")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(
        "Krotov & Hopfield (2016): capacity grows with the degree n", fontsize=11
    )
    fig.tight_layout()

    _common.finish(
        args,
        "krotov_hopfield_2016",
        fig,
        dict(
            paper="Krotov & Hopfield (2016)",
            threshold=THRESHOLD,
            capacity=rows,
            growth=growth,
            curves={k: [[a, b] for a, b in v] for k, v in curves.items()},
        ),
        start,
    )


if __name__ == "__main__":
    main()
