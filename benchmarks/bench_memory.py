"""Dense associative memory benchmarks: `hamux_lagr` against a hand-written loop.

A `DenseMemory(patterns, LSoftmax(beta))` on an `LIdentity` layer: K=1024 unit-norm
patterns of dimension D=784, B=256 noisy queries, beta 1 and 10, float32. The
reference is a jitted closed-form `lax.scan` loop doing the same arithmetic,
`x <- x + dt * (-x + P.T softmax(beta * P x))` for the whole batch at once, in the
faster of two layouts of the similarities: (K, B) = P @ X.T or (B, K) = X @ P.T (on
XLA's CPU backend the first runs about 10-15% faster). Runs are interleaved in one
process; each row gives median times and the median of the per-round ratios (each
round runs the functions back to back, so slow drifts of the machine's load cancel).

Ours is `jax.vmap` of the one-sample `hl.descend` over the batch of queries: it returns
an `hl.Solution` (final states, energy trace, steps, residual, result code), with the
default checks (`throw=True`: a parameter or state that turns NaN or infinite raises),
all of it in the timed, jitted function.

1. retrieval, T=20 Euler steps, dt=0.1: ours / hand-written (target <= 1.03), with the
   energy trace against a loop that also computes the energy, and without; and with
   `throw=False` (target <= 1.01);
2. one training step (`value_and_grad` of a reconstruction loss through T=10 steps,
   w.r.t. the patterns): ours / hand-written (target <= 1.10);
3. jit compile time (trace, lower, compile) of (1): ours / hand-written (target <=
   1.3) for new shapes in a warm process, and with every cache cleared (information);
   and, for information, that of a hand-written loop returning what the default
   retrieval returns (`hand_solution`: the floor of what `descend` must compile)
   against the bare loop, and ours against it;
4. time to a fixed point (max |dE/dg| < 1e-4): the documented fast option (Euler with
   dt = tau, the concave-convex / Ramsauer update, stopped with `tol`) and an adaptive
   diffrax solver, against Euler dt=0.1 stopped with `tol`: ratios of wall time and of
   energy-gradient evaluations (target <= 0.5);
5. the same retrieval written with the public `hamux` package (0.2.x; skipped with a
   message if it is not installed): ours / hamux (target <= 1.0).

Run with `python benchmarks/bench_memory.py` (`--quick` for fewer repetitions, `--only
1 3` for some of them).
"""

import argparse
import os
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

import hamux_lagr as hl


# `HL_BENCH_SMALL=1` (`benchmarks/gpu.sh --small`) shrinks the problem, to try a run
# on a CPU.
K, D, B = (128, 64, 32) if os.environ.get("HL_BENCH_SMALL") else (1024, 784, 256)
T_RETRIEVE, T_TRAIN, DT = 20, 10, 0.1
TOL = 1e-4


def problem(beta: float, seed: int = 0):
    kp, ki, kn = jax.random.split(jax.random.key(seed), 3)
    patterns = jax.random.normal(kp, (K, D))
    patterns = patterns / jnp.linalg.norm(patterns, axis=1, keepdims=True)
    clean = patterns[jax.random.randint(ki, (B,), 0, K)]
    queries = clean + 0.5 * jax.random.normal(kn, (B, D)) / jnp.sqrt(D)
    ham = hl.HAM(
        neurons={"v": hl.NeuronLayer(hl.LIdentity(), (D,))},
        synapses={"memory": hl.DenseMemory(patterns, hl.LSoftmax(beta))},
        connections=[(("v",), "memory")],
    )
    return ham, patterns, queries, clean


# ----------------------------------------------------------------------------------
# the hand-written reference: closed forms, batched matrices, one lax.scan
# ----------------------------------------------------------------------------------

# The similarities of a batch can be laid out (K, B) = P @ X.T or (B, K) = X @ P.T.
# The arithmetic is the same; XLA's CPU matmuls run the first about 10% faster here.
# Both are timed, and ours is compared with the faster.
LAYOUTS = ("KB", "BK")


def _similarities(patterns, x, layout):
    return patterns @ x.T if layout == "KB" else x @ patterns.T


def _current(patterns, h, beta, layout):
    """The input current P.T softmax(beta h), as (B, D)."""
    axis = 0 if layout == "KB" else 1
    p = jax.nn.softmax(beta * h, axis=axis)
    return p.T @ patterns if layout == "KB" else p @ patterns


