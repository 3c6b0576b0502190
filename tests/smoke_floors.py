"""A smoke test of the oldest versions `pyproject.toml` allows: a retrieval, a
`fixed_point` gradient and an export. `.ci/run` runs it (`python
tests/smoke_floors.py`) in a fresh environment holding those versions; pytest does not
collect it (its name does not start with `test_`)."""

import importlib.metadata

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

import hamux_lagr as hl


def main() -> None:
    names = ("jax", "jaxlib", "equinox", "optimistix", "lineax", "jaxtyping")
    print(", ".join(f"{n} {importlib.metadata.version(n)}" for n in names))
    patterns = jnp.asarray(np.random.default_rng(0).standard_normal((5, 16)), "float32")
    ham = hl.HAM(
        neurons={"v": hl.NeuronLayer(hl.LIdentity(), (16,))},
        synapses={"memory": hl.DenseMemory(patterns, hl.LSoftmax(beta=4.0))},
        connections=[(("v",), "memory")],
    )
    queries = patterns + 0.1

    # A retrieval, checked (`throw=True`) and batched.
    recall = jax.vmap(lambda q: hl.descend(ham, {"v": q}, steps=50, dt=0.5).xs["v"])
    recalled = recall(queries)
    assert np.allclose(recalled, patterns, atol=0.05), "descend does not retrieve"

    # A fixed point's gradient: the implicit one equals backpropagation through the
    # loop.
    def loss(ham, adjoint):
        sol = hl.fixed_point(ham, {"v": queries[0]}, tol=1e-6, adjoint=adjoint)
        return jnp.sum(sol.xs["v"] ** 2)

    implicit = eqx.filter_grad(lambda h: loss(h, optx.ImplicitAdjoint()))(ham)
    unrolled = eqx.filter_grad(lambda h: loss(h, optx.RecursiveCheckpointAdjoint()))(
        ham
    )
    g, h = (jax.tree.leaves(eqx.filter(t, eqx.is_array)) for t in (implicit, unrolled))
    assert all(np.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(g, h))
    assert any(np.any(a != 0) for a in g), "the gradient is zero"

    # An export with `jax.export`, run again from its serialised form.
    free = jax.vmap(
        lambda q: hl.descend(ham, {"v": q}, steps=50, dt=0.5, throw=False).xs["v"]
    )
    exported = hl.to_jax_export(free, queries)
    restored = jax.export.deserialize(exported.serialize())
    assert np.allclose(restored.call(queries), recalled, rtol=1e-5, atol=1e-6)
    print("smoke test of the floor versions: passed")


if __name__ == "__main__":
    main()
