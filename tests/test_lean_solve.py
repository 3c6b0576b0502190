"""The lean solve: checks at the entry, results as codes, no host callback in a loop.

The solves check the model's parameters once, at their entry (one reduction on the
device), and report what went wrong as a `hamux_lagr.RESULTS` code; `throw=True` is one
check on the way out. So a `throw=False` retrieval compiles no host callback at all
and exports with a plain `jax.export`, and no buffer grows with `steps` unless the
energy trace is asked for.
"""

import functools as ft

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import dense_memory_ham, random_patterns, run_without_hook

import hamux_lagr as hl
from hamux_lagr._clamp import residual
from hamux_lagr._misc import all_finite


_CALLBACKS = ("pure_callback", "io_callback", "debug_callback")
_LOOPS = ("while", "scan")


def _equations(jaxpr, inside_loop=False):
    """Every equation of a jaxpr and its sub-jaxprs, with whether it is inside a loop
    body."""
    for eqn in jaxpr.eqns:
        yield eqn, inside_loop
        loop = inside_loop or eqn.primitive.name in _LOOPS
        for param in eqn.params.values():
            subs = param if isinstance(param, (tuple, list)) else (param,)
            for sub in subs:
                inner = getattr(sub, "jaxpr", sub)
                if isinstance(inner, jax.extend.core.Jaxpr):
                    yield from _equations(inner, loop)


def _callbacks(fn, *args):
    """The host callbacks in the jaxpr of `fn(*args)`, as (primitive, in a loop)."""
    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    return [
        (eqn.primitive.name, loop)
        for eqn, loop in _equations(jaxpr)
        if eqn.primitive.name in _CALLBACKS
    ]


def _two_layer_model(dtype=jnp.float32, chunk_size=None):
    """A model with a parameterised Lagrangian in a layer (`LTanh`) and in a memory
    (`LSoftmax`), whose betas are traced when the model is a `jax.jit` argument."""
    key = jax.random.key(0)
    return hl.HAM(
        neurons={
            "v": hl.NeuronLayer(hl.LTanh(beta=jnp.asarray(2.0, dtype)), (6,)),
            "h": hl.NeuronLayer(hl.LIdentity(), (6,)),
        },
        synapses={
            "memory": hl.DenseMemory.random(
                5,
                6,
                hl.LSoftmax(beta=jnp.asarray(3.0, dtype)),
                key=key,
                dtype=dtype,
                chunk_size=chunk_size,
            ),
            "w": hl.LinearSynapse.random(6, 6, key=key, dtype=dtype),
        },
        connections=[(("v",), "memory"), (("v", "h"), "w")],
    )


SOLVES = {
    "descend": lambda ham, x, throw: hl.descend(ham, x, steps=4, dt=0.1, throw=throw),
    "descend_tol": lambda ham, x, throw: hl.descend(
        ham, x, steps=4, dt=0.1, tol=1e-3, throw=throw
    ),
    "descend_diffrax": lambda ham, x, throw: hl.descend(
        ham, x, steps=4, dt=0.1, solver=diffrax.Tsit5(), throw=throw
    ),
    "fixed_point": lambda ham, x, throw: hl.fixed_point(
        ham, x, dt=0.5, max_steps=20, throw=throw
    ),
}


@pytest.mark.parametrize("name", sorted(SOLVES))
def test_no_host_callback_without_throw(name):
    ham = _two_layer_model()
    xs = ham.init_states()
    solve = SOLVES[name]
    retrieval = jax.jit(lambda ham, xs: solve(ham, xs, False))
    callbacks = _callbacks(retrieval, ham, xs)
    if name == "descend_diffrax":
        # diffrax checks its own arguments at its entry (`eqx.error_if`).
        assert not any(loop for _, loop in callbacks)
    else:
        assert callbacks == []
    # With throw, the checks are before and after the loop, never in its body.
    callbacks = _callbacks(jax.jit(lambda ham, xs: solve(ham, xs, True)), ham, xs)
    assert callbacks and not any(loop for _, loop in callbacks)


@pytest.mark.parametrize("lagrangian", [hl.LSoftmax(3.0), hl.LTanh(2.0)])
def test_no_host_callback_in_a_chunked_memory(lagrangian):
    memory = hl.DenseMemory(random_patterns(5, 6), lagrangian, chunk_size=2)
    ham = dense_memory_ham(random_patterns(5, 6), lagrangian=memory.lagrangian)
    ham = eqx.tree_at(lambda h: h.synapses["memory"], ham, memory)
    xs = ham.init_states()
    retrieval = jax.jit(
        lambda ham, xs: hl.descend(ham, xs, steps=3, dt=0.1, throw=False)
    )
    assert _callbacks(retrieval, ham, xs) == []


