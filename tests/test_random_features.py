import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import run_without_hook, tree_allclose

import hamux_lagr as hl
from hamux_lagr._synapses.random_features import RandomFeatureMemory


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _errors(patterns, queries, beta, num_features, keys):
    """Mean |E_hat - E| and mean ||grad E_hat - grad E|| over keys and queries, for
    "dot" and "l2" (rows), computed in one compilation."""
    exact = {
        "dot": hl.DenseMemory(patterns, hl.LSoftmax(beta)),
        "l2": hl.DenseMemory(patterns, hl.LSoftmax(beta), similarity="l2"),
    }

    @jax.jit
    def errors(keys):
        out = []
        for similarity in ("dot", "l2"):
            e0, g0 = jax.vmap(jax.value_and_grad(exact[similarity]))(queries)

            def one(key):
                memory = RandomFeatureMemory.from_patterns(
                    patterns, beta, num_features, key=key, similarity=similarity
                )
                return jax.vmap(jax.value_and_grad(memory))(queries)

            e, g = jax.vmap(one)(keys)
            out.append(
                jnp.stack(
                    [
                        jnp.mean(jnp.abs(e - e0[None])),
                        jnp.mean(jnp.linalg.norm(g - g0[None], axis=-1)),
                    ]
                )
            )
        return jnp.stack(out)

    return np.asarray(errors(keys))


def test_energy_and_gradient_errors_fall_like_one_over_sqrt_features(rng):
    patterns = _unit(rng.standard_normal((16, 8)))
    # Queries of norms around 1 (for "l2" the norms matter: it is not "dot" shifted).
    queries = _unit(rng.standard_normal((8, 8))) * rng.uniform(0.5, 1.2, (8, 1))
    keys = jax.random.split(jax.random.key(0), 6)
    sizes = [2**8, 2**10, 2**12, 2**14]
    # errors[size, similarity, energy or gradient]
    errors = np.stack([_errors(patterns, queries, 1.0, f, keys) for f in sizes])
    for curve in errors.reshape(len(sizes), 4).T:
        slope = np.polyfit(np.log(sizes), np.log(curve), 1)[0]
        assert -0.65 <= slope <= -0.35, (slope, curve)
    # And the estimate is close at the largest size.
    assert np.all(errors[-1, :, 0] < 0.02) and np.all(errors[-1, :, 1] < 0.1)


def test_add_in_two_batches_equals_building_from_all(rng):
    patterns = rng.standard_normal((12, 6))
    key = jax.random.key(2)
    whole = RandomFeatureMemory.from_patterns(patterns, 2.0, 64, key=key)
    first = RandomFeatureMemory.from_patterns(patterns[:5], 2.0, 64, key=key)
    both = first.add(patterns[5:])
    assert tree_allclose(both, whole, rtol=1e-12)
    # `add` returns a new memory of the same size and leaves the old one alone.
    assert both.log_T.shape == first.log_T.shape == (64,)
    assert not tree_allclose(first, whole)
    # Under jit too (a traced batch of patterns).
    jitted = eqx.filter_jit(lambda m, p: m.add(p))(first, jnp.asarray(patterns[5:]))
    assert tree_allclose(jitted, whole, rtol=1e-12)


@pytest.mark.parametrize("similarity", ["dot", "l2"])
def test_finite_at_large_beta_and_norms_in_float32(similarity, rng):
    patterns = jnp.asarray(_unit(rng.standard_normal((32, 16))), jnp.float32)
    memory = RandomFeatureMemory.from_patterns(
        patterns, 30.0, 1024, key=jax.random.key(3), similarity=similarity
    )
    assert memory.log_T.dtype == jnp.float32
    queries = jnp.concatenate(
        [patterns[:2], 5.0 * patterns[2:3], jnp.zeros((1, 16), jnp.float32)]
    )
    energy, grad = jax.jit(jax.vmap(jax.value_and_grad(memory)))(queries)
    assert energy.dtype == grad.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(energy))) and bool(jnp.all(jnp.isfinite(grad)))
    # (Finite, not accurate: at beta = 30 the kernel estimate's relative variance,
    # (exp(beta * |g + xi|^2) - 1) / F, is astronomically large.)
    # Large norms stay finite too (the naive features would overflow float32).
    big = RandomFeatureMemory.from_patterns(
        10.0 * patterns, 30.0, 256, key=jax.random.key(4), similarity=similarity
    )
    e, g = jax.value_and_grad(big)(10.0 * patterns[0])
    assert bool(jnp.isfinite(e)) and bool(jnp.all(jnp.isfinite(g)))