def hand_retrieve(patterns, queries, beta, layout="KB", *, steps=T_RETRIEVE, dt=DT):
    def step(x, _):
        h = _similarities(patterns, x, layout)
        return x + dt * (-x + _current(patterns, h, beta, layout)), None

    return lax.scan(step, queries, length=steps)[0]


def hand_retrieve_energy(patterns, queries, beta, layout="KB", *, steps=T_RETRIEVE):
    axis = 0 if layout == "KB" else 1

    def energy(x, h):
        lse = jax.nn.logsumexp(beta * h, axis=axis)
        return 0.5 * jnp.sum(x * x, -1) - lse / beta

    def step(x, _):
        h = _similarities(patterns, x, layout)
        e = energy(x, h)
        return x + DT * (-x + _current(patterns, h, beta, layout)), e

    x, es = lax.scan(step, queries, length=steps)
    es = jnp.concatenate([es, energy(x, _similarities(patterns, x, layout))[None]])
    return x, es.T


def hand_solution(patterns, queries, beta, *, steps=T_RETRIEVE, dt=DT):
    """What the default retrieval (`throw=True`) returns, written by hand for the
    batch (layout KB): the final states, the residual max |dE/dg| of the state the
    last step started from (computed in the last step), the steps taken and a result
    code, and one `eqx.branched_error_if` that raises if a parameter, `dt` or a final
    state is not finite (so, as in `descend`, the step at which a state went
    non-finite is not looked for). The reference for the compile time of what
    `descend` must compile (row 3)."""

    def finite_rows(x):
        return jnp.sum(x * 0, axis=1) == 0

    params_ok = (jnp.sum(patterns * 0) == 0) & jnp.isfinite(beta)
    dt_ok = (dt > 0) & jnp.isfinite(dt)

    def step(carry, _):
        x, t, res = carry
        dEdg = x - _current(patterns, _similarities(patterns, x, "KB"), beta, "KB")
        res = lax.cond(
            t == steps - 1, lambda: jnp.max(jnp.abs(dEdg), axis=1), lambda: res
        )
        return (x - dt * dEdg, t + 1, res), None

    start = (queries, 0, jnp.zeros(queries.shape[0], queries.dtype))
    (x, _, res), _ = lax.scan(step, start, length=steps)
    finite = finite_rows(x)
    num_steps = jnp.full(queries.shape[0], steps)
    # Codes: 1 steps completed, 2 non-finite state, 3 bad dt, 4 non-finite parameter.
    result = jnp.where(finite, 1, 2)
    result = jnp.where(dt_ok, result, 3)
    result = jnp.where(params_ok, result, 4)
    index = jnp.where(jnp.all(finite), 0, 2)
    index = jnp.where(dt_ok, index, 3)
    index = jnp.where(params_ok, index, 4)
    messages = ["", "", "non-finite state", "bad dt", "non-finite parameter"]
    x = eqx.branched_error_if(x, index > 0, index, messages)
    return x, num_steps, res, result


def hand_loss(patterns, queries, clean, beta, layout="KB"):
    x = hand_retrieve(patterns, queries, beta, layout, steps=T_TRAIN)
    return jnp.mean((x - clean) ** 2)


# ----------------------------------------------------------------------------------
# ours
# ----------------------------------------------------------------------------------


def ours_retrieve(ham, queries, *, trace=False, throw=True):
    # `descend` acts on one sample; the batch is its `jax.vmap`. The whole Solution
    # is returned, by default computed with the default checks (`throw=True`).
    sol = jax.vmap(
        lambda q: hl.descend(
            ham, {"v": q}, steps=T_RETRIEVE, dt=DT, trace=trace, throw=throw
        )
    )(queries)
    return sol.xs["v"], sol


def ours_loss(patterns, ham, queries, clean):
    ham = eqx.tree_at(lambda h: h.synapses["memory"].patterns, ham, patterns)
    sol = jax.vmap(
        lambda q: hl.descend(ham, {"v": q}, steps=T_TRAIN, dt=DT, trace=False)
    )(queries)
    return jnp.mean((sol.xs["v"] - clean) ** 2)


# ----------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------


