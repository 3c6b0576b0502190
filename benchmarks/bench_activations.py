"""Benchmark: the activation as the gradient of a Lagrangian vs its closed form.

For every Lagrangian module (defaults; `LRepu(n=3)` too) this times

    ours   = jax.jit(jax.vmap(jax.grad(L)))
    closed = jax.jit(<the hand-written activation>)

on one (256, 4096) float32 batch, interleaved in one process (the two alternate, in
alternating order, `--repeats` times, each call ended by `block_until_ready`), after
checking that both give the same numbers. It prints the median time of each and the
median of the per-repeat ratios ours / closed form. Target: every ratio <= 1.05.

    python benchmarks/bench_activations.py [--repeats 100]

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


def cases() -> list[tuple[str, hl.Lagrangian, Callable]]:
    """(name, module, closed-form activation of a batch) — the closed forms use the
    module's own parameters, as a user writing the activation by hand would."""
    relu, repu3 = hl.LRelu(), hl.LRepu(n=3)
    exp, rexp, tanh = hl.LExp(), hl.LRexp(), hl.LTanh()
    sigmoid = hl.LSigmoid()
    softmax, softmax_u, ghostmax = hl.LSoftmax(), hl.LSoftmaxUnstable(), hl.LGhostmax()
    ln, sph = hl.LLayerNorm(), hl.LSphericalNorm()
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
    ]


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
