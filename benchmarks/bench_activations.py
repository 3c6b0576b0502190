"""Benchmark: the activation as the gradient of a Lagrangian vs its closed form.

For every Lagrangian module (defaults; `LRepu(n=3)`, `LEntmax(alpha=1.3)` and the
functional `lagr_entmax(alpha=1.5)` too) this times

    ours   = jax.jit(jax.vmap(jax.grad(L)))
    closed = jax.jit(<the hand-written activation>)

on one (256, 4096) float32 batch, interleaved in one process (the two alternate, in
alternating order, `--repeats` times, each call ended by `block_until_ready`), after
checking that both give the same numbers. It prints the median time of each and the
median of the per-repeat ratios ours / closed form. Target: every ratio <= 1.05.

    python benchmarks/bench_activations.py [--repeats 100]

The sparse rows compare against sort-based references (Martins & Astudillo 2016;
Peters et al. 2019, Algorithm 2; the 2-normmax solved the same way) and, for
`LEntmax(alpha=1.3)`, against a bisection written here. Under `jax.jit` the modules'
`alpha` is clamped, hence traced, so `LEntmax(1.5)` and `LNormmax(2)` find their
threshold by bisection; on a CPU, XLA's sort dominates the sort-based references (and
`LSparsemax`, which sorts too), so those ratios fall far below 1.

Wall-clock numbers depend on the machine and on what else runs on it; nothing here
asserts on them.
"""

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import hamux_lagr as hl


TARGET = 1.05


def _ghostmax(x, beta):
    z = beta * x
    m = jnp.maximum(jnp.max(z, axis=-1, keepdims=True), 0)
    e = jnp.exp(z - m)
    return e / (jnp.exp(-m) + jnp.sum(e, axis=-1, keepdims=True))


def _layernorm(x, gamma, delta, eps):
    xc = x - jnp.mean(x, axis=-1, keepdims=True)
    return (
        gamma * xc * jax.lax.rsqrt(jnp.mean(xc * xc, axis=-1, keepdims=True) + eps)
        + delta
    )


def _spherical(x, gamma, delta, eps):
    return (
        gamma * x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps) + delta
    )


def _sorted_prefix(z):
    # The rows sorted in decreasing order and the ranks 1..d, for the sort-based
    # thresholds.
    zs = -jnp.sort(-z, axis=-1)
    k = jnp.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    return zs, k


def _sparsemax(x, beta):
    # Martins & Astudillo (2016), Algorithm 1: p = [z - tau]_+ with tau from the
    # sorted scores.
    z = beta * x
    zs, k = _sorted_prefix(z)
    cs = jnp.cumsum(zs, axis=-1)
    support = jnp.sum(1 + k * zs > cs, axis=-1, keepdims=True)
    tau = (jnp.take_along_axis(cs, support - 1, axis=-1) - 1) / support.astype(z.dtype)
    return jnp.maximum(z - tau, 0)


def _entmax15(x, beta):
    # Peters, Niculae & Martins (2019), Algorithm 2 (exact, sort-based): on
    # X = (z - max z) / 2, tau_k solves sum_{j <= k} (X_(j) - tau)^2 = 1, the support
    # is where tau_k <= X_(k), and p = [X - tau]_+^2.
    z = beta * x
    xs, k = _sorted_prefix((z - jnp.max(z, axis=-1, keepdims=True)) / 2)
    mean = jnp.cumsum(xs, axis=-1) / k
    ss = k * (jnp.cumsum(xs * xs, axis=-1) / k - mean * mean)
    tau = mean - jnp.sqrt(jnp.maximum((1 - ss) / k, 0))
    support = jnp.sum(tau <= xs, axis=-1, keepdims=True)
    tau_star = jnp.take_along_axis(tau, support - 1, axis=-1)
    X = (z - jnp.max(z, axis=-1, keepdims=True)) / 2
    return jnp.maximum(X - tau_star, 0) ** 2