def block(out):
    jax.tree.map(lambda x: x.block_until_ready(), out)
    return out


def interleaved(fns: dict, reps: int) -> dict:
    """Wall times of each (already compiled) thunk, one per round, runs interleaved."""
    for fn in fns.values():
        block(fn())
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            block(fn())
            times[name].append(time.perf_counter() - t0)
    return times


def compare(name, beta, times, ours, ref, target):
    """A row for `ours` against `ref`: median times and the median of the rounds'
    ratios (each round runs both back to back, so slow drifts of the machine's other
    load cancel)."""
    pairs = [a / b for a, b in zip(times[ours], times[ref])]
    row(
        name,
        beta,
        statistics.median(times[ours]),
        statistics.median(times[ref]),
        target,
        ratio=statistics.median(pairs),
    )


def compile_times(fns: dict, args: dict, reps: int, cold: bool) -> dict:
    """Median `jit(f).lower(...).compile()` time of each function, runs interleaved.

    `cold`: every JAX cache is cleared before each compilation (as in a fresh process).
    Otherwise each repetition compiles for a batch size not seen before, in a process
    that has compiled both functions once: the shape-dependent work is redone, the
    library's one-off warm-up is not (as for a user compiling a new model).
    """
    times = {name: [] for name in fns}
    for rep in range(reps + 1):
        for name, make_fn in fns.items():
            if cold:
                jax.clear_caches()
                eqx.clear_caches()
            rest, queries = args[name]
            queries = queries if cold else queries[: len(queries) - 1 - rep]
            fn = jax.jit(make_fn())
            t0 = time.perf_counter()
            fn.lower(*rest, queries).compile()
            if rep > 0 or cold:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


ROWS = []


def row(name, beta, ours, ref, target, unit="ms", ratio=None):
    """Records and prints one ratio; `target=None` marks an informational row."""
    ratio = ours / ref if ratio is None else ratio
    scale = 1e3 if unit == "ms" else 1.0
    ROWS.append((name, beta, ours * scale, ref * scale, unit, ratio, target))
    if target is None:
        verdict = "(for information)"
    else:
        verdict = f"(target <= {target}) " + ("ok" if ratio <= target else "MISSED")
    print(
        f"{name:48s} beta={beta:<4g} ours {ours * scale:9.2f} {unit:5s} ref "
        f"{ref * scale:9.2f} {unit:5s} ratio {ratio:5.3f} {verdict}",
        flush=True,
    )


# ----------------------------------------------------------------------------------
# the benchmarks
# ----------------------------------------------------------------------------------


def best_hand(t, prefix):
    """The faster layout of the hand-written loop, and its name in `t`."""
    layout = min(LAYOUTS, key=lambda lay: statistics.median(t[f"{prefix}{lay}"]))
    return layout, f"{prefix}{layout}"


def bench_retrieval(beta, reps):
    ham, patterns, queries, _ = problem(beta)
    ours = jax.jit(ours_retrieve, static_argnames=("trace", "throw"))
    hand = jax.jit(hand_retrieve, static_argnums=(2, 3))
    hand_e = jax.jit(hand_retrieve_energy, static_argnums=(2, 3))
    # Same arithmetic, same answer.
    x_ours, sol = ours(ham, queries, trace=True)
    e_ours = sol.energies
    assert bool(jnp.all(sol.finite)) and sol.energies.shape == (B, T_RETRIEVE + 1)
    assert bool(jnp.all(sol.num_steps == T_RETRIEVE))
    for layout in LAYOUTS:
        x_hand, e_hand = hand_e(patterns, queries, beta, layout)
        assert jnp.allclose(x_ours, x_hand, atol=1e-4), "ours and hand-written differ"
        assert jnp.allclose(e_ours, e_hand, atol=1e-4), "energy traces differ"
    fns = {
        "ours": lambda: ours(ham, queries),
        "ours_trace": lambda: ours(ham, queries, trace=True),
        "ours_quiet": lambda: ours(ham, queries, throw=False),
    }
    for lay in LAYOUTS:
        fns[f"hand_{lay}"] = lambda lay=lay: hand(patterns, queries, beta, lay)
        fns[f"hand_trace_{lay}"] = lambda lay=lay: hand_e(patterns, queries, beta, lay)
    t = interleaved(fns, reps)
    lay, ref = best_hand(t, "hand_")
    compare(f"1. retrieval T=20, no trace (hand {lay})", beta, t, "ours", ref, 1.03)
    name = f"1. retrieval T=20, no trace, throw=False (hand {lay})"
    compare(name, beta, t, "ours_quiet", ref, 1.01)
    lay, ref = best_hand(t, "hand_trace_")
    name = f"1. retrieval T=20, energy trace (hand {lay})"
    compare(name, beta, t, "ours_trace", ref, 1.03)
    compare("1. (hand BK / hand KB, no trace)", beta, t, "hand_BK", "hand_KB", None)


