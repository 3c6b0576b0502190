"""The sparsemax and alpha-entmax Lagrangians: values, activations, derivatives in x,
beta and alpha, energies, numerics and argument checks."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import run_without_hook, tree_allclose

from hamux_lagr import lagr_softmax
from hamux_lagr._lagrangians.normmax import lagr_normmax, LNormmax
from hamux_lagr._lagrangians.sparse import (
    bisection_steps,
    lagr_entmax,
    lagr_sparsemax,
    LEntmax,
    LSparsemax,
)


# Entries with distinct values, away from the edges of the supports used below.
X = np.array([0.3, -1.2, 0.9, 0.85, -0.1, 0.55])


def ref_entmax(z, alpha):
    """Reference alpha-entmax of a 1-d float64 NumPy vector, by a long bisection."""
    a = alpha - 1
    xa = a * (z - z.max())
    lo, hi = -1.0, 0.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if np.sum(np.maximum(xa - mid, 0) ** (1 / a)) >= 1:
            lo = mid
        else:
            hi = mid
    p = np.maximum(xa - lo, 0) ** (1 / a)
    return p / p.sum()


def ref_tsallis(p, alpha):
    return (1 - np.sum(p**alpha)) / (alpha * (alpha - 1))


def fd(f, t, h=1e-6):
    return (f(t + h) - f(t - h)) / (2 * h)


def act(fn, *args):
    return jax.grad(lambda x: jnp.sum(fn(x, *args)))


# ----------------------------------------------------------------------------------
# sparsemax
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.5, 1.0, 4.0])
def test_sparsemax_value_and_activation_match_the_definition(beta):
    x = jnp.asarray(X)
    p = ref_entmax(beta * X, 2.0)
    value = (p @ (beta * X) - 0.5 * p @ p) / beta
    assert tree_allclose(lagr_sparsemax(x, beta), jnp.asarray([value]), rtol=1e-13)
    g = act(lagr_sparsemax, beta)(x)
    assert tree_allclose(g, jnp.asarray(p), atol=1e-13)
    # Exact zeros off the support, and a sparse answer at all.
    assert np.all((np.asarray(g) == 0) == (p == 0)) and np.any(p == 0)


def test_sparsemax_beta_derivative_is_danskin():
    x = jnp.asarray(X)
    beta = 1.7

    def value(b):
        return jnp.sum(lagr_sparsemax(x, b))

    z = beta * X
    p = ref_entmax(z, 2.0)
    danskin = -(p @ z - 0.5 * p @ p) / beta**2 + (p @ X) / beta
    d = jax.grad(value)(beta)
    assert abs(d - danskin) < 1e-13
    assert abs(d - fd(value, beta)) < 1e-8


def test_sparsemax_hessian_is_the_jacobian_of_sparsemax():
    x = jnp.asarray(X)
    beta = 2.0
    h = jax.hessian(lambda x: jnp.sum(lagr_sparsemax(x, beta)))(x)
    s = (ref_entmax(beta * X, 2.0) > 0).astype(float)
    expected = beta * (np.diag(s) - np.outer(s, s) / s.sum())
    assert tree_allclose(h, jnp.asarray(expected), atol=1e-13)
    g = act(lagr_sparsemax, beta)
    e0 = jnp.zeros(6).at[2].set(1.0)
    col = fd(lambda t: g(x + t * e0), 0.0)
    assert tree_allclose(h[:, 2], col, atol=1e-7)


def test_sparsemax_is_entmax_at_alpha_two():
    x = jnp.asarray(X)
    for beta in (1.0, 3.0):
        # Two solvers: the concrete 2.0 sorts, a traced alpha bisects.
        for a in (2.0, jnp.asarray(2.0 + 1e-300)):
            e = jax.jit(lagr_entmax)(x, a, beta) if isinstance(a, jax.Array) else None
            e = lagr_entmax(x, a, beta) if e is None else e
            # The Tsallis entropy at alpha = 2 is (1 - |p|^2) / 2: a constant 1/2
            # above the sparsemax's -|p|^2 / 2.
            assert tree_allclose(e, lagr_sparsemax(x, beta) + 0.5 / beta, rtol=1e-14)
        assert tree_allclose(
            act(lagr_entmax, 2.0, beta)(x), act(lagr_sparsemax, beta)(x), atol=1e-15
        )


# ----------------------------------------------------------------------------------
# entmax
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.2, 1.5, 3.0])
def test_entmax_value_and_activation_match_the_definition(alpha):
    x = jnp.asarray(X)
    beta = 2.0
    p = ref_entmax(beta * X, alpha)
    value = (p @ (beta * X) + ref_tsallis(p, alpha)) / beta
    assert tree_allclose(lagr_entmax(x, alpha, beta), jnp.asarray([value]), rtol=1e-13)
    assert tree_allclose(act(lagr_entmax, alpha, beta)(x), jnp.asarray(p), atol=1e-13)


@pytest.fixture(scope="module")
def traced_alpha():
    """`lagr_entmax` and its activation with `alpha` traced (the bisection)."""
    value = jax.jit(lagr_entmax)
    activation = jax.jit(jax.grad(lambda x, a, b: jnp.sum(lagr_entmax(x, a, b))))
    return value, activation


def test_bisection_accuracy_against_the_exact_solvers(traced_alpha, rng):
    value, activation = traced_alpha
    assert bisection_steps(jnp.float64) == 54 and bisection_steps(jnp.float32) == 25
    for _ in range(3):
        x = rng.normal(size=6) * 2
        for dtype, tol in ((jnp.float64, 1e-14), (jnp.float32, 1e-6)):
            xd = jnp.asarray(x, dtype)
            for alpha in (1.5, 2.0):
                exact = act(lagr_entmax, alpha, 1.0)(xd)
                bis = activation(xd, jnp.asarray(alpha, dtype), jnp.asarray(1, dtype))
                err = float(jnp.max(jnp.abs(bis - exact)))
                assert err < tol, (dtype, alpha, err)
                v_exact = lagr_entmax(xd, alpha)
                v_bis = value(xd, jnp.asarray(alpha, dtype), jnp.asarray(1, dtype))
                assert tree_allclose(v_bis, v_exact, rtol=tol, atol=tol)


def test_alpha_one_is_the_softmax():
    x = jnp.asarray(X)
    assert tree_allclose(lagr_entmax(x, 1.0, 2.0), lagr_softmax(x, 2.0))
    assert tree_allclose(lagr_entmax(x, 1, 2.0), lagr_softmax(x, 2.0))


def test_alpha_near_one_tends_to_the_softmax():
    # L_alpha - L_1 = (alpha - 1) dL/dalpha|_1 + O((alpha - 1)^2) with
    # dL/dalpha|_1 = (sum p log p - sum p log^2 p / 2) / beta, p the softmax: so the
    # first-order remainder is O(1e-6) at alpha - 1 = 1e-3, and the activations are
    # within O(1e-3) of the softmax.
    x = jnp.asarray(X)
    beta, a = 2.0, 1e-3
    p = np.asarray(jax.nn.softmax(beta * x))
    slope = (p @ np.log(p) - 0.5 * p @ np.log(p) ** 2) / beta
    diff = float(lagr_entmax(x, 1 + a, beta)[0] - lagr_softmax(x, beta)[0])
    assert abs(diff - a * slope) < 1e-5
    assert abs(diff) > 1e-4  # the first-order term is really there
    g = act(lagr_entmax, 1 + a, beta)(x)
    assert float(jnp.max(jnp.abs(g - jnp.asarray(p)))) < 5 * a


@pytest.mark.parametrize("alpha", [1.5, 2.5])
def test_entmax_derivatives_match_finite_differences(alpha):
    x = jnp.asarray(X)
    beta = 1.7

    def value(a, b):
        return jnp.sum(lagr_entmax(x, a, b))

    da, db = jax.grad(value, argnums=(0, 1))(alpha, beta)
    assert abs(da - fd(lambda a: value(a, beta), alpha)) < 1e-8
    assert abs(db - fd(lambda b: value(alpha, b), beta)) < 1e-8
    # Danskin, in closed form at the maximiser.
    p = ref_entmax(beta * X, alpha)
    assert abs(db + ref_tsallis(p, alpha) / beta**2) < 1e-12

    def activation(a):
        return act(lagr_entmax, a, beta)(x)

    dp = fd(activation, alpha)
    assert tree_allclose(jax.jacfwd(activation)(alpha), dp, atol=1e-7)
    assert tree_allclose(jax.jacrev(activation)(jnp.asarray(alpha)), dp, atol=1e-7)
    h = jax.hessian(lambda x: jnp.sum(lagr_entmax(x, alpha, beta)))(x)
    for i in (0, 2):
        e = jnp.zeros(6).at[i].set(1.0)
        col = fd(lambda t: act(lagr_entmax, alpha, beta)(x + t * e), 0.0)
        assert tree_allclose(h[:, i], col, atol=1e-7)
    assert tree_allclose(h, h.T, atol=1e-14)


def test_energies_are_the_closed_forms():
    x = jnp.asarray(X)
    for beta in (0.5, 3.0):
        p = ref_entmax(beta * X, 2.0)
        e = LSparsemax(beta).energy(x)
        assert abs(e - (p @ p) / (2 * beta)) < 1e-13
        for alpha in (1.5, 1.8):
            p = ref_entmax(beta * X, alpha)
            e = LEntmax(alpha, beta).energy(x)
            assert abs(e + ref_tsallis(p, alpha) / beta) < 1e-13


# ----------------------------------------------------------------------------------
# numerics
# ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jitted():
    def both(x, beta):
        out = {}
        for name, f in (
            ("sparsemax", lambda x: lagr_sparsemax(x, beta)),
            ("entmax15", lambda x: lagr_entmax(x, 1.5, beta)),
            ("entmax13", lambda x: lagr_entmax(x, 1.3, beta)),
        ):
            out[name] = jax.value_and_grad(lambda x, f=f: jnp.sum(f(x)))(x)
        return out

    return jax.jit(both)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_large_inputs_are_finite_and_exact(jitted, dtype):
    # |x| up to 1e3, beta up to 1e4: beta x up to 1e7. The top two entries differ by
    # 5e-5, so the activation is not one-hot even at beta = 1e4.
    x64 = np.array([1000.0, 999.99995, 0.0, -1000.0, 998.0])
    x = jnp.asarray(x64, dtype)
    tol = 1e-12 if dtype == jnp.float64 else 1e-3
    for beta in (1.0, 1e2, 1e4):
        b = jnp.asarray(beta, dtype)
        for out in (jitted(x, b), jitted.__wrapped__(x, b)):
            for name, alpha in (
                ("sparsemax", 2.0),
                ("entmax15", 1.5),
                ("entmax13", 1.3),
            ):
                v, g = out[name]
                xr = np.asarray(x, np.float64)
                # Shifted before scaling, as the library does (beta * 1000 - beta *
                # 999.99995 would lose 1e-9 to rounding in float64).
                p = ref_entmax(beta * (xr - xr.max()), alpha)
                reg = 0.5 * p @ p if alpha == 2 else -ref_tsallis(p, alpha)
                ref = xr.max() + (p @ (beta * (xr - xr.max())) - reg) / beta
                assert v.dtype == dtype and g.dtype == dtype
                assert np.isfinite(float(v)) and np.all(np.isfinite(g))
                assert abs(float(v) - ref) <= tol * max(1.0, abs(ref)), (name, beta)
                assert np.max(np.abs(np.asarray(g, np.float64) - p)) < (
                    1e-12 if dtype == jnp.float64 else 1e-5
                ), (name, beta)


def test_minus_infinity_entries_are_masked_out():
    # A -inf entry (a masked logit) gets exactly 0 and leaves the rest unchanged.
    x = jnp.asarray([0.3, -jnp.inf, 0.9, 0.85, -0.1, 0.55])
    finite = jnp.asarray(X[[0, 2, 3, 4, 5]])
    for f in (
        lambda x: lagr_sparsemax(x, 2.0),
        lambda x: lagr_entmax(x, 1.5, 2.0),
        lambda x: lagr_entmax(x, 1.3, 2.0),
    ):
        v, g = jax.value_and_grad(lambda x: jnp.sum(f(x)))(x)
        assert tree_allclose(v, jnp.sum(f(finite)), rtol=1e-14)
        assert float(g[1]) == 0.0
        assert tree_allclose(jnp.delete(g, 1), act(f)(finite), atol=1e-14)


_THRESHOLDED = {
    "sparsemax": (lambda x: lagr_sparsemax(x, 2.0), LSparsemax(2.0)),
    "entmax 1.5": (lambda x: lagr_entmax(x, 1.5, 2.0), LEntmax(1.5, 2.0)),
    "entmax 1.3": (lambda x: lagr_entmax(x, 1.3, 2.0), LEntmax(1.3, 2.0)),
    "normmax": (lambda x: lagr_normmax(x, 2.0, 2.0), LNormmax(2.0, 2.0)),
    "normmax 5": (lambda x: lagr_normmax(x, 5.0, 2.0), LNormmax(5.0, 2.0)),
}


@pytest.mark.parametrize("name", list(_THRESHOLDED))
@pytest.mark.parametrize("jitted", [False, True])
def test_infinite_maxima_give_the_limits(name, jitted):
    # One +inf entry: the Lagrangian is +inf and the activation the one-hot at it
    # (several: uniform over them), the limit of a growing entry. All entries -inf:
    # -inf, and the uniform distribution (the limit of equal entries). Never NaN.
    fn, module = _THRESHOLDED[name]
    inf = np.inf
    cases = [
        ([inf, 0.3, 1.0, -inf], inf, [1, 0, 0, 0]),
        ([0.3, inf, inf, -2.0], inf, [0, 0.5, 0.5, 0]),
        ([-inf, -inf, -inf, -inf], -inf, [0.25, 0.25, 0.25, 0.25]),
    ]
    value_and_grad = jax.value_and_grad(lambda x: jnp.sum(fn(x)))
    module_grads = eqx.filter_grad(lambda m, x: m(x))
    if jitted:
        value_and_grad, module_grads = (
            jax.jit(value_and_grad),
            eqx.filter_jit(module_grads),
        )
    for x, value, activation in cases:
        x = jnp.asarray(x)
        got, g = value_and_grad(x)
        assert float(got) == value, (x, got)
        assert tree_allclose(g, jnp.asarray(activation, x.dtype), atol=1e-12), (x, g)
        assert tree_allclose(module.activation(x), g, atol=1e-12)
        params = jax.tree_util.tree_leaves(module_grads(module, x))
        assert all(bool(jnp.all(jnp.isfinite(p))) for p in params), (x, params)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16, jnp.bfloat16])
def test_low_precision_keeps_the_dtype(dtype):
    x = jnp.asarray(X * 3, dtype)
    for f in (
        lambda x: lagr_sparsemax(x, 2.0),
        lambda x: lagr_entmax(x, 1.5, 2.0),
        lambda x: lagr_entmax(x, 1.4, 2.0),
    ):
        v, g = jax.value_and_grad(lambda x: jnp.sum(f(x)))(x)
        assert v.dtype == dtype and g.dtype == dtype
        assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g, np.float32)))
        assert abs(float(jnp.sum(g.astype(jnp.float32))) - 1) < 2e-2


def test_rank_two_with_axis_keeps_the_shape_rule():
    x = jnp.asarray(np.stack([X, X[::-1] * 2, X * 0.5]))  # (3, 6)
    for f in (
        lambda x, axis: lagr_sparsemax(x, 1.5, axis=axis),
        lambda x, axis: lagr_entmax(x, 1.7, 1.5, axis=axis),
    ):
        assert f(x, -1).shape == (3, 1)
        assert f(x, 0).shape == (1, 6)
        assert tree_allclose(f(x.T, 0).T, f(x, 1), rtol=1e-14)
        rows = jnp.concatenate([f(x[i], -1) for i in range(3)])
        assert tree_allclose(f(x, 1)[:, 0], rows, rtol=1e-14)


def test_every_transform(rng):
    xs = jnp.asarray(rng.normal(size=(4, 6)))
    x = xs[0]
    for f in (
        lambda x, b: lagr_sparsemax(x, b),
        lambda x, b: lagr_entmax(x, 1.5, b),
        lambda x, b: lagr_entmax(x, 1.25, b),
    ):
        eager = f(x, 2.0)
        assert tree_allclose(jax.jit(f)(x, 2.0), eager, rtol=1e-13)
        batched = jax.vmap(f, in_axes=(0, None))(xs, 2.0)
        assert tree_allclose(batched[0], eager, rtol=1e-13)
        t = jnp.asarray(rng.normal(size=6))
        _, tangent = jax.jvp(lambda x: f(x, 2.0), (x,), (t,))
        g = jax.grad(lambda x: jnp.sum(f(x, 2.0)))(x)
        assert tree_allclose(tangent, jnp.sum(g * t, keepdims=True), rtol=1e-13)
        _, vjp = jax.vjp(lambda x: f(x, 2.0), x)
        assert tree_allclose(vjp(jnp.ones(1))[0], g, rtol=1e-13)
        # beta's tangent alone (x's a symbolic zero), then both.
        _, tb = jax.jvp(lambda b: f(x, b), (2.0,), (1.0,))
        assert tree_allclose(tb, jax.grad(lambda b: jnp.sum(f(x, b)))(2.0)[None])
        _, both = jax.jvp(f, (x, 2.0), (t, 1.0))
        assert tree_allclose(both, tangent + tb, rtol=1e-13)
        h = jax.hessian(lambda x: jnp.sum(f(x, 2.0)))(x)
        assert h.shape == (6, 6) and np.all(np.isfinite(h))


# ----------------------------------------------------------------------------------
# modules
# ----------------------------------------------------------------------------------


def test_modules_equal_the_functions():
    x = jnp.asarray(np.stack([X, X * 2]))
    assert tree_allclose(LSparsemax(2.0)(x), jnp.sum(lagr_sparsemax(x, 2.0)))
    assert tree_allclose(
        LSparsemax(2.0, axis=0)(x), jnp.sum(lagr_sparsemax(x, 2.0, axis=0))
    )
    assert tree_allclose(
        LEntmax(1.3, 2.0, axis=0)(x), jnp.sum(lagr_entmax(x, 1.3, 2.0, axis=0))
    )
    m = LEntmax(1.5, 2.0)
    assert m.alpha.dtype == jnp.float64 and m.min_alpha == 1.01
    assert tree_allclose(jax.jit(lambda m, x: m(x))(m, x), m(x), rtol=1e-14)


def test_lentmax_alpha_gradients_match_finite_differences():
    x = jnp.asarray(X)

    def value(alpha):
        return LEntmax(alpha, 1.7)(x)

    for alpha in (1.3, 1.5):
        grads = eqx.filter_grad(lambda m: m(x))(LEntmax(alpha, 1.7))
        assert abs(grads.alpha - fd(value, alpha)) < 1e-8
        assert abs(grads.beta - fd(lambda b: LEntmax(alpha, b)(x), 1.7)) < 1e-8

        def activation(a):
            return LEntmax(a, 1.7).activation(x)

        assert tree_allclose(
            jax.jacfwd(activation)(jnp.asarray(alpha)), fd(activation, alpha), atol=1e-7
        )


def test_lentmax_clamps_alpha_at_min_alpha():
    x = jnp.asarray(X)
    low = LEntmax(0.5, 2.0, min_alpha=1.2)
    assert tree_allclose(low(x), LEntmax(1.2, 2.0)(x))
    assert float(eqx.filter_grad(lambda m: m(x))(low).alpha) == 0.0
    assert tree_allclose(LEntmax(1.0, 2.0)(x), LEntmax(1.01, 2.0)(x))


def test_lentmax_descends_toward_its_sparser_target():
    # One step of gradient descent on alpha moves the activation as predicted by its
    # alpha derivative: the sign and size of the learnable parameter's gradient.
    x = jnp.asarray(X)
    target = act(lagr_entmax, 2.0, 2.0)(x)

    def loss(m):
        return jnp.sum((m.activation(x) - target) ** 2)

    m = LEntmax(1.5, 2.0)
    g = eqx.filter_grad(loss)(m)
    step = eqx.apply_updates(m, jax.tree.map(lambda t: -1e-3 * t, g))
    assert float(g.alpha) < 0 and loss(step) < loss(m)


# ----------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------


def test_bad_arguments_raise_our_messages():
    x = jnp.asarray(X)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="`beta` must be positive and finite"):
            lagr_sparsemax(x, bad)
        with pytest.raises(ValueError, match="`beta` must be positive and finite"):
            lagr_entmax(x, 1.5, bad)
    for bad in (0.5, 0.999, float("nan"), float("inf"), -2.0):
        with pytest.raises(ValueError, match="`alpha` must be finite and > 1"):
            lagr_entmax(x, bad)
    with pytest.raises(ValueError, match="`alpha` must be finite and > 1"):
        lagr_entmax(x, jnp.asarray(0.5))
    with pytest.raises(ValueError, match="`axis` is out of range in `lagr_sparsemax`"):
        lagr_sparsemax(x, axis=1)
    with pytest.raises(ValueError, match="`axis` is out of range in `lagr_entmax`"):
        lagr_entmax(x, axis=-2)
    with pytest.raises(TypeError, match="`x` must be real in `lagr_entmax`"):
        lagr_entmax(x.astype(jnp.complex128))
    with pytest.raises(TypeError, match="`x` must be real in `lagr_sparsemax`"):
        lagr_sparsemax(x.astype(jnp.complex128))
    with pytest.raises(ValueError, match="`alpha` of shape"):
        lagr_entmax(x, jnp.full((6,), 1.5))
    with pytest.raises(ValueError, match="`alpha` must be finite .* in `LEntmax`"):
        LEntmax(float("nan"))
    with pytest.raises(ValueError, match="`min_alpha` must be a finite number > 1"):
        LEntmax(min_alpha=1.0)
    with pytest.raises(ValueError, match="`beta` must be finite .* in `LSparsemax`"):
        LSparsemax(float("inf"))


def test_traced_bad_alpha_and_beta_raise_at_run_time():
    x = jnp.asarray(X)
    f = jax.jit(lambda a, b: lagr_entmax(x, a, b))
    assert np.isfinite(float(f(1.5, 1.0)[0]))
    with pytest.raises(Exception, match="`alpha` must be finite and > 1"):
        f(0.5, 1.0).block_until_ready()
    with pytest.raises(Exception, match="`alpha` must be finite and > 1"):
        f(1.0, 1.0).block_until_ready()  # a traced alpha = 1 is not the softmax
    with pytest.raises(Exception, match="`beta` must be positive and finite"):
        f(1.5, float("nan")).block_until_ready()
    call = jax.jit(lambda m: m(x))
    with pytest.raises(Exception, match="`alpha`, `beta` must be finite"):
        nan_alpha = eqx.tree_at(lambda m: m.alpha, LEntmax(), jnp.asarray(jnp.nan))
        call(nan_alpha).block_until_ready()


def test_type_errors_without_the_hook():
    out = run_without_hook(
        """
        import jax.numpy as jnp
        from hamux_lagr._lagrangians.sparse import lagr_entmax, lagr_sparsemax
        from hamux_lagr._lagrangians.sparse import LEntmax, LSparsemax

        calls = {
            "entmax-alpha-str": lambda: lagr_entmax(jnp.ones(3), "2"),
            "entmax-alpha-none": lambda: lagr_entmax(jnp.ones(3), None),
            "sparsemax-beta-str": lambda: lagr_sparsemax(jnp.ones(3), "2"),
            "sparsemax-x-none": lambda: lagr_sparsemax(None),
            "LEntmax-alpha-str": lambda: LEntmax(alpha="1.5"),
            "LEntmax-min_alpha-str": lambda: LEntmax(min_alpha="1.1"),
            "LSparsemax-axis-float": lambda: LSparsemax(axis=-1.0),
            "LEntmax-x-str": lambda: LEntmax()("abc"),
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
        "`alpha` must be a number or an array in `lagr_entmax`"
        in lines["entmax-alpha-str"]
    )
    assert "`alpha` must be a number or an array" in lines["entmax-alpha-none"]
    assert (
        "`beta` must be a number or an array in `lagr_sparsemax`"
        in lines["sparsemax-beta-str"]
    )
    assert "`x` must be array-like" in lines["sparsemax-x-none"]
    assert (
        "`alpha` must be a number or an array in `LEntmax`"
        in lines["LEntmax-alpha-str"]
    )
    assert "`min_alpha` must be a Python number > 1" in lines["LEntmax-min_alpha-str"]
    assert "`axis` must be an int in `LSparsemax`" in lines["LSparsemax-axis-float"]
    assert "`x` must be array-like" in lines["LEntmax-x-str"]
