"""Tests of the functional Lagrangians `hamux_lagr.lagr_*`.

Every function is checked against float64 reference formulas written out below (value,
activation, parameter derivatives), against central finite differences, at extreme and
tiny inputs, in every floating dtype, and under every JAX transform.
"""

import functools as ft
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import run_without_hook
from jax.test_util import check_grads

import hamux_lagr as hl
from hamux_lagr import (
    lagr_exp,
    lagr_ghostmax,
    lagr_identity,
    lagr_layernorm,
    lagr_relu,
    lagr_repu,
    lagr_rexp,
    lagr_sigmoid,
    lagr_softmax,
    lagr_softmax_unstable,
    lagr_spherical_norm,
    lagr_tanh,
)


LOG2 = math.log(2.0)
F64 = np.float64


# ==================================================================================
# float64 reference formulas (numpy, written out by hand)
# ==================================================================================


def _pos(x):
    return np.maximum(x, 0.0)


def _logcosh(z):
    # log cosh z = |z| + log(1 + e^{-2|z|}) - log 2, and log(1 + 2 sinh^2(z/2)) near 0
    # (the identity cosh z = 1 + 2 sinh^2(z/2) keeps relative accuracy at tiny z).
    a = np.abs(z)
    small = np.minimum(a, 1.0)
    return np.where(
        a < 1.0,
        np.log1p(2.0 * np.sinh(small / 2.0) ** 2),
        a + np.log1p(np.exp(-2.0 * a)) - LOG2,
    )


def _softplus(z):
    return _pos(z) + np.log1p(np.exp(-np.abs(z)))


def _sigmoid(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, e) / (1.0 + e)


def _lse_parts(z, axis, ghost=False):
    """(logsumexp, softmax, sum p log p) over `axis` (keepdims), optionally with an
    extra zero logit (the ghost), computed without overflow or cancellation."""
    n = z.shape[axis]
    if ghost:
        zero = np.zeros_like(np.take(z, [0], axis=axis))
        z = np.concatenate([z, zero], axis=axis)
    m = np.max(z, axis=axis, keepdims=True)
    y = z - m
    s = np.sum(np.exp(y), axis=axis, keepdims=True)
    log_s = np.log(s)
    p = np.exp(y - log_s)
    neg_entropy = np.sum(p * (y - log_s), axis=axis, keepdims=True)
    return m + log_s, np.take(p, np.arange(n), axis=axis), neg_entropy


def _along(delta, ndim, axis):
    """A vector delta placed along `axis` (scalars unchanged)."""
    delta = np.asarray(delta, F64)
    if delta.ndim == 1 and ndim > 1:
        shape = [1] * ndim
        shape[axis] = delta.shape[0]
        delta = delta.reshape(shape)
    return delta


# Each reference takes float64 numpy `x` and the function's keyword arguments, and
# returns (value, activation, {scalar parameter: d value / d parameter, per element}).


def ref_identity(x):
    return x**2 / 2, x, {}


def ref_repu(x, n):
    act = np.where(x > 0, _pos(x) ** (n - 1), 0.0)
    return _pos(x) ** n / n, act, {}


def ref_relu(x):
    return ref_repu(x, 2.0)


def ref_exp(x, beta=1.0):
    z = beta * x
    return np.exp(z) / beta, np.exp(z), {"beta": np.exp(z) * (z - 1) / beta**2}


def ref_rexp(x, beta=1.0):
    xb = _pos(x)
    z = beta * xb
    value = np.exp(z) / beta - xb
    return value, np.expm1(z), {"beta": np.exp(z) * (z - 1) / beta**2}


def _z_tanh_minus_logcosh(z):
    # z tanh z - log cosh z, without the cancellation of the two ~|z| terms at large
    # |z|: = log 2 - log(1 + e^{-2a}) - a (1 - tanh a), a = |z|.
    a = np.abs(z)
    e = np.exp(-2.0 * a)
    large = LOG2 - np.log1p(e) - a * 2.0 * e / (1.0 + e)
    return np.where(a < 1.0, z * np.tanh(z) - _logcosh(z), large)


def ref_tanh(x, beta=1.0):
    z = beta * x
    dbeta = _z_tanh_minus_logcosh(z) / beta**2
    return _logcosh(z) / beta, np.tanh(z), {"beta": dbeta}


def ref_sigmoid(x, beta=1.0, scale=1.0):
    z = beta * x
    sp, sg = _softplus(z), _sigmoid(z)
    # z sigmoid(z) - softplus(z) is even in z: -(a sigmoid(-a) + log(1 + e^{-a}))
    a = np.abs(z)
    dbeta = -scale * (a * _sigmoid(-a) + np.log1p(np.exp(-a))) / beta**2
    return scale * sp / beta, scale * sg, {"beta": dbeta, "scale": sp / beta}


def ref_softmax(x, beta=1.0, axis=-1):
    lse, p, neg_h = _lse_parts(beta * x, axis)
    return lse / beta, p, {"beta": neg_h / beta**2}


def ref_ghostmax(x, beta=1.0, axis=-1):
    lse, p, neg_h = _lse_parts(beta * x, axis, ghost=True)
    return lse / beta, p, {"beta": neg_h / beta**2}


def ref_layernorm(x, gamma=1.0, delta=0.0, axis=-1, eps=1e-5):
    d = x.shape[axis]
    delta = _along(delta, x.ndim, axis)
    xc = x - np.mean(x, axis=axis, keepdims=True)
    s = np.sqrt(np.mean(xc**2, axis=axis, keepdims=True) + eps)
    value = d * gamma * s + np.sum(delta * x, axis=axis, keepdims=True)
    act = gamma * xc / s + delta
    dparams = {"gamma": d * s, "delta": np.sum(x, axis=axis, keepdims=True)}
    return value, act, dparams


def ref_spherical_norm(x, gamma=1.0, delta=0.0, axis=-1, eps=1e-5):
    delta = _along(delta, x.ndim, axis)
    s = np.sqrt(np.sum(x**2, axis=axis, keepdims=True) + eps)
    value = gamma * s + np.sum(delta * x, axis=axis, keepdims=True)
    dparams = {"gamma": s, "delta": np.sum(x, axis=axis, keepdims=True)}
    return value, gamma * x / s + delta, dparams


# ==================================================================================
# the cases: every function, with defaults and with non-default arguments
# ==================================================================================


class Case(NamedTuple):
    fn: Callable
    ref: Callable
    params: dict[str, Any]  # differentiable parameters (beta, scale, gamma, delta)
    static: dict[str, Any]  # n, axis, eps
    reduce: bool  # reduces over `axis` (keeps it at size 1)
    kink: bool = False  # not twice differentiable at 0 (keep test points away)

    def __call__(self, x, **override):
        kwargs = {**self.params, **self.static, **override}
        return self.fn(x, **kwargs)

    def reference(self, x, **override):
        kwargs = {**self.params, **self.static, **override}
        return self.ref(np.asarray(x, F64), **kwargs)

    @property
    def axis(self):
        return self.static.get("axis", -1)


DELTA4 = np.array([0.3, -0.2, 0.5, 0.1])

