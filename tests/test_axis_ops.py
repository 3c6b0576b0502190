"""The softmax family's vmap-friendly layout (`hamux_lagr._lagrangians.axis_ops`).

A batch of dense-memory similarities comes out of `jax.vmap` as a `(K, batch)` array;
the softmax family must neither transpose it nor change any value or derivative on the
way (the broadcasts and contractions over the vector are matrix products with ones).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tree_allclose

import hamux_lagr as hl
from hamux_lagr._lagrangians.axis_ops import axis_dot, axis_expand


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64])
@pytest.mark.parametrize("shape", [(7,), (3, 5)])
def test_helpers_match_jnp(rng, dtype, shape):
    p = jnp.asarray(rng.normal(size=shape), dtype)
    v = jnp.asarray(rng.normal(size=shape) * 1e3, dtype)
    reduced = shape[:-1] + (1,)
    scale = 1e30 if jnp.finfo(dtype).bits >= 32 else 1e3
    m = jnp.asarray(rng.normal(size=reduced) * scale, dtype)
    # The broadcast is exact, bit for bit.
    out = axis_expand(m, shape)
    assert out.dtype == dtype and out.shape == shape
    np.testing.assert_array_equal(out, jnp.broadcast_to(m, shape))
    out = axis_dot(p, v, -1)
    expected = jnp.sum(p * v, axis=-1, keepdims=True)
    assert out.dtype == dtype and out.shape == expected.shape
    tol = {jnp.float16: 1e-2, jnp.bfloat16: 5e-2}.get(dtype, 1e-6)
    np.testing.assert_allclose(
        np.asarray(out, np.float64), np.asarray(expected, np.float64), rtol=tol
    )


def _memory(getkey, memory, k=6, d=5):
    lagrangian, similarity = memory
    synapse = hl.DenseMemory.random(
        k, d, lagrangian, key=getkey(), similarity=similarity
    )
    return hl.HAM(
        neurons={"v": hl.NeuronLayer(hl.LIdentity(), (d,))},
        synapses={"m": synapse},
        connections=[(("v",), "m")],
    )


LAGRANGIANS = {
    "softmax": lambda: (hl.LSoftmax(beta=3.0), "dot"),
    "ghostmax": lambda: (hl.LGhostmax(beta=3.0), "dot"),
    # Distance similarities broadcast each sample's |g|^2 along the patterns.
    "softmax-l2": lambda: (hl.LSoftmax(beta=3.0), "l2"),
}


def _big_transposes(jaxpr, size):
    """The transposes in a jaxpr (and its sub-jaxprs) of arrays of >= `size` entries."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "transpose":
            if np.prod(eqn.invars[0].aval.shape) >= size:
                found.append(eqn.invars[0].aval.shape)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else [param]:
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
                if hasattr(sub, "eqns"):
                    found += _big_transposes(sub, size)
    return found


@pytest.mark.parametrize("name", sorted(LAGRANGIANS))
def test_batched_dense_memory_does_not_transpose(getkey, name):
    ham = _memory(getkey, LAGRANGIANS[name](), k=64, d=5)
    xs = ham.init_states(batch_size=32, key=getkey())
    size = 64 * 32
    for fn in (ham.dEdg, ham.energy_and_dEdg, ham.energy):
        jaxpr = jax.make_jaxpr(jax.vmap(fn))(xs).jaxpr
        assert _big_transposes(jaxpr, size) == [], fn.__name__

    def run(xs):
        return jax.vmap(lambda x: hl.descend(ham, x, steps=3, dt=0.1))(xs)

    assert _big_transposes(jax.make_jaxpr(run)(xs).jaxpr, size) == []


@pytest.mark.parametrize("name", sorted(LAGRANGIANS))
def test_batched_equals_per_sample(getkey, name):
    """Values and first and second derivatives, for the states and for the memory's
    parameters, are the same in the vmapped layout as one sample at a time."""
    ham = _memory(getkey, LAGRANGIANS[name]())
    xs = ham.init_states(batch_size=4, key=getkey())
    one = [{"v": x} for x in xs["v"]]

    def loss(ham, x):
        energy, dEdg = ham.energy_and_dEdg(x)
        return energy + jnp.sum(dEdg["v"] ** 2)

    def hessian(ham, x):
        return jax.hessian(lambda x: ham.energy({"v": x}))(x)

    @eqx.filter_jit
    def batched(ham, xs):
        grad = jax.grad(lambda ham: jnp.sum(jax.vmap(lambda x: loss(ham, x))(xs)))(ham)
        dEdg = jax.vmap(ham.dEdg)(xs)["v"]
        return grad, dEdg, jax.vmap(lambda x: hessian(ham, x))(xs["v"])

    @eqx.filter_jit  # one compilation, shared by the samples
    def per_sample(ham, x):
        return jax.grad(loss)(ham, x), ham.dEdg(x)["v"], hessian(ham, x["v"])

    grad, dEdg, hess = batched(ham, xs)
    looped = [per_sample(ham, x) for x in one]
    summed = jax.tree.map(lambda *gs: sum(gs), *[r[0] for r in looped])
    assert tree_allclose(grad, summed, rtol=1e-10, atol=1e-12)
    assert tree_allclose(dEdg, jnp.stack([r[1] for r in looped]))
    for h, r in zip(hess, looped):
        assert tree_allclose(h, r[2])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("fn", [hl.lagr_softmax, hl.lagr_ghostmax])
def test_infinite_entries(fn, dtype):
    """Like `jax.nn.logsumexp`: all -inf gives -inf (0 for the ghostmax, whose ghost
    logit is 0), a +inf entry gives +inf, and -inf entries drop out."""
    inf = jnp.inf
    all_neg = fn(jnp.array([-inf, -inf], dtype))
    assert all_neg.dtype == dtype
    assert all_neg[0] == (0.0 if fn is hl.lagr_ghostmax else -inf)
    assert fn(jnp.array([inf, 1.0], dtype))[0] == inf
    some = jnp.array([-inf, 1.0, 2.0], dtype)
    expected = fn(jnp.array([1.0, 2.0], dtype))
    np.testing.assert_allclose(fn(some), expected, rtol=1e-6)
    grad = jax.grad(lambda x: fn(x).sum())(some)
    np.testing.assert_allclose(grad[1:], jax.grad(lambda x: fn(x).sum())(some[1:]))
    assert grad[0] == 0
