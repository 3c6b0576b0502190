"""Distance similarities (`DenseMemory(..., similarity="l2")`) and the log-sum-ReLU
(Epanechnikov) memory."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tree_allclose
from jax.test_util import check_grads

import hamux_lagr as hl


# ----------------------------------------------------------------------------------
# similarity="l2"
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5,), (2, 3)])
def test_l2_similarities_are_minus_half_squared_distances(rng, shape):
    patterns = jnp.asarray(rng.standard_normal((7, *shape)))
    g = jnp.asarray(rng.standard_normal(shape))
    memory = hl.DenseMemory(patterns, hl.LSoftmax(2.0), similarity="l2")
    axes = tuple(range(1, len(shape) + 1))
    expected = -0.5 * jnp.sum((g[None] - patterns) ** 2, axis=axes)
    assert tree_allclose(memory.similarities(g), expected, rtol=1e-12)
    dot = hl.DenseMemory(patterns, hl.LSoftmax(2.0))
    assert tree_allclose(dot.similarities(g), jnp.sum(patterns * g[None], axis=axes))


def test_l2_energy_is_the_gaussian_kernel_log_density(rng):
    patterns = jnp.asarray(rng.standard_normal((6, 4)))
    g = jnp.asarray(rng.standard_normal(4))
    beta = 1.5
    memory = hl.DenseMemory(patterns, hl.LSoftmax(beta), similarity="l2")
    d2 = jnp.sum((g[None] - patterns) ** 2, axis=1)
    expected = -jax.nn.logsumexp(-beta / 2 * d2) / beta
    assert tree_allclose(memory(g), expected, rtol=1e-12)
    # The input current pulls towards the softmax-weighted patterns.
    p = jax.nn.softmax(-beta / 2 * d2)
    assert tree_allclose(-jax.grad(memory)(g), p @ patterns - g, rtol=1e-10)
    check_grads(memory, (g,), order=2, modes=["fwd", "rev"])
    # Patterns and beta are learnable through it.
    check_grads(
        lambda P, b: hl.DenseMemory(P, hl.LSoftmax(b), similarity="l2")(g),
        (patterns, jnp.asarray(beta)),
        order=1,
        modes=["rev"],
    )


def test_l2_retrieves_the_nearest_pattern_where_dot_prefers_large_norms():
    # A short pattern next to the query and a long one pointing the same way: the dot
    # product favours the long one, the distance the near one.
    patterns = jnp.asarray([[1.0, 0.0], [4.0, 0.3]])
    query = jnp.asarray([1.1, 0.05])
    beta = 20.0
    dot = hl.DenseMemory(patterns, hl.LSoftmax(beta))
    l2 = hl.DenseMemory(patterns, hl.LSoftmax(beta), similarity="l2")
    assert np.argmax(jax.nn.softmax(beta * dot.similarities(query))) == 1
    assert np.argmax(jax.nn.softmax(beta * l2.similarities(query))) == 0
    # Descending the distance memory's energy retrieves the near pattern exactly.
    grad = jax.jit(jax.grad(lambda g: l2(g)))
    g = query
    for _ in range(100):
        g = g - 0.5 * grad(g)
    assert tree_allclose(g, patterns[0], atol=1e-8)


def test_bad_similarity_is_refused():
    with pytest.raises(ValueError, match="`similarity` must be 'dot' or 'l2'"):
        hl.DenseMemory(jnp.ones((2, 3)), hl.LSoftmax(), similarity="cosine")


# ----------------------------------------------------------------------------------
# log-sum-ReLU
# ----------------------------------------------------------------------------------


def test_log_sum_relu_closed_form_and_gradients(rng):
    x = jnp.asarray([-3.0, 0.2, -0.1, 0.4])
    beta, eps = 2.0, 1e-6
    relu = np.maximum(1 + beta * np.asarray(x), 0)
    value = hl.lagr_log_sum_relu(x, beta, eps)
    assert value.shape == (1,)
    assert tree_allclose(value, jnp.asarray([np.log(eps + relu.sum()) / beta]))
    active = (1 + beta * np.asarray(x) > 0).astype(np.float64)
    grad = jax.grad(lambda x: hl.lagr_log_sum_relu(x, beta, eps).sum())(x)
    assert tree_allclose(grad, jnp.asarray(active / (eps + relu.sum())), rtol=1e-12)
    # Away from the kinks every derivative is exact (finite differences, float64).
    check_grads(
        lambda x, b: hl.lagr_log_sum_relu(x, b, eps).sum(),
        (x, jnp.asarray(beta)),
        order=2,
        modes=["fwd", "rev"],
    )
    # Module = functional, summed; a rank-2 input reduces `axis` only.
    assert tree_allclose(hl.LLogSumReLU(beta, eps)(x), value.sum())
    xs = jnp.asarray(rng.standard_normal((3, 4)))
    assert hl.lagr_log_sum_relu(xs, beta, axis=0).shape == (1, 4)
    assert tree_allclose(
        hl.LLogSumReLU(beta, axis=0)(xs), hl.lagr_log_sum_relu(xs, beta, axis=0).sum()
    )


@pytest.mark.parametrize("jitted", [False, True])
def test_log_sum_relu_at_the_kink_and_beyond_every_kernel(jitted):
    # At the kink 1 + beta x = 0 the activation is the subgradient 0 (as documented),
    # not the half that `jnp.maximum` gives a tie.
    x = jnp.asarray([-0.5, 0.2, -3.0])
    grad = jax.grad(lambda x: hl.lagr_log_sum_relu(x, 2.0).sum())
    activation = hl.LLogSumReLU(2.0).activation
    if jitted:
        grad, activation = jax.jit(grad), eqx.filter_jit(activation)
    expected = jnp.asarray([0.0, 1 / (1e-6 + 1.4), 0.0])
    assert tree_allclose(grad(x), expected, rtol=1e-12)
    assert tree_allclose(activation(x), expected, rtol=1e-12)
    # A state beyond every kernel's reach: no force, finite energy, in every dtype.
    # (In float16 the derivative of the logarithm, 1 / eps = 1e6, overflows; 0 times
    # it was NaN.)
    rng = np.random.default_rng(0)
    patterns = jnp.asarray(rng.standard_normal((6, 4)) / 2)
    for dtype in (jnp.float16, jnp.bfloat16, jnp.float32):
        for chunk in (None, 4):
            memory = hl.DenseMemory(
                patterns.astype(dtype), hl.LLogSumReLU(1.0), "l2", chunk
            )
            fn = jax.value_and_grad(memory)
            fn = jax.jit(fn) if jitted else fn
            for far in (3.0, 300.0):
                energy, force = fn(jnp.full((4,), far, dtype))
                case = (dtype, chunk, far)
                assert energy.dtype == force.dtype == dtype, case
                assert abs(float(energy) - float(-np.log(1e-6))) < 0.05, case
                assert bool(jnp.all(force == 0)), (case, force)


def test_log_sum_relu_bad_arguments():
    x = jnp.ones(3)
    with pytest.raises(ValueError, match="`beta` must be positive and finite"):
        hl.lagr_log_sum_relu(x, -1.0)
    with pytest.raises(Exception, match="`beta` must be positive and finite"):
        jax.block_until_ready(jax.jit(lambda b: hl.lagr_log_sum_relu(x, b))(jnp.nan))
    with pytest.raises(ValueError, match="`eps` must be a finite number > 0"):
        hl.lagr_log_sum_relu(x, 1.0, 0.0)
    with pytest.raises(ValueError, match="`eps` must be a finite number > 0"):
        hl.LLogSumReLU(eps=-1.0)
    with pytest.raises(ValueError, match="`beta` must be finite"):
        hl.LLogSumReLU(beta=np.inf)
    # A finite beta below min_beta is clamped, as for every module.
    assert np.isfinite(hl.LLogSumReLU(beta=-1.0)(x))


def _epanechnikov_memory(patterns, beta):
    return hl.DenseMemory(patterns, hl.LLogSumReLU(beta), similarity="l2")


def _triangle():
    """Three patterns at the corners of a unit triangle; kernels of radius 0.7 reach
    the midpoints of the sides (0.5 away) and the centre (0.577), not the other
    corners (1 away)."""
    patterns = jnp.asarray([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    return patterns, 2 / 0.7**2


def test_stored_patterns_are_exact_fixed_points():
    patterns, beta = _triangle()
    memory = _epanechnikov_memory(patterns, beta)
    for p in patterns:
        assert np.all(np.asarray(jax.grad(memory)(p)) == 0.0)


def test_emergent_minima_outnumber_the_stored_patterns():
    # The minima of the log-sum-ReLU energy are the centroids of sets of patterns
    # whose kernels all cover the centroid (and no other kernel does): here the 3
    # corners, the 3 midpoints and the centre.
    patterns, beta = _triangle()
    memory = _epanechnikov_memory(patterns, beta)
    energy = jax.jit(lambda g: memory(g))
    grad = jax.jit(jax.grad(lambda g: memory(g)))
    directions = [jnp.asarray([np.cos(a), np.sin(a)]) for a in np.linspace(0, 6, 12)]
    minima = []
    for size in (1, 2, 3):
        for subset in itertools.combinations(range(3), size):
            c = jnp.mean(patterns[np.asarray(subset)], axis=0)
            if not np.allclose(grad(c), 0.0, atol=1e-12):
                continue
            if all(energy(c + 1e-3 * d) > energy(c) for d in directions):
                minima.append(subset)
    assert len(minima) == 7 > len(patterns)
    # Descending the energy from a point near a midpoint stops there, not at a
    # stored pattern.
    g = jnp.asarray([0.45, 0.05])
    for _ in range(200):
        g = g - 0.05 * grad(g)
    assert tree_allclose(g, jnp.asarray([0.5, 0.0]), atol=1e-6)