_CASES = {
    "identity": Case(lagr_identity, ref_identity, {}, {}, False),
    "repu4": Case(lagr_repu, ref_repu, {}, {"n": 4}, False, True),
    "repu3": Case(lagr_repu, ref_repu, {}, {"n": 3.0}, False, True),
    "repu1.5": Case(lagr_repu, ref_repu, {}, {"n": 1.5}, False, True),
    "repu1": Case(lagr_repu, ref_repu, {}, {"n": 1}, False, True),
    "relu": Case(lagr_relu, ref_relu, {}, {}, False, True),
    "exp": Case(lagr_exp, ref_exp, {}, {}, False),
    "exp-beta": Case(lagr_exp, ref_exp, {"beta": 0.7}, {}, False),
    "rexp": Case(lagr_rexp, ref_rexp, {}, {}, False, True),
    "rexp-beta": Case(lagr_rexp, ref_rexp, {"beta": 1.3}, {}, False, True),
    "tanh": Case(lagr_tanh, ref_tanh, {}, {}, False),
    "tanh-beta": Case(lagr_tanh, ref_tanh, {"beta": 2.5}, {}, False),
    "sigmoid": Case(lagr_sigmoid, ref_sigmoid, {}, {}, False),
    "sigmoid-beta-scale": Case(
        lagr_sigmoid, ref_sigmoid, {"beta": 0.6, "scale": 1.8}, {}, False
    ),
    "softmax": Case(lagr_softmax, ref_softmax, {}, {}, True),
    "softmax-beta-axis0": Case(
        lagr_softmax, ref_softmax, {"beta": 2.5}, {"axis": 0}, True
    ),
    "softmax_unstable": Case(lagr_softmax_unstable, ref_softmax, {}, {}, True),
    "softmax_unstable-beta-axis0": Case(
        lagr_softmax_unstable, ref_softmax, {"beta": 0.4}, {"axis": 0}, True
    ),
    "ghostmax": Case(lagr_ghostmax, ref_ghostmax, {}, {}, True),
    "ghostmax-beta-axis0": Case(
        lagr_ghostmax, ref_ghostmax, {"beta": 1.7}, {"axis": 0}, True
    ),
    "layernorm": Case(lagr_layernorm, ref_layernorm, {}, {}, True),
    "layernorm-params": Case(
        lagr_layernorm,
        ref_layernorm,
        {"gamma": 1.6, "delta": -0.4},
        {"axis": -1, "eps": 1e-3},
        True,
    ),
    "layernorm-vecdelta-axis0": Case(
        lagr_layernorm,
        ref_layernorm,
        {"gamma": 0.7, "delta": DELTA4},
        {"axis": 0},
        True,
    ),
    "spherical_norm": Case(lagr_spherical_norm, ref_spherical_norm, {}, {}, True),
    "spherical_norm-params": Case(
        lagr_spherical_norm,
        ref_spherical_norm,
        {"gamma": 2.2, "delta": 0.25},
        {"axis": -1, "eps": 1e-2},
        True,
    ),
    "spherical_norm-vecdelta": Case(
        lagr_spherical_norm,
        ref_spherical_norm,
        {"gamma": 0.9, "delta": DELTA4},
        {"axis": -1},
        True,
    ),
}

CASE_IDS = list(_CASES)
PARAM_CASE_IDS = [k for k, c in _CASES.items() if c.params]
ALL_FUNCTIONS = [
    lagr_identity,
    lagr_repu,
    lagr_relu,
    lagr_exp,
    lagr_rexp,
    lagr_tanh,
    lagr_sigmoid,
    lagr_softmax,
    lagr_softmax_unstable,
    lagr_ghostmax,
    lagr_layernorm,
    lagr_spherical_norm,
]
BETA_FUNCTIONS = [
    lagr_exp,
    lagr_rexp,
    lagr_tanh,
    lagr_sigmoid,
    lagr_softmax,
    lagr_softmax_unstable,
    lagr_ghostmax,
]
REDUCING = [lagr_softmax, lagr_softmax_unstable, lagr_ghostmax, lagr_layernorm]
REDUCING += [lagr_spherical_norm]
FLOATS = [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64]


# One case per function, with non-default arguments where the function has any: the
# cases for the compile-heavy transform, dtype and second-order tests.
FUNCTION_CASE_IDS = [
    "identity",
    "repu1.5",
    "relu",
    "exp-beta",
    "rexp-beta",
    "tanh-beta",
    "sigmoid-beta-scale",
    "softmax-beta-axis0",
    "softmax_unstable-beta-axis0",
    "ghostmax-beta-axis0",
    "layernorm-vecdelta-axis0",
    "spherical_norm-params",
]


def test_every_function_is_covered():
    covered = {c.fn for c in _CASES.values()}
    assert covered == set(ALL_FUNCTIONS)
    assert {_CASES[k].fn for k in FUNCTION_CASE_IDS} == set(ALL_FUNCTIONS)
    for f in BETA_FUNCTIONS:
        assert any(c.fn is f and c.params for c in _CASES.values())
    for f in ALL_FUNCTIONS:
        assert getattr(hl.functional, f.__name__) is f
        assert getattr(hl, f.__name__) is f


def _shapes(case):
    """Ranks 0-3 for the elementwise functions, 1-3 for the reducing ones (with the
    reduced axis of size 4, so that a vector `delta` of length 4 fits)."""
    if not case.reduce:
        return [(), (5,), (3, 4), (2, 3, 4)]
    if case.axis == 0:
        return [(4,), (4, 3), (4, 2, 3)]
    return [(4,), (3, 4), (2, 3, 4)]


def _matrix_shape(case):
    return (3, 4) if not case.reduce else _shapes(case)[1]


def _reduced(shape, axis):
    axis = axis % len(shape)
    return tuple(1 if i == axis else d for i, d in enumerate(shape))


