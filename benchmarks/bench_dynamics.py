"""Dynamics benchmarks: fixed points, implicit gradients and the Energy Transformer.

Runs are interleaved in one process; each row gives median times and the median of the
per-round ratios (see `bench_memory.py`, whose problem and timing helpers this reuses).

2. Time to a fixed point (max |dE/dg| < 1e-4), `hl.fixed_point` with its defaults
   (and `method="anderson"`, for information):
   a. on the dense memory of `bench_memory.py` (K=1024, D=784, B=256, float32), against
      the concave-convex update `descend(dt=tau, tol=1e-4)` (target <= 1.0), at beta
      1 and 10 (and 30, for information); the energy-gradient evaluations are printed;
   b. on a 3-layer HAM like the classifier notebook's (a clamped 64-pixel image, 128
      ReLU hidden neurons, 10 softmax labels; B=256), against Euler steps of
      `dt=0.1` stopped with the same `tol` (target <= 0.25).
3. A training step through the dynamics (`value_and_grad` of a reconstruction loss
   w.r.t. the patterns): `fixed_point` with implicit gradients against backprop through
   `descend(dt=tau)` with as many steps as the slowest query needs to converge: time
   and compiled temporary memory, both ratios (for information).
4. The Energy Transformer at its reference configuration (197 tokens of 768, 12 heads
   of 64, 3072 ReLU memories, float32), 12 steps of 0.1: `descend` on a `leak=False`
   layer-norm layer against the reference code's own jitted loop,
   `x - alpha * grad(E)(LayerNorm(x))` written with `jax.value_and_grad` (target
   <= 1.0), returning the whole `Solution` and only its states.

Run with `python benchmarks/bench_dynamics.py` (`--quick` for fewer repetitions,
`--only 2 4` for some of them).
"""

import argparse
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp


sys.path.insert(0, str(Path(__file__).parent))
from bench_memory import compare, interleaved, problem, row  # noqa: E402

import hamux_lagr as hl  # noqa: E402


TOL = 1e-4


def steps_of(sol):
    return (
        f"{int(jnp.max(sol.num_steps))} max / {float(jnp.mean(sol.num_steps)):.1f} mean"
    )


# ----------------------------------------------------------------------------------
# 2. time to a fixed point
# ----------------------------------------------------------------------------------


def bench_memory_fixed_point(beta, reps):
    ham, _, queries, _ = problem(beta)
    fixed = jax.jit(jax.vmap(lambda q: hl.fixed_point(ham, {"v": q}, tol=TOL)))
    anderson = jax.jit(
        jax.vmap(lambda q: hl.fixed_point(ham, {"v": q}, tol=TOL, method="anderson"))
    )
    cccp = jax.jit(
        jax.vmap(
            lambda q: hl.descend(
                ham, {"v": q}, steps=1000, dt=1.0, tol=TOL, trace=False
            )
        )
    )
    sols = {
        "fixed": fixed(queries),
        "anderson": anderson(queries),
        "cccp": cccp(queries),
    }
    for name, sol in sols.items():
        assert bool(jnp.all(sol.converged)), name
    far = jnp.max(jnp.abs(sols["fixed"].xs["v"] - sols["cccp"].xs["v"]))
    assert far < 1e-2, f"fixed_point and the CCCP descent differ by {far}"
    print(
        f"   beta={beta:g} evaluations of dE/dg: fixed_point {steps_of(sols['fixed'])}"
        f", anderson {steps_of(sols['anderson'])}, descend(dt=tau, tol) "
        f"{steps_of(sols['cccp'])} steps (+1 evaluation)"
    )
    t = interleaved(
        {
            "fixed": lambda: fixed(queries),
            "anderson": lambda: anderson(queries),
            "cccp": lambda: cccp(queries),
        },
        reps,
    )
    target = 1.0 if beta in (1.0, 10.0) else None
    compare(
        "2a. dense memory: fixed_point / descend(dt=tau)",
        beta,
        t,
        "fixed",
        "cccp",
        target,
    )
    compare(
        "2a. (method='anderson' / descend(dt=tau))", beta, t, "anderson", "cccp", None
    )


