import equinox as eqx
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest
from helpers import run_without_hook, tree_allclose

import hamux_lagr as hl


def dense_memory(num=12, dim=10, beta=8.0, seed=0):
    rng = np.random.default_rng(seed)
    patterns = rng.standard_normal((num, dim))
    patterns /= np.linalg.norm(patterns, axis=1, keepdims=True)
    ham = hl.HAM(
        {"v": hl.NeuronLayer(hl.LIdentity(), (dim,))},
        {"memory": hl.DenseMemory(patterns, hl.LSoftmax(beta))},
        [(("v",), "memory")],
    )
    queries = patterns[:4] + 0.15 * rng.standard_normal((4, dim)) / np.sqrt(dim)
    return ham, patterns, queries


def classifier(seed=0):
    """A 3-layer HAM like the classifier notebook's: a clamped image, a ReLU hidden
    layer and a softmax label layer."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    ham = hl.HAM(
        {
            "image": hl.NeuronLayer(hl.LIdentity(), (8,)),
            "hidden": hl.NeuronLayer(hl.LRelu(), (16,)),
            "label": hl.NeuronLayer(hl.LSoftmax(beta=2.0), (4,)),
        },
        {
            "W1": hl.LinearSynapse.random(8, 16, key=k1, use_bias=True),
            "W2": hl.LinearSynapse.random(16, 4, key=k2, use_bias=True),
        },
        [(("image", "hidden"), "W1"), (("hidden", "label"), "W2")],
    )
    images = np.random.default_rng(seed).standard_normal((3, 8))
    return ham, images


def start(ham, image):
    xs = ham.init_states()
    xs["image"] = jnp.asarray(image)
    return xs


CLAMP = {"image": True}
SOLVERS = {"anderson": hl.Anderson(history=3), "iterate": hl.SafeguardedIteration()}


@pytest.fixture(scope="module")
def solves():
    """Fixed points and converged descents of the dense memory and the classifier,
    batched with `jax.vmap`, in one compilation."""
    mem, patterns, queries = dense_memory()
    net, images = classifier()

    @jax.jit
    def run(queries, images):
        out = {}
        for name, solver in SOLVERS.items():
            out[name] = (
                jax.vmap(
                    lambda q: hl.fixed_point(mem, {"v": q}, tol=1e-10, solver=solver)
                )(queries),
                jax.vmap(
                    lambda im: hl.fixed_point(
                        net, start(net, im), tol=1e-10, clamp=CLAMP, solver=solver
                    )
                )(images),
            )
        out["descend"] = (
            jax.vmap(
                lambda q: hl.descend(mem, {"v": q}, steps=2000, dt=1.0, tol=1e-10)
            )(queries),
            jax.vmap(
                lambda im: hl.descend(
                    net, start(net, im), steps=5000, dt=0.2, tol=1e-10, clamp=CLAMP
                )
            )(images),
        )
        return out

    out = run(queries, images)
    out["energy"] = (
        jax.vmap(lambda q: mem.energy({"v": q}))(queries),
        jax.vmap(lambda im: net.energy(start(net, im)))(images),
    )
    return (mem, patterns, queries), (net, images), out


@pytest.mark.parametrize("method", list(SOLVERS))
def test_it_reaches_the_fixed_point_descend_converges_to(method, solves):
    (mem, patterns, _), (net, images), out = solves
    for which, ham in ((0, mem), (1, net)):
        sol, ref = out[method][which], out["descend"][which]
        assert np.all(sol.result == hl.RESULTS.successful)
        assert sol.energies is None
        assert tree_allclose(sol.xs, ref.xs, atol=1e-8)
        # The residual is max |dE/dg| over the free neurons at the returned states.
        dEdg = jax.vmap(ham.dEdg)(sol.xs)
        free = [k for k in dEdg if k != "image"]
        expected = np.max(np.stack([np.abs(dEdg[k]).max(-1) for k in free]), axis=0)
        assert np.allclose(sol.residual, expected, rtol=1e-6, atol=1e-14)
        assert np.all(sol.residual < 1e-10)
        # The energy is never above the start's, and it took far fewer steps.
        energies = jax.vmap(ham.energy)(sol.xs)
        assert np.all(energies <= out["energy"][which])
        assert sol.num_steps.dtype == jnp.int32
        # (`descend` evaluates dE/dg once more than its steps.)
        assert np.all(sol.num_steps <= ref.num_steps + 1)
    assert np.array_equal(out[method][1].xs["image"], images)  # clamped
    # The memory retrieves the stored patterns.
    retrieved = np.asarray(out[method][0].xs["v"])
    assert np.array_equal(np.argmax(retrieved @ patterns.T, axis=1), np.arange(4))
    assert np.all(np.linalg.norm(retrieved - patterns[:4], axis=1) < 0.2)


def test_a_batch_equals_one_sample_at_a_time(solves):
    (mem, _, queries), _, out = solves
    one = eqx.filter_jit(lambda q: hl.fixed_point(mem, {"v": q}, tol=1e-10))
    for i in range(len(queries)):
        expected = jax.tree.map(lambda v: v[i], out["iterate"][0])
        assert tree_allclose(one(queries[i]), expected, rtol=1e-10, atol=1e-12)


def relative(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def test_implicit_gradients_equal_backprop_through_a_converged_descent():
    mem, _, queries = dense_memory(beta=4.0)
    net, images = classifier()
    w_mem = np.random.default_rng(1).standard_normal(queries.shape)
    w_net = np.random.default_rng(2).standard_normal((len(images), 4))

    def mem_loss(retrieve):
        def loss(ham):
            xs = jax.vmap(lambda q: retrieve(ham, {"v": q}))(queries)
            return jnp.sum(w_mem * xs["v"])

        return loss

    def net_loss(retrieve):
        def loss(ham):
            xs = jax.vmap(lambda im: retrieve(ham, start(ham, im)))(images)
            return jnp.sum(w_net * xs["label"] ** 2)

        return loss

    cases = {
        "mem": (
            mem,
            mem_loss,
            {},
            lambda h, x: hl.descend(h, x, steps=400, dt=1.0, trace=False).xs,
        ),
        "net": (
            net,
            net_loss,
            {"clamp": CLAMP},
            lambda h, x: (
                hl.descend(h, x, steps=600, dt=0.5, trace=False, clamp=CLAMP).xs
            ),
        ),
    }
    for name, (ham, make_loss, kwargs, backprop) in cases.items():
        implicit = make_loss(lambda h, x: hl.fixed_point(h, x, tol=1e-12, **kwargs).xs)
        steps = make_loss(
            lambda h, x: (
                hl.fixed_point(
                    h, x, tol=1e-12, adjoint=optx.RecursiveCheckpointAdjoint(), **kwargs
                ).xs
            )
        )
        grads = [
            eqx.filter_jit(eqx.filter_grad(loss))(ham)
            for loss in (implicit, steps, make_loss(backprop))
        ]
        leaves = [jax.tree.leaves(g) for g in grads]
        assert len(leaves[0]) >= 2
        for a, b, ref in zip(*leaves):
            assert relative(a, ref) < 1e-4, name
            assert relative(b, ref) < 1e-4, name


@pytest.mark.parametrize(
    "adjoint", [hl.JacobianFreeAdjoint(), hl.PhantomAdjoint(steps=5, damping=0.5)]
)
def test_approximate_adjoints_are_descent_directions(adjoint):
    mem, _, queries = dense_memory(beta=4.0)
    net, images = classifier()
    w_mem = np.random.default_rng(1).standard_normal(queries.shape)
    w_net = np.random.default_rng(2).standard_normal((len(images), 4))

    def mem_loss(ham, adjoint):
        xs = jax.vmap(
            lambda q: hl.fixed_point(ham, {"v": q}, tol=1e-10, adjoint=adjoint).xs
        )(queries)
        return jnp.sum(w_mem * xs["v"])

    def net_loss(ham, adjoint):
        xs = jax.vmap(
            lambda im: (
                hl.fixed_point(
                    ham, start(ham, im), tol=1e-10, clamp=CLAMP, adjoint=adjoint
                ).xs
            )
        )(images)
        return jnp.sum(w_net * xs["label"] ** 2)

    @eqx.filter_jit
    def grads(ham, loss):
        exact = eqx.filter_grad(loss)(ham, optx.ImplicitAdjoint())
        approx = eqx.filter_grad(loss)(ham, adjoint)
        return exact, approx

    for ham, loss in ((mem, mem_loss), (net, net_loss)):
        exact, approx = grads(ham, loss)
        a = jnp.concatenate([jnp.ravel(g) for g in jax.tree.leaves(exact)])
        b = jnp.concatenate([jnp.ravel(g) for g in jax.tree.leaves(approx)])
        cosine = jnp.vdot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b))
        assert cosine > 0.1, cosine
        assert not np.allclose(a, b, rtol=1e-3)  # (an approximation)


def test_forward_mode_through_the_fixed_point():
    mem, _, queries = dense_memory(beta=4.0)

    def retrieve(beta, solve):
        ham = eqx.tree_at(lambda h: h.synapses["memory"].lagrangian.beta, mem, beta)
        return solve(ham, {"v": jnp.asarray(queries[0])})

    def fixed(h, x):
        return hl.fixed_point(h, x, tol=1e-12).xs["v"]

    def steps(h, x):
        return hl.descend(h, x, steps=400, dt=1.0).xs["v"]

    beta, one = jnp.asarray(4.0), jnp.asarray(1.0)
    _, t_fixed = jax.jvp(lambda b: retrieve(b, fixed), (beta,), (one,))
    _, t_steps = jax.jvp(lambda b: retrieve(b, steps), (beta,), (one,))
    assert relative(t_fixed, t_steps) < 1e-6


def temp_bytes(fn, *args):
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_memory_of_implicit_gradients_does_not_grow_with_max_steps():
    mem, _, queries = dense_memory(num=64, dim=32)
    q = jnp.asarray(queries[0])

    def loss(patterns, retrieve):
        ham = eqx.tree_at(lambda h: h.synapses["memory"].patterns, mem, patterns)
        return jnp.sum(retrieve(ham, {"v": q})["v"] ** 2)

    patterns = mem.synapses["memory"].patterns

    def fixed(max_steps):
        def retrieve(h, x):
            return hl.fixed_point(h, x, max_steps=max_steps, throw=False).xs

        return jax.grad(lambda p: loss(p, retrieve))

    def steps(n):
        def retrieve(h, x):
            return hl.descend(h, x, steps=n, dt=1.0, trace=False).xs

        return jax.grad(lambda p: loss(p, retrieve))

    small, large = temp_bytes(fixed(10), patterns), temp_bytes(fixed(1000), patterns)
    assert large <= 1.5 * small

    # Nor does the forward solve's.
    def solve(max_steps):
        return lambda q: hl.fixed_point(mem, {"v": q}, max_steps=max_steps, throw=False)

    assert temp_bytes(solve(1000), q) <= 1.5 * temp_bytes(solve(10), q)
    # Backprop through the steps stores every step.
    assert temp_bytes(steps(1000), patterns) > 20 * temp_bytes(steps(10), patterns)


def test_failures_are_reported_or_marked():
    mem, _, queries = dense_memory()
    x0 = {"v": jnp.asarray(queries[0])}
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"did not reach .* `max_steps`"):
        hl.fixed_point(mem, x0, max_steps=1)
    sol = hl.fixed_point(mem, x0, max_steps=1, throw=False)
    assert sol.result == hl.RESULTS.max_steps_reached and sol.num_steps == 1
    assert not sol.converged and sol.finite
    with pytest.raises(Exception, match=r"did not reach .* `max_steps`"):
        jax.block_until_ready(
            jax.jit(jax.vmap(lambda q: hl.fixed_point(mem, {"v": q}, max_steps=2)))(
                jnp.asarray(queries)
            )
        )
    bad = {"v": x0["v"].at[0].set(jnp.nan)}
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"became non-finite"):
        hl.fixed_point(mem, bad)
    sol = hl.fixed_point(mem, bad, throw=False)
    assert sol.result == hl.RESULTS.nonfinite and not sol.finite
    # An empty batch is solved too.
    empty = jax.vmap(lambda q: hl.fixed_point(mem, {"v": q}, throw=False))(
        jnp.zeros((0, 10))
    )
    assert empty.xs["v"].shape == (0, 10) and empty.result._value.shape == (0,)


def test_an_energy_without_lower_bound_is_reported_non_finite():
    # A self-excitation stronger than the leak: E = -|x|^2 / 2 falls without bound.
    ham = hl.HAM(
        {"a": hl.NeuronLayer(hl.LIdentity(), (3,))},
        {"w": hl.LinearSynapse(2.0 * np.eye(3))},
        [(("a", "a"), "w")],
    )
    x0 = {"a": jnp.ones(3)}
    sol = hl.fixed_point(ham, x0, throw=False)
    assert sol.result == hl.RESULTS.nonfinite and not sol.finite
    assert not sol.converged
    with pytest.raises(eqx.EquinoxRuntimeError, match="non-finite"):
        hl.fixed_point(ham, x0)


def test_the_defaults_converge_on_a_distance_memory():
    # With `similarity="l2"` the synapse energy is not concave in the state: the plain
    # map G(x) = Xi^T softmax(...) - x steps twice too far, oscillates about the fixed
    # point, and its first step jumps out of the query's basin.
    rng = np.random.default_rng(0)
    patterns = rng.standard_normal((12, 10))
    patterns /= np.linalg.norm(patterns, axis=1, keepdims=True)
    ham = hl.HAM(
        {"v": hl.NeuronLayer(hl.LIdentity(), (10,))},
        {"memory": hl.DenseMemory(patterns, hl.LSoftmax(20.0), similarity="l2")},
        [(("v",), "memory")],
    )
    queries = patterns[:6] + 0.1 * rng.standard_normal((6, 10))

    @jax.jit
    def run(queries):
        return (
            jax.vmap(lambda q: hl.fixed_point(ham, {"v": q}, tol=1e-8, throw=False))(
                queries
            ),
            jax.vmap(
                lambda q: hl.descend(
                    ham, {"v": q}, steps=5000, dt=0.1, tol=1e-8, trace=False
                )
            )(queries),
        )

    sol, ref = run(jnp.asarray(queries))
    assert np.all(ref.result == hl.RESULTS.successful)
    assert np.all(sol.result == hl.RESULTS.successful), sol.residual
    # The attractor the dynamics descend to, half-way to the stored pattern.
    assert tree_allclose(sol.xs, ref.xs, atol=1e-6)
    assert np.allclose(sol.xs["v"], patterns[:6] / 2, atol=0.05)
    assert np.all(sol.num_steps < ref.num_steps)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_states(dtype):
    mem, patterns, queries = dense_memory(beta=8.0)
    starts = jnp.asarray(queries, dtype)
    sol = jax.vmap(lambda q: hl.fixed_point(mem, {"v": q}, throw=False))(starts)
    assert sol.xs["v"].dtype == dtype
    assert np.all(sol.result == hl.RESULTS.successful)

    def energy(x):  # in float64, of the states as given
        return jax.vmap(lambda v: mem.energy({"v": v.astype(jnp.float64)}))(x)

    # The returned (rounded) states' energy is never above the start's.
    assert np.all(energy(sol.xs["v"]) <= energy(starts))
    retrieved = np.asarray(sol.xs["v"], np.float64)
    assert np.array_equal(np.argmax(retrieved @ patterns.T, axis=1), np.arange(4))

    # Gradients through the solve (in float32) are finite.
    def loss(patterns):
        ham = eqx.tree_at(lambda h: h.synapses["memory"].patterns, mem, patterns)
        xs = jax.vmap(lambda q: hl.fixed_point(ham, {"v": q}, throw=False).xs)(starts)
        return jnp.sum(xs["v"].astype(jnp.float32) ** 2)

    grad = jax.grad(loss)(mem.synapses["memory"].patterns)
    assert bool(jnp.all(jnp.isfinite(grad))) and bool(jnp.any(grad != 0))


def _primitives(jaxpr, inside_loop=False, found=None):
    """Every primitive of a jaxpr and its sub-jaxprs, with whether it sits in the body
    (or condition) of a `while` or `scan`."""
    found = [] if found is None else found
    for eqn in jaxpr.eqns:
        found.append((eqn.primitive.name, inside_loop))
        loop = inside_loop or eqn.primitive.name in ("while", "scan")
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            _primitives(sub, loop, found)
    return found


CALLBACKS = {"pure_callback", "io_callback", "debug_callback"}


def test_no_host_callback_in_a_solve():
    # A model passed as an argument: its parameters (the betas) are traced.
    k1, k2 = jax.random.split(jax.random.key(0))
    ham = hl.HAM(
        {
            "v": hl.NeuronLayer(hl.LIdentity(), (6,)),
            "h": hl.NeuronLayer(hl.LTanh(beta=jnp.asarray(1.5)), (5,)),
        },
        {
            "memory": hl.DenseMemory.random(4, 6, hl.LSoftmax(2.0), key=k1),
            "W": hl.LinearSynapse.random(6, 5, key=k2),
        },
        [(("v",), "memory"), (("v", "h"), "W")],
    )
    x = ham.init_states()

    def primitives(throw):
        fn = lambda ham, x: hl.fixed_point(ham, x, throw=throw)  # noqa: E731
        return _primitives(jax.make_jaxpr(fn)(ham, x).jaxpr)

    assert not [p for p in primitives(False) if p[0] in CALLBACKS]
    found = primitives(True)
    assert [p for p in found if p[0] in CALLBACKS]  # the one check on the way out
    assert not [p for p in found if p[0] in CALLBACKS and p[1]]
    assert [p for p in found if p[0] == "while"]


def test_export_with_a_symbolic_batch():
    mem, _, queries = dense_memory()
    (batch,) = jax.export.symbolic_shape("b")
    example = jax.ShapeDtypeStruct((batch, 10), jnp.float64)

    def recall(q):
        return hl.fixed_point(mem, {"v": q}, throw=False).xs["v"]

    exported = hl.to_jax_export(lambda qs: jax.vmap(recall)(qs), example)
    out = exported.call(jnp.asarray(queries))
    assert tree_allclose(out, jax.vmap(recall)(jnp.asarray(queries)))


def test_leak_free_layers_and_a_smaller_step():
    # A tanh layer without leak in a quadratic well: the fixed point is at the bottom.
    rng = np.random.default_rng(0)
    W = rng.standard_normal((6, 6))
    ham = hl.HAM(
        {"a": hl.NeuronLayer(hl.LTanh(), (6,), leak=False)},
        {"well": hl.LinearSynapse(-(W @ W.T) - 0.5 * np.eye(6))},
        [(("a", "a"), "well")],
    )
    x0 = {"a": 0.3 * rng.standard_normal(6)}
    ref = hl.descend(ham, x0, steps=20000, dt=0.05, tol=1e-9)
    for solver in (hl.SafeguardedIteration(), hl.Anderson(history=3)):
        sol = hl.fixed_point(ham, x0, dt=0.05, tol=1e-9, max_steps=5000, solver=solver)
        assert sol.converged and tree_allclose(sol.xs, ref.xs, atol=1e-6)
        assert sol.num_steps <= ref.num_steps + 1
    # Where the steps contract slowly, Anderson's mixing takes far fewer of them.
    assert 3 * sol.num_steps < ref.num_steps


def test_bad_arguments():
    mem, _, queries = dense_memory()
    x0 = {"v": queries[0]}
    cases = [
        (dict(tol=0.0), ValueError, "`tol`"),
        (dict(max_steps=0), ValueError, r"`max_steps` must be an int in \[1,"),
        (dict(dt=-1.0), ValueError, r"`dt` must be positive and finite"),
        (dict(clamp={"w": True}), ValueError, "unknown layer 'w'"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            hl.fixed_point(mem, x0, **kwargs)
    with pytest.raises(ValueError, match=r"a batch of 4 states .*jax.vmap"):
        hl.fixed_point(mem, {"v": queries})
    for make, match in [
        (lambda: hl.Anderson(history=1), r"`history` must be an int in \[2, 100\]"),
        (lambda: hl.SafeguardedIteration(max_relaxation=0.5), "`max_relaxation`"),
        (lambda: hl.PhantomAdjoint(steps=0), "`steps` must be an int >= 1"),
        (lambda: hl.PhantomAdjoint(damping=0.0), r"`damping` must be in \(0, 1\]"),
    ]:
        with pytest.raises(ValueError, match=match):
            make()


def test_wrongly_typed_arguments_get_our_messages():
    # Without the jaxtyping hook (which rejects these first in the test suite).
    out = run_without_hook(
        """
        import optimistix as optx
        import hamux_lagr as hl

        ham = hl.HAM({"a": hl.NeuronLayer(hl.LIdentity(), (2,))}, {}, [])
        x0 = ham.init_states()
        for args, kwargs in [
            (("ham", x0), {}),
            ((ham, x0), dict(adjoint="implicit")),
            ((ham, x0), dict(solver=optx.FixedPointIteration(1e-3, 1e-3))),
            ((ham, x0), dict(tol="1e-3")),
        ]:
            try:
                hl.fixed_point(*args, **kwargs)
                print("no error")
            except (TypeError, ValueError) as e:
                print(f"{type(e).__name__}: {e}")
        try:
            hl.NeuronLayer(hl.LTanh(), 3, leak=1)
            print("no error")
        except TypeError as e:
            print(f"{type(e).__name__}: {e}")
        """
    )
    lines = out.splitlines()
    starts = [
        "TypeError: `ham` must be a `HAM` in `fixed_point`",
        "TypeError: `adjoint` must be an `optimistix.AbstractAdjoint` in `fixed_point`",
        "TypeError: `solver` must be `hamux_lagr.SafeguardedIteration(...)` or",
        "TypeError: `tol` must be a Python number",
        "TypeError: `leak` must be True or False in `NeuronLayer`, got 1.",
    ]
    assert len(lines) == len(starts), out
    for line, expected in zip(lines, starts):
        assert line.startswith(expected), (line, expected)