def test_orthogonal_projection(rng):
    patterns = _unit(rng.standard_normal((16, 8)))
    queries = _unit(rng.standard_normal((8, 8)))
    exact = jax.vmap(hl.DenseMemory(patterns, hl.LSoftmax(1.0)))(queries)

    @jax.jit
    def draws(keys):
        def one(key, orthogonal, num_features):
            memory = RandomFeatureMemory.from_patterns(
                patterns, 1.0, num_features, key=key, orthogonal=orthogonal
            )
            return memory.projection, jax.vmap(memory)(queries)

        iid = jax.vmap(lambda k: one(k, False, 8))(keys)
        orth = jax.vmap(lambda k: one(k, True, 8))(keys)
        return iid, orth, one(keys[0], True, 20)[0]

    (_, e_iid), (w_orth, e_orth), w = draws(jax.random.split(jax.random.key(6), 64))
    # Blocks of mutually orthogonal rows (the last one partial).
    assert w.shape == (20, 8)
    for block in (w[:8], w[8:16], w[16:]):
        gram = np.asarray(block @ block.T)
        assert np.allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-10)
    # Each row is marginally N(0, I): in particular every entry is positive in about
    # half of the draws (QR's sign convention alone would fix some signs).
    positive = np.mean(np.asarray(w_orth) > 0, axis=0)
    assert np.all(np.abs(positive - 0.5) < 0.2), positive
    # And the energy's error is lower than with independent draws.
    assert jnp.mean(jnp.abs(e_orth - exact[None])) < 0.95 * jnp.mean(
        jnp.abs(e_iid - exact[None])
    )


def test_image_shaped_layer_and_dtypes(rng):
    patterns = rng.standard_normal((3, 2, 4)).astype(np.float32) * 0.3
    memory = RandomFeatureMemory.from_patterns(patterns, 1.0, 32, key=jax.random.key(7))
    assert memory.projection.shape == (32, 2, 4)
    assert memory.num_features == 32
    g64 = rng.standard_normal((2, 4))
    energy, grad = jax.value_and_grad(memory)(g64)
    assert energy.dtype == grad.dtype == jnp.float64
    assert grad.shape == (2, 4)
    g32 = jnp.asarray(g64, jnp.float32)
    assert memory(g32).dtype == jnp.float32


def test_projection_is_a_fixed_draw_not_a_parameter(rng):
    patterns = rng.standard_normal((4, 5))
    memory = RandomFeatureMemory.from_patterns(patterns, 1.0, 16, key=jax.random.key(8))
    g = jnp.asarray(rng.standard_normal(5))
    grads = eqx.filter_grad(lambda m: m(g))(memory)
    assert bool(jnp.all(grads.projection == 0))
    assert bool(jnp.any(grads.log_T != 0))


def test_works_in_a_ham_with_descend(rng):
    patterns = _unit(rng.standard_normal((6, 16)))
    # A low beta: the estimate's variance grows like exp(beta * |g + xi|^2) / F.
    memory = RandomFeatureMemory.from_patterns(
        patterns, 1.0, 2**13, key=jax.random.key(9)
    )
    layer = hl.NeuronLayer(hl.LIdentity(), (16,))

    def ham(synapse):
        return hl.HAM({"x": layer}, {"memory": synapse}, [(("x",), "memory")])

    queries = {"x": jnp.asarray(patterns[:3] + 0.2 * rng.standard_normal((3, 16)))}

    @jax.jit
    def retrieve(queries):
        def run(synapse):
            return jax.vmap(lambda x: hl.descend(ham(synapse), x, steps=30, dt=0.2))(
                queries
            )

        return run(memory), run(hl.DenseMemory(patterns, hl.LSoftmax(1.0)))

    sol, sol_dense = retrieve(queries)
    xs, xs_dense = sol.xs, sol_dense.xs
    assert bool(jnp.all(jnp.diff(sol.energies, axis=1) <= 1e-9))
    # The approximate dynamics end near the exact ones (which end about 1.1 to 1.5
    # away from the queries).
    assert bool(jnp.all(jnp.linalg.norm(xs["x"] - xs_dense["x"], axis=1) < 0.2))