def classifier(batch=256, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    ham = hl.HAM(
        {
            "image": hl.NeuronLayer(hl.LIdentity(), (64,)),
            "hidden": hl.NeuronLayer(hl.LRelu(), (128,)),
            "label": hl.NeuronLayer(hl.LSoftmax(beta=1.0), (10,)),
        },
        {
            "W1": hl.LinearSynapse.random(64, 128, key=k1, use_bias=True),
            "W2": hl.LinearSynapse.random(128, 10, key=k2, use_bias=True),
        },
        [(("image", "hidden"), "W1"), (("hidden", "label"), "W2")],
    )
    images = jax.random.uniform(k3, (batch, 64))
    return ham, images


def bench_ham_fixed_point(reps):
    ham, images = classifier()
    clamp = {"image": True}

    def start(image):
        xs = ham.init_states()
        xs["image"] = image
        return xs

    fixed = jax.jit(
        jax.vmap(lambda im: hl.fixed_point(ham, start(im), tol=TOL, clamp=clamp))
    )
    anderson = jax.jit(
        jax.vmap(
            lambda im: hl.fixed_point(
                ham, start(im), tol=TOL, clamp=clamp, method="anderson"
            )
        )
    )
    euler = jax.jit(
        jax.vmap(
            lambda im: hl.descend(
                ham, start(im), steps=10_000, dt=0.1, tol=TOL, clamp=clamp, trace=False
            )
        )
    )
    a, b, c = fixed(images), euler(images), anderson(images)
    assert bool(jnp.all(a.converged)) and bool(jnp.all(b.converged))
    far = jnp.max(jnp.abs(a.xs["label"] - b.xs["label"]))
    assert far < 1e-2, f"fixed_point and Euler differ by {far}"
    print(
        f"   evaluations of dE/dg: fixed_point {steps_of(a)}, anderson "
        f"{steps_of(c)}, Euler dt=0.1 "
        f"{steps_of(b)} steps (+1 evaluation)"
    )
    t = interleaved(
        {"fixed": lambda: fixed(images), "euler": lambda: euler(images)}, reps
    )
    compare(
        "2b. 3-layer HAM: fixed_point / Euler dt=0.1", 0.0, t, "fixed", "euler", 0.25
    )


# ----------------------------------------------------------------------------------
# 3. training through the dynamics
# ----------------------------------------------------------------------------------


def temp_mib(fn, *args):
    analysis = fn.lower(*args).compile().memory_analysis()
    return analysis.temp_size_in_bytes / 2**20


def bench_training(beta, reps):
    ham, patterns, queries, clean = problem(beta)
    cccp = jax.jit(
        jax.vmap(
            lambda q: hl.descend(
                ham, {"v": q}, steps=1000, dt=1.0, tol=TOL, trace=False
            )
        )
    )
    steps = int(jnp.max(cccp(queries).num_steps))

    def loss(patterns, retrieve):
        h = eqx.tree_at(lambda h: h.synapses["memory"].patterns, ham, patterns)
        xs = jax.vmap(lambda q: retrieve(h, {"v": q}))(queries)
        return jnp.mean((xs["v"] - clean) ** 2)

    def implicit(h, x):
        return hl.fixed_point(h, x, tol=TOL).xs

    def backprop(h, x):
        return hl.descend(h, x, steps=steps, dt=1.0, trace=False).xs

    fns = {
        name: jax.jit(jax.value_and_grad(lambda p, r=r: loss(p, r)))
        for name, r in (("implicit", implicit), ("backprop", backprop))
    }
    (l1, g1), (l2, g2) = fns["implicit"](patterns), fns["backprop"](patterns)
    assert jnp.allclose(l1, l2, rtol=1e-2), "losses differ"
    cos = jnp.sum(g1 * g2) / (jnp.linalg.norm(g1) * jnp.linalg.norm(g2))
    print(
        f"   beta={beta:g}: backprop through {steps} steps; gradient cosine {cos:.4f}"
    )
    t = interleaved({k: (lambda f=f: f(patterns)) for k, f in fns.items()}, reps)
    name = f"3. training step: implicit / backprop ({steps} steps)"
    compare(name, beta, t, "implicit", "backprop", None)
    mem = {k: temp_mib(f, patterns) for k, f in fns.items()}
    row(
        "3. (compiled temp memory)", beta, mem["implicit"], mem["backprop"], None, "MiB"
    )


# ----------------------------------------------------------------------------------
# 4. the Energy Transformer
# ----------------------------------------------------------------------------------

N, D, HEADS, HEAD_DIM, K = 197, 768, 12, 64, 3072
ET_STEPS, ALPHA = 12, 0.1


def layer_norm(x, eps=1e-5):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mean) ** 2, axis=-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps)


