import functools as ft
import sys

import diffrax
import equinox as eqx
import jax
import numpy as np
import pytest
from conftest import tree_allclose

import hamux_lagr as hl


EVERY_LAGRANGIAN = [
    hl.LIdentity(),
    hl.LRelu(),
    hl.LRepu(n=3.0),
    hl.LExp(beta=0.5),
    hl.LRexp(beta=0.5),
    hl.LTanh(beta=2.0),
    hl.LSigmoid(beta=2.0, scale=1.5),
    hl.LSoftmax(beta=2.0),
    hl.LSoftmaxUnstable(beta=2.0),
    hl.LGhostmax(beta=2.0),
    hl.LLayerNorm(gamma=1.5, delta=np.array([0.1, -0.2, 0.0, 0.3])),
    hl.LSphericalNorm(gamma=1.5, delta=0.1),
]


def assert_non_increasing(energies, slack=1e-12):
    energies = np.asarray(energies)
    rises = np.diff(energies, axis=-1)
    slack = slack * np.maximum(1.0, np.abs(energies[..., :-1]))
    assert np.all(np.isfinite(energies))
    assert np.all(rises <= slack), f"energy rose by up to {rises.max()}"


def random_model(lagrangian, rng):
    """Two layers with the same Lagrangian; 'a' is token-shaped (3, 4), so that the
    softmax/norm Lagrangians couple the neurons of each row."""
    neurons = {
        "a": hl.NeuronLayer(lagrangian, (3, 4)),
        "b": hl.NeuronLayer(lagrangian, (4,), tau=0.5),
    }
    synapses = {
        "W": hl.LinearSynapse(0.3 * rng.standard_normal((12, 4))),
        "bias": hl.BiasSynapse(0.3 * rng.standard_normal((3, 4))),
    }
    return hl.HAM(neurons, synapses, [(("a", "b"), "W"), (("a",), "bias")])


# Hold whole rows of "a" (constant along the axis the softmax/norms couple).
ROWS = np.broadcast_to(np.array([True, False, True])[:, None], (3, 4))
# Per-sample masks: sample 0 is free, 1 holds rows of "a", 2 the other rows and "b".
PER_SAMPLE = {
    "a": np.stack([np.zeros((3, 4), bool), ROWS, ~ROWS]),
    "b": np.array([False, False, True])[:, None].repeat(4, axis=1),
}
# XLA's backend optimisations cost more compile time than these tiny models run for.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@pytest.fixture(scope="module")
def descents():
    """Every Lagrangian's random model, descended one sample at a time (free, and
    clamped) and as a batch (per-sample masks, one sample free): one compilation."""
    rng = np.random.default_rng(42)
    cases = {}
    for lagrangian in EVERY_LAGRANGIAN:
        ham = random_model(lagrangian, rng)
        x0 = {"a": 0.5 * rng.standard_normal((3, 4)), "b": 0.5 * rng.standard_normal(4)}
        batch = {k: 0.5 * rng.standard_normal((3, *v.shape)) for k, v in x0.items()}
        cases[type(lagrangian).__name__] = (ham, x0, batch)

    @ft.partial(jax.jit, compiler_options=FAST_COMPILE)
    def run(states):
        out = {}
        for name, (x0, batch) in states.items():
            ham = cases[name][0]
            out[name] = (
                hl.descend(ham, x0, steps=40, dt=0.05),
                hl.descend(ham, x0, steps=40, dt=0.05, clamp={"a": ROWS, "b": True}),
                hl.descend(ham, batch, steps=40, dt=0.05, clamp=PER_SAMPLE),
            )
        return out

    return cases, run({name: (x0, batch) for name, (_, x0, batch) in cases.items()})


@pytest.mark.parametrize("name", [type(lagr).__name__ for lagr in EVERY_LAGRANGIAN])
def test_energy_never_rises(name, descents):
    cases, results = descents
    _, x0, batch = cases[name]
    (_, ef), (xh, eh), (xb, eb) = results[name]
    assert ef.shape == eh.shape == (41,) and eb.shape == (3, 41)
    for energies in (ef, eh, eb):
        assert_non_increasing(energies)
    assert ef[-1] < ef[0] and eb[0, -1] < eb[0, 0]  # free states do descend
    # Clamped neurons do not move; free ones do.
    assert np.array_equal(np.asarray(xh["a"])[ROWS], x0["a"][ROWS])
    assert np.array_equal(xh["b"], x0["b"])
    assert not np.allclose(np.asarray(xh["a"])[~ROWS], x0["a"][~ROWS])
    for layer, mask in PER_SAMPLE.items():
        moved = np.asarray(xb[layer])
        assert np.array_equal(moved[mask], batch[layer][mask])
        assert not np.allclose(moved[~mask], batch[layer][~mask])


def test_a_batch_is_the_vmap_of_one_sample(descents):
    cases, results = descents
    ham, _, batch = cases["LSoftmax"]
    one = jax.jit(
        lambda x: hl.descend(ham, x, steps=40, dt=0.05), compiler_options=FAST_COMPILE
    )({k: v[0] for k, v in batch.items()})
    xb, eb = results["LSoftmax"][2]
    assert tree_allclose(one, ({k: v[0] for k, v in xb.items()}, eb[0]))


