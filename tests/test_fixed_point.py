import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
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


@pytest.fixture(scope="module")
def solves():
    """Fixed points and converged descents of the dense memory and the classifier,
    batched with `jax.vmap`, in one compilation."""
    mem, patterns, queries = dense_memory()
    net, images = classifier()

    @jax.jit
    def run(queries, images):
        out = {}
        for method in ("anderson", "iterate"):
            out[method] = (
                jax.vmap(
                    lambda q: hl.fixed_point(mem, {"v": q}, tol=1e-10, method=method)
                )(queries),
                jax.vmap(
                    lambda im: hl.fixed_point(
                        net, start(net, im), tol=1e-10, clamp=CLAMP, method=method
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
        out["energy"] = (
            jax.vmap(lambda q: mem.energy({"v": q}))(queries),
            jax.vmap(lambda im: net.energy(start(net, im)))(images),
        )
        return out

    return (mem, patterns, queries), (net, images), run(queries, images)


@pytest.mark.parametrize("method", ["anderson", "iterate"])
def test_it_reaches_the_fixed_point_descend_converges_to(method, solves):
    (mem, patterns, _), (net, images), out = solves
    for which, ham in ((0, mem), (1, net)):
        sol, ref = out[method][which], out["descend"][which]
        assert bool(np.all(sol.converged)) and bool(np.all(sol.finite))
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
                hl.fixed_point(h, x, tol=1e-12, adjoint="backprop", **kwargs).xs
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
    # Backprop through the steps stores every step.
    assert temp_bytes(steps(1000), patterns) > 20 * temp_bytes(steps(10), patterns)


def test_failures_are_reported_or_marked():
    mem, _, queries = dense_memory()
    x0 = {"v": jnp.asarray(queries[0])}
    with pytest.raises(ValueError, match=r"did not reach .* within `max_steps` = 1\b"):
        hl.fixed_point(mem, x0, max_steps=1)
    sol = hl.fixed_point(mem, x0, max_steps=1, throw=False)
    assert not sol.converged and sol.finite and sol.num_steps == 1
    with pytest.raises(Exception, match=r"did not reach .* `max_steps` = 2\b"):
        jax.block_until_ready(
            jax.jit(jax.vmap(lambda q: hl.fixed_point(mem, {"v": q}, max_steps=2)))(
                jnp.asarray(queries)
            )
        )
    bad = {"v": x0["v"].at[0].set(jnp.nan)}
    with pytest.raises(ValueError, match=r"non-finite state"):
        hl.fixed_point(mem, bad)
    sol = hl.fixed_point(mem, bad, throw=False)
    assert not sol.finite and not sol.converged
    # A finite batch raises nothing; an empty batch neither.
    empty = jax.vmap(lambda q: hl.fixed_point(mem, {"v": q}))(jnp.zeros((0, 10)))
    assert empty.xs["v"].shape == (0, 10) and empty.converged.shape == (0,)

    # Without `throw`, its error callbacks are not compiled (the softmax's own
    # check of its `beta` remains).
    def callbacks(throw):
        jaxpr = jax.make_jaxpr(lambda x: hl.fixed_point(mem, x, throw=throw))(x0)
        return str(jaxpr).count("pure_callback[")

    assert 0 < callbacks(False) < callbacks(True)


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
    for method in ("iterate", "anderson"):
        sol = hl.fixed_point(ham, x0, dt=0.05, tol=1e-9, max_steps=5000, method=method)
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
        (dict(history=0), ValueError, "`history`"),
        (dict(method="newton"), ValueError, "`method` must be 'anderson' or 'iterate'"),
        (dict(adjoint="forward"), ValueError, "`adjoint` must be 'implicit'"),
        (dict(dt=-1.0), ValueError, r"`dt` must be positive and finite"),
        (dict(clamp={"w": True}), ValueError, "unknown layer 'w'"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            hl.fixed_point(mem, x0, **kwargs)
    with pytest.raises(ValueError, match=r"a batch of 4 states .*jax.vmap"):
        hl.fixed_point(mem, {"v": queries})


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
            ((ham, x0), dict(adjoint=optx.BFGS(1e-3, 1e-3))),
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
        "TypeError: `adjoint` must be 'implicit', 'backprop' or an",
        "TypeError: `tol` must be a Python number",
        "TypeError: `leak` must be True or False in `NeuronLayer`, got 1.",
    ]
    assert len(lines) == len(starts), out
    for line, expected in zip(lines, starts):
        assert line.startswith(expected), (line, expected)