def test_plain_jax_export_of_a_retrieval_round_trips():
    ham = _two_layer_model()
    xs = ham.init_states(key=jax.random.key(1))

    def retrieval(xs):
        return hl.descend(ham, xs, steps=5, dt=0.1, throw=False).xs

    exported = jax.export.export(jax.jit(retrieval))(xs)
    restored = jax.export.deserialize(exported.serialize())
    out = restored.call(xs)
    expected = retrieval(xs)
    for name in expected:
        np.testing.assert_allclose(out[name], expected[name], rtol=1e-6)


def test_with_throw_the_euler_loop_is_compiled_once():
    # `throw=False` reports the step at which a state went non-finite: a replay of
    # the loop, in a conditional on the batch. With `throw=True` that step is never
    # seen (the solve raises), and the replay is not compiled.
    ham = _two_layer_model()
    xs = ham.init_states()

    def loops(throw):
        solve = jax.vmap(lambda x: hl.descend(ham, x, steps=4, dt=0.1, throw=throw))
        batch = jax.tree.map(lambda x: jnp.stack([x, x]), xs)
        jaxpr = jax.make_jaxpr(solve)(batch).jaxpr
        return [
            e.primitive.name for e, _ in _equations(jaxpr) if e.primitive.name in _LOOPS
        ]

    assert loops(throw=True) == ["scan"]
    assert sorted(loops(throw=False)) == ["scan", "while"]


def test_a_non_finite_parameter_is_a_result_code_and_raises_with_throw():
    ham = _two_layer_model(jnp.float64)
    bad = eqx.tree_at(
        lambda h: h.neurons["v"].lagrangian.beta, ham, jnp.asarray(jnp.nan)
    )
    xs = ham.init_states()
    solve = jax.jit(lambda ham, xs: hl.descend(ham, xs, steps=3, dt=0.1, throw=False))
    sol = solve(bad, xs)
    assert sol.result == hl.RESULTS.nonfinite_parameter
    assert not sol.finite and not sol.converged
    assert solve(ham, xs).result == hl.RESULTS.steps_completed
    fixed = jax.jit(lambda ham, xs: hl.fixed_point(ham, xs, dt=0.5, throw=False))
    assert fixed(bad, xs).result == hl.RESULTS.nonfinite_parameter
    with pytest.raises(eqx.EquinoxRuntimeError, match="`descend`: A parameter"):
        eqx.filter_jit(lambda ham, xs: hl.descend(ham, xs, steps=3, dt=0.1))(bad, xs)


def test_a_traced_bad_dt_is_a_result_code():
    ham = dense_memory_ham(random_patterns(5, 4), 2.0)
    xs = ham.init_states()
    solve = jax.jit(lambda dt: hl.descend(ham, xs, steps=3, dt=dt, throw=False))
    assert solve(jnp.asarray(-1.0)).result == hl.RESULTS.invalid_dt
    assert solve(jnp.asarray(0.1)).result == hl.RESULTS.steps_completed
    with pytest.raises(ValueError, match="`dt` must be positive"):
        hl.descend(ham, xs, steps=3, dt=-1.0)
    fixed = jax.jit(lambda dt: hl.fixed_point(ham, xs, dt=dt, throw=False))
    assert _callbacks(fixed, jnp.asarray(0.5)) == []
    assert fixed(jnp.asarray(-1.0)).result == hl.RESULTS.invalid_dt
    assert fixed(jnp.asarray(0.5)).result == hl.RESULTS.successful


def _overflowing():
    """A memory whose state overflows after a few steps (the exponential grows)."""
    ham = hl.HAM(
        neurons={"v": hl.NeuronLayer(hl.LIdentity(), (2,))},
        synapses={
            "m": hl.DenseMemory(jnp.array([[1.0, 0.0]]), hl.LExp(beta=jnp.asarray(1.0)))
        },
        connections=[(("v",), "m")],
    )
    return ham, {"v": jnp.array([4.0, 0.0])}