def test_errors(rng):
    patterns = rng.standard_normal((4, 3))
    key = jax.random.key(0)
    build = RandomFeatureMemory.from_patterns
    with pytest.raises(ValueError, match=r"`num_features` must be an int in \[1,"):
        build(patterns, 1.0, 0, key=key)
    for beta in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="`beta` must be a finite number > 0"):
            build(patterns, beta, 8, key=key)
    bad = patterns.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="`patterns` must be finite"):
        build(bad, 1.0, 8, key=key)
    with pytest.raises(ValueError, match=r"`patterns` must have shape"):
        build(patterns[0], 1.0, 8, key=key)
    with pytest.raises(ValueError, match="`patterns` must not be empty"):
        build(patterns[:0], 1.0, 8, key=key)
    memory = build(patterns, 1.0, 8, key=key)
    with pytest.raises(ValueError, match=r"acts on a layer of shape \(3,\).*\(4,\)"):
        memory(jnp.ones(4))
    with pytest.raises(ValueError, match=r"`patterns` must have shape \(K, \*\(3,\)\)"):
        memory.add(np.ones((2, 4)))
    with pytest.raises(ValueError, match="`patterns` must be finite"):
        memory.add(bad)
    with pytest.raises(ValueError, match=r"`log_T` must have shape \(8,\)"):
        RandomFeatureMemory(memory.projection, jnp.zeros(7), 1.0)
    with pytest.raises(ValueError, match="`projection` must have shape"):
        RandomFeatureMemory(jnp.ones(8), jnp.zeros(8), 1.0)
    # Traced non-finite patterns are caught where the memory is used: at the entry
    # of a solve (a check at construction would copy the patterns).
    layer = hl.NeuronLayer(hl.LIdentity(), (3,))

    @eqx.filter_jit
    def solve(p):
        ham = hl.HAM({"x": layer}, {"m": build(p, 1.0, 8, key=key)}, [(("x",), "m")])
        return hl.descend(ham, {"x": jnp.ones(3)}, steps=2, dt=0.1, throw=False)

    assert solve(jnp.asarray(patterns)).finite
    assert solve(jnp.asarray(bad)).result == hl.RESULTS.nonfinite_parameter


def test_type_errors_show_our_messages():
    out = run_without_hook(
        """
        import jax, jax.numpy as jnp
        from hamux_lagr._synapses.random_features import RandomFeatureMemory
        build = RandomFeatureMemory.from_patterns
        p, key = jnp.ones((2, 3)), jax.random.key(0)
        cases = {
            "similarity": lambda: build(p, 1.0, 8, key=key, similarity=1),
            "similarity_value": lambda: build(p, 1.0, 8, key=key, similarity="cos"),
            "beta": lambda: build(p, "2", 8, key=key),
            "num_features": lambda: build(p, 1.0, 8.0, key=key),
            "key": lambda: build(p, 1.0, 8, key=0),
            "orthogonal": lambda: build(p, 1.0, 8, key=key, orthogonal="yes"),
            "patterns": lambda: build("abc", 1.0, 8, key=key),
            "g": lambda: build(p, 1.0, 8, key=key)(None),
        }
        for name, case in cases.items():
            try:
                case()
                print(name, "NO ERROR")
            except Exception as e:
                print(name, type(e).__name__, str(e).splitlines()[0])
        """
    )
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
    expected = {
        "similarity": 'TypeError `similarity` must be the string "dot" or "l2"',
        "similarity_value": 'ValueError `similarity` must be "dot" or "l2" in '
        "`RandomFeatureMemory.from_patterns`, got 'cos'",
        "beta": "TypeError `beta` must be a Python number > 0",
        "num_features": "TypeError `num_features` must be a Python int",
        "key": "TypeError `key` must be a JAX PRNG key",
        "orthogonal": "TypeError `orthogonal` must be a bool",
        "patterns": "TypeError `patterns` must be a number or an array",
        "g": "TypeError `g` must be array-like",
    }
    for name, text in expected.items():
        assert lines[name].startswith(text), (name, lines[name])