def _entmax_bisect(x, beta, alpha, steps):
    # alpha-entmax by bisection on the threshold (Blondel et al. 2020): p_i =
    # [(alpha - 1) z_i - tau]_+^(1/(alpha-1)), tau in [-1, -(1/d)^(alpha-1)] once
    # max z = 0; `steps` halvings, then normalised.
    z = beta * x
    z = z - jnp.max(z, axis=-1, keepdims=True)
    a, d = alpha - 1, z.shape[-1]
    lo = jnp.full(z.shape[:-1] + (1,), -1.0, z.dtype)
    hi = jnp.full_like(lo, -((1 / d) ** a))

    def step(_, bracket):
        lo, hi = bracket
        mid = (lo + hi) / 2
        above = jnp.sum(jnp.maximum(a * z - mid, 0) ** (1 / a), -1, keepdims=True) >= 1
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    lo, _ = jax.lax.fori_loop(0, steps, step, (lo, hi))
    u = jnp.maximum(a * z - lo, 0) ** (1 / a)
    return u / jnp.sum(u, axis=-1, keepdims=True)


def _log_sum_relu(x, beta, eps):
    # d/dx_i (1/beta) log(eps + sum_j relu(1 + beta x_j)) = 1[1 + beta x_i > 0] / (...)
    r = jnp.maximum(1 + beta * x, 0)
    inv = 1 / (eps + jnp.sum(r, axis=-1, keepdims=True))
    return jnp.where(r > 0, inv, 0)


def cases() -> list[tuple[str, Callable, Callable]]:
    """(name, module, closed-form activation of a batch) — the closed forms use the
    module's own parameters, as a user writing the activation by hand would. (One
    row times a functional Lagrangian in place of a module.)"""
    relu, repu3 = hl.LRelu(), hl.LRepu(n=3)
    exp, rexp, tanh = hl.LExp(), hl.LRexp(), hl.LTanh()
    sigmoid = hl.LSigmoid()
    softmax, softmax_u, ghostmax = hl.LSoftmax(), hl.LSoftmaxUnstable(), hl.LGhostmax()
    ln, sph = hl.LLayerNorm(), hl.LSphericalNorm()
    sparsemax, lsr = hl.LSparsemax(), hl.LLogSumReLU()
    entmax15, entmax13 = hl.LEntmax(alpha=1.5), hl.LEntmax(alpha=1.3)
    steps = int(jnp.finfo(jnp.float32).nmant) + 2  # the library's, in float32
    sparse = [
        ("LSparsemax", sparsemax, lambda x: _sparsemax(x, sparsemax.beta)),
        ("LEntmax(1.5)", entmax15, lambda x: _entmax15(x, entmax15.beta)),
        # The functional with a Python alpha = 1.5 (concrete at trace time).
        (
            "lagr_entmax(1.5)",
            lambda x: jnp.sum(hl.lagr_entmax(x, alpha=1.5, beta=1.0)),
            lambda x: _entmax15(x, 1.0),
        ),
        (
            "LEntmax(1.3)",
            entmax13,
            lambda x: _entmax_bisect(x, entmax13.beta, 1.3, steps),
        ),
        ("LLogSumReLU", lsr, lambda x: _log_sum_relu(x, lsr.beta, lsr.eps)),
    ]
    if hasattr(hl, "LNormmax"):
        sparse += _normmax_cases()
    return [
        ("LIdentity", hl.LIdentity(), lambda x: x),
        ("LRelu", relu, lambda x: jnp.maximum(x, 0)),
        ("LRepu(n=2)", hl.LRepu(), lambda x: jnp.maximum(x, 0)),
        ("LRepu(n=3)", repu3, lambda x: jnp.maximum(x, 0) ** 2),
        ("LExp", exp, lambda x: jnp.exp(exp.beta * x)),
        ("LRexp", rexp, lambda x: jnp.expm1(rexp.beta * jnp.maximum(x, 0))),
        ("LTanh", tanh, lambda x: jnp.tanh(tanh.beta * x)),
        (
            "LSigmoid",
            sigmoid,
            lambda x: sigmoid.scale * jax.nn.sigmoid(sigmoid.beta * x),
        ),
        ("LSoftmax", softmax, lambda x: jax.nn.softmax(softmax.beta * x, axis=-1)),
        (
            "LSoftmaxUnstable",
            softmax_u,
            lambda x: jax.nn.softmax(softmax_u.beta * x, axis=-1),
        ),
        ("LGhostmax", ghostmax, lambda x: _ghostmax(x, ghostmax.beta)),
        ("LLayerNorm", ln, lambda x: _layernorm(x, ln.gamma, ln.delta, ln.eps)),
        ("LSphericalNorm", sph, lambda x: _spherical(x, sph.gamma, sph.delta, sph.eps)),
        *sparse,
    ]