def _data(shape, seed=0, kink=False, scale=1.5):
    """Deterministic float64 test points; with `kink`, at least 0.15 away from 0."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape) * scale
    if kink:
        x = np.sign(x) * (0.15 + np.abs(x))
        x = np.where(x == 0, 0.5, x)
    return x


def _param_args(case, dtype=jnp.float64):
    return {k: jnp.asarray(v, dtype) for k, v in case.params.items()}


TOL = {
    jnp.float64: dict(rtol=1e-10, atol=1e-12),
    jnp.float32: dict(rtol=2e-5, atol=2e-6),
    jnp.float16: dict(rtol=5e-3, atol=5e-3),
    jnp.bfloat16: dict(rtol=3e-2, atol=3e-2),
}


def _close(actual, expected, dtype=jnp.float64, scale=1.0, **kw):
    tol = {**TOL[dtype], **kw}
    np.testing.assert_allclose(
        np.asarray(actual, F64),
        np.asarray(expected, F64),
        rtol=tol["rtol"],
        atol=tol["atol"] * scale,
    )


def _check_finite(*arrays):
    for a in arrays:
        assert np.all(np.isfinite(np.asarray(a, F64))), a


# Compiling is what costs time on a CPU, so the numerical tests go through one jitted
# evaluator per case, reused across tests (jit caches per shape and dtype). Parameters
# are passed as traced arrays, so that e.g. beta = 1, 0.25, 4 share one compile.


@ft.cache
def _evaluator(name):
    case = _CASES[name]

    def f(x, params):
        return case.fn(x, **params, **case.static)

    def total(x, params):
        return f(x, params).sum()

    @ft.partial(jax.jit, static_argnames="full")
    def evaluate(xs, params, full, h=1e-6):
        """For each x: value and activation; where `full`, also the per-element
        derivative for each scalar parameter (forward mode), the gradient of the
        sum for every parameter (reverse mode) and, in float64, its central finite
        difference."""
        out = []
        for x, is_full in zip(xs, full):
            r = {"value": f(x, params), "act": jax.grad(total)(x, params)}
            if is_full:
                r["fwd"] = {
                    k: jax.jvp(
                        lambda q, k=k: f(x, {**params, k: q}), (p,), (jnp.ones_like(p),)
                    )[1]
                    for k, p in params.items()
                    if jnp.ndim(p) == 0
                }
                r["rev"] = jax.grad(total, argnums=1)(x, params)
                if x.dtype == jnp.float64:
                    r["fd"] = {}
                    for k, p in params.items():
                        eye = jnp.eye(p.size, dtype=p.dtype).reshape(p.size, *p.shape)

                        def shifted(e, k=k, p=p):
                            return total(x, {**params, k: p + h * e})

                        diff = jax.vmap(shifted)(eye) - jax.vmap(shifted)(-eye)
                        r["fd"][k] = (diff / (2 * h)).reshape(p.shape)
            out.append(r)
        return out

    return evaluate


def _evaluate(name, xs, params=None, full=True):
    case = _CASES[name]
    params = _param_args(case) if params is None else params
    full = tuple(full for _ in xs) if isinstance(full, bool) else tuple(full)
    return _evaluator(name)(tuple(xs), params, full=full)


# ==================================================================================
# closed forms: value, activation, parameter derivatives, shape rule
# ==================================================================================


def _check_closed_form(case, x, r, dtype):
    shape = np.shape(x)
    expected_shape = _reduced(shape, case.axis) if case.reduce else shape
    value, act = r["value"], r["act"]
    assert value.shape == expected_shape and value.dtype == dtype
    assert act.shape == shape and act.dtype == dtype
    ref_value, ref_act, ref_d = case.reference(x)
    _close(value, ref_value, dtype)
    _close(act, ref_act, dtype)
    for k, d in r.get("fwd", {}).items():
        assert d.shape == expected_shape and d.dtype == dtype
        _close(d, ref_d[k], dtype, scale=10.0)
    for k, g in r.get("rev", {}).items():
        p = case.params[k]
        assert g.shape == np.shape(p)
        assert np.all(np.isfinite(g)) and np.all(np.asarray(g) != 0), (k, g)
        if np.ndim(p) == 0:
            expected = np.sum(ref_d[k])
        else:  # a vector delta along `axis`: the sum of x over the other axes
            axis = case.axis % len(shape)
            others = tuple(i for i in range(len(shape)) if i != axis)
            expected = np.sum(np.asarray(x, F64), axis=others)
        _close(g, expected, dtype, scale=10.0)
        if "fd" in r:  # central finite differences, float64
            np.testing.assert_allclose(g, r["fd"][k], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", FUNCTION_CASE_IDS)
def test_closed_form_every_rank_float32(name):
    """Value and activation at random inputs of every rank, in float32."""
    case = _CASES[name]
    shapes = _shapes(case)
    xs = [jnp.asarray(_data(s, seed=i), jnp.float32) for i, s in enumerate(shapes)]
    results = _evaluate(name, xs, _param_args(case, jnp.float32), full=False)
    for x, r in zip(xs, results):
        _check_closed_form(case, x, r, jnp.float32)


@pytest.mark.parametrize("name", CASE_IDS)
def test_closed_form_float64_with_parameter_gradients(name):
    """Value, activation and every parameter's derivative (forward per element,
    reverse for the sum) against the closed forms and central finite differences."""
    case = _CASES[name]
    x = jnp.asarray(_data(_shapes(case)[2], seed=3))
    [r] = _evaluate(name, [x])
    _check_closed_form(case, x, r, jnp.float64)
    assert set(r["rev"]) == set(case.params)


@pytest.mark.parametrize(
    "name", ["tanh-beta", "sigmoid-beta-scale", "softmax-beta-axis0"]
)
def test_closed_form_float32_parameter_derivatives(name):
    case = _CASES[name]
    x = jnp.asarray(_data(_shapes(case)[2], seed=4), jnp.float32)
    [r] = _evaluate(name, [x], _param_args(case, jnp.float32))
    _check_closed_form(case, x, r, jnp.float32)


_REF = {
    lagr_softmax: ref_softmax,
    lagr_softmax_unstable: ref_softmax,
    lagr_ghostmax: ref_ghostmax,
    lagr_layernorm: ref_layernorm,
    lagr_spherical_norm: ref_spherical_norm,
}


@pytest.mark.parametrize("fn", REDUCING)
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2, -3])
def test_shape_rule_reducing(fn, axis):
    x = jax.ShapeDtypeStruct((2, 3, 4), jnp.float32)
    out = jax.eval_shape(lambda x: fn(x, axis=axis), x)
    assert out.shape == _reduced((2, 3, 4), axis) and out.dtype == jnp.float32
    act = jax.eval_shape(jax.grad(lambda x: fn(x, axis=axis).sum()), x)
    assert act.shape == (2, 3, 4) and act.dtype == jnp.float32


@pytest.mark.parametrize("fn", ALL_FUNCTIONS)
@pytest.mark.parametrize("shape", [(), (7,), (2, 3), (2, 1, 3, 2)])
def test_shape_rule_elementwise(fn, shape):
    if fn in REDUCING:
        if shape == ():
            pytest.skip("a reducing Lagrangian needs an axis")
        expected = shape[:-1] + (1,)
    else:
        expected = shape
    args = (3,) if fn is lagr_repu else ()
    x = jax.ShapeDtypeStruct(shape, jnp.float64)
    assert jax.eval_shape(lambda x: fn(x, *args), x).shape == expected


@pytest.mark.parametrize("fn", REDUCING)
def test_reducing_over_the_middle_axis(fn):
    x = jnp.asarray(_data((2, 3, 4), seed=1))
    value, act = jax.jit(
        lambda x: (fn(x, axis=1), jax.grad(lambda x: fn(x, axis=1).sum())(x))
    )(x)
    ref_value, ref_act, _ = _REF[fn](np.asarray(x), axis=1)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(act, ref_act, rtol=1e-12, atol=1e-14)


def test_softmax_family_relations():
    x = jnp.asarray(_data((3, 5)))

    @jax.jit
    def run(x):
        out = {}
        for axis, beta in [(0, 0.3), (-1, 7.0)]:
            out[axis, beta] = (
                lagr_softmax(x, beta, axis),
                lagr_softmax_unstable(x, beta, axis),
            )
        padded = jnp.concatenate([x, jnp.zeros((3, 1))], axis=-1)
        ghost = lagr_ghostmax(x, 1.3), lagr_softmax(padded, 1.3)
        g = jax.grad(lambda x: lagr_ghostmax(x, 1.3).sum())(x)
        return out, ghost, g, jax.nn.softmax(1.3 * padded, axis=-1)[:, :-1]

    out, ghost, g, ghost_act = run(x)
    for a, b in out.values():
        np.testing.assert_allclose(a, b, rtol=1e-13)
    np.testing.assert_allclose(*ghost, rtol=1e-13)
    # the ghost takes the rest of the mass: activations sum to less than 1
    assert np.all(np.sum(g, axis=-1) < 1.0)
    np.testing.assert_allclose(g, ghost_act, rtol=1e-13)


@jax.jit
def _repu_all(x, n):
    def total(x):
        return lagr_repu(x, n).sum()

    hessians = (
        jax.hessian(total)(x),
        jax.jacrev(jax.grad(total))(x),
        jax.jacfwd(jax.jacfwd(total))(x),
    )
    relu = lagr_relu(x), jax.grad(lambda x: lagr_relu(x).sum())(x), lagr_repu(x, 2)
    return lagr_repu(x, n), jax.grad(total)(x), hessians, relu


_REPU_X = jnp.asarray([-3.0, -1.0, -1e-3, -1e-300, 0.0, 1e-3, 0.5, 2.0])


@pytest.mark.parametrize("n", [1, 1.25, 1.5, 2, 2.5, 3, 4])
def test_repu_degrees_and_hessian(n):
    """Values and activations for integer and fractional n; the Hessian is finite
    (0) at negative inputs, even for fractional degrees; relu == repu(2)."""
    x = _REPU_X
    value, act, hessians, relu = _repu_all(x, jnp.asarray(n, jnp.float64))
    x64 = np.asarray(x)
    pos = x64 > 0
    xp = np.where(pos, x64, 1.0)
    np.testing.assert_allclose(value, np.where(pos, xp**n / n, 0.0), rtol=1e-14)
    np.testing.assert_allclose(act, np.where(pos, xp ** (n - 1), 0.0), rtol=1e-14)
    if n == 1:
        np.testing.assert_array_equal(value, jnp.maximum(x, 0))
        np.testing.assert_array_equal(act, pos.astype(act.dtype))
    hess_diag = np.where(pos, (n - 1) * xp ** (n - 2), 0.0)
    for hess in hessians:
        hess = np.asarray(hess)
        assert np.all(np.isfinite(hess))
        np.testing.assert_allclose(hess, np.diag(hess_diag), rtol=1e-12, atol=0)
        assert np.all(hess[~pos] == 0)
    np.testing.assert_array_equal(relu[0], relu[2])
    np.testing.assert_array_equal(relu[1], jnp.maximum(x, 0))


@pytest.mark.parametrize("fn", [lagr_layernorm, lagr_spherical_norm])
def test_norm_gamma_must_be_scalar(fn):
    message = f"`gamma` must be a scalar in `{fn.__name__}`, got shape \\(4,\\)"
    with pytest.raises(ValueError, match=message):
        fn(jnp.ones((3, 4)), gamma=jnp.ones(4))
    with pytest.raises(ValueError, match=message):
        fn(jnp.ones((3, 4)), jnp.asarray([1.0, 2.0, 3.0, 4.0]), 0.0)


# ==================================================================================
# jax.test_util.check_grads, and second derivatives in every mode
# ==================================================================================


def _grad_check_args(name):
    case = _CASES[name]
    x = jnp.asarray(_data(_matrix_shape(case), seed=7, kink=case.kink))
    names = list(case.params)

    def f(x, *ps):
        return case.fn(x, **dict(zip(names, ps)), **case.static)

    return f, (x, *[_param_args(case)[n] for n in names])


def _all_functions_at_once():
    """Every function (one case each, with its parameters) as one function of one
    tuple of arguments: one compile per transformation instead of twelve."""
    fs, args = zip(*[_grad_check_args(name) for name in FUNCTION_CASE_IDS])

    def f(*all_args):
        return {name: fi(*a) for name, fi, a in zip(FUNCTION_CASE_IDS, fs, all_args)}

    return jax.jit(f), args


def test_check_grads_order_1_every_function():
    """`check_grads` order 1, modes fwd and rev, on x and every parameter of every
    function (float64): a custom JVP that drops a tangent fails here."""
    f, args = _all_functions_at_once()
    check_grads(f, args, order=1, modes=("fwd", "rev"))


@pytest.mark.slow  # compile-heavy (~1 min on a CPU)
@pytest.mark.parametrize("name", FUNCTION_CASE_IDS)
def test_check_grads_order_2(name):
    """`check_grads` order 2, modes fwd and rev, on x and every parameter (~5 s each
    on a CPU; `test_second_derivatives` checks the same more cheaply)."""
    f, args = _grad_check_args(name)
    check_grads(jax.jit(f), args, order=2, modes=("fwd", "rev"))


# reverse-over-reverse too (compile-heavy) for the custom JVPs with parameters
_REV_OVER_REV = {"tanh-beta", "ghostmax-beta-axis0", "layernorm-vecdelta-axis0"}


@ft.cache
def _second_derivatives_fn(name):
    f, args = _grad_check_args(name)
    sizes = [int(np.size(a)) for a in args]
    shapes = [np.shape(a) for a in args]

    def total(flat):
        parts = jnp.split(flat, np.cumsum(sizes)[:-1])
        return f(*[p.reshape(s) for p, s in zip(parts, shapes)]).sum()

    @jax.jit
    def run(flat, h):
        hessians = (jax.hessian(total)(flat),)  # forward over reverse
        if name in _REV_OVER_REV:
            hessians += (jax.jacrev(jax.jacrev(total))(flat),)
        eye = jnp.eye(flat.size, dtype=flat.dtype)
        grad = jax.grad(total)
        fd = (
            jax.vmap(grad)(flat[None] + h * eye) - jax.vmap(grad)(flat[None] - h * eye)
        ) / (2 * h)
        return hessians, fd

    flat = jnp.concatenate([jnp.ravel(a) for a in args])
    return run, flat, sizes[0]


@pytest.mark.parametrize("name", FUNCTION_CASE_IDS)
def test_second_derivatives(name):
    """The Hessian in x *and* every parameter, forward-over-reverse (and
    reverse-over-reverse for the custom JVPs with parameters), equals central finite
    differences of the gradient (float64); its x block is positive semi-definite
    (rank-2 input)."""
    run, flat, nx = _second_derivatives_fn(name)
    hessians, fd = run(flat, 1e-5)
    fd = np.asarray(fd)
    for hess in hessians:
        hess = np.asarray(hess)
        assert np.all(np.isfinite(hess))
        np.testing.assert_allclose(hess, fd.T, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(
            hess, np.asarray(hessians[0]), rtol=1e-10, atol=1e-12
        )
    hx = np.asarray(hessians[0])[:nx, :nx]
    eig = np.linalg.eigvalsh((hx + hx.T) / 2)
    assert eig.min() >= -1e-10 * max(1.0, np.abs(eig).max()), eig


# ==================================================================================
# extreme and tiny inputs
# ==================================================================================


def _big(dtype, beta):
    """|x| from 1e4 to 1e30 (float32/64); the format's range at beta = 1."""
    big = [1e4, -1e4, 3.5e4, -7e5, 1e30, -1e30]
    if beta == 1.0:
        half_max = float(jnp.finfo(dtype).max) / 2
        return big + [half_max, -half_max]
    return big + [1e20, -1e20]