@pytest.mark.parametrize("solver", [None, diffrax.Euler()])
def test_the_step_that_went_non_finite_is_num_steps(solver):
    ham, xs = _overflowing()
    # Steps of dt = tau map x to xi exp(<xi, x>): 54.6, 5.1e23, then inf at step 3.
    sol = hl.descend(ham, xs, steps=50, dt=1.0, solver=solver, throw=False)
    assert sol.result == hl.RESULTS.nonfinite and not sol.finite
    assert int(sol.num_steps) == 3
    before = hl.descend(ham, xs, steps=2, dt=1.0, solver=solver, throw=False)
    assert np.all(np.isfinite(before.xs["v"]))
    # Its energy, exp(5.1e23), is not finite: reported too.
    assert before.result == hl.RESULTS.nonfinite
    with pytest.raises(eqx.EquinoxRuntimeError, match="rerun with `throw=False`|Rerun"):
        hl.descend(ham, xs, steps=50, dt=1.0, solver=solver)


def test_the_batch_error_names_the_outcome_under_vmap():
    ham, xs = _overflowing()
    # From -10 three steps stay finite (4.5e-5, 1.00005, e); from 4 they do not.
    calm = jnp.array([-10.0, 0.0])
    batch = {"v": jnp.stack([xs["v"], calm, xs["v"]])}
    sols = jax.vmap(lambda x: hl.descend(ham, x, steps=3, dt=1.0, throw=False))(batch)
    assert [bool(f) for f in sols.finite] == [False, True, False]
    with pytest.raises(eqx.EquinoxRuntimeError, match="non-finite"):
        jax.vmap(lambda x: hl.descend(ham, x, steps=3, dt=1.0))(batch)
    jax.vmap(lambda x: hl.descend(ham, x, steps=3, dt=1.0))({"v": calm[None]})
    # An empty batch raises nothing.
    empty = {"v": jnp.zeros((0, 2))}
    jax.vmap(lambda x: hl.descend(ham, x, steps=3, dt=1.0))(empty)


@pytest.mark.parametrize("shape", [(5000,), (64, 64), (256, 784)])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_finiteness_checks_find_one_bad_entry_in_a_large_array(shape, bad):
    # XLA's CPU maximum over more than about a thousand entries drops NaN
    # (openxla/xla#21461): the check must not be a maximum.
    for where in [(0,) * len(shape), tuple(d - 1 for d in shape)]:
        x = jnp.zeros(shape, jnp.float32).at[where].set(bad)
        assert not bool(all_finite(x)) and not bool(jax.jit(all_finite)(x))
        rows = jax.jit(jax.vmap(all_finite))(x.reshape(shape[0], -1))
        assert [int(i) for i in np.flatnonzero(~np.asarray(rows))] == [where[0]]
    big = jnp.full(shape, jnp.finfo(jnp.float32).max)
    assert bool(jax.jit(all_finite)(big))
    # The residual max |dE/dg|: infinite, never below a `tol`.
    x = jnp.zeros(shape, jnp.float32).at[(0,) * len(shape)].set(bad)
    assert jax.jit(residual)({"v": None}, {"v": x}) == jnp.inf


def test_a_nan_in_a_large_batch_or_weight_matrix_is_reported():
    # Sizes where a maximum on XLA's CPU drops NaN: 32 states of 784 entries, 64 x 64
    # patterns.
    patterns = random_patterns(64, 784, jnp.float32) / 28.0
    ham = dense_memory_ham(patterns, 4.0)
    queries = patterns[:32] + 0.01
    queries = queries.at[5, 700].set(jnp.nan)

    def solve(ham, queries, **kwargs):
        return jax.vmap(lambda q: hl.descend(ham, {"v": q}, dt=0.1, **kwargs))(queries)

    for tol in [None, 1e-4]:
        sols = jax.jit(ft.partial(solve, steps=10, tol=tol, throw=False))(ham, queries)
        fine = np.flatnonzero(np.asarray(sols.result != hl.RESULTS.nonfinite))
        assert 5 not in fine and len(fine) == 31
        assert int(sols.num_steps[5]) == 0 and not np.isfinite(sols.residual[5])
    with pytest.raises(eqx.EquinoxRuntimeError, match="non-finite"):
        eqx.filter_jit(ft.partial(solve, steps=10))(ham, queries)
    fixed = jax.jit(
        jax.vmap(lambda q: hl.fixed_point(ham, {"v": q}, dt=0.5, throw=False))
    )(queries)
    nonfinite = np.asarray(fixed.result == hl.RESULTS.nonfinite)
    assert list(np.flatnonzero(nonfinite)) == [5]
    assert bool(np.all(np.delete(np.asarray(fixed.converged), 5)))
    # A NaN among the traced patterns of a 64 x 64 memory.
    small = dense_memory_ham(random_patterns(64, 64, jnp.float32) / 8.0, 4.0)
    broken = eqx.tree_at(
        lambda h: h.synapses["memory"].patterns,
        small,
        small.synapses["memory"].patterns.at[40, 63].set(jnp.nan),
    )
    one = jax.jit(lambda h, x: hl.descend(h, {"v": x}, steps=3, dt=0.1, throw=False))
    x0 = jnp.zeros(64, jnp.float32)
    assert one(broken, x0).result == hl.RESULTS.nonfinite_parameter
    assert one(small, x0).result == hl.RESULTS.steps_completed