def bench_energy_transformer(reps):
    k_att, k_mem, k_x = jax.random.split(jax.random.key(0), 3)
    attention = hl.AttentionSynapse.random(D, HEADS, HEAD_DIM, key=k_att)
    patterns = jax.random.normal(k_mem, (K, D)) / D**0.5
    x0 = jax.random.normal(k_x, (N, D))
    ham = hl.HAM(
        {"tokens": hl.NeuronLayer(hl.LLayerNorm(), (N, D), leak=False)},
        {"attention": attention, "hopfield": hl.DenseMemory(patterns, hl.LRelu())},
        [(("tokens",), "attention"), (("tokens",), "hopfield")],
    )
    Wq, Wk, beta = attention.Wq, attention.Wk, attention.beta

    def energy(g):
        q = jnp.einsum("hyd,nd->hny", Wq, g)
        k = jnp.einsum("hyd,md->hmy", Wk, g)
        scores = jnp.einsum("hny,hmy->hnm", q, k)
        att = -jnp.sum(jax.nn.logsumexp(beta * scores, axis=-1)) / beta
        return att - 0.5 * jnp.sum(jax.nn.relu(g @ patterns.T) ** 2)

    @jax.jit
    def reference(x):
        def step(x, _):
            e, grad = jax.value_and_grad(energy)(layer_norm(x))
            return x - ALPHA * grad, e

        return jax.lax.scan(step, x, length=ET_STEPS)

    solution = jax.jit(
        lambda x: hl.descend(ham, {"tokens": x}, steps=ET_STEPS, dt=ALPHA)
    )
    states = jax.jit(
        lambda x: hl.descend(ham, {"tokens": x}, steps=ET_STEPS, dt=ALPHA).xs
    )
    ref, sol = reference(x0)[0], solution(x0)
    err = jnp.max(jnp.abs(sol.xs["tokens"] - ref)) / jnp.max(jnp.abs(ref))
    assert err < 1e-5, f"ours and the reference differ by {err} (relative)"
    print(f"   12 steps: relative difference to the reference {float(err):.1e}")
    t = interleaved(
        {
            "solution": lambda: solution(x0),
            "states": lambda: states(x0),
            "reference": lambda: reference(x0),
        },
        reps,
    )
    compare(
        "4. Energy Transformer: Solution / reference",
        0.0,
        t,
        "solution",
        "reference",
        1.0,
    )
    compare("4. (only .xs / reference)", 0.0, t, "states", "reference", 1.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--only", type=int, nargs="*", help="benchmarks to run (2-4)")
    args = parser.parse_args()
    reps = 5 if args.quick else 15
    only = set(args.only or (2, 3, 4))
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; {reps} rounds per row"
    )
    if 2 in only:
        for beta in (1.0, 10.0, 30.0):
            bench_memory_fixed_point(beta, reps)
        bench_ham_fixed_point(reps)
    if 3 in only:
        for beta in (1.0, 10.0):
            bench_training(beta, reps)
    if 4 in only:
        bench_energy_transformer(max(3, reps // 3))


if __name__ == "__main__":
    main()