def bench_training(beta, reps):
    ham, patterns, queries, clean = problem(beta)
    ours = jax.jit(jax.value_and_grad(ours_loss))
    hand = jax.jit(jax.value_and_grad(hand_loss), static_argnums=(3, 4))
    l_ours, g_ours = ours(patterns, ham, queries, clean)
    for layout in LAYOUTS:
        l_hand, g_hand = hand(patterns, queries, clean, beta, layout)
        assert jnp.allclose(l_ours, l_hand, rtol=1e-4), "losses differ"
        assert jnp.allclose(g_ours, g_hand, atol=1e-6, rtol=1e-3), "gradients differ"
    fns = {"ours": lambda: ours(patterns, ham, queries, clean)}
    for lay in LAYOUTS:
        fns[f"hand_{lay}"] = lambda lay=lay: hand(patterns, queries, clean, beta, lay)
    t = interleaved(fns, reps)
    lay, ref = best_hand(t, "hand_")
    compare(f"2. training step, T=10 (hand {lay})", beta, t, "ours", ref, 1.10)


def bench_compile(beta, reps):
    ham, patterns, queries, _ = problem(beta)
    fns = {
        "ours": lambda: lambda h, q: ours_retrieve(h, q),
        "hand": lambda: lambda p, q: hand_retrieve(p, q, beta, "KB"),
        "hand_solution": lambda: lambda p, q: hand_solution(p, q, beta),
    }
    args = {
        "ours": ((ham,), queries),
        "hand": ((patterns,), queries),
        "hand_solution": ((patterns,), queries),
    }
    warm = compile_times(fns, args, reps, cold=False)
    row("3. jit compile time of (1), new shapes", beta, warm["ours"], warm["hand"], 1.3)
    # The floor of the target: what a Solution reports, written by hand.
    name = "3. (hand-written Solution / hand loop)"
    row(name, beta, warm["hand_solution"], warm["hand"], None)
    name = "3. (ours / hand-written Solution)"
    row(name, beta, warm["ours"], warm["hand_solution"], None)
    del fns["hand_solution"]
    cold = compile_times(fns, args, reps, cold=True)
    row(
        "3. jit compile time of (1), caches cleared",
        beta,
        cold["ours"],
        cold["hand"],
        None,
    )