def _temp_bytes(fn, *args):
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize(
    "solver", [None, diffrax.Euler(), diffrax.Tsit5()], ids=["scan", "Euler", "Tsit5"]
)
def test_memory_of_a_solve_does_not_grow_with_steps(solver):
    ham = dense_memory_ham(random_patterns(64, 16, jnp.float32), 2.0)
    xs = ham.init_states()

    def solve(steps):
        return lambda xs: (
            hl.descend(ham, xs, steps=steps, dt=0.1, trace=False, solver=solver).xs
        )

    small = _temp_bytes(solve(10), xs)
    huge = _temp_bytes(solve(10**9), xs)
    assert huge <= small + 1024, (small, huge)


def test_a_memory_built_inside_jit_costs_no_copy_of_its_patterns():
    rng = np.random.default_rng(0)
    patterns = jnp.asarray(rng.standard_normal((2048, 64)), jnp.float32)
    query = jnp.asarray(rng.standard_normal(64), jnp.float32)
    template = hl.DenseMemory(jnp.zeros_like(patterns), hl.LSoftmax(2.0))

    def built(patterns, q):
        memory = hl.DenseMemory(patterns, hl.LSoftmax(2.0))
        return jax.grad(memory)(q)

    def swapped(patterns, q):
        memory = eqx.tree_at(lambda m: m.patterns, template, patterns)
        return jax.grad(memory)(q)

    assert _temp_bytes(built, patterns, query) == _temp_bytes(swapped, patterns, query)


def test_sharded_patterns_keep_their_sharding_and_are_never_gathered():
    out = run_without_hook(
        """
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
        import jax, jax.numpy as jnp, numpy as np
        import equinox as eqx
        import hamux_lagr as hl
        from jax.sharding import NamedSharding, PartitionSpec as P
        mesh = jax.make_mesh((4,), ("k",), axis_types=(jax.sharding.AxisType.Auto,))
        sharding = NamedSharding(mesh, P("k", None))
        patterns = jax.device_put(
            jnp.asarray(np.random.default_rng(0).standard_normal((64, 8)), jnp.float32),
            sharding,
        )
        memory = hl.DenseMemory(patterns, hl.LSoftmax(2.0))
        print("kept", memory.patterns.sharding == sharding)
        q = jnp.ones(8, jnp.float32)
        hlo = jax.jit(
            lambda p, q: jax.grad(hl.DenseMemory(p, hl.LSoftmax(2.0)))(q)
        ).lower(patterns, q).compile().as_text()
        print("gathers", "all-gather" in hlo)
        """
    )
    assert "kept True" in out, out
    assert "gathers False" in out, out


def test_a_lagrangian_that_returns_a_vector_is_one_error_type_at_every_door():
    class LVector(hl.Lagrangian):
        def __call__(self, x):
            return x**2 / 2

    layer = hl.NeuronLayer(LVector(), (3,))
    ham = hl.HAM(neurons={"v": layer}, synapses={}, connections=[])
    xs = {"v": jnp.ones(3)}
    doors = [
        lambda: LVector().energy(xs["v"]),
        lambda: LVector().activation(xs["v"]),
        lambda: layer.energy(xs["v"]),
        lambda: layer.activations(xs["v"]),
        lambda: ham.energy(xs),
        lambda: ham.dEdg(xs),
        lambda: hl.descend(ham, xs, steps=2, dt=0.1),
        lambda: hl.fixed_point(ham, xs),
    ]
    for door in doors:
        with pytest.raises(TypeError, match="LVector"):
            door()