def test_fixed_point_has_zero_gradient_on_free_neurons(rng):
    ham = random_model(hl.LTanh(beta=1.0), rng)
    x0 = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    mask = rng.random((3, 4)) < 0.5  # elementwise Lagrangian: any mask
    xs, energies = eqx.filter_jit(hl.descend)(
        ham, x0, steps=2000, dt=0.2, clamp={"a": mask}, tol=1e-9
    )
    dEdg = eqx.filter_jit(ham.dEdg)(xs)
    assert np.max(np.abs(np.asarray(dEdg["a"])[~mask])) < 1e-9
    assert np.max(np.abs(dEdg["b"])) < 1e-9
    assert np.max(np.abs(np.asarray(dEdg["a"])[mask])) > 1e-3  # held, not at rest
    assert_non_increasing(energies)
    # After the early stop the trace repeats the last energy.
    assert energies[-1] == energies[-2]


def dense_memory_ham(patterns, beta):
    return hl.HAM(
        {"v": hl.NeuronLayer(hl.LIdentity(), (patterns.shape[1],))},
        {"memory": hl.DenseMemory(patterns, hl.LSoftmax(beta))},
        [(("v",), "memory")],
    )


def test_one_euler_step_with_dt_tau_is_the_ramsauer_update(rng):
    patterns, q, beta = rng.standard_normal((6, 5)), rng.standard_normal(5), 1.7
    ham = dense_memory_ham(patterns, beta)
    xs, energies = eqx.filter_jit(hl.descend)(ham, {"v": q}, steps=1, dt=1.0)
    z = beta * patterns @ q
    ramsauer = patterns.T @ (np.exp(z - z.max()) / np.exp(z - z.max()).sum())
    assert np.allclose(xs["v"], ramsauer)
    assert energies[1] <= energies[0]


@pytest.mark.parametrize(
    "memory",
    [
        hl.LSoftmax(beta=0.5),
        hl.LSoftmax(beta=20.0),
        hl.LRepu(n=1.5),
        hl.LTanh(beta=3.0),
    ],
    ids=["softmax-0.5", "softmax-20", "repu-1.5", "tanh"],
)
def test_dt_tau_is_a_concave_convex_descent(memory, rng):
    # For a one-layer memory on an identity layer, Euler with dt = tau is the CCCP
    # update: the energy never rises, whatever the (convex) Lagrangian. (These memories
    # grow at most linearly, so that the energy is bounded below.)
    patterns = rng.standard_normal((8, 6)) / np.sqrt(6)
    ham = hl.HAM(
        {"v": hl.NeuronLayer(hl.LIdentity(), (6,), tau=2.0)},
        {"memory": hl.DenseMemory(patterns, memory)},
        [(("v",), "memory")],
    )
    x0 = {"v": 2 * rng.standard_normal((4, 6))}
    xs, energies = eqx.filter_jit(hl.descend)(ham, x0, steps=15, dt=2.0)
    assert_non_increasing(energies)


def test_two_layer_ham_and_dense_memory_share_the_fixed_point(rng):
    patterns = rng.standard_normal((4, 6)) / np.sqrt(6)
    q = patterns[1] + 0.3 * rng.standard_normal(6)
    beta = 3.0
    one_layer = dense_memory_ham(patterns, beta)
    two_layer = hl.HAM(
        {
            "v": hl.NeuronLayer(hl.LIdentity(), (6,)),
            "h": hl.NeuronLayer(hl.LSoftmax(beta), (4,), tau=0.05),
        },
        {"W": hl.LinearSynapse(patterns.T)},
        [(("v", "h"), "W")],
    )
    x1, _ = eqx.filter_jit(hl.descend)(one_layer, {"v": q}, steps=400, dt=0.1)
    x2, e2 = eqx.filter_jit(hl.descend)(
        two_layer, {"v": q, "h": np.zeros(4)}, steps=4000, dt=0.01
    )
    assert_non_increasing(e2)
    assert np.allclose(x1["v"], x2["v"], atol=1e-6)
    assert np.allclose(x2["h"], patterns @ x2["v"], atol=1e-6)  # hidden = similarities


def test_retrieval_of_corrupted_binary_patterns():
    rng = np.random.default_rng(0)
    patterns = rng.choice([-1.0, 1.0], size=(20, 100))
    flips = np.stack([rng.permutation(100) < 20 for _ in range(20)])  # 20% of bits
    queries = np.where(flips, -patterns, patterns)
    ham = dense_memory_ham(patterns, beta=0.1)
    xs, energies = eqx.filter_jit(hl.descend)(ham, {"v": queries}, steps=60, dt=0.2)
    assert_non_increasing(energies)
    assert np.array_equal(np.sign(xs["v"]), patterns)


