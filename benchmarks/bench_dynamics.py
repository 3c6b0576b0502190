"""Dynamics benchmarks: fixed points, implicit gradients and the Energy Transformer.

Runs are interleaved in one process; each row gives median times and the median of the
per-round ratios (see `bench_memory.py`, whose problem and timing helpers this reuses).

2. Time to a fixed point (max |dE/dg| < 1e-4), `hl.fixed_point` with its defaults
   (and `solver=hl.Anderson(3)`, for information):
   a. on the dense memory of `bench_memory.py` (K=1024, D=784, B=256, float32), against
      the concave-convex update `descend(dt=tau, tol=1e-4)` (target <= 1.0), at beta
      1 and 10 (and 30, for information); the energy-gradient evaluations are printed;
   b. on a 3-layer HAM like the classifier notebook's (a clamped 64-pixel image, 128
      ReLU hidden neurons, 10 softmax labels; B=256), against Euler steps of
      `dt=0.1` stopped with the same `tol` (target <= 0.25).
3. A training step through the dynamics (`value_and_grad` of a loss w.r.t. the
   parameters): `fixed_point` with its exact implicit gradients (the default
   `optimistix.ImplicitAdjoint()`; targets), and with the approximate
   `hl.JacobianFreeAdjoint()` and `hl.PhantomAdjoint(steps=5, damping=0.5)` (for
   information), against backprop through as many steps as the slowest sample needs
   to converge; time, and compiled temporary memory (implicit / backprop):
   a. the dense memory's reconstruction loss w.r.t. the patterns, against
      `descend(dt=tau)` (targets: beta 1 <= 1.5, beta 10 <= 0.8, memory at beta 10
      <= 0.5);
   b. the 3-layer HAM's cross-entropy w.r.t. all its parameters, against Euler
      `dt=0.1` (target <= 1.0).
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
from bench_memory import B, compare, interleaved, problem, row  # noqa: E402

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
        jax.vmap(
            lambda q: hl.fixed_point(ham, {"v": q}, tol=TOL, solver=hl.Anderson(3))
        )
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
    compare("2a. (hl.Anderson(3) / descend(dt=tau))", beta, t, "anderson", "cccp", None)


def classifier(batch=B, seed=0):
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
                ham, start(im), tol=TOL, clamp=clamp, solver=hl.Anderson(3)
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


ADJOINTS = {
    "implicit": None,  # the default, `optimistix.ImplicitAdjoint()`
    "jacobian-free": hl.JacobianFreeAdjoint(),
    "phantom": hl.PhantomAdjoint(steps=5, damping=0.5),
}


def cosine(a, b):
    a = jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(a)])
    b = jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(b)])
    return float(jnp.vdot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b)))


def fixed_point_states(adjoint, **kwargs):
    if adjoint is not None:
        kwargs["adjoint"] = adjoint
    return lambda h, x: hl.fixed_point(h, x, tol=TOL, **kwargs).xs


def compare_training(label, beta, fns, args, reps, steps):
    outs = {k: f(*args) for k, f in fns.items()}
    losses = {k: float(v[0]) for k, v in outs.items()}
    assert all(
        abs(v - losses["backprop"]) < 1e-2 * abs(losses["backprop"]) + 1e-6
        for v in losses.values()
    ), losses
    cosines = ", ".join(
        f"{k} {cosine(outs[k][1], outs['implicit'][1]):.4f}"
        for k in fns
        if k != "implicit"
    )
    print(
        f"   {label} beta={beta:g}: backprop through {steps} steps; gradient "
        f"cosine with the exact implicit one: {cosines}"
    )
    t = interleaved({k: (lambda f=f: f(*args)) for k, f in fns.items()}, reps)
    for name in ADJOINTS:
        target = TARGETS.get((label, beta, name))
        compare(
            f"3. {label}: {name} / backprop ({steps} steps)",
            beta,
            t,
            name,
            "backprop",
            target,
        )
    mem = {k: temp_mib(f, *args) for k, f in fns.items()}
    target = TARGETS.get((label, beta, "memory"))
    row(
        f"3. {label} (compiled temp memory)",
        beta,
        mem["implicit"],
        mem["backprop"],
        target,
        "MiB",
    )


# (training problem, beta, adjoint) -> target ratio against backprop
TARGETS = {
    ("dense memory", 1.0, "implicit"): 1.5,
    ("dense memory", 10.0, "implicit"): 0.8,
    ("dense memory", 10.0, "memory"): 0.5,
    ("3-layer HAM", 0.0, "implicit"): 1.0,
}


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

    def backprop(h, x):
        return hl.descend(h, x, steps=steps, dt=1.0, trace=False).xs

    retrieves = {k: fixed_point_states(a) for k, a in ADJOINTS.items()}
    retrieves["backprop"] = backprop
    fns = {
        name: jax.jit(jax.value_and_grad(lambda p, r=r: loss(p, r)))
        for name, r in retrieves.items()
    }
    compare_training("dense memory", beta, fns, (patterns,), reps, steps)


def bench_ham_training(reps):
    ham, images = classifier()
    labels = jax.random.randint(jax.random.key(1), (images.shape[0],), 0, 10)
    clamp = {"image": True}

    def start(image):
        xs = ham.init_states()
        xs["image"] = image
        return xs

    euler = jax.jit(
        jax.vmap(
            lambda im: hl.descend(
                ham, start(im), steps=10_000, dt=0.1, tol=TOL, clamp=clamp, trace=False
            )
        )
    )
    steps = int(jnp.max(euler(images).num_steps))
    params, static = eqx.partition(ham, eqx.is_inexact_array)

    def loss(params, retrieve):
        h = eqx.combine(params, static)
        xs = jax.vmap(lambda im: retrieve(h, start(im)))(images)
        beta = h.neurons["label"].lagrangian.beta
        logp = jax.nn.log_softmax(beta * xs["label"])
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], 1))

    def backprop(h, x):
        return hl.descend(h, x, steps=steps, dt=0.1, clamp=clamp, trace=False).xs

    retrieves = {k: fixed_point_states(a, clamp=clamp) for k, a in ADJOINTS.items()}
    retrieves["backprop"] = backprop
    fns = {
        name: jax.jit(jax.value_and_grad(lambda p, r=r: loss(p, r)))
        for name, r in retrieves.items()
    }
    compare_training("3-layer HAM", 0.0, fns, (params,), reps, steps)


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
        bench_ham_training(reps)
    if 4 in only:
        bench_energy_transformer(max(3, reps // 3))


if __name__ == "__main__":
    main()
