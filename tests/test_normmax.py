"""The alpha-normmax Lagrangian: the maximiser against a grid search and closed forms,
its limits in alpha, derivatives in x, beta and alpha at first and second order,
energies, numerics at large inputs and in low precision, and argument checks."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import run_without_hook, tree_allclose

from hamux_lagr._lagrangians.normmax import lagr_normmax, LNormmax


# Distinct entries, away from the edges of the supports used below.
X = np.array([0.3, -1.2, 0.9, 0.85, -0.1, 0.55])


def ref_normmax(z, alpha):
    """Reference normmax of a 1-d float64 NumPy vector, by a long bisection on
    sum_i (z_i - tau)_+^(alpha / (alpha - 1)) = 1."""
    k = alpha / (alpha - 1)
    y = z - z.max()
    lo, hi = -1.0, 0.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if np.sum(np.maximum(y - mid, 0) ** k) >= 1:
            lo = mid
        else:
            hi = mid
    q = np.maximum(y - lo, 0) ** (1 / (alpha - 1))
    return q / q.sum()


def ref_value(x, alpha, beta):
    p = ref_normmax(beta * x, alpha)
    return (p @ (beta * x) - np.sum(p**alpha) ** (1 / alpha) + 1) / beta


def _total(x, alpha, beta):
    return jnp.sum(lagr_normmax(x, alpha, beta))


# Compiled once per shape and dtype (alpha and beta are traced arguments), shared by
# the tests.
lagr = jax.jit(lagr_normmax)
total = jax.jit(_total)
activation = jax.jit(jax.grad(_total))
hessian = jax.jit(jax.hessian(_total))
grad_alpha = jax.jit(jax.grad(_total, argnums=1))
grad_beta = jax.jit(jax.grad(_total, argnums=2))
# The activation's derivatives in alpha and beta, forward and reverse.
act_fwd = jax.jit(jax.jacfwd(jax.grad(_total), argnums=(1, 2)))
act_rev = jax.jit(jax.jacrev(jax.grad(_total), argnums=(1, 2)))


def act(alpha=2.0, beta=1.0):
    return lambda x: activation(x, alpha, beta)


def central(f, x, h=1e-6):
    """Central finite differences of `f` (array-valued) at the float64 array `x`."""
    x = np.asarray(x, np.float64)
    cols = []
    for i in range(x.size):
        e = np.zeros_like(x)
        e.flat[i] = h
        cols.append((np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * h))
    return np.stack(cols, axis=-1)


# ----------------------------------------------------------------------------------
# the maximiser
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.3, 2.0, 3.5])
def test_maximiser_matches_a_grid_search_on_the_simplex(alpha):
    # The definition, max over p in the simplex of <p, z> - ||p||_alpha + 1, searched
    # on a grid of the 2-simplex: nothing of the threshold derivation is used.
    z = np.array([0.4, -0.3, 0.1])
    n = 1201
    a, b = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="ij")
    keep = a + b <= 1
    grid = np.stack([a[keep], b[keep], np.maximum(1 - a[keep] - b[keep], 0)], 1)
    scores = grid @ z - np.sum(grid**alpha, 1) ** (1 / alpha) + 1
    best = grid[np.argmax(scores)]
    x = jnp.asarray(z)
    value = float(lagr(x, alpha, 1.0)[0])
    p = np.asarray(act(alpha)(x))
    assert value >= scores.max() - 1e-12
    assert value - scores.max() < 1e-5
    assert np.max(np.abs(p - best)) < 2e-3


def test_alpha_two_closed_forms():
    # Two entries, gap d < 1 at alpha = 2: (u)^2 + (u - d)^2 = 1 gives
    # p_1 = 1/2 + d / (2 sqrt(2 - d^2)).
    x = jnp.array([0.5, 0.0])
    p1 = 0.5 + 1 / (2 * np.sqrt(7))
    p = np.array([p1, 1 - p1])
    value = p @ np.asarray(x) - np.linalg.norm(p) + 1
    assert tree_allclose(act()(x), jnp.asarray(p), rtol=1e-14, atol=1e-15)
    assert tree_allclose(lagr(x, 2.0, 1.0), jnp.asarray([value]), rtol=1e-14)
    # Ties: uniform, ||p||_alpha = d^(1/alpha - 1).
    x = jnp.full((4,), 0.7)
    for alpha in (1.5, 2.0, 4.0):
        expect = 0.7 + (1 - 4 ** (1 / alpha - 1)) / 2.0
        assert tree_allclose(lagr(x, alpha, 2.0), jnp.asarray([expect]))
        assert tree_allclose(act(alpha, 2.0)(x), jnp.full((4,), 0.25))


def test_a_gap_of_one_is_the_argmax_at_every_alpha():
    # z_max - z_i >= 1 for every other i: tau = z_max - 1, a one-hot activation and
    # the value max(x).
    x = jnp.array([0.2, 1.3, -0.5, 0.3])
    for alpha in (1.2, 2.0, 6.0):
        assert tree_allclose(act(alpha)(x), jnp.array([0.0, 1.0, 0.0, 0.0]))
        assert tree_allclose(lagr(x, alpha, 1.0), jnp.array([1.3]))


@pytest.mark.parametrize("alpha,beta", [(1.2, 1.0), (2.0, 2.5), (3.0, 0.7), (7.0, 4.0)])
def test_value_and_activation_match_the_reference(alpha, beta):
    x = jnp.asarray(X)
    p = ref_normmax(beta * X, alpha)
    value = lagr(x, alpha, beta)
    assert tree_allclose(value, jnp.asarray([ref_value(X, alpha, beta)]), rtol=1e-13)
    g = act(alpha, beta)(x)
    assert tree_allclose(g, jnp.asarray(p), rtol=1e-12, atol=1e-14)
    assert jnp.all(g >= 0) and abs(float(jnp.sum(g)) - 1) < 1e-15
    # Exact zeros below the threshold (the reference has them at the same places).
    assert np.array_equal(np.asarray(g) == 0, p == 0) and np.any(p == 0)


def test_alpha_limits():
    x = jnp.asarray(X)
    # alpha -> 1: the regulariser ||p||_1 - 1 vanishes on the simplex, the argmax.
    g = act(1.001)(x)
    assert float(g[2]) > 0.999
    assert abs(float(lagr(x, 1.001, 1.0)[0]) - 0.9) < 1e-3
    # alpha -> inf: sum_i (z_i - tau)_+ = 1 is the sparsemax threshold and q_i -> 1:
    # uniform on the sparsemax support, here {0.9, 0.85, 0.55} (tau = 1.3 / 3).
    g = act(1e4)(x)
    expect = np.array([0, 0, 1, 1, 0, 1]) / 3.0
    assert np.max(np.abs(np.asarray(g) - expect)) < 1e-3


def stable_ref_value(x, alpha, beta, p=None):
    """`ref_value` with the norm in a stable float64 form, p_max times the alpha-norm
    of p / p_max (whose largest term is 1), and its alpha derivative at fixed p (the
    reference maximiser, or `p`) by central differences."""
    p = ref_normmax(beta * x, alpha) if p is None else p

    def norm(a):
        top = p.max()
        return top * np.sum((p / top) ** a) ** (1 / a)

    h = 1e-4 * alpha
    dnorm = (norm(alpha + h) - norm(alpha - h)) / (2 * h)
    return (p @ (beta * x) - norm(alpha) + 1) / beta, -dnorm / beta, p


@pytest.mark.parametrize("jitted", [True, False])
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_large_alpha_value_and_alpha_gradient_match_the_closed_form(jitted, dtype):
    # The norm's powers p_i^alpha underflow from alpha ~ 100 in float32 (1000 in
    # float64): the norm must be computed in log space, or the value is wrong and the
    # alpha gradient NaN. As alpha -> inf the alpha-norm tends to the max-norm.
    x = jnp.asarray(X, dtype)
    fn = jax.value_and_grad(_total, argnums=(0, 1, 2))
    module_fn = eqx.filter_value_and_grad(lambda m, x: m(x))
    if jitted:
        fn, module_fn = jax.jit(fn), eqx.filter_jit(module_fn)
    rtol = 1e-12 if dtype == jnp.float64 else 2e-5
    for alpha in (50.0, 100.0, 300.0, 1e3, 1e4, 1e6):
        ref, ref_dalpha, ref_p = stable_ref_value(X, alpha, 1.5)
        value, (g, dalpha, dbeta) = fn(x, jnp.asarray(alpha, dtype), 1.5)
        assert abs(float(value) - ref) <= rtol * abs(ref), (alpha, value, ref)
        assert np.allclose(np.asarray(g), ref_p, rtol=rtol, atol=rtol), alpha
        # The alpha gradient is tiny (about 1/alpha^2); its reference has the
        # truncation error of a central difference. It is taken at the computed
        # maximiser, whose rounding error in float32 is the input's, not the norm's.
        _, ref_dalpha, _ = stable_ref_value(X, alpha, 1.5, np.asarray(g, np.float64))
        dtol = 1e-6 if dtype == jnp.float64 else 1e-4
        assert abs(float(dalpha) - ref_dalpha) <= dtol * abs(ref_dalpha), (
            alpha,
            dalpha,
            ref_dalpha,
        )
        assert bool(jnp.isfinite(dbeta))
        module = LNormmax(jnp.asarray(alpha, dtype), jnp.asarray(1.5, dtype))
        m_value, m_grads = module_fn(module, x)
        assert tree_allclose(m_value, value, rtol=rtol)
        assert tree_allclose(m_grads.alpha, dalpha, rtol=dtol, atol=1e-30)


def test_bisection_accuracy(rng):
    # Random inputs, several alphas: the activation to ~1e-15 in float64.
    worst = 0.0
    for alpha in (1.1, 1.7, 2.0, 5.0):
        for _ in range(3):
            z = rng.normal(size=8) * 2
            g = np.asarray(act(alpha)(jnp.asarray(z)))
            worst = max(worst, float(np.max(np.abs(g - ref_normmax(z, alpha)))))
    assert worst < 1e-14


# ----------------------------------------------------------------------------------
# derivatives
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha,beta", [(1.5, 1.3), (2.0, 0.8), (3.5, 2.0)])
def test_derivatives_match_finite_differences(alpha, beta):
    x = jnp.asarray(X)
    # x: the activation, and its Jacobian (the Hessian).
    fd = central(lambda v: total(jnp.asarray(v), alpha, beta), X)
    assert np.max(np.abs(np.asarray(activation(x, alpha, beta)) - fd)) < 1e-8
    hess = np.asarray(hessian(x, alpha, beta))
    fd = central(lambda v: activation(jnp.asarray(v), alpha, beta), X)
    assert np.max(np.abs(hess - fd)) < 1e-7
    assert np.allclose(hess, hess.T, atol=1e-13)
    # alpha and beta, of the value and of the activation.
    h = 1e-6
    fd_a = (total(x, alpha + h, beta) - total(x, alpha - h, beta)) / (2 * h)
    fd_b = (total(x, alpha, beta + h) - total(x, alpha, beta - h)) / (2 * h)
    assert abs(float(grad_alpha(x, alpha, beta)) - float(fd_a)) < 1e-8
    assert abs(float(grad_beta(x, alpha, beta)) - float(fd_b)) < 1e-8
    fd_a = (activation(x, alpha + h, beta) - activation(x, alpha - h, beta)) / (2 * h)
    fd_b = (activation(x, alpha, beta + h) - activation(x, alpha, beta - h)) / (2 * h)
    for jac in (act_fwd, act_rev):
        da, db = jac(x, alpha, beta)
        assert np.max(np.abs(np.asarray(da - fd_a))) < 1e-7
        assert np.max(np.abs(np.asarray(db - fd_b))) < 1e-7


def test_third_order_is_exact():
    # The activation's rule is written in terms of the activation: differentiable
    # again. Directional derivative of the Hessian against finite differences.
    x, v = jnp.asarray(X), jnp.asarray(np.linspace(-1, 1, 6))
    third = jax.jit(lambda x: jax.jvp(lambda x: hessian(x, 1.7, 1.2), (x,), (v,))[1])
    h = 1e-5
    fd = (hessian(x + h * v, 1.7, 1.2) - hessian(x - h * v, 1.7, 1.2)) / (2 * h)
    assert np.max(np.abs(np.asarray(third(x) - fd))) < 1e-6


def test_closed_form_derivatives_in_beta():
    # dL/dbeta = (||p||_alpha - 1) / beta^2 (Danskin).
    alpha, beta = 2.5, 1.7
    p = ref_normmax(beta * X, alpha)
    expect = (np.sum(p**alpha) ** (1 / alpha) - 1) / beta**2
    assert abs(float(grad_beta(jnp.asarray(X), alpha, beta)) - expect) < 1e-14


def test_jit_vmap_jvp_and_axis():
    xs = jnp.asarray(np.stack([X, X[::-1] * 2, -X]))
    fn = jax.jit(lambda x, a, b: lagr_normmax(x, a, b, axis=-1))
    batched = jax.vmap(lambda x: fn(x, 1.8, 1.5))(xs)
    rows = jnp.stack([lagr(x, 1.8, 1.5) for x in xs])
    assert tree_allclose(batched, rows, rtol=1e-14)
    assert tree_allclose(fn(xs, 1.8, 1.5), rows, rtol=1e-14)
    # axis=0 is axis=-1 of the transpose.
    along_0 = jax.jit(lagr_normmax, static_argnums=3)(xs.T, 1.8, 1.5, 0)
    assert tree_allclose(along_0, rows.T, rtol=1e-14)
    # A per-row beta and alpha (broadcasting to the reduced shape).
    betas, alphas = jnp.array([[1.0], [2.0], [0.5]]), jnp.array([[1.5], [2.0], [3.0]])
    per_row = jnp.stack([lagr(xs[i], alphas[i, 0], betas[i, 0]) for i in range(3)])
    assert tree_allclose(fn(xs, alphas, betas), per_row, rtol=1e-13)
    # jvp in every argument at once equals the sum of the three gradients' products.
    tx, ta, tb = jnp.asarray(np.linspace(0, 1, 6)), 0.3, -0.2

    x = jnp.asarray(X)
    _, tangent = jax.jit(jax.jvp, static_argnums=0)(_total, (x, 1.8, 1.5), (tx, ta, tb))
    gx, ga, gb = jax.jit(jax.grad(_total, argnums=(0, 1, 2)))(x, 1.8, 1.5)
    assert abs(float(tangent) - float(gx @ tx + ga * ta + gb * tb)) < 1e-14


# ----------------------------------------------------------------------------------
# the module and its energy
# ----------------------------------------------------------------------------------


energy_and_activation = eqx.filter_jit(LNormmax.energy_and_activation)
call = eqx.filter_jit(lambda module, x: module(x))


def test_energy_is_the_closed_form():
    # E = <x, p> - L = (||p||_alpha - 1) / beta.
    for alpha, beta in ((1.5, 1.0), (2.0, 3.0), (4.0, 0.5)):
        module = LNormmax(alpha=alpha, beta=beta)
        p = ref_normmax(beta * X, alpha)
        expect = (np.sum(p**alpha) ** (1 / alpha) - 1) / beta
        energy, g = energy_and_activation(module, jnp.asarray(X))
        assert abs(float(energy) - expect) < 1e-14
        assert tree_allclose(g, jnp.asarray(p), atol=1e-14)
        assert float(energy) <= 0


def test_module_matches_the_function_clamps_beta_and_trains():
    x = jnp.asarray(X)
    module = LNormmax(alpha=2.5, beta=1.5)
    # Eager (concrete parameters: checked at trace time) and jitted.
    assert tree_allclose(module(x), total(x, 2.5, 1.5))
    assert tree_allclose(call(module, x), total(x, 2.5, 1.5))
    # A non-positive beta is clamped at min_beta.
    low = LNormmax(beta=-1.0, min_beta=0.25)
    assert tree_allclose(low(x), total(x, 2.0, 0.25))
    # Gradients in the learnable alpha and beta, through jit with the module an
    # argument, equal finite differences.
    grads = eqx.filter_jit(eqx.filter_grad(lambda m: m(x)))(module)
    h = 1e-6
    fd_a = (call(LNormmax(2.5 + h, 1.5), x) - call(LNormmax(2.5 - h, 1.5), x)) / (2 * h)
    fd_b = (call(LNormmax(2.5, 1.5 + h), x) - call(LNormmax(2.5, 1.5 - h), x)) / (2 * h)
    assert abs(float(grads.alpha) - float(fd_a)) < 1e-8
    assert abs(float(grads.beta) - float(fd_b)) < 1e-8
    leaves = eqx.tree_deserialise_leaves(_roundtrip(module), LNormmax())
    assert tree_allclose(leaves, module)


def _roundtrip(module):
    import io

    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, module)
    buffer.seek(0)
    return buffer


# ----------------------------------------------------------------------------------
# numerics
# ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jitted_parts():
    def parts(x, beta):
        value = lagr_normmax(x, 1.6, beta)
        g = act(1.6, beta)(x)
        db = jax.grad(lambda b: jnp.sum(lagr_normmax(x, 1.6, b)))(beta)
        return value, g, db

    return parts, jax.jit(parts)


@pytest.mark.parametrize("jitted", [False, True])
def test_large_inputs_and_temperatures_are_finite_and_exact(jitted_parts, jitted):
    parts = jitted_parts[jitted]
    base = np.array([1e3, -1e3, 999.9999, 999.99995, 0.0])
    # (Eager: the largest beta only, to keep the test fast.)
    for beta in (1.0, 1e2, 1e4) if jitted else (1e4,):
        for x0 in (base, -base) if jitted else (base,):
            value, g, db = parts(jnp.asarray(x0), jnp.asarray(beta))
            p = ref_normmax(beta * x0, 1.6)
            assert np.all(np.isfinite(np.asarray(g))) and np.isfinite(float(db))
            assert abs(float(value[0]) - ref_value(x0, 1.6, beta)) < 1e-12 * 1e3
            assert np.max(np.abs(np.asarray(g) - p)) < 1e-9
    if jitted:
        # float32: finite, and the value to about an ulp of its magnitude (1e3).
        for beta in (1.0, 1e4):
            x32 = jnp.asarray(base, jnp.float32)
            value, g, db = parts(x32, jnp.asarray(beta, jnp.float32))
            x0 = np.asarray(x32.astype(jnp.float64))
            assert value.dtype == g.dtype == db.dtype == jnp.float32
            assert np.all(np.isfinite(np.asarray(g))) and np.isfinite(float(db))
            assert abs(float(value[0]) - ref_value(x0, 1.6, beta)) < 1e-4
            assert (
                np.max(np.abs(np.asarray(g, np.float64) - ref_normmax(beta * x0, 1.6)))
                < 1e-6
            )
    # Infinite entries: a -inf entry gets no mass; an infinite maximum is the value,
    # as for the log-sum-exp.
    value, g, _ = parts(jnp.array([-jnp.inf, 0.5, 0.2]), jnp.asarray(2.0))
    assert abs(float(value[0]) - ref_value(np.array([0.5, 0.2]), 1.6, 2.0)) < 1e-14
    assert float(g[0]) == 0.0
    assert (
        float(parts(jnp.array([jnp.inf, 0.5, 0.2]), jnp.asarray(2.0))[0][0]) == np.inf
    )
    assert float(parts(jnp.full((3,), -jnp.inf), jnp.asarray(2.0))[0][0]) == -np.inf


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16, jnp.bfloat16])
def test_low_precision_keeps_its_dtype(dtype):
    # Half precision is computed in float32: the errors are those of rounding the
    # result (about half a unit in the last place), not of a float16 bisection.
    tol_g, tol_v = {
        jnp.float32: (1e-6, 1e-6),
        jnp.float16: (2.5e-4, 4e-4),
        jnp.bfloat16: (4e-3, 8e-3),
    }[dtype]
    x = jnp.asarray(X, dtype)
    beta = jnp.asarray(1.5, dtype)
    xs = np.asarray(x.astype(jnp.float64))
    for alpha in (1.3, 2.5):
        value = lagr(x, alpha, beta)
        g = activation(x, alpha, beta)
        db = grad_beta(x, alpha, beta)
        assert value.dtype == g.dtype == db.dtype == dtype
        p = ref_normmax(float(beta) * xs, alpha)
        assert np.max(np.abs(np.asarray(g.astype(jnp.float64)) - p)) < tol_g
        assert abs(float(value[0]) - ref_value(xs, alpha, float(beta))) < tol_v
    module = LNormmax(alpha=jnp.asarray(2.5, dtype), beta=jnp.asarray(1.5, dtype))
    energy, g = energy_and_activation(module, x)
    assert energy.dtype == g.dtype == dtype


# ----------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.0, 0.5, -2.0, np.nan, np.inf])
def test_bad_alpha_is_refused(alpha):
    x = jnp.asarray(X)
    with pytest.raises(ValueError, match="`alpha` must be finite and > 1 in `lagr_n"):
        lagr_normmax(x, alpha)
    # The module: a non-finite value is refused as every learnable parameter is.
    match = (
        "`alpha` must be finite and > 1 in `LNormmax`, got"
        if np.isfinite(alpha)
        else "`alpha` must be finite \\(no NaN or inf\\) in `LNormmax`"
    )
    with pytest.raises(ValueError, match=match):
        LNormmax(alpha=alpha)


def test_traced_bad_arguments_raise_at_run_time():
    x = jnp.asarray(X)
    fn = jax.jit(lambda a, b: lagr_normmax(x, a, b))
    with pytest.raises(Exception, match="`alpha` must be finite and > 1"):
        jax.block_until_ready(fn(jnp.asarray(1.0), jnp.asarray(1.0)))
    with pytest.raises(Exception, match="`beta` must be positive and finite"):
        jax.block_until_ready(fn(jnp.asarray(2.0), jnp.asarray(-1.0)))
    # A module whose alpha went bad during training (a jit argument).
    module = eqx.tree_at(lambda m: m.alpha, LNormmax(), jnp.asarray(0.9))
    call = eqx.filter_jit(lambda m: m(x))
    with pytest.raises(Exception, match="`alpha` must be finite and > 1 in `LNormmax`"):
        jax.block_until_ready(call(module))
    module = eqx.tree_at(lambda m: m.beta, LNormmax(), jnp.asarray(jnp.nan))
    with pytest.raises(Exception, match="`beta` must be finite"):
        jax.block_until_ready(call(module))
    assert np.isfinite(float(call(LNormmax())))


def test_other_bad_arguments():
    x = jnp.asarray(X)
    with pytest.raises(ValueError, match="`beta` must be positive and finite"):
        lagr_normmax(x, 2.0, 0.0)
    with pytest.raises(ValueError, match="`axis` is out of range in `lagr_normmax`"):
        lagr_normmax(x, axis=1)
    with pytest.raises(
        ValueError, match="`alpha` of shape \\(6,\\) does not broadcast"
    ):
        lagr_normmax(x, jnp.full((6,), 2.0))
    with pytest.raises(ValueError, match="`beta` must be finite"):
        LNormmax(beta=np.nan)
    with pytest.raises(ValueError, match="`axis` is out of range in `LNormmax`"):
        LNormmax(axis=2)(x)


def test_type_wrong_arguments_get_our_messages():
    out = run_without_hook(
        """
        import jax.numpy as jnp
        from hamux_lagr._lagrangians.normmax import LNormmax, lagr_normmax

        calls = {
            "alpha-str": lambda: lagr_normmax(jnp.ones(3), "2"),
            "alpha-none": lambda: lagr_normmax(jnp.ones(3), None),
            "beta-str": lambda: lagr_normmax(jnp.ones(3), 2.0, "2"),
            "x-none": lambda: lagr_normmax(None),
            "module-alpha-str": lambda: LNormmax(alpha="2"),
            "module-axis-float": lambda: LNormmax(axis=-1.0),
            "module-x-str": lambda: LNormmax()("abc"),
        }
        for name, call in calls.items():
            try:
                call()
                print(name, "NO ERROR")
            except (TypeError, ValueError) as e:
                print(name, type(e).__name__, e)
        """
    )
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
    assert (
        "TypeError `alpha` must be a number or an array in `lagr_normmax`"
        in (lines["alpha-str"])
    )
    assert "TypeError `alpha` must be a number or an array" in lines["alpha-none"]
    assert "TypeError `beta` must be a number or an array" in lines["beta-str"]
    assert "TypeError `x` must be array-like" in lines["x-none"]
    assert (
        "TypeError `alpha` must be a number or an array in `LNormmax`"
        in (lines["module-alpha-str"])
    )
    assert "TypeError `axis` must be an int in `LNormmax`" in lines["module-axis-float"]
    assert "TypeError `x` must be array-like" in lines["module-x-str"]