_TINY = {jnp.float32: [1e-4, -3e-3, 1e-6], jnp.float64: [1e-8, -1e-5, 3e-4]}
# Moderate inputs that cross every branch switch of a stable implementation.
_GRID = np.concatenate(
    [np.linspace(-4, 4, 33), [0.999, -0.999, 1.001, -1.001, 0.5001, 19.9, -20.1]]
    + [[40.0, -40.0, 60.0, -88.0, 89.5, -200.0, 700.0]]
)


def _special_inputs(dtype, beta):
    big, tiny = _big(dtype, beta), _TINY[dtype]
    x = np.asarray(jnp.asarray(np.concatenate([big, tiny, _GRID]), dtype), F64)
    return x, slice(0, len(big)), slice(len(big), len(big) + len(tiny))


def _exact_rtol(dtype):
    return 1e-6 if dtype == jnp.float32 else 1e-14


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("beta", [1.0, 0.25, 4.0])
def test_tanh_extreme_tiny_and_moderate_inputs(dtype, beta):
    x64, big, tiny = _special_inputs(dtype, beta)
    x, b = jnp.asarray(x64, dtype), jnp.asarray(beta, dtype)
    [r] = _evaluate("tanh", [x], {"beta": b})
    value, act, dbeta = r["value"], r["act"], r["fwd"]["beta"]
    _check_finite(value, act, dbeta, r["rev"]["beta"])
    # everywhere: the float64 reference
    ref_value, ref_act, ref_d = ref_tanh(x64, beta)
    _close(value, ref_value, dtype)
    _close(act, ref_act, dtype)
    _close(dbeta, ref_d["beta"], dtype, rtol=1e-4 if dtype == jnp.float32 else 1e-9)
    _close(r["rev"]["beta"], np.sum(ref_d["beta"]), dtype, rtol=1e-5)
    # large: log cosh z ~ |z| - log 2, tanh -> sign, d/dbeta -> log 2 / beta^2
    xb = x64[big]
    _close(value[big], np.abs(xb) - LOG2 / beta, dtype, rtol=_exact_rtol(dtype))
    np.testing.assert_array_equal(act[big], np.sign(xb))
    _close(dbeta[big], np.full_like(xb, LOG2 / beta**2), dtype)
    # tiny: log cosh z = z^2/2 - z^4/12 + ...  (a form that cancels near 0 fails here)
    # and z tanh z - log cosh z = z^2/2 - z^4/4 + ...
    z = beta * x64[tiny]
    np.testing.assert_allclose(np.asarray(value[tiny], F64), z**2 / 2 / beta, rtol=1e-3)
    np.testing.assert_allclose(
        np.asarray(dbeta[tiny], F64), z**2 / 2 / beta**2, rtol=1e-3
    )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("beta", [1.0, 0.25, 4.0])