def test_adaptive_ode_solver(rng):
    ham = random_model(hl.LSigmoid(beta=1.0), rng)
    x0 = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    clamp = {"b": True}

    @ft.partial(jax.jit, compiler_options=FAST_COMPILE)
    def run(x0):
        euler = hl.descend(ham, x0, steps=800, dt=0.05, tol=1e-10, clamp=clamp)
        # An adaptive solver reaches a fixed point to about its own tolerance (here
        # the default rtol=1e-4, atol=1e-6): `tol` must not ask for more.
        ode = hl.descend(
            ham, x0, steps=40, dt=5.0, solver=diffrax.Tsit5(), tol=1e-4, clamp=clamp
        )
        fixed = hl.descend(ham, x0, steps=3, dt=0.05, solver=diffrax.Euler())
        plain = hl.descend(ham, x0, steps=3, dt=0.05)
        return euler, ode, fixed, plain

    (xe, _), (xo, eo), fixed, plain = run(x0)
    assert eo.shape == (41,)
    # Adaptive steps descend the energy up to the solver's tolerance.
    assert_non_increasing(eo, slack=1e-7)
    assert eo[-1] == eo[-2]  # stopped early at the fixed point: the last is repeated
    assert tree_allclose(xo, xe, atol=1e-4)
    assert np.array_equal(xo["b"], x0["b"])
    assert tree_allclose(fixed, plain)  # diffrax.Euler = our Euler scan


def test_options_and_shapes(rng):
    ham = random_model(hl.LTanh(), rng)
    x0 = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    xs, energies = hl.descend(ham, x0, steps=0, dt=0.1)
    assert tree_allclose(xs, x0) and energies.shape == (1,)
    _, energies = hl.descend(ham, {k: v[None] for k, v in x0.items()}, steps=0, dt=0.1)
    assert energies.shape == (1, 1)

    @jax.jit
    def run(x0):
        with_trace = hl.descend(ham, x0, steps=1, dt=0.1)
        without = hl.descend(ham, x0, steps=1, dt=0.1, trace=False)
        return with_trace, without, ham.dEdg(x0)

    (x1, energies), (x1b, none), dEdg = run(x0)
    assert none is None and tree_allclose(x1, x1b) and energies.shape == (2,)
    # One step moves each layer by dt / tau * dE/dg (tau = 0.5 for "b").
    assert np.allclose(x1["a"], x0["a"] - 0.1 * dEdg["a"])
    assert np.allclose(x1["b"], x0["b"] - 0.2 * dEdg["b"])


def test_bad_arguments(rng):
    ham = random_model(hl.LTanh(), rng)
    x0 = ham.init_states()
    with pytest.raises(ValueError, match="`steps`"):
        hl.descend(ham, x0, steps=-1, dt=0.1)
    with pytest.raises(ValueError, match="`dt`"):
        hl.descend(ham, x0, steps=3, dt=0.0)
    with pytest.raises(ValueError, match="`dt`"):
        hl.descend(ham, x0, steps=3, dt=-1)
    with pytest.raises(ValueError, match=r"`clamp\['a'\]` has shape \(4,\)"):
        hl.descend(ham, x0, steps=3, dt=0.1, clamp={"a": np.ones(4, bool)})
    with pytest.raises(ValueError, match="unknown layer 'c'"):
        hl.descend(ham, x0, steps=3, dt=0.1, clamp={"c": True})
    with pytest.raises(TypeError, match="boolean"):
        hl.descend(ham, x0, steps=3, dt=0.1, clamp={"a": np.ones((3, 4))})
    with pytest.raises(ValueError, match="`tol`"):
        hl.descend(ham, x0, steps=3, dt=0.1, tol=0.0)
    with pytest.raises(TypeError, match="solver"):
        hl.descend(ham, x0, steps=3, dt=0.1, solver="rk4")
    with pytest.raises(ValueError, match="layer 'b' has shape"):
        hl.descend(ham, {"a": x0["a"], "b": np.zeros(5)}, steps=3, dt=0.1)


def test_non_finite_states_are_reported_with_the_step():
    # An exponential layer with strong positive feedback overflows after a few steps.
    ham = hl.HAM(
        {"a": hl.NeuronLayer(hl.LExp(beta=1.0), (2,))},
        {"W": hl.LinearSynapse(50.0 * np.ones((2, 2)))},
        [(("a", "a"), "W")],
    )
    x0 = {"a": np.ones(2)}
    with pytest.raises(ValueError, match=r"non-finite state .* at step \d+"):
        hl.descend(ham, x0, steps=50, dt=0.1, check_finite=True)
    xs, _ = hl.descend(ham, x0, steps=50, dt=0.1)  # unchecked: silently non-finite
    assert not np.all(np.isfinite(xs["a"]))
    with pytest.raises(Exception, match=r"non-finite state .* at step \d+"):
        jax.block_until_ready(
            jax.jit(lambda x: hl.descend(ham, x, steps=50, dt=0.1, check_finite=True))(
                x0
            )
        )


def test_missing_diffrax_is_a_clear_import_error(monkeypatch, rng):
    ham = random_model(hl.LTanh(), rng)
    monkeypatch.setitem(sys.modules, "diffrax", None)  # `import diffrax` fails
    with pytest.raises(ImportError, match=r"hamux_lagr\[examples\]"):
        hl.descend(ham, ham.init_states(), steps=3, dt=0.1, solver=object())
