import functools as ft
import sys

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import dense_memory_ham, run_without_hook, tree_allclose

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
    clamped) and as a `jax.vmap` batch with per-sample masks (one sample free): one
    compilation."""
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
                jax.vmap(lambda x, m: hl.descend(ham, x, steps=40, dt=0.05, clamp=m))(
                    batch, PER_SAMPLE
                ),
            )
        return out

    return cases, run({name: (x0, batch) for name, (_, x0, batch) in cases.items()})


@pytest.mark.parametrize("name", [type(lagr).__name__ for lagr in EVERY_LAGRANGIAN])
def test_energy_never_rises(name, descents):
    cases, results = descents
    _, x0, batch = cases[name]
    sf, sh, sb = results[name]
    ef, xh, eh, xb, eb = sf.energies, sh.xs, sh.energies, sb.xs, sb.energies
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


def test_a_vmap_batch_equals_one_sample_runs_with_per_sample_masks(descents):
    cases, results = descents
    ham, _, batch = cases["LSoftmax"]
    batched = results["LSoftmax"][2]
    one = jax.jit(
        lambda x, m: hl.descend(ham, x, steps=40, dt=0.05, clamp=m),
        compiler_options=FAST_COMPILE,
    )
    for i in range(3):
        sample = {k: jnp.asarray(v[i]) for k, v in batch.items()}
        mask = {k: jnp.asarray(v[i]) for k, v in PER_SAMPLE.items()}
        expected = jax.tree.map(lambda v: v[i], batched)
        assert tree_allclose(one(sample, mask), expected, rtol=1e-12, atol=1e-12)


def test_a_batched_dict_or_mask_points_at_vmap(rng):
    ham = random_model(hl.LTanh(), rng)
    batch = {"a": np.zeros((2, 3, 4)), "b": np.zeros((2, 4))}
    hint = r"jax.vmap\(lambda x: hl.descend\(ham, x, steps=20, dt=0.1\)\)\(xs\)"
    with pytest.raises(ValueError, match=r"`xs\['a'\]` has shape \(2, 3, 4\).*" + hint):
        hl.descend(ham, batch, steps=3, dt=0.1)
    with pytest.raises(
        ValueError, match=r"`clamp\['b'\]` has shape \(2, 4\).*jax.vmap"
    ):
        hl.descend(
            ham, ham.init_states(), steps=3, dt=0.1, clamp={"b": np.ones((2, 4), bool)}
        )


def test_fixed_point_has_zero_gradient_on_free_neurons(rng):
    ham = random_model(hl.LTanh(beta=1.0), rng)
    x0 = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    mask = rng.random((3, 4)) < 0.5  # elementwise Lagrangian: any mask
    sol = eqx.filter_jit(hl.descend)(
        ham, x0, steps=2000, dt=0.2, clamp={"a": mask}, tol=1e-9
    )
    xs, energies = sol.xs, sol.energies
    assert sol.converged and sol.residual < 1e-9 and 0 < sol.num_steps < 2000
    dEdg = eqx.filter_jit(ham.dEdg)(xs)
    assert np.max(np.abs(np.asarray(dEdg["a"])[~mask])) < 1e-9
    assert np.max(np.abs(dEdg["b"])) < 1e-9
    assert np.max(np.abs(np.asarray(dEdg["a"])[mask])) > 1e-3  # held, not at rest
    assert_non_increasing(energies)
    # After the early stop the trace repeats the last energy.
    assert energies[-1] == energies[-2]


def test_one_euler_step_with_dt_tau_is_the_ramsauer_update(rng):
    patterns, q, beta = rng.standard_normal((6, 5)), rng.standard_normal(5), 1.7
    ham = dense_memory_ham(patterns, beta)
    sol = eqx.filter_jit(hl.descend)(ham, {"v": q}, steps=1, dt=1.0)
    xs, energies = sol.xs, sol.energies
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
    # update x <- -dE_syn/dg(x): the energy never rises, whatever the (convex)
    # Lagrangian, and the state heads for a fixed point. (These memories grow at most
    # linearly, so that the energy is bounded below.)
    patterns = rng.standard_normal((8, 6)) / np.sqrt(6)
    ham = hl.HAM(
        {"v": hl.NeuronLayer(hl.LIdentity(), (6,), tau=2.0)},
        {"memory": hl.DenseMemory(patterns, memory)},
        [(("v",), "memory")],
    )
    x0 = {"v": 2 * rng.standard_normal((4, 6))}

    def run(x):
        first = hl.descend(ham, x, steps=1, dt=2.0).xs
        sol = hl.descend(ham, x, steps=15, dt=2.0)
        xs, energies = sol.xs, sol.energies
        update = jax.grad(lambda g: ham.synapse_energies(g)["memory"])(x)
        return first, energies, {"v": -update["v"]}, ham.dEdg(x), ham.dEdg(xs)

    first, energies, cccp, start, end = jax.jit(jax.vmap(run))(x0)
    assert_non_increasing(energies)
    assert tree_allclose(first, cccp)  # one step is the CCCP update
    assert np.all(energies[:, -1] < energies[:, 0] - 1e-3)  # it descends...
    # ...towards a fixed point.
    assert np.max(np.abs(end["v"])) < 0.1 * np.max(np.abs(start["v"]))


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
    x1 = eqx.filter_jit(hl.descend)(one_layer, {"v": q}, steps=400, dt=0.1).xs
    sol = eqx.filter_jit(hl.descend)(
        two_layer, {"v": q, "h": np.zeros(4)}, steps=4000, dt=0.01
    )
    x2, e2 = sol.xs, sol.energies
    assert_non_increasing(e2)
    assert np.allclose(x1["v"], x2["v"], atol=1e-6)
    assert np.allclose(x2["h"], patterns @ x2["v"], atol=1e-6)  # hidden = similarities


def test_retrieval_of_corrupted_binary_patterns():
    rng = np.random.default_rng(0)
    patterns = rng.choice([-1.0, 1.0], size=(20, 100))
    flips = np.stack([rng.permutation(100) < 20 for _ in range(20)])  # 20% of bits
    queries = np.where(flips, -patterns, patterns)
    ham = dense_memory_ham(patterns, beta=0.1)
    sol = jax.jit(jax.vmap(lambda q: hl.descend(ham, {"v": q}, steps=60, dt=0.2)))(
        queries
    )
    xs, energies = sol.xs, sol.energies
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

    euler, ode, fixed, plain = run(x0)
    xe, xo, eo = euler.xs, ode.xs, ode.energies
    assert ode.converged and euler.converged
    assert eo.shape == (41,)
    # Adaptive steps descend the energy up to the solver's tolerance.
    assert_non_increasing(eo, slack=1e-7)
    assert eo[-1] == eo[-2]  # stopped early at the fixed point: the last is repeated
    assert tree_allclose(xo, xe, atol=1e-4)
    assert np.array_equal(xo["b"], x0["b"])
    # diffrax.Euler = our Euler scan, but for the residual: the scan's is that of the
    # state its last step started from (the final state's would cost one more
    # evaluation of the gradient), diffrax's that of the final state.
    assert tree_allclose(fixed.xs, plain.xs)
    assert tree_allclose(fixed.energies, plain.energies)
    assert fixed.num_steps == plain.num_steps and fixed.result == plain.result
    before_last = hl.descend(ham, x0, steps=2, dt=0.05).xs
    for sol, at in ((plain, before_last), (fixed, fixed.xs)):
        assert np.isclose(sol.residual, np.max(np.abs(ham.dEdg(at)["a"])), rtol=1e-12)


def test_options_and_shapes(rng):
    ham = random_model(hl.LTanh(), rng)
    x0 = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    x0 = {k: jnp.asarray(v) for k, v in x0.items()}
    sol = hl.descend(ham, x0, steps=0, dt=0.1)
    assert tree_allclose(sol.xs, x0) and sol.energies.shape == (1,)
    energies = jax.vmap(lambda x: hl.descend(ham, x, steps=0, dt=0.1))(
        {k: v[None] for k, v in x0.items()}
    ).energies
    assert energies.shape == (1, 1)

    @jax.jit
    def run(x0):
        with_trace = hl.descend(ham, x0, steps=1, dt=0.1)
        without = hl.descend(ham, x0, steps=1, dt=0.1, trace=False)
        return with_trace, without, ham.dEdg(x0)

    with_trace, without, dEdg = run(x0)
    x1, energies = with_trace.xs, with_trace.energies
    assert without.energies is None and energies.shape == (2,)
    assert tree_allclose(x1, without.xs)
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


def exploding_ham():
    """An exponential layer with strong positive feedback: the Euler state is
    non-finite from step 3 (dt = 0.1); the exact dynamics blow up before t = 0.1."""
    return hl.HAM(
        {"a": hl.NeuronLayer(hl.LExp(beta=1.0), (2,))},
        {"W": hl.LinearSynapse(50.0 * np.ones((2, 2)))},
        [(("a", "a"), "W")],
    )


def test_non_finite_states_are_reported_with_the_step():
    # An exponential layer with strong positive feedback overflows after a few steps.
    ham = exploding_ham()
    x0 = {"a": np.ones(2)}
    with pytest.raises(
        eqx.EquinoxRuntimeError, match=r"`descend`: A state .*non-finite"
    ):
        hl.descend(ham, x0, steps=50, dt=0.1)
    sol = hl.descend(ham, x0, steps=50, dt=0.1, throw=False)  # returned, and marked
    assert not np.all(np.isfinite(sol.xs["a"]))
    assert not sol.finite and not sol.converged
    assert sol.result == hl.RESULTS.nonfinite and sol.num_steps == 3
    with pytest.raises(Exception, match=r"non-finite"):
        jax.block_until_ready(
            jax.jit(lambda x: hl.descend(ham, x, steps=50, dt=0.1))(x0)
        )


def test_missing_diffrax_is_a_clear_import_error(monkeypatch, rng):
    ham = random_model(hl.LTanh(), rng)
    monkeypatch.setitem(sys.modules, "diffrax", None)  # `import diffrax` fails
    with pytest.raises(ImportError, match=r"hamux_lagr\[examples\]"):
        hl.descend(ham, ham.init_states(), steps=3, dt=0.1, solver=object())


@pytest.mark.parametrize(
    "options",
    [{}, {"tol": 1e-6}, {"solver": diffrax.Euler()}],
    ids=["euler", "euler-tol", "diffrax-euler"],
)
def test_a_non_finite_state_is_at_the_same_first_step_in_every_scheme(options):
    ham = exploding_ham()
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"non-finite"):
        hl.descend(ham, {"a": np.ones(2)}, steps=50, dt=0.1, **options)
    sol = hl.descend(ham, {"a": np.ones(2)}, steps=50, dt=0.1, throw=False, **options)
    assert not sol.finite and not sol.converged and sol.num_steps == 3


def test_an_adaptive_solver_that_cannot_go_on_is_reported_as_stopped():
    # Tsit5 follows the blow-up with ever smaller steps until `max_steps`.
    ham = exploding_ham()
    for tol in (None, 1e-6):
        options = dict(steps=5, dt=0.1, solver=diffrax.Tsit5(), tol=tol, max_steps=256)
        with pytest.raises(eqx.EquinoxRuntimeError, match=r"diffrax solver stopped"):
            hl.descend(ham, {"a": np.ones(2)}, **options)
        sol = hl.descend(ham, {"a": np.ones(2)}, throw=False, **options)
        assert sol.result == hl.RESULTS.solver_stopped
        assert sol.num_steps == 256 and not sol.converged and not sol.finite
        assert np.all(np.isfinite(sol.xs["a"]))  # the solver kept finite states


@pytest.mark.parametrize(
    "options",
    [{"steps": 0}, {"steps": 3}, {"steps": 3, "tol": 1e-6}, {"steps": 0, "tol": 1e-6}]
    + [
        {"steps": 3, "solver": diffrax.Euler()},
        {"steps": 3, "solver": diffrax.Tsit5()},
    ],
    ids=["steps0", "euler", "tol", "steps0-tol", "diffrax-euler", "tsit5"],
)
def test_a_non_finite_initial_state_is_step_0(options):
    ham = random_model(hl.LTanh(), np.random.default_rng(0))
    x0 = {"a": np.zeros((3, 4)), "b": np.array([0.0, np.nan, 0.0, 0.0])}
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"non-finite"):
        hl.descend(ham, x0, dt=0.1, max_steps=64, **options)
    sol = hl.descend(ham, x0, dt=0.1, max_steps=64, throw=False, **options)
    # A NaN in the gradient makes the residual infinite: never below a `tol`.
    assert not sol.finite and not sol.converged and sol.residual == np.inf
    assert sol.result == hl.RESULTS.nonfinite and sol.num_steps == 0


def test_a_non_finite_state_under_jit_and_vmap_raises_at_run_time():
    ham = exploding_ham()

    def run(x):
        return hl.descend(ham, {"a": x}, steps=50, dt=0.1)

    with pytest.raises(Exception, match=r"non-finite"):
        jax.block_until_ready(jax.jit(run)(jnp.ones(2)))
    # A batch with a bad sample raises; a finite batch raises nothing.
    starts = jnp.stack([jnp.full(2, -5.0), jnp.full(2, 5.0), jnp.ones(2)])
    with pytest.raises(Exception, match=r"non-finite"):
        jax.block_until_ready(jax.jit(jax.vmap(run))(starts))
    short = jax.vmap(lambda x: hl.descend(ham, {"a": x}, steps=5, dt=0.1))
    sol = jax.jit(short)(jnp.full((2, 2), -20.0))  # blows up at step 20 only
    assert np.all(np.isfinite(sol.xs["a"])) and np.all(sol.finite)
    # Without `throw`, each sample is marked, with its own first bad step.
    marked = jax.jit(
        jax.vmap(lambda x: hl.descend(ham, {"a": x}, steps=50, dt=0.1, throw=False))
    )(starts)
    assert marked.finite.tolist() == [False, False, False]
    assert marked.num_steps.tolist()[1] == 2 and marked.num_steps.tolist()[2] == 3
    marked = jax.jit(
        jax.vmap(lambda x: hl.descend(ham, {"a": x}, steps=2, dt=0.1, throw=False))
    )(starts)
    # From 1, the state is finite after 2 steps but its energy overflows: reported.
    assert marked.finite.tolist() == [True, False, False]


def test_a_bad_dt_raises_eagerly_and_under_jit(rng):
    ham = random_model(hl.LTanh(), rng)
    x0 = ham.init_states()
    for dt in (0.0, -1, float("nan"), float("inf"), np.float32(-0.1), jnp.array(-1.0)):
        with pytest.raises(ValueError, match=r"`dt` must be positive and finite"):
            hl.descend(ham, x0, steps=3, dt=dt)
    # A Python number is checked at once under `jax.jit` too; a traced dt at run time
    # (unchecked, the energy would climb).
    with pytest.raises(
        ValueError, match=r"`dt` must be positive and finite in `descend`, got -1.0"
    ):
        jax.jit(lambda x: hl.descend(ham, x, steps=2, dt=-1.0))(x0)
    run = jax.jit(lambda dt: hl.descend(ham, x0, steps=2, dt=dt))
    with pytest.raises(Exception, match=r"`dt` must be positive and finite"):
        jax.block_until_ready(run(-1.0))
    assert np.all(np.isfinite(run(0.1).energies))
    quiet = jax.jit(lambda dt: hl.descend(ham, x0, steps=2, dt=dt, throw=False))
    assert quiet(-1.0).result == hl.RESULTS.invalid_dt


class CountingSynapse(hl.Synapse):
    """A bias synapse that counts how often it is traced."""

    bias: jax.Array
    traces: list = eqx.field(static=True)

    def __call__(self, g):
        self.traces.append(None)
        return -jnp.sum(self.bias * g)


def test_a_new_dt_value_does_not_recompile():
    traces = []
    ham = hl.HAM(
        {"a": hl.NeuronLayer(hl.LTanh(), (3,))},
        {"s": CountingSynapse(jnp.ones(3), traces)},
        [(("a",), "s")],
    )
    x0 = ham.init_states()
    first = hl.descend(ham, x0, steps=2, dt=0.1)
    count = len(traces)
    assert count > 0
    for dt in (0.2, 0.3, jnp.asarray(0.4)):
        out = hl.descend(ham, x0, steps=2, dt=dt)
        assert not tree_allclose(out, first)
    assert len(traces) == count


def test_states_keep_their_dtype_whatever_the_dt():
    # A float64 dt (traced, under x64) steps float16/bfloat16/float32 states in their
    # own dtype, in the Euler scan, the `tol` loop and a diffrax solve alike.
    rng = np.random.default_rng(3)
    cases = {}
    for dtype in (jnp.float16, jnp.bfloat16, jnp.float32):
        ham = hl.HAM(
            {
                "a": hl.NeuronLayer(hl.LTanh(), (3,)),
                "b": hl.NeuronLayer(hl.LIdentity(), 2, tau=0.5),
            },
            {"W": hl.LinearSynapse(jnp.asarray(rng.standard_normal((3, 2)), dtype))},
            [(("a", "b"), "W")],
        )
        x0 = {"a": jnp.asarray(rng.standard_normal(3), dtype), "b": jnp.ones(2, dtype)}
        cases[np.dtype(dtype).name] = (ham, x0)

    @ft.partial(jax.jit, compiler_options=FAST_COMPILE)
    def run(dt):
        return {
            name: (
                hl.descend(ham, x0, steps=3, dt=dt),
                hl.descend(ham, x0, steps=3, dt=dt, tol=1e-3),
                hl.descend(ham, x0, steps=3, dt=dt, solver=diffrax.Tsit5()),
            )
            for name, (ham, x0) in cases.items()
        }

    out = run(jnp.asarray(0.1, jnp.float64))
    for name, results in out.items():
        for sol in results:
            xs, energies = sol.xs, sol.energies
            assert {v.dtype.name for v in xs.values()} == {name}
            assert energies.dtype.name == name and energies.shape == (4,)
            assert all(np.all(np.isfinite(v.astype(np.float32))) for v in xs.values())
        euler, with_tol, _ = results
        assert tree_allclose(euler.xs, with_tol.xs)


def test_solver_and_tol_from_a_fixed_point_record_finite_energies(rng):
    ham = random_model(hl.LTanh(), rng)
    zeros = ham.init_states()
    clamp_all = {"a": True, "b": True}
    rest = hl.descend(ham, zeros, steps=2000, dt=0.2, tol=1e-10).xs
    for start, clamp in ((rest, None), (zeros, clamp_all)):
        sol = hl.descend(
            ham,
            start,
            steps=5,
            dt=0.1,
            solver=diffrax.Tsit5(),
            tol=1e-4,
            clamp=clamp,
        )
        expected = eqx.filter_jit(ham.energy)(start)
        assert tree_allclose(sol.energies, jnp.full(6, expected))
        assert tree_allclose(sol.xs, start)
        assert sol.converged and sol.finite


def test_vmap_of_a_solver_over_an_empty_batch(rng):
    ham = random_model(hl.LTanh(), rng)
    empty = {"a": jnp.zeros((0, 3, 4)), "b": jnp.zeros((0, 4))}
    sol = jax.vmap(
        lambda x: hl.descend(ham, x, steps=4, dt=0.1, solver=diffrax.Tsit5(), tol=1e-3)
    )(empty)
    assert sol.xs["a"].shape == (0, 3, 4) and sol.energies.shape == (0, 5)
    assert sol.num_steps.shape == sol.residual.shape == sol.converged.shape == (0,)


def test_empty_layers_are_at_rest():
    # A layer with no neurons contributes energy 0 and residual 0: a HAM of empty
    # layers is at a fixed point from the start.
    ham = hl.HAM({"e": hl.NeuronLayer(hl.LSoftmax(), (0,))}, {}, [])
    for solver in (None, diffrax.Tsit5()):
        sol = hl.descend(
            ham, ham.init_states(), steps=3, dt=0.1, tol=1e-6, solver=solver
        )
        assert sol.xs["e"].shape == (0,)
        assert tree_allclose(sol.energies, jnp.zeros(4, jnp.float64))
        assert sol.residual == 0 and sol.converged


def test_numpy_integers_and_limits_for_steps_and_max_steps(rng):
    ham = random_model(hl.LTanh(), rng)
    x0 = ham.init_states()
    energies = hl.descend(ham, x0, steps=np.int64(2), dt=0.1).energies
    assert energies.shape == (3,)
    with pytest.raises(
        ValueError, match=r"`steps` must be an int in \[0, 2147483647\]"
    ):
        hl.descend(ham, x0, steps=2**31, dt=0.1)
    energies = hl.descend(
        ham, x0, steps=2, dt=0.1, solver=diffrax.Tsit5(), max_steps=np.int32(64)
    ).energies
    assert energies.shape == (3,)
    with pytest.raises(ValueError, match=r"`max_steps` must be an int in \[1,"):
        hl.descend(ham, x0, steps=2, dt=0.1, solver=diffrax.Tsit5(), max_steps=0)
    with pytest.raises(ValueError, match=r"`max_steps` must be an int with a diffrax"):
        hl.descend(ham, x0, steps=2, dt=0.1, solver=diffrax.Tsit5(), max_steps=None)
    with pytest.raises(TypeError, match=r"`stepsize_controller` must be a diffrax"):
        hl.descend(
            ham, x0, steps=2, dt=0.1, solver=diffrax.Tsit5(), stepsize_controller=1e-3
        )
    pid = diffrax.PIDController(rtol=1e-3, atol=1e-3)
    with pytest.raises(
        ValueError, match=r"needs an adaptive solver, but `solver` is Euler"
    ):
        hl.descend(
            ham, x0, steps=2, dt=0.1, solver=diffrax.Euler(), stepsize_controller=pid
        )
    with pytest.raises(ValueError, match=r"`stepsize_controller` is only used with"):
        hl.descend(ham, x0, steps=2, dt=0.1, stepsize_controller=pid)
    with pytest.raises(TypeError, match=r"`xs\['b'\]` must be real"):
        hl.descend(ham, {**x0, "b": jnp.zeros(4, jnp.complex64)}, steps=2, dt=0.1)


def test_wrongly_typed_arguments_get_our_messages():
    # Without the jaxtyping hook (which rejects these first in the test suite).
    out = run_without_hook(
        """
        import jax.numpy as jnp
        import hamux_lagr as hl

        ham = hl.HAM({"a": hl.NeuronLayer(hl.LIdentity(), (2,))}, {}, [])
        x0 = ham.init_states()
        cases = [
            dict(tol="1e-3"),
            dict(steps="3"),
            dict(steps=2.0),
            dict(dt="0.1"),
            dict(dt=None),
            dict(dt=1j),
            dict(dt=jnp.ones(2)),
            dict(xs={"a": "0"}),
            dict(xs={"a": None}),
            dict(ham="ham"),
            dict(clamp=[True]),
        ]
        for case in cases:
            kwargs = dict(ham=ham, xs=x0, steps=3, dt=0.1)
            kwargs.update(case)
            try:
                hl.descend(kwargs.pop("ham"), kwargs.pop("xs"), **kwargs)
                print("no error")
            except (TypeError, ValueError) as e:
                print(f"{type(e).__name__}: {e}")
        """
    )
    lines = out.splitlines()
    starts = [
        "TypeError: `tol` must be a Python number",
        "TypeError: `steps` must be a Python int",
        "TypeError: `steps` must be a Python int",
        "TypeError: `dt` must be a positive number",
        "TypeError: `dt` must be a positive number",
        "TypeError: `dt` must be real",
        "TypeError: `dt` must be a positive real scalar",
        "TypeError: `xs['a']` must be array-like",
        "TypeError: `xs['a']` must be array-like",
        "TypeError: `ham` must be a `HAM`",
        "TypeError: `clamp` must be a dict",
    ]
    assert len(lines) == len(starts), out
    for line, start in zip(lines, starts):
        assert line.startswith(start), (line, start)