def _normmax2(x, beta):
    # The 2-normmax, sort-based and exact: with y = z - max z, p = q / sum q for
    # q = [y - tau]_+, where sum_i (y_i - tau)_+^2 = 1 is solved as in `_entmax15`
    # (on y itself): tau_k = mean_k - sqrt((1 - ss_k) / k) over the k largest.
    z = beta * x
    y = z - jnp.max(z, axis=-1, keepdims=True)
    ys, k = _sorted_prefix(y)
    mean = jnp.cumsum(ys, axis=-1) / k
    ss = k * (jnp.cumsum(ys * ys, axis=-1) / k - mean * mean)
    tau = mean - jnp.sqrt(jnp.maximum((1 - ss) / k, 0))
    support = jnp.sum(tau <= ys, axis=-1, keepdims=True)
    q = jnp.maximum(y - jnp.take_along_axis(tau, support - 1, axis=-1), 0)
    return q / jnp.sum(q, axis=-1, keepdims=True)


def _normmax_cases() -> list[tuple[str, Callable, Callable]]:
    normmax = hl.LNormmax(alpha=2.0)
    return [("LNormmax(2)", normmax, lambda x: _normmax2(x, normmax.beta))]


def _time(f, x) -> float:
    t0 = time.perf_counter()
    f(x).block_until_ready()
    return time.perf_counter() - t0


def bench(name, module, closed, x, repeats, warmup):
    ours = jax.jit(jax.vmap(jax.grad(module)))
    closed = jax.jit(closed)
    a, b = np.asarray(ours(x)), np.asarray(closed(x))
    assert a.dtype == b.dtype == np.float32, (name, a.dtype, b.dtype)
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=name)
    for _ in range(warmup):
        ours(x).block_until_ready()
        closed(x).block_until_ready()
    t_ours, t_closed, ratios = [], [], []
    for i in range(repeats):
        if i % 2 == 0:
            to, tc = _time(ours, x), _time(closed, x)
        else:
            tc, to = _time(closed, x), _time(ours, x)
        t_ours.append(to)
        t_closed.append(tc)
        ratios.append(to / tc)
    return (
        statistics.median(t_ours),
        statistics.median(t_closed),
        statistics.median(ratios),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=100, help="timed pairs per Lagrangian"
    )
    parser.add_argument("--warmup", type=int, default=5, help="untimed pairs first")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    x = jax.random.normal(
        jax.random.key(args.seed), (args.batch, args.dim), jnp.float32
    )
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform} "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs); "
        f"batch {x.shape} {x.dtype}, {args.repeats} interleaved repeats"
    )
    print("ours = jit(vmap(grad(L))); closed = jit(closed-form activation)")
    print(f"{'Lagrangian':<18}{'ours (ms)':>11}{'closed (ms)':>13}{'ratio':>8}  ok")
    worst = []
    for name, module, closed in cases():
        t_o, t_c, ratio = bench(name, module, closed, x, args.repeats, args.warmup)
        ok = ratio <= TARGET
        if not ok:
            worst.append((name, ratio))
        print(
            f"{name:<18}{t_o * 1e3:>11.3f}{t_c * 1e3:>13.3f}{ratio:>8.3f}  {'yes' if ok else 'NO'}"
        )
    if worst:
        listed = ", ".join(f"{n} {r:.3f}" for n, r in worst)
        print(f"verdict: {len(worst)} above the target ratio {TARGET}: {listed}")
    else:
        print(f"verdict: every median ratio <= {TARGET}")


if __name__ == "__main__":
    main()