def test_sigmoid_extreme_tiny_and_moderate_inputs(dtype, beta):
    scale = 1.5
    x64, big, tiny = _special_inputs(dtype, beta)
    x = jnp.asarray(x64, dtype)
    params = {"beta": jnp.asarray(beta, dtype), "scale": jnp.asarray(scale, dtype)}
    [r] = _evaluate("sigmoid-beta-scale", [x], params)
    value, act, fwd, rev = r["value"], r["act"], r["fwd"], r["rev"]
    _check_finite(value, act, *fwd.values(), *rev.values())
    ref_value, ref_act, ref_d = ref_sigmoid(x64, beta, scale)
    _close(value, ref_value, dtype)
    _close(act, ref_act, dtype)
    for k in ("beta", "scale"):
        _close(fwd[k], ref_d[k], dtype, rtol=1e-4 if dtype == jnp.float32 else 1e-9)
    # large: softplus(z)/beta ~ max(x, 0), sigmoid -> step, d/dbeta -> 0,
    # d/dscale -> max(x, 0)
    xb = x64[big]
    _close(value[big], scale * np.maximum(xb, 0), dtype, rtol=_exact_rtol(dtype))
    np.testing.assert_array_equal(act[big], scale * (xb > 0))
    np.testing.assert_allclose(np.asarray(fwd["beta"][big], F64), 0.0, atol=1e-30)
    _close(fwd["scale"][big], np.maximum(xb, 0), dtype, rtol=_exact_rtol(dtype))
    # tiny: softplus(z) = log 2 + z/2 + z^2/8 + ...
    z = beta * x64[tiny]
    expected = scale * (LOG2 + z / 2 + z**2 / 8) / beta
    np.testing.assert_allclose(np.asarray(value[tiny], F64), expected, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("beta", [1.0, 2.0, 0.5])
@pytest.mark.parametrize("name", ["exp", "rexp"])
def test_exp_rexp_grid(name, dtype, beta):
    case = _CASES[name]
    grid = _GRID[_GRID < 39]  # exp(beta x) stays finite in float32 for beta <= 2
    x = jnp.asarray(grid, dtype)
    x64 = np.asarray(x, F64)
    [r] = _evaluate(name, [x], {"beta": jnp.asarray(beta, dtype)})
    ref_value, ref_act, ref_d = case.reference(x64, beta=beta)
    _close(r["value"], ref_value, dtype)
    _close(r["act"], ref_act, dtype)
    rtol = 1e-4 if dtype == jnp.float32 else 1e-9
    _close(r["fwd"]["beta"], ref_d["beta"], dtype, rtol=rtol)


def test_exp_overflow_is_the_true_value():
    x = jnp.asarray([100.0, -1e30, 0.0], jnp.float32)
    [r] = _evaluate("exp", [x], {}, full=False)
    assert np.isinf(r["value"][0]) and np.isinf(r["act"][0])
    assert r["value"][1] == 0 and r["value"][2] == 1
    [r] = _evaluate("rexp", [x], {}, full=False)
    assert np.isinf(r["value"][0]) and np.isinf(r["act"][0])
    assert r["value"][1] == 1 and r["act"][1] == 0
    assert r["value"][2] == 1 and r["act"][2] == 0


def _softmax_rows(dtype, beta):
    rows = [
        [1e4, 1e4 - 1, -1e4, 0.0],
        [-1e4, -1e4 + 1, -1e4 - 2, -3e4],
        [1e30, 1e30, -1e30, 0.0],
        [-1e30, -1e30, -1e30, -1e30],
        [2e4, -5e5, 2e4 - 0.5, 1e30],
        [1e-4, -1e-4, 1e-7, 0.0],  # nearly uniform: sum p log p ~ -log 4
    ]
    if beta == 1.0:
        half_max = float(jnp.finfo(dtype).max) / 2
        rows += [[half_max, -half_max, 0.0, half_max], [-half_max] * 3 + [1.0]]
    else:
        rows += [[1e20, -1e20, 0.0, 1e20], [-1e20] * 3 + [1.0]]
    return np.asarray(jnp.asarray(rows, dtype), F64)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("beta", [1.0, 0.25, 4.0])
@pytest.mark.parametrize("name", ["softmax", "softmax_unstable", "ghostmax"])
def test_softmax_family_extreme_inputs(name, dtype, beta):
    ghost = name == "ghostmax"
    x64 = _softmax_rows(dtype, beta)
    x, b = jnp.asarray(x64, dtype), jnp.asarray(beta, dtype)
    [r] = _evaluate(name, [x], {"beta": b})
    value, act, dbeta = r["value"], r["act"], r["fwd"]["beta"]
    _check_finite(value, act, dbeta, r["rev"]["beta"])
    lse, p, neg_h = _lse_parts(beta * x64, -1, ghost=ghost)
    rtol = _exact_rtol(dtype)
    _close(value, lse / beta, dtype, rtol=rtol)
    _close(act, p, dtype, atol=1e-6 if dtype == jnp.float32 else 1e-14)
    _close(dbeta, neg_h / beta**2, dtype, rtol=1e-5, atol=1e-6 / beta**2)
    _close(r["rev"]["beta"], np.sum(neg_h) / beta**2, dtype, rtol=1e-5, atol=1e-5)
    # spot checks against asymptotic closed forms
    _close(value[2], 1e30 + LOG2 / beta, dtype, rtol=rtol)
    _close(act[2], [0.5, 0.5, 0.0, 0.0], dtype)
    _close(dbeta[2], -LOG2 / beta**2, dtype, rtol=1e-6)
    if not ghost:
        _close(value[3], -1e30 + math.log(4) / beta, dtype, rtol=rtol)
        _close(act[3], [0.25] * 4, dtype)
        _close(dbeta[3], -math.log(4) / beta**2, dtype, rtol=1e-6)
    else:
        _close(value[3], 0.0, dtype, atol=0)  # log(1 + 4 e^{-huge}) = 0
        _close(act[3], np.zeros(4), dtype, atol=0)
        _close(dbeta[3], 0.0, dtype, atol=0)


# float16 / bfloat16 at |x| up to 1e2: finite and close to the float64 answer.
_LOW_X = np.array([[100.0, -100.0, 50.0, -75.0, 0.0, 99.0, -0.5, 3.0]])


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("beta", [1.0, 0.5])
@pytest.mark.parametrize(
    "name", ["tanh", "sigmoid", "softmax", "softmax_unstable", "ghostmax"]
)
def test_low_precision_large_inputs(name, dtype, beta):
    case = _CASES[name]
    x = jnp.asarray(_LOW_X, dtype)
    x64 = np.asarray(x, F64)
    b = jnp.asarray(beta, dtype)
    [r] = _evaluate(name, [x], {"beta": b})
    value, act, dbeta = r["value"], r["act"], r["fwd"]["beta"]
    assert value.dtype == act.dtype == dbeta.dtype == r["rev"]["beta"].dtype == dtype
    _check_finite(value, act, dbeta, r["rev"]["beta"])
    ref_value, ref_act, ref_d = case.reference(x64, beta=beta)
    if dtype == jnp.bfloat16:
        tol = dict(rtol=1e-2, atol=2e-2)
    else:
        tol = dict(rtol=2e-3, atol=2e-3)
    _close(value, ref_value, **tol)
    _close(act, ref_act, **tol)
    _close(dbeta, ref_d["beta"], **tol)
    _close(r["rev"]["beta"], np.sum(ref_d["beta"]), rtol=tol["rtol"] * 3, atol=0.1)


# ==================================================================================
# convexity: Hessians positive semi-definite, and their closed forms
# ==================================================================================


@ft.cache
def _hessian_fn(name):
    case = _CASES[name]

    def hess(x, params):
        def total(x):
            return case.fn(x, **params, **case.static).sum()

        return jax.hessian(total)(x)

    return jax.jit(jax.vmap(hess, in_axes=(0, None)))


def _hessians(name, params=None, scale=1.5):
    """Hessians at three random rank-1 points (size 4), float64."""
    case = _CASES[name]
    xs = jnp.asarray(_data((3, 4), seed=10, kink=case.kink, scale=scale))
    params = _param_args(case) if params is None else params
    return np.asarray(xs), np.asarray(_hessian_fn(name)(xs, params))


def _hessian_closed_form(name, x):
    c = _CASES[name]
    kw = {**c.params, **c.static}
    if name == "identity":
        return np.eye(x.size)
    if name.startswith("repu"):
        n = kw["n"]
        return np.diag(np.where(x > 0, (n - 1) * np.abs(x) ** (n - 2), 0.0))
    if name == "relu":
        return np.diag((x > 0).astype(F64))
    beta = kw.get("beta", 1.0)
    if name.startswith("exp"):
        return np.diag(beta * np.exp(beta * x))
    if name.startswith("rexp"):
        return np.diag(np.where(x > 0, beta * np.exp(beta * x), 0.0))
    if name.startswith("tanh"):
        return np.diag(beta * (1 - np.tanh(beta * x) ** 2))
    if name.startswith("sigmoid"):
        s = _sigmoid(beta * x)
        return np.diag(kw.get("scale", 1.0) * beta * s * (1 - s))
    if name.startswith(("softmax", "ghostmax")):
        p = c.ref(x, beta)[1]
        return beta * (np.diag(p) - np.outer(p, p))
    gamma, eps = kw.get("gamma", 1.0), kw.get("eps", 1e-5)
    d = x.size
    if name.startswith("layernorm"):
        xc = x - x.mean()
        s = np.sqrt(np.mean(xc**2) + eps)
        centre = np.eye(d) - np.ones((d, d)) / d
        return gamma / s * (centre - np.outer(xc, xc) / (d * s**2))
    s = np.sqrt(np.sum(x**2) + eps)
    return gamma / s * (np.eye(d) - np.outer(x, x) / s**2)


@pytest.mark.parametrize("name", FUNCTION_CASE_IDS)
def test_hessian_psd_and_closed_form(name):
    xs, hessians = _hessians(name)
    for x, h in zip(xs, hessians):
        assert h.shape == (4, 4) and np.all(np.isfinite(h))
        np.testing.assert_allclose(
            h, _hessian_closed_form(name, x), rtol=1e-10, atol=1e-12
        )
        np.testing.assert_allclose(h, h.T, atol=1e-12 * max(1, np.abs(h).max()))
        eig = np.linalg.eigvalsh((h + h.T) / 2)
        assert eig.min() >= -1e-10 * max(1.0, np.abs(eig).max()), eig


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
def test_softmax_hessian_flat_along_ones_ghostmax_definite(beta):
    for name in ("softmax-beta-axis0", "softmax_unstable-beta-axis0"):
        _, hessians = _hessians(name, {"beta": jnp.asarray(beta)}, scale=0.5)
        for h in hessians:
            np.testing.assert_allclose(h @ np.ones(4), 0.0, atol=1e-12)
            eig = np.linalg.eigvalsh(h)
            assert abs(eig[0]) < 1e-12 and eig[1] > 1e-4, eig
    _, hessians = _hessians(
        "ghostmax-beta-axis0", {"beta": jnp.asarray(beta)}, scale=0.5
    )
    for h in hessians:
        eig = np.linalg.eigvalsh(h)
        assert eig[0] > 1e-4 * beta, eig  # positive definite
        # strictly convex along the direction where the softmax is flat
        assert np.ones(4) @ h @ np.ones(4) > 1e-3


# ==================================================================================
# dtypes
# ==================================================================================


def _default_float():
    return jnp.asarray(1.0).dtype


def _dtype_of(fn, x, *args):
    value = jax.eval_shape(lambda x: fn(x, *args), x)
    act = jax.eval_shape(jax.grad(lambda x: fn(x, *args).sum()), x)
    return value.dtype, act.dtype


_FN_ARGS = {lagr_repu: (3,)}


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("fn", ALL_FUNCTIONS)
def test_output_dtype_follows_input(fn, dtype):
    x = jax.ShapeDtypeStruct((3, 4), dtype)
    assert _dtype_of(fn, x, *_FN_ARGS.get(fn, ())) == (dtype, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("fn", BETA_FUNCTIONS + [lagr_layernorm, lagr_spherical_norm])
def test_parameters_cast_to_input_dtype(fn, dtype):
    x = jax.ShapeDtypeStruct((3, 4), dtype)
    n_params = 2 if fn in (lagr_sigmoid, lagr_layernorm, lagr_spherical_norm) else 1
    for param in (2, jnp.asarray(2.0, jnp.float64)):
        assert _dtype_of(fn, x, *[param] * n_params) == (dtype, dtype)


@pytest.mark.parametrize("fn", ALL_FUNCTIONS)
def test_integer_and_bool_inputs_promoted(fn):
    args = _FN_ARGS.get(fn, ())
    assert _default_float() == jnp.float64
    raw = np.array([[-2, 0, 1, 3], [1, 1, 0, -1], [2, -3, 4, 0]])
    for x in (
        jnp.asarray(raw, jnp.int32),
        np.asarray(raw, np.int8),
        np.asarray(np.abs(raw), np.uint8),
        jnp.asarray(raw > 0),
    ):
        out = jax.eval_shape(lambda x: fn(x, *args), x)
        assert out.dtype == jnp.float64 and out.shape[0] == 3
    # numerically, an int32 state is its float64 value
    f = jax.jit(lambda x: fn(x, *args))
    np.testing.assert_array_equal(
        f(jnp.asarray(raw, jnp.int32)), f(jnp.asarray(raw, jnp.float64))
    )


_ELEMENTWISE_CASES = [k for k in FUNCTION_CASE_IDS if not _CASES[k].reduce]
_SCALARS = (0.7, -2.0, 3, 0, True)


@pytest.mark.parametrize("name", _ELEMENTWISE_CASES)
def test_python_scalars_accepted(name):
    case = _CASES[name]
    # jit of a closure: the Python scalars and parameters reach the function
    # unchanged (concrete), as in eager use
    values = jax.jit(lambda: [case(x) for x in _SCALARS])()
    for x, value in zip(_SCALARS, values):
        assert value.shape == () and value.dtype == _default_float()
        expected = case.reference(np.asarray(float(x)))[0]
        np.testing.assert_allclose(value, expected, rtol=1e-12)
    assert case(0.5).dtype == _default_float()  # and eagerly


@pytest.mark.parametrize("fn", REDUCING)
def test_reducing_scalar_input_has_no_axis(fn):
    with pytest.raises(ValueError, match="a scalar input has no axis to reduce"):
        fn(1.5)


# ==================================================================================
# transforms: concrete (eager-like) parameters, vmap
# ==================================================================================


@pytest.mark.parametrize("name", FUNCTION_CASE_IDS)
def test_concrete_python_parameters(name):
    """With Python parameters closed over (concrete, as in eager use) the result is
    the same as with traced array parameters."""
    case = _CASES[name]
    x = jnp.asarray(_data(_matrix_shape(case), seed=8))
    value = jax.jit(lambda x: case(x))(x)
    ref_value = case.reference(x)[0]
    np.testing.assert_allclose(value, ref_value, rtol=1e-10)


@ft.cache
def _vmap_fn(name):
    case = _CASES[name]

    def f(x, params):
        return case.fn(x, **params, **case.static)

    @jax.jit
    def run(xb, params):
        values = jax.vmap(f, in_axes=(0, None))(xb, params)
        acts = jax.vmap(jax.grad(lambda x: f(x, params).sum()))(xb)
        return values, acts

    return run


@pytest.mark.parametrize("name", FUNCTION_CASE_IDS)
def test_vmap(name):
    case = _CASES[name]
    xb = jnp.asarray(_data((3, *_matrix_shape(case)), seed=9))
    values, acts = _vmap_fn(name)(xb, _param_args(case))
    for i in range(3):
        ref_value, ref_act, _ = case.reference(xb[i])
        np.testing.assert_allclose(values[i], ref_value, rtol=1e-10)
        np.testing.assert_allclose(acts[i], ref_act, rtol=1e-10, atol=1e-14)


def test_vmap_over_parameters():
    x = jnp.asarray(_data((3, 4), seed=9))
    betas = jnp.asarray([0.5, 1.0, 2.0])

    @jax.jit
    def run(x, betas):
        return (
            jax.vmap(lambda b: lagr_tanh(x, b))(betas),
            jax.vmap(lambda b: lagr_softmax(x, b, 0))(betas),
            jax.vmap(lambda g, d: lagr_layernorm(x, g, d))(betas, betas),
        )

    tanh, softmax, layernorm = run(x, betas)
    for i, b in enumerate(np.asarray(betas)):
        np.testing.assert_allclose(tanh[i], ref_tanh(np.asarray(x), b)[0], rtol=1e-12)
        np.testing.assert_allclose(
            softmax[i], ref_softmax(np.asarray(x), b, 0)[0], rtol=1e-12
        )
        expected = ref_layernorm(np.asarray(x), b, b)[0]
        np.testing.assert_allclose(layernorm[i], expected, rtol=1e-12)


# ==================================================================================
# a large inverse temperature, jitted and eager
# ==================================================================================

# beta * x - max(beta * x), fused by XLA into one multiply-add, has a rounding error
# of about |beta x| * eps: at beta = 1e8 it overflowed exp under jit (-inf, NaN).
_LARGE_BETA = {
    lagr_softmax: ref_softmax,
    lagr_softmax_unstable: ref_softmax,
    lagr_ghostmax: ref_ghostmax,
    lagr_tanh: ref_tanh,
    lagr_sigmoid: ref_sigmoid,
}
# Inputs up to 1e3: a clear maximum, ties, all negative, small ones.
_LARGE_BETA_XS = [
    [49.6, 19.6, 0.0, -3.0],
    [1e3, -1e3, 999.0, 0.5],
    [1e3, 1e3, -1e3, 0.0],
    [-1e3, -999.0, -998.5, -1e3],
    [0.01, -0.02, 0.0, 0.005],
]


def _value_act_dbeta(fn, x, beta):
    value = fn(x, beta)
    act = jax.grad(lambda x: fn(x, beta).sum())(x)
    dbeta = jax.grad(lambda b: fn(x, b).sum())(beta)
    return value, act, dbeta


@ft.cache
def _jitted_value_act_dbeta(fn):
    return jax.jit(ft.partial(_value_act_dbeta, fn))


def _check_large_beta(fn, dtype, betas, xs, jit):
    run = _jitted_value_act_dbeta(fn) if jit else ft.partial(_value_act_dbeta, fn)
    tol = TOL[dtype]["rtol"]
    for beta in betas:
        for x in xs:
            x = jnp.asarray(x, dtype)
            b = jnp.asarray(beta, dtype)
            value, act, dbeta = run(x, b)
            _check_finite(value, act, dbeta)
            x64, b64 = np.asarray(x, F64), float(np.asarray(b, F64))
            ref_value, ref_act, ref_d = _LARGE_BETA[fn](x64, b64)
            where = (fn.__name__, beta, x64)
            np.testing.assert_allclose(
                np.asarray(value, F64), ref_value, rtol=tol, atol=tol, err_msg=where
            )
            np.testing.assert_allclose(
                np.asarray(act, F64), ref_act, rtol=tol, atol=tol, err_msg=where
            )
            # d/dbeta scales like 1/beta**2
            np.testing.assert_allclose(
                float(dbeta),
                np.sum(ref_d["beta"]),
                rtol=tol,
                atol=tol / b64**2,
                err_msg=where,
            )


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("fn", list(_LARGE_BETA), ids=lambda f: f.__name__)
def test_large_beta_is_finite_and_the_closed_form(fn, dtype, jit):
    _check_large_beta(fn, dtype, [1e4, 1e6, 1e8], _LARGE_BETA_XS, jit)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("fn", list(_LARGE_BETA), ids=lambda f: f.__name__)
def test_large_beta_half_precision(fn, dtype):
    """Moderate sizes: beta up to 100, inputs up to 10 (beta x up to 1e3)."""
    xs = [[4.96, 1.96, 0.0, -0.3], [10.0, -10.0, 9.0, 0.5], [-10.0, -9.0, -8.5, -10.0]]
    _check_large_beta(fn, dtype, [10.0, 100.0], xs, jit=True)


# ==================================================================================
# bad arguments
# ==================================================================================

_BETA_MSG = r"`beta` must be positive and finite in `lagr_\w+`"


@pytest.mark.parametrize("fn", BETA_FUNCTIONS)
@pytest.mark.parametrize(
    "beta",
    [
        0,
        0.0,
        -1,
        -0.5,
        np.float64(-2.0),
        jnp.asarray(0.0),
        jnp.asarray(-3.0),
        np.asarray([-1.0]),
        jnp.asarray([1.0, -1.0])[1:],
    ],
    ids=repr,
)
def test_nonpositive_beta_raises(fn, beta):
    x = jnp.ones((3,))
    with pytest.raises(ValueError, match=_BETA_MSG):
        fn(x, beta)
    with pytest.raises(ValueError, match=_BETA_MSG):
        fn(x, beta=beta)


_REF_BETA = {
    lagr_exp: ref_exp,
    lagr_rexp: ref_rexp,
    lagr_tanh: ref_tanh,
    lagr_sigmoid: ref_sigmoid,
    lagr_softmax: ref_softmax,
    lagr_softmax_unstable: ref_softmax,
    lagr_ghostmax: ref_ghostmax,
}


@pytest.mark.parametrize("fn", BETA_FUNCTIONS)
@pytest.mark.parametrize(
    "beta", [np.nan, np.inf, -np.inf, jnp.asarray(np.nan)], ids=repr
)
def test_non_finite_beta_raises(fn, beta):
    with pytest.raises(ValueError, match=_BETA_MSG):
        fn(jnp.ones((3,)), beta)


@pytest.mark.parametrize("fn", BETA_FUNCTIONS)
def test_traced_beta_is_checked_under_jit(fn):
    x = jnp.asarray([0.5, -1.0, 2.0])
    jitted = jax.jit(fn)
    for bad in (-1.0, 0.0, np.nan, np.inf):
        with pytest.raises(Exception, match=_BETA_MSG):
            jax.block_until_ready(jitted(x, bad))
    expected = _REF_BETA[fn](np.asarray(x), 0.5)[0]
    np.testing.assert_allclose(jitted(x, 0.5), expected, rtol=1e-12)


def test_traced_beta_is_checked_under_vmap_and_grad():
    x = jnp.asarray([0.5, -1.0, 2.0])
    betas = jnp.asarray([1.0, -1.0])
    with pytest.raises(Exception, match=_BETA_MSG):
        jax.block_until_ready(jax.vmap(lambda b: lagr_tanh(x, b))(betas))
    with pytest.raises(Exception, match=_BETA_MSG):
        grad = jax.grad(lambda b: lagr_softmax(x, b).sum())(jnp.asarray(np.nan))
        jax.block_until_ready(grad)
    ok = jax.vmap(lambda b: lagr_tanh(x, b))(jnp.abs(betas))
    assert np.all(np.isfinite(ok))


_FINITE_PARAMETERS = {
    "sigmoid-scale": (lambda x, v: lagr_sigmoid(x, 1.0, v), "scale"),
    "layernorm-gamma": (lambda x, v: lagr_layernorm(x, v), "gamma"),
    "layernorm-delta": (lambda x, v: lagr_layernorm(x, 1.0, v), "delta"),
    "spherical-gamma": (lambda x, v: lagr_spherical_norm(x, v), "gamma"),
    "spherical-delta": (lambda x, v: lagr_spherical_norm(x, 1.0, v), "delta"),
    "repu-n": (lambda x, v: lagr_repu(x, v), "n"),
}


@pytest.mark.parametrize("name", sorted(_FINITE_PARAMETERS))
def test_non_finite_parameter_raises_eagerly_and_under_jit(name):
    call, param = _FINITE_PARAMETERS[name]
    message = f"`{param}` must be (>= 1 and )?finite in `lagr_\\w+`"
    x = jnp.asarray([0.5, -1.0, 2.0])
    jitted = jax.jit(call)
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match=message):
            call(x, bad)
        with pytest.raises(Exception, match=message):
            jax.block_until_ready(jitted(x, bad))
    _check_finite(jitted(x, 1.5))


def test_complex_state_or_parameter_raises():
    z = jnp.asarray([1.0 + 1.0j, 2.0, 0.5])
    for fn in ALL_FUNCTIONS:
        with pytest.raises(TypeError, match=r"`x` must be real in `lagr_\w+`"):
            fn(z, *_FN_ARGS.get(fn, ()))
    x = jnp.ones(3)
    for fn in BETA_FUNCTIONS:
        with pytest.raises(TypeError, match=r"`beta` must be real"):
            fn(x, jnp.asarray(2.0 + 0.0j))
    calls = {
        "scale": lambda v: lagr_sigmoid(x, 1.0, v),
        "gamma": lambda v: lagr_layernorm(x, v),
        "delta": lambda v: lagr_spherical_norm(x, 1.0, v),
        "n": lambda v: lagr_repu(x, v),
    }
    for param, call in calls.items():
        with pytest.raises(TypeError, match=f"`{param}` must be real"):
            call(jnp.asarray(2.0 + 0.0j))


def test_type_wrong_arguments_give_our_messages():
    """Without the jaxtyping hook (which rejects these first), a user sees ours."""
    out = run_without_hook(
        """
        import jax.numpy as jnp
        import hamux_lagr as hl

        x = jnp.ones(3)
        calls = {
            "x-str": lambda: hl.lagr_tanh("abc"),
            "x-none": lambda: hl.lagr_softmax(None),
            "x-bytes": lambda: hl.lagr_identity(b"1.0"),
            "n-str": lambda: hl.lagr_repu(x, "2"),
            "scale-str": lambda: hl.lagr_sigmoid(x, 1.0, "2"),
            "gamma-none": lambda: hl.lagr_layernorm(x, None),
            "eps-str": lambda: hl.lagr_spherical_norm(x, eps="1e-5"),
            "axis-float": lambda: hl.lagr_ghostmax(x, axis=0.0),
        }
        for fn in (hl.lagr_exp, hl.lagr_rexp, hl.lagr_tanh, hl.lagr_sigmoid,
                   hl.lagr_softmax, hl.lagr_softmax_unstable, hl.lagr_ghostmax):
            calls["beta-str-" + fn.__name__] = lambda fn=fn: fn(x, beta="2")
        for name, call in calls.items():
            try:
                call()
            except Exception as e:
                print(f"{name}|{type(e).__name__}|{e}".replace("\\n", " "))
            else:
                print(f"{name}|no error|")
        """
    )
    seen = {}
    for line in out.splitlines():
        name, kind, message = line.split("|", 2)
        seen[name] = (kind, message)
    expected = {
        "x-str": "`x` must be array-like (a JAX/NumPy array or a Python number) in "
        "`lagr_tanh`, got str 'abc'.",
        "x-none": "`x` must be array-like",
        "x-bytes": "`x` must be array-like",
        "n-str": "`n` must be a number or an array in `lagr_repu`, got str '2'.",
        "scale-str": "`scale` must be a number or an array in `lagr_sigmoid`",
        "gamma-none": "`gamma` must be a number or an array in `lagr_layernorm`",
        "eps-str": "`eps` must be a Python number >= 0 in `lagr_spherical_norm`",
        "axis-float": "`axis` must be an int in `lagr_ghostmax`, got float 0.0.",
    }
    for fn in BETA_FUNCTIONS:
        expected["beta-str-" + fn.__name__] = (
            f"`beta` must be a number or an array in `{fn.__name__}`, got str '2'."
        )
    assert set(seen) == set(expected)
    for name, text in expected.items():
        kind, message = seen[name]
        assert kind == "TypeError" and message.startswith(text), (name, kind, message)


@pytest.mark.parametrize(
    "n", [0.5, 0, -1, 0.999, jnp.asarray(0.5), np.float64(0.0)], ids=repr
)
def test_repu_degree_below_one_raises(n):
    with pytest.raises(ValueError, match=r"`n` must be >= 1 and finite in `lagr_repu`"):
        lagr_repu(jnp.ones(3), n)


@pytest.mark.parametrize("fn", REDUCING)
@pytest.mark.parametrize(
    "shape,axis", [((3,), 1), ((3,), -2), ((2, 3), 2), ((2, 3), -3), ((2, 3, 4), 7)]
)
def test_axis_out_of_range_raises(fn, shape, axis):
    with pytest.raises(ValueError, match=r"`axis` is out of range in `lagr_\w+`"):
        fn(jnp.ones(shape), axis=axis)


@pytest.mark.parametrize("fn", BETA_FUNCTIONS)
def test_python_beta_closed_over_in_jit_is_checked_at_trace_time(fn):
    # A Python number is concrete even inside `jax.jit`: a bad one is a ValueError
    # at once, and a good one adds no run-time check to the compiled program.
    x = jnp.asarray([0.5, -1.0, 2.0])
    with pytest.raises(ValueError, match=_BETA_MSG):
        jax.jit(lambda x: fn(x, -1.0))(x)
    jaxpr = str(jax.make_jaxpr(lambda x: fn(x, 2.0))(x))
    assert "callback" not in jaxpr and "cond" not in jaxpr


def test_python_parameters_closed_over_in_jit_are_checked_at_trace_time():
    x = jnp.asarray([0.5, -1.0, 2.0])
    for call in (
        lambda x: lagr_sigmoid(x, 1.0, np.inf),
        lambda x: lagr_layernorm(x, np.nan),
        lambda x: lagr_repu(x, 0.5),
    ):
        with pytest.raises(ValueError, match="must be"):
            jax.jit(call)(x)