class _Counter:
    """Counts energy-gradient evaluations through a host callback (per sample)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1


class CountingMemory(hl.Synapse):
    memory: hl.DenseMemory
    counter: _Counter = eqx.field(static=True)

    def __call__(self, g):
        jax.debug.callback(self.counter, g.sum())
        return self.memory(g)


def bench_fixed_point(beta, reps):
    import diffrax

    ham, patterns, queries, _ = problem(beta)

    def run(ham, queries, dt, solver=None):
        def one(q):
            sol = hl.descend(
                ham, {"v": q}, steps=10_000, dt=dt, tol=TOL, trace=False, solver=solver
            )
            return sol.xs["v"]

        return jax.vmap(one)(queries)

    options = {
        "euler dt=0.1": dict(dt=0.1),
        "euler dt=tau=1 (CCCP)": dict(dt=1.0),
        "diffrax Tsit5, adaptive": dict(dt=0.1, solver=diffrax.Tsit5()),
    }
    # The documented best option has the target; the adaptive solver is reported for
    # information (vmapped per sample, each with its own step sizes and event check).
    targets = {"euler dt=tau=1 (CCCP)": 0.5, "diffrax Tsit5, adaptive": None}
    fns = {
        name: jax.jit(lambda h, q, o=o: run(h, q, **o)) for name, o in options.items()
    }
    # Converged: max |dE/dg| < tol on every query.
    for name, fn in fns.items():
        res = jnp.max(jnp.abs(jax.vmap(ham.dEdg)({"v": fn(ham, queries)})["v"]))
        assert res < 2 * TOL, f"{name} did not converge: {res}"
    # Evaluations, counted per sample through a callback (separate, untimed runs).
    evals = {}
    for name, o in options.items():
        counter = _Counter()
        counted = eqx.tree_at(
            lambda h: h.synapses["memory"],
            ham,
            CountingMemory(ham.synapses["memory"], counter),
        )
        block(jax.jit(lambda h, q, o=o: run(h, q, **o))(counted, queries))
        evals[name] = counter.calls / B
    t = interleaved(
        {name: (lambda fn=fn: fn(ham, queries)) for name, fn in fns.items()}, reps
    )
    base = "euler dt=0.1"
    for name, target in targets.items():
        compare(f"4. fixed point: {name} / euler: time", beta, t, name, base, target)
        row(
            f"4. fixed point: {name} / euler: evals",
            beta,
            evals[name],
            evals[base],
            target,
            unit="evals",
        )


def bench_hamux(beta, reps):
    try:
        import hamux
    except ImportError:
        print(
            "5. vs public hamux: skipped (hamux is not installed; `pip install "
            "hamux` into a separate environment to run it)"
        )
        return
    ham, patterns, queries, _ = problem(beta)

    class HamuxDenseMemory(eqx.Module):
        patterns: jax.Array
        beta: float = eqx.field(static=True)

        def __call__(self, g):
            return -jax.nn.logsumexp(self.beta * (self.patterns @ g)) / self.beta

    theirs = hamux.HAM(
        {"v": hamux.NeuronLayer(hamux.lagr_identity, (D,))},
        {"memory": HamuxDenseMemory(patterns, beta)},
        [(("v",), "memory")],
    ).vectorize()

    def hamux_retrieve(model, queries):
        def step(xs, _):
            gs = model.activations(xs)
            dEdg = model.dEdact(gs, xs)
            return jax.tree.map(lambda x, d: x - DT * d, xs, dEdg), None

        return lax.scan(step, {"v": queries}, length=T_RETRIEVE)[0]["v"]

    f_theirs = eqx.filter_jit(hamux_retrieve)
    f_ours = jax.jit(ours_retrieve)
    assert jnp.allclose(f_theirs(theirs, queries), f_ours(ham, queries)[0], atol=1e-4)
    f_hand = jax.jit(hand_retrieve, static_argnums=(2, 3))
    t = interleaved(
        {
            "ours": lambda: f_ours(ham, queries),
            "hamux": lambda: f_theirs(theirs, queries),
            "hand": lambda: f_hand(patterns, queries, beta, "KB"),
        },
        reps,
    )
    version = getattr(hamux, "__version__", "0.2.x")
    compare(f"5. retrieval vs hamux {version}", beta, t, "ours", "hamux", 1.0)
    compare(f"5. (hamux {version} / hand-written KB)", beta, t, "hamux", "hand", None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--only", type=int, nargs="*", help="benchmark numbers to run")
    args = parser.parse_args()
    reps = 5 if args.quick else 15
    print(
        f"hamux_lagr {hl.__version__}, jax {jax.__version__}, "
        f"{jax.devices()[0].platform}, dtype {jnp.zeros(()).dtype}; K={K} D={D} B={B}"
    )
    benches = {
        1: bench_retrieval,
        2: bench_training,
        3: bench_compile,
        4: bench_fixed_point,
        5: bench_hamux,
    }
    for number, bench in benches.items():
        if args.only and number not in args.only:
            continue
        for beta in (1.0, 10.0):
            bench(beta, reps if number != 4 else max(3, reps // 5))
    print()
    print("| benchmark | beta | ours | reference | ratio | target |")
    print("|---|---|---|---|---|---|")
    for name, beta, ours, ref, unit, ratio, target in ROWS:
        mark = "" if target is None or ratio <= target else " **missed**"
        goal = "(info)" if target is None else f"<= {target}"
        print(
            f"| {name} | {beta:g} | {ours:.2f} {unit} | {ref:.2f} {unit} | "
            f"{ratio:.3f}{mark} | {goal} |"
        )


if __name__ == "__main__":
    main()
