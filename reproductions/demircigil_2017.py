r"""Demircigil et al. (2017): the exponential dense associative memory stores a number
of patterns exponential in the dimension.

Paper: M. Demircigil, J. Heusel, M. Löwe, S. Upgang and F. Vermet, "On a model of
associative memory with huge storage capacity", Journal of Statistical Physics 168
(2017), Theorem 3: with $F(x) = e^x$, $K = e^{\alpha D}$ random $\pm1$ patterns are
all retrieved in one step from $\rho D$ flipped bits, with probability tending to 1,
when $\alpha < I(1 - 2\rho)/2$, $I(x) = \frac12[(1+x)\log(1+x) + (1-x)\log(1-x)]$.

What we measure: random $\pm1$ patterns stored in `hl.DenseMemory(xi, hl.LExp())`
($E = -\sum_\mu e^{\langle\xi_\mu, \sigma\rangle}$); one synchronous sweep of the
energy-difference rule (each neuron takes the sign of lower energy) from a pattern
with 10% of its bits flipped. The capacity $K_{90}(D)$ is the largest $K$ at which
at least 90% of the patterns are retrieved exactly, for small $D$; we fit
$\log K_{90} = \alpha D + c$ and compare $\alpha$ with the theorem's rate.

Where we differ: finite D (10 to 40) instead of $D \to \infty$, "90% of the patterns"
instead of "all patterns" (so our rate may exceed the theorem's, which pays a union
bound over the patterns; the typical-pattern rate is $I(1-2\rho)$), one synchronous
sweep instead of one asynchronous pass.
"""

import math
import time

import jax


jax.config.update("jax_enable_x64", True)  # e^D with D up to 40, summed over K

import _binary  # noqa: E402
import _common  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import hamux_lagr as hl  # noqa: E402


THRESHOLD = 0.9
FLIP_RATE = 0.1


def rate_function(x: float) -> float:
    return 0.5 * ((1 + x) * math.log(1 + x) + (1 - x) * math.log(1 - x))


def main():
    args = _common.parse_args(__doc__)
    start = time.perf_counter()
    # Multiples of 10: exactly 10% of the bits flipped.
    dims = (10, 20, 30) if args.quick else (10, 20, 30, 40)
    num_queries = 40 if args.quick else 100
    k_max = 2**15 if args.quick else 2**19

    separation = hl.lagr_exp  # F(x) = exp(x): beta = 1
    _binary.check_against_memory(separation, lambda xi: hl.DenseMemory(xi, hl.LExp()))
    sweep = _binary.make_sweep(separation)

    rows, curves = [], {}
    for D in dims:
        measured, seen = _binary.capacity(
            lambda K, D=D: _binary.recall_fraction(
                sweep, K, D, flip_rate=FLIP_RATE, num_queries=num_queries, seed=D
            ),
            threshold=THRESHOLD,
            k_max=k_max,
        )
        rows.append(dict(D=D, measured=measured, flips=round(FLIP_RATE * D)))
        curves[D] = seen
        print(
            f"D={D:3d} ({round(FLIP_RATE * D)} flips)  K_90 = {measured:.0f}",
            flush=True,
        )

    alpha_theorem = rate_function(1 - 2 * FLIP_RATE) / 2
    alpha_typical = rate_function(1 - 2 * FLIP_RATE)
    D_arr = np.array([r["D"] for r in rows], float)
    K_arr = np.array([r["measured"] for r in rows])
    alpha_measured, intercept = np.polyfit(D_arr, np.log(K_arr), 1)
    for r in rows:
        r["theorem"] = math.exp(alpha_theorem * r["D"])

    _common.print_table(
        "Capacity K_90 against D (one sweep from 10% flipped bits)",
        ["D", "flipped bits", "paper: e^(alpha D), alpha = I(0.8)/2 (Thm 3)", "ours"],
        [[r["D"], r["flips"], r["theorem"], r["measured"]] for r in rows],
    )
    _common.print_table(
        "Exponential rate alpha in K = e^(alpha D)",
        ["quantity", "paper", "ours"],
        [
            [
                "alpha (all patterns, Thm 3: I(1-2rho)/2)",
                alpha_theorem,
                float(alpha_measured),
            ],
            [
                "alpha (typical pattern, I(1-2rho))",
                alpha_typical,
                float(alpha_measured),
            ],
        ],
    )

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, D in enumerate(dims):
        seen = curves[D]
        a1.semilogx(
            [k for k, _ in seen],
            [f for _, f in seen],
            "-o",
            ms=3,
            color=plt.cm.viridis(i / max(1, len(dims) - 1)),
            label=f"D={D}",
        )
    a1.axhline(THRESHOLD, color="k", lw=0.8, ls=":")
    a1.set_xlabel("stored patterns K")
    a1.set_ylabel("fraction retrieved exactly")
    a1.legend(fontsize=7)
    a1.set_title("one sweep from 10% flipped bits", fontsize=10)
    grid = np.linspace(D_arr.min(), D_arr.max(), 50)
    a2.semilogy(D_arr, K_arr, "o", label="ours, $K_{90}$")
    a2.semilogy(
        grid,
        np.exp(alpha_measured * grid + intercept),
        "C0-",
        label=f"fit, rate {alpha_measured:.3f}",
    )
    a2.semilogy(
        grid,
        np.exp(alpha_theorem * grid),
        "k--",
        label=f"Thm 3, all patterns: rate {alpha_theorem:.3f}",
    )
    a2.semilogy(
        grid,
        np.exp(alpha_typical * grid),
        "k:",
        label=f"typical pattern: rate {alpha_typical:.3f}",
    )
    a2.set_xlabel("dimension D")
    a2.set_ylabel("capacity K")
    a2.legend(fontsize=7)
    fig.suptitle("Demircigil et al. (2017): capacity exponential in D", fontsize=11)
    fig.tight_layout()

    _common.finish(
        args,
        "demircigil_2017",
        fig,
        dict(
            paper="Demircigil et al. (2017)",
            flip_rate=FLIP_RATE,
            threshold=THRESHOLD,
            capacity=rows,
            alpha_measured=float(alpha_measured),
            alpha_theorem=alpha_theorem,
            alpha_typical=alpha_typical,
            curves={str(k): [[a, b] for a, b in v] for k, v in curves.items()},
        ),
        start,
    )


if __name__ == "__main__":
    main()
