"""Tests of the parameterized Lagrangians (Equinox modules) and the `Lagrangian` base
class."""

import functools as ft
import math
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import run_without_hook, tree_allclose

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


F64 = np.float64
DELTA4 = np.array([0.3, -0.2, 0.5, 0.1])


# ==================================================================================
# closed-form activations (float64 numpy), for x of shape (3, 4)
# ==================================================================================


def _softmax(z, axis):
    z = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def _ghostmax(z, axis):
    m = np.maximum(np.max(z, axis=axis, keepdims=True), 0.0)
    e = np.exp(z - m)
    return e / (np.exp(-m) + np.sum(e, axis=axis, keepdims=True))


def _layernorm(x, gamma, delta, eps):
    xc = x - x.mean(-1, keepdims=True)
    return gamma * xc / np.sqrt(np.mean(xc**2, -1, keepdims=True) + eps) + delta


def _spherical(x, gamma, delta, eps):
    return gamma * x / np.sqrt(np.sum(x**2, -1, keepdims=True) + eps) + delta


def _sigmoid(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, e) / (1.0 + e)


class ModuleCase(NamedTuple):
    make: Callable[[], hl.Lagrangian]
    functional: Callable  # x -> the functional Lagrangian, summed
    activation: Callable  # float64 numpy x -> closed-form activation
    params: tuple[str, ...]  # learnable leaves


_MODULES = {
    "LIdentity": ModuleCase(
        lambda: hl.LIdentity(), lambda x: lagr_identity(x).sum(), lambda x: x, ()
    ),
    "LRelu": ModuleCase(
        lambda: hl.LRelu(), lambda x: lagr_relu(x).sum(), lambda x: np.maximum(x, 0), ()
    ),
    "LRepu": ModuleCase(
        lambda: hl.LRepu(),
        lambda x: lagr_repu(x, 2).sum(),
        lambda x: np.maximum(x, 0),
        (),
    ),
    "LRepu-4": ModuleCase(
        lambda: hl.LRepu(n=4),
        lambda x: lagr_repu(x, 4).sum(),
        lambda x: np.maximum(x, 0) ** 3,
        (),
    ),
    "LRepu-1.5": ModuleCase(
        lambda: hl.LRepu(1.5),
        lambda x: lagr_repu(x, 1.5).sum(),
        lambda x: np.sqrt(np.maximum(x, 0)),
        (),
    ),
    "LExp": ModuleCase(
        lambda: hl.LExp(), lambda x: lagr_exp(x).sum(), np.exp, ("beta",)
    ),
    "LExp-0.5": ModuleCase(
        lambda: hl.LExp(beta=0.5),
        lambda x: lagr_exp(x, 0.5).sum(),
        lambda x: np.exp(0.5 * x),
        ("beta",),
    ),
    "LRexp": ModuleCase(
        lambda: hl.LRexp(),
        lambda x: lagr_rexp(x).sum(),
        lambda x: np.expm1(np.maximum(x, 0)),
        ("beta",),
    ),
    "LRexp-2": ModuleCase(
        lambda: hl.LRexp(2.0),
        lambda x: lagr_rexp(x, 2.0).sum(),
        lambda x: np.expm1(2 * np.maximum(x, 0)),
        ("beta",),
    ),
    "LTanh": ModuleCase(
        lambda: hl.LTanh(), lambda x: lagr_tanh(x).sum(), np.tanh, ("beta",)
    ),
    "LTanh-3": ModuleCase(
        lambda: hl.LTanh(beta=3.0, min_beta=0.01),
        lambda x: lagr_tanh(x, 3.0).sum(),
        lambda x: np.tanh(3 * x),
        ("beta",),
    ),
    "LSigmoid": ModuleCase(
        lambda: hl.LSigmoid(),
        lambda x: lagr_sigmoid(x).sum(),
        _sigmoid,
        ("beta", "scale"),
    ),
    "LSigmoid-2-0.5": ModuleCase(
        lambda: hl.LSigmoid(beta=2.0, scale=0.5),
        lambda x: lagr_sigmoid(x, 2.0, 0.5).sum(),
        lambda x: 0.5 * _sigmoid(2 * x),
        ("beta", "scale"),
    ),
    "LSoftmax": ModuleCase(
        lambda: hl.LSoftmax(),
        lambda x: lagr_softmax(x).sum(),
        lambda x: _softmax(x, -1),
        ("beta",),
    ),
    "LSoftmax-2-axis0": ModuleCase(
        lambda: hl.LSoftmax(beta=2.0, axis=0),
        lambda x: lagr_softmax(x, 2.0, axis=0).sum(),
        lambda x: _softmax(2 * x, 0),
        ("beta",),
    ),
    "LSoftmaxUnstable": ModuleCase(
        lambda: hl.LSoftmaxUnstable(),
        lambda x: lagr_softmax_unstable(x).sum(),
        lambda x: _softmax(x, -1),
        ("beta",),
    ),
    "LSoftmaxUnstable-0.5-axis0": ModuleCase(
        lambda: hl.LSoftmaxUnstable(0.5, 0),
        lambda x: lagr_softmax_unstable(x, 0.5, 0).sum(),
        lambda x: _softmax(0.5 * x, 0),
        ("beta",),
    ),
    "LGhostmax": ModuleCase(
        lambda: hl.LGhostmax(),
        lambda x: lagr_ghostmax(x).sum(),
        lambda x: _ghostmax(x, -1),
        ("beta",),
    ),
    "LGhostmax-4-axis0": ModuleCase(
        lambda: hl.LGhostmax(beta=4.0, axis=0),
        lambda x: lagr_ghostmax(x, 4.0, axis=0).sum(),
        lambda x: _ghostmax(4 * x, 0),
        ("beta",),
    ),
    "LLayerNorm": ModuleCase(
        lambda: hl.LLayerNorm(),
        lambda x: lagr_layernorm(x).sum(),
        lambda x: _layernorm(x, 1.0, 0.0, 1e-5),
        ("gamma", "delta"),
    ),
    "LLayerNorm-vecdelta": ModuleCase(
        lambda: hl.LLayerNorm(gamma=2.0, delta=jnp.asarray(DELTA4), eps=1e-3),
        lambda x: lagr_layernorm(x, 2.0, jnp.asarray(DELTA4), -1, 1e-3).sum(),
        lambda x: _layernorm(x, 2.0, DELTA4, 1e-3),
        ("gamma", "delta"),
    ),
    "LSphericalNorm": ModuleCase(
        lambda: hl.LSphericalNorm(),
        lambda x: lagr_spherical_norm(x).sum(),
        lambda x: _spherical(x, 1.0, 0.0, 1e-5),
        ("gamma", "delta"),
    ),
    "LSphericalNorm-params": ModuleCase(
        lambda: hl.LSphericalNorm(gamma=0.5, delta=0.3, eps=1e-2),
        lambda x: lagr_spherical_norm(x, 0.5, 0.3, -1, 1e-2).sum(),
        lambda x: _spherical(x, 0.5, 0.3, 1e-2),
        ("gamma", "delta"),
    ),
}
MODULE_IDS = list(_MODULES)
PARAM_MODULE_IDS = [k for k, c in _MODULES.items() if c.params]
# one module per class with parameters (non-default where possible), and the
# defaults of LTanh and LSigmoid, whose beta gradient HAMUX gets wrong
GRAD_MODULE_IDS = [
    "LExp-0.5",
    "LRexp-2",
    "LTanh",
    "LTanh-3",
    "LSigmoid",
    "LSigmoid-2-0.5",
    "LSoftmax-2-axis0",
    "LSoftmaxUnstable-0.5-axis0",
    "LGhostmax-4-axis0",
    "LLayerNorm-vecdelta",
    "LSphericalNorm-params",
]
CLASSES = [
    hl.LIdentity,
    hl.LRelu,
    hl.LRepu,
    hl.LExp,
    hl.LRexp,
    hl.LTanh,
    hl.LSigmoid,
    hl.LSoftmax,
    hl.LSoftmaxUnstable,
    hl.LGhostmax,
    hl.LLayerNorm,
    hl.LSphericalNorm,
]
BETA_CLASSES = {
    hl.LExp: lagr_exp,
    hl.LRexp: lagr_rexp,
    hl.LTanh: lagr_tanh,
    hl.LSigmoid: lagr_sigmoid,
    hl.LSoftmax: lagr_softmax,
    hl.LSoftmaxUnstable: lagr_softmax_unstable,
    hl.LGhostmax: lagr_ghostmax,
}
STATIC = {"min_beta", "axis", "eps", "n"}


def _x(seed=0, shape=(3, 4), dtype=jnp.float64, kink=False):
    x = np.random.default_rng(seed).normal(size=shape) * 1.5
    if kink:  # away from the kink of relu/repu at 0
        x = np.sign(x) * (0.15 + np.abs(x))
    return jnp.asarray(x, dtype)


def test_every_module_is_covered():
    assert {type(c.make()) for c in _MODULES.values()} == set(CLASSES)
    for cls in CLASSES:
        assert issubclass(cls, hl.Lagrangian) and issubclass(cls, eqx.Module)
        assert getattr(hl, cls.__name__) is cls


# ==================================================================================
# value, activation, energy: module == functional == closed form
# ==================================================================================


@jax.jit
def _evaluate(module, x):
    """Everything a user computes from one module (jit with the module as argument)."""
    return {
        "value": module(x),
        "activation": module.activation(x),
        "grad": jax.grad(module)(x),
        "energy": module.energy(x),
    }


@pytest.mark.parametrize("name", MODULE_IDS)
def test_module_matches_functional_and_closed_form(name):
    case = _MODULES[name]
    module = case.make()
    x = _x(kink=True)
    out = _evaluate(module, x)
    functional = jax.jit(case.functional)(x)
    assert out["value"].shape == () and out["value"].dtype == jnp.float64
    np.testing.assert_allclose(out["value"], functional, rtol=1e-13)
    act = case.activation(np.asarray(x))
    assert out["activation"].shape == x.shape
    np.testing.assert_allclose(out["activation"], act, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(out["grad"], out["activation"], rtol=1e-12, atol=1e-14)
    # energy is the Legendre transform <x, g> - L
    energy = np.sum(np.asarray(x) * act) - float(functional)
    np.testing.assert_allclose(out["energy"], energy, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["LLayerNorm-vecdelta"])
def test_eager_call(name):
    case = _MODULES[name]
    module = case.make()
    x = _x(seed=2)
    np.testing.assert_allclose(module(x), jax.jit(case.functional)(x), rtol=1e-13)


@pytest.mark.parametrize("name", ["LTanh-3", "LSoftmax-2-axis0", "LLayerNorm-vecdelta"])
def test_module_float32_input(name):
    case = _MODULES[name]
    module = case.make()
    x = _x(seed=3, dtype=jnp.float32)
    out = _evaluate(module, x)
    assert out["value"].dtype == out["activation"].dtype == jnp.float32
    assert out["energy"].dtype == jnp.float32
    np.testing.assert_allclose(
        out["activation"], case.activation(np.asarray(x, F64)), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.int32, jnp.bool_])
def test_module_dtypes(cls, dtype):
    module = cls()
    x = jax.ShapeDtypeStruct((3, 4), dtype)
    expected = dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.float64
    assert jax.eval_shape(module, x).dtype == expected
    act = jax.eval_shape(module.activation, x)
    assert act.dtype == expected and act.shape == (3, 4)


# ==================================================================================
# beta clamped at min_beta
# ==================================================================================


@jax.jit
def _clamp_check(module, x, clamp):
    fn = BETA_CLASSES[type(module)]
    return (
        module(x),
        module.activation(x),
        fn(x, clamp).sum(),
        jax.grad(lambda x: fn(x, clamp).sum())(x),
    )


@pytest.mark.parametrize("cls", list(BETA_CLASSES))
def test_beta_clamped_at_min_beta(cls):
    """A module built with beta <= min_beta evaluates like beta = min_beta; a beta
    above min_beta is untouched."""
    x = _x(seed=4, shape=(4,)) * 0.1
    combos = [(-1.0, None), (0.0, None), (0.7, None)]
    if cls in (hl.LTanh, hl.LSoftmax):  # a user's min_beta (a static field)
        combos += [(-2.0, 0.1), (0.05, 0.1), (0.7, 0.1)]
    for beta, min_beta in combos:
        kwargs = {} if min_beta is None else {"min_beta": min_beta}
        module = cls(beta=beta, **kwargs)
        clamp = max(beta, 1e-6 if min_beta is None else min_beta)
        assert module.min_beta == (1e-6 if min_beta is None else min_beta)
        value, act, expected, expected_act = _clamp_check(module, x, clamp)
        np.testing.assert_allclose(value, expected, rtol=1e-12)
        np.testing.assert_allclose(act, expected_act, rtol=1e-12)
        assert np.all(np.isfinite(act))
    # with the module closed over, its beta is concrete (as in eager use): no
    # `beta > 0` error may come from the functional underneath
    module = cls(beta=-1.0)
    value = jax.jit(lambda x: module(x))(x)
    np.testing.assert_allclose(value, _clamp_check(module, x, 1e-6)[2], rtol=1e-12)


# ==================================================================================
# pytree structure: learnable leaves, static fields
# ==================================================================================


@pytest.mark.parametrize("name", MODULE_IDS)
def test_learnable_leaves_and_static_fields(name):
    case = _MODULES[name]
    module = case.make()
    leaves = jax.tree_util.tree_leaves(module)
    # exactly the learnable parameters are leaves, all inexact JAX arrays
    assert len(leaves) == len(case.params)
    assert all(eqx.is_inexact_array(leaf) for leaf in leaves)
    for p in case.params:
        value = getattr(module, p)
        assert isinstance(value, jax.Array) and eqx.is_inexact_array(value)
        assert any(value is leaf for leaf in leaves)
    params, static = eqx.partition(module, eqx.is_inexact_array)
    assert jax.tree_util.tree_leaves(static) == []
    # hyper-parameters are static: visible as attributes, not as leaves
    for field in STATIC:
        if hasattr(module, field):
            assert not isinstance(getattr(module, field), jax.Array)
    del params


@pytest.mark.parametrize(
    "module,attrs",
    [
        (hl.LRepu(n=4), {"n": 4}),
        (hl.LTanh(beta=2.0, min_beta=0.5), {"min_beta": 0.5}),
        (hl.LSoftmax(axis=0), {"axis": 0, "min_beta": 1e-6}),
        (hl.LGhostmax(axis=-2), {"axis": -2}),
        (hl.LLayerNorm(eps=1e-3), {"eps": 1e-3}),
        (hl.LSphericalNorm(), {"eps": 1e-5}),
    ],
    ids=repr,
)
def test_static_hyperparameters(module, attrs):
    for k, v in attrs.items():
        assert getattr(module, k) == v
    # changing a static field changes the tree structure, not the leaves
    treedef = jax.tree_util.tree_structure(module)
    k = next(iter(attrs))
    same = type(module)(**_init_kwargs(module))
    assert jax.tree_util.tree_structure(same) == treedef
    changed = type(module)(**{**_init_kwargs(module), k: _OTHER_VALUE[k]})
    assert jax.tree_util.tree_structure(changed) != treedef


def _init_kwargs(module):
    names = {"beta", "scale", "gamma", "delta", "min_beta", "axis", "eps", "n"}
    return {k: getattr(module, k) for k in names if hasattr(module, k)}


_OTHER_VALUE = {"n": 3, "min_beta": 0.25, "axis": 1, "eps": 1e-2}


@pytest.mark.parametrize(
    "make,field",
    [
        (lambda v: hl.LExp(beta=v), "beta"),
        (lambda v: hl.LTanh(v), "beta"),
        (lambda v: hl.LSigmoid(scale=v), "scale"),
        (lambda v: hl.LSoftmax(beta=v), "beta"),
        (lambda v: hl.LLayerNorm(gamma=v), "gamma"),
        (lambda v: hl.LSphericalNorm(delta=v), "delta"),
    ],
)
@pytest.mark.parametrize("value", [2.0, 2, np.float32(2.0)], ids=repr)
def test_python_numbers_become_inexact_arrays(make, field, value):
    module = make(value)
    leaf = getattr(module, field)
    assert isinstance(leaf, jax.Array) and eqx.is_inexact_array(leaf)
    assert float(leaf) == 2.0
    if isinstance(value, (int, float)):
        assert leaf.dtype == jnp.asarray(1.0).dtype  # the default float dtype


# ==================================================================================
# gradients for the learnable parameters (HAMUX's tanh/sigmoid beta gradient was 0)
# ==================================================================================


@eqx.filter_jit
def _param_grads(module, x, h):
    def value(m):
        return m(x)

    def act_loss(m):
        return jnp.sum(m.activation(x) ** 2)

    g_value = eqx.filter_grad(value)(module)
    g_act = eqx.filter_grad(act_loss)(module)
    params, static = eqx.partition(module, eqx.is_inexact_array)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    fd = []
    for i, leaf in enumerate(leaves):
        per_leaf = []
        for j in range(leaf.size):
            e = jnp.zeros(leaf.size, leaf.dtype).at[j].set(h).reshape(leaf.shape)

            def shifted(sign, i=i, e=e):
                new = list(leaves)
                new[i] = leaves[i] + sign * e
                return value(
                    eqx.combine(jax.tree_util.tree_unflatten(treedef, new), static)
                )

            per_leaf.append((shifted(1.0) - shifted(-1.0)) / (2 * h))
        fd.append(jnp.stack(per_leaf).reshape(leaf.shape))
    return g_value, g_act, jax.tree_util.tree_unflatten(treedef, fd)


@pytest.mark.parametrize("name", GRAD_MODULE_IDS)
def test_filter_grad_parameters(name):
    """`eqx.filter_grad` gives finite, non-zero, exact gradients for beta, scale,
    gamma and delta, of the Lagrangian (first order) and through the activation
    (second order)."""
    case = _MODULES[name]
    module = case.make()
    x = _x(seed=5)
    g_value, g_act, fd = _param_grads(module, x, 1e-6)
    for p in case.params:
        gv, ga, f = (np.asarray(getattr(t, p)) for t in (g_value, g_act, fd))
        assert gv.shape == np.shape(getattr(module, p))
        assert np.all(np.isfinite(gv)) and np.all(gv != 0), (p, gv)
        assert np.all(np.isfinite(ga)), (p, ga)
        if p != "delta":  # (sum of a centred layer norm is 0: no delta signal)
            assert np.all(ga != 0), (p, ga)
        np.testing.assert_allclose(gv, f, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
def test_tanh_and_sigmoid_beta_gradient_closed_form(beta):
    """d/dbeta of sum log cosh(beta x)/beta = sum (z tanh z - log cosh z)/beta^2 and
    d/dbeta of s sum softplus(beta x)/beta = s sum (z sigmoid z - softplus z)/beta^2:
    the public HAMUX package returns 0 here."""
    x = _x(seed=6, shape=(5,))
    x64 = np.asarray(x)
    z = beta * x64
    g = eqx.filter_jit(eqx.filter_grad(lambda m, x: m(x)))
    expected_tanh = np.sum(z * np.tanh(z) - np.log(np.cosh(z))) / beta**2
    np.testing.assert_allclose(g(hl.LTanh(beta), x).beta, expected_tanh, rtol=1e-10)
    softplus = np.log1p(np.exp(z))
    expected = 1.5 * np.sum(z * _sigmoid(z) - softplus) / beta**2
    grads = g(hl.LSigmoid(beta, 1.5), x)
    np.testing.assert_allclose(grads.beta, expected, rtol=1e-10)
    np.testing.assert_allclose(grads.scale, np.sum(softplus) / beta, rtol=1e-10)


# ==================================================================================
# jit, filter_jit, vmap, serialisation
# ==================================================================================


def test_jit_retraces_only_on_static_change():
    traces = []

    @jax.jit
    def f(module, x):
        traces.append(None)
        return module(x)

    x = _x(seed=9, shape=(4,))
    f(hl.LTanh(beta=2.0), x)
    f(hl.LTanh(beta=3.0), x)  # a new leaf value: no retrace
    assert len(traces) == 1
    f(hl.LTanh(beta=2.0, min_beta=0.1), x)  # a new static field: retrace
    assert len(traces) == 2


@pytest.mark.parametrize("name", MODULE_IDS)
def test_serialise_round_trip(name, tmp_path):
    case = _MODULES[name]
    module = case.make()
    # perturb the learnable leaves so that the round trip has something to carry
    module = jax.tree_util.tree_map(lambda a: a * 1.5 + 0.25, module)
    path = tmp_path / f"{name}.eqx"
    eqx.tree_serialise_leaves(path, module)
    like = case.make()
    loaded = eqx.tree_deserialise_leaves(path, like)
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(module)
    for a, b in zip(
        jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(module)
    ):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    x = _x(seed=10, kink=True)
    np.testing.assert_array_equal(
        _evaluate(loaded, x)["value"], _evaluate(module, x)["value"]
    )


# ==================================================================================
# the base class: user-defined Lagrangians
# ==================================================================================


class LSoftplus(hl.Lagrangian):
    """A user's own Lagrangian: only `__call__` is written."""

    beta: jax.Array

    def __call__(self, x):
        return jnp.sum(jnp.logaddexp(self.beta * x, 0.0)) / self.beta


class LQuartic(hl.Lagrangian):
    def __call__(self, x):
        return jnp.sum(x**4) / 4


def test_user_defined_subclass():
    module = LSoftplus(jnp.asarray(2.0))
    x = _x(seed=11, shape=(6,))
    x64 = np.asarray(x)
    act, energy = jax.jit(lambda m, x: (m.activation(x), m.energy(x)))(module, x)
    np.testing.assert_allclose(act, _sigmoid(2 * x64), rtol=1e-12)
    value = np.sum(np.log1p(np.exp(2 * x64))) / 2
    np.testing.assert_allclose(
        energy, np.sum(x64 * _sigmoid(2 * x64)) - value, rtol=1e-12
    )
    quartic = LQuartic()

    @eqx.filter_jit
    def run(quartic, module, x):
        return (
            quartic.activation(x),
            quartic.energy(x),
            eqx.filter_grad(lambda m: m(x))(module),
        )

    q_act, q_energy, g = run(quartic, module, x)
    np.testing.assert_allclose(q_act, x64**3, rtol=1e-12)
    np.testing.assert_allclose(q_energy, np.sum(x64**4) * 3 / 4, rtol=1e-12)
    # the user's parameters train like ours
    assert np.isfinite(g.beta) and g.beta != 0


def test_base_class_is_abstract():
    with pytest.raises(TypeError):
        hl.Lagrangian()  # pyright: ignore

    class NoCall(hl.Lagrangian):
        pass

    with pytest.raises(TypeError):
        NoCall()  # pyright: ignore


# ==================================================================================
# optax learns beta
# ==================================================================================


def _fit(module, target, x, loss_kind, steps=100, lr=0.1):
    params, static = eqx.partition(module, eqx.is_inexact_array)
    optim = optax.adam(lr)

    def loss_fn(params):
        m = eqx.combine(params, static)
        if loss_kind == "activation":
            pred, true = jax.vmap(m.activation)(x), jax.vmap(target.activation)(x)
        else:  # the Lagrangian's value: needs the true beta gradient
            pred, true = jax.vmap(m)(x), jax.vmap(target)(x)
        return jnp.mean((pred - true) ** 2)

    @jax.jit
    def run(params):
        def step(carry, _):
            params, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            # optax's bias correction raises a Python float to an int32 step count,
            # which strict promotion refuses: optax's business, not ours.
            with jax.numpy_dtype_promotion("standard"):
                updates, state = optim.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        (params, _), losses = jax.lax.scan(
            step, (params, optim.init(params)), None, steps
        )
        return params, losses, loss_fn(params)

    params, losses, final = run(params)
    return eqx.combine(params, static), losses, final


@pytest.mark.parametrize(
    "cls,start,truth,loss_kind",
    [
        (hl.LTanh, 0.5, 2.0, "activation"),
        (hl.LTanh, 0.5, 2.0, "value"),
        (hl.LSoftmax, 1.0, 3.0, "value"),
    ],
)
def test_optax_learns_beta(cls, start, truth, loss_kind):
    x = _x(seed=12, shape=(64, 8))
    model, losses, final = _fit(cls(beta=start), cls(beta=truth), x, loss_kind)
    initial = float(losses[0])
    assert np.all(np.isfinite(losses))
    assert float(final) < 0.01 * initial, (initial, float(final))
    # beta moves (at least 3/4 of the way) toward the truth
    assert abs(float(model.beta) - truth) < 0.25 * abs(start - truth), float(model.beta)


# ==================================================================================
# norms: gamma a scalar, delta a scalar or a vector along the normalised axis
# ==================================================================================


@pytest.mark.parametrize("cls", [hl.LLayerNorm, hl.LSphericalNorm])
@pytest.mark.parametrize("gamma", [jnp.ones(4), np.ones(3), jnp.ones((2, 2))], ids=repr)
def test_norm_vector_gamma_rejected(cls, gamma):
    with pytest.raises(
        ValueError, match=f"`gamma` must be a scalar in `{cls.__name__}`"
    ):
        cls(gamma=gamma)


@pytest.mark.parametrize("cls", [hl.LLayerNorm, hl.LSphericalNorm])
def test_norm_delta_scalar_or_vector(cls):
    x = _x(seed=13)
    ref = _layernorm if cls is hl.LLayerNorm else _spherical
    for delta in (0.4, jnp.asarray(0.4), jnp.asarray(DELTA4)):
        module = cls(gamma=1.3, delta=delta)
        assert eqx.is_inexact_array(module.delta)
        act = jax.jit(lambda m, x: m.activation(x))(module, x)
        np.testing.assert_allclose(
            act,
            ref(np.asarray(x), 1.3, np.asarray(delta), 1e-5),
            rtol=1e-10,
            atol=1e-13,
        )
    # a vector delta of the wrong length is an error naming `delta`
    module = cls(delta=jnp.ones(5))
    with pytest.raises(ValueError, match=r"`delta` of shape \(5,\) must have length 4"):
        jax.eval_shape(module, jax.ShapeDtypeStruct((3, 4), jnp.float64))


@pytest.mark.parametrize("cls", [hl.LLayerNorm, hl.LSphericalNorm])
def test_norm_unbatched_vector_state(cls):
    x = _x(seed=14, shape=(4,))
    module = cls(gamma=0.8, delta=jnp.asarray(DELTA4))
    ref = _layernorm if cls is hl.LLayerNorm else _spherical
    np.testing.assert_allclose(
        module.activation(x), ref(np.asarray(x), 0.8, DELTA4, 1e-5), rtol=1e-10
    )


# ==================================================================================
# bad arguments
# ==================================================================================


@pytest.mark.parametrize("n", [0.5, 0, -2, np.inf, np.nan], ids=repr)
def test_repu_degree_below_one_or_not_finite_rejected(n):
    with pytest.raises(
        ValueError, match=r"`n` must be a finite number >= 1 in `LRepu`"
    ):
        hl.LRepu(n=n)


def test_min_beta_positive():
    # min_beta is what keeps the inverse temperature positive; it must be positive
    for bad in (0.0, -1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match=r"`min_beta` must be a finite number > 0"):
            hl.LTanh(min_beta=bad)


def test_eps_non_negative_and_finite():
    for cls in (hl.LLayerNorm, hl.LSphericalNorm):
        assert cls(eps=0).eps == 0.0
        for bad in (-1e-5, np.inf, np.nan):
            with pytest.raises(ValueError, match=r"`eps` must be a finite number >= 0"):
                cls(eps=bad)


# ==================================================================================
# non-finite parameters: refused at construction, and at call time when traced
# ==================================================================================

# (class, the parameter, its keyword in __init__)
_FINITE_PARAMETERS = [
    (hl.LExp, "beta"),
    (hl.LRexp, "beta"),
    (hl.LTanh, "beta"),
    (hl.LSigmoid, "beta"),
    (hl.LSigmoid, "scale"),
    (hl.LSoftmax, "beta"),
    (hl.LSoftmaxUnstable, "beta"),
    (hl.LGhostmax, "beta"),
    (hl.LLayerNorm, "gamma"),
    (hl.LLayerNorm, "delta"),
    (hl.LSphericalNorm, "gamma"),
    (hl.LSphericalNorm, "delta"),
]
_PARAM_IDS = [f"{cls.__name__}-{p}" for cls, p in _FINITE_PARAMETERS]


@pytest.mark.parametrize("cls,param", _FINITE_PARAMETERS, ids=_PARAM_IDS)
def test_non_finite_parameter_refused_at_construction(cls, param):
    for bad in (np.nan, np.inf, -np.inf, jnp.asarray([1.0, np.nan])):
        if param == "gamma" and np.ndim(bad):
            continue  # a vector gamma is refused for its shape
        with pytest.raises(
            ValueError,
            match=f"`{param}` must be finite \\(no NaN or inf\\) in `{cls.__name__}`",
        ):
            cls(**{param: bad})


@eqx.filter_jit
def _traced_call(module, x):
    return module.energy_and_activation(x)


@pytest.mark.parametrize("cls,param", _FINITE_PARAMETERS, ids=_PARAM_IDS)
def test_non_finite_parameter_refused_when_traced(cls, param):
    """A parameter that became NaN (e.g. in training) is refused when the module is
    evaluated under `eqx.filter_jit` (eagerly: a `ValueError`); clamping at
    `min_beta` cannot repair it."""
    x = _x(seed=21, shape=(4,))
    good = cls()
    energy, act = _traced_call(good, x)
    assert np.isfinite(energy) and np.all(np.isfinite(act))
    message = f"`{param}`.* must be finite \\(no NaN or inf\\) in `{cls.__name__}`"
    for bad in (np.nan, np.inf):
        module = eqx.tree_at(lambda m: getattr(m, param), good, jnp.asarray(bad))
        with pytest.raises(Exception, match=message):
            jax.block_until_ready(_traced_call(module, x))
        with pytest.raises(ValueError, match=message):
            module(x)


def _count_error_checks(jaxpr) -> int:
    count = 0
    for eqn in jaxpr.eqns:
        if "error_if" in str(eqn.params.get("name", "")):
            count += 1
            continue
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else [param]:
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    count += _count_error_checks(sub)
    return count


@pytest.mark.parametrize("name", MODULE_IDS)
def test_at_most_one_run_time_check_per_evaluation(name):
    """Modules run in every step of the dynamics: one cheap check at most when their
    parameters are traced, however many they have; none when the module is closed
    over (its parameters are concrete: checked at trace time) or has none."""
    module = _MODULES[name].make()
    x = _x(seed=22, shape=(4,))
    traced = jax.make_jaxpr(lambda m, x: m.energy_and_activation(x))(module, x)
    closed = jax.make_jaxpr(module.energy_and_activation)(x)
    assert _count_error_checks(traced.jaxpr) == (1 if _MODULES[name].params else 0)
    assert _count_error_checks(closed.jaxpr) == 0


def test_beta_below_min_beta_is_clamped_not_refused():
    """The documented rule: a finite beta below `min_beta`, <= 0 included, is clamped
    when evaluated, concrete or traced."""
    x = _x(seed=23, shape=(4,))
    for beta in (-1.0, 0.0, 1e-9):
        module = hl.LSoftmax(beta=beta, min_beta=0.5)
        expected = lagr_softmax(x, 0.5).sum()
        np.testing.assert_allclose(module(x), expected, rtol=1e-13)
        np.testing.assert_allclose(
            _traced_call(module, x)[1],
            jax.grad(lambda x: lagr_softmax(x, 0.5).sum())(x),
            rtol=1e-13,
        )


def test_complex_parameters_and_states_refused():
    for cls, param in _FINITE_PARAMETERS:
        with pytest.raises(
            TypeError, match=f"`{param}` must be real in `{cls.__name__}`"
        ):
            cls(**{param: jnp.asarray(1.0 + 0.0j)})
    z = jnp.asarray([1.0 + 1.0j, 0.5])
    for cls in CLASSES:
        with pytest.raises(TypeError, match=f"`x` must be real in `{cls.__name__}"):
            cls()(z)


# ==================================================================================
# a Lagrangian subclass that does not return a scalar
# ==================================================================================


class LVector(hl.Lagrangian):
    def __call__(self, x):
        return x**2 / 2


class LInteger(hl.Lagrangian):
    def __call__(self, x):
        return jnp.sum(x > 0)


@pytest.mark.parametrize("cls", [LVector, LInteger])
def test_subclass_returning_a_non_scalar_is_named(cls):
    message = (
        f"`{cls.__name__}.__call__` must return the reduced Lagrangian, a floating"
    )
    x = jnp.ones(3)
    for method in ("activation", "energy", "energy_and_activation"):
        with pytest.raises(TypeError, match=message):
            getattr(cls(), method)(x)
        with pytest.raises(TypeError, match=message):
            jax.jit(getattr(cls(), method))(x)


# ==================================================================================
# a huge inverse temperature in a dense memory
# ==================================================================================


def test_dense_memory_with_huge_beta_is_finite(rng):
    """+-1 patterns and beta = 1e8 (beta times the similarities ~1e9): energy and
    gradient are the closed form, eager, jitted, and with the memory traced."""
    patterns = jnp.asarray(np.sign(rng.normal(size=(6, 16)) + 0.01), jnp.float32)
    memory = hl.DenseMemory(patterns, hl.LSoftmax(beta=1e8))
    flipped = patterns[2].at[:3].multiply(-1.0)  # nearest pattern: 2, overlap 10
    noisy = 0.37 * patterns[2] + jnp.asarray(0.05 * rng.normal(size=16), jnp.float32)
    runs = [
        jax.value_and_grad(memory),
        jax.jit(jax.value_and_grad(memory)),
        ft.partial(eqx.filter_jit(lambda m, g: jax.value_and_grad(m)(g)), memory),
    ]
    for g in (flipped, noisy):
        sims = np.asarray(patterns, F64) @ np.asarray(g, F64)
        best = np.flatnonzero(sims == sims.max())
        expected_energy = -(sims.max() + math.log(best.size) / 1e8)
        expected_grad = -np.mean(np.asarray(patterns, F64)[best], axis=0)
        for run in runs:
            energy, grad = run(g)
            assert np.isfinite(energy) and np.all(np.isfinite(grad))
            np.testing.assert_allclose(energy, expected_energy, rtol=1e-6)
            np.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=1e-6)


# ==================================================================================
# type-wrong arguments (the jaxtyping hook rejects them first): our messages
# ==================================================================================


def test_type_wrong_arguments_give_our_messages():
    out = run_without_hook(
        """
        import jax.numpy as jnp
        import hamux_lagr as hl

        calls = {
            "LRepu-n-str": lambda: hl.LRepu(n="2"),
            "LTanh-min_beta-str": lambda: hl.LTanh(min_beta="1e-6"),
            "LLayerNorm-eps-str": lambda: hl.LLayerNorm(eps="1e-5"),
            "LSoftmax-axis-float": lambda: hl.LSoftmax(axis=-1.0),
            "LExp-beta-str": lambda: hl.LExp(beta="2"),
            "LSigmoid-scale-none": lambda: hl.LSigmoid(scale=None),
            "LSphericalNorm-gamma-bool": lambda: hl.LSphericalNorm(gamma=True),
        }
        for cls in (hl.LIdentity, hl.LRepu, hl.LTanh, hl.LSoftmax, hl.LLayerNorm):
            calls[cls.__name__ + "-x-str"] = lambda cls=cls: cls()("abc")
            calls[cls.__name__ + "-x-none"] = lambda cls=cls: cls().activation(None)
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
        "LRepu-n-str": "`n` must be a Python number >= 1 in `LRepu`, got str '2'.",
        "LTanh-min_beta-str": "`min_beta` must be a Python number > 0 in `LTanh`",
        "LLayerNorm-eps-str": "`eps` must be a Python number >= 0 in `LLayerNorm`",
        "LSoftmax-axis-float": "`axis` must be an int in `LSoftmax`, got float -1.0.",
        "LExp-beta-str": "`beta` must be a number or an array in `LExp`, got str '2'.",
        "LSigmoid-scale-none": "`scale` must be a number or an array in `LSigmoid`",
        "LSphericalNorm-gamma-bool": "`gamma` must be a number or an array in "
        "`LSphericalNorm`, got the bool True.",
    }
    for cls in ("LIdentity", "LRepu", "LTanh", "LSoftmax", "LLayerNorm"):
        expected[cls + "-x-str"] = "`x` must be array-like (a JAX/NumPy array or a "
        expected[cls + "-x-str"] += f"Python number) in `{cls}`, got str 'abc'."
        expected[cls + "-x-none"] = "`x` must be array-like (a JAX/NumPy array or a "
        expected[cls + "-x-none"] += (
            f"Python number) in `{cls}.activation`, got NoneType"
        )
    assert set(seen) == set(expected)
    for name, text in expected.items():
        kind, message = seen[name]
        assert kind == "TypeError" and message.startswith(text), (name, kind, message)


def test_layernorm_energy_is_finite_at_constant_state():
    # a constant state has zero variance: eps keeps everything finite
    out = _evaluate(hl.LLayerNorm(), jnp.full((3, 4), 2.0))
    assert all(np.all(np.isfinite(v)) for v in out.values())
    assert math.isfinite(float(out["energy"]))


_REDUCING = {
    "lagr_softmax": (hl.functional.lagr_softmax, hl.LSoftmax()),
    "lagr_softmax_unstable": (
        hl.functional.lagr_softmax_unstable,
        hl.LSoftmaxUnstable(),
    ),
    "lagr_ghostmax": (hl.functional.lagr_ghostmax, hl.LGhostmax()),
    "lagr_layernorm": (hl.functional.lagr_layernorm, hl.LLayerNorm()),
    "lagr_spherical_norm": (hl.functional.lagr_spherical_norm, hl.LSphericalNorm()),
    "lagr_log_sum_relu": (hl.functional.lagr_log_sum_relu, hl.LLogSumReLU()),
    "lagr_sparsemax": (hl.functional.lagr_sparsemax, hl.LSparsemax()),
    "lagr_entmax": (hl.functional.lagr_entmax, hl.LEntmax()),
    "lagr_normmax": (hl.functional.lagr_normmax, hl.LNormmax()),
}


@pytest.mark.parametrize("name", list(_REDUCING))
@pytest.mark.parametrize("jit", [False, True])
def test_reducing_over_an_empty_axis_names_x_and_axis(name, jit):
    # A reduction over no entries (a max, a mean) has no value to give: every
    # Lagrangian that reduces over `axis` says so, naming `x` and `axis`.
    fn, module = _REDUCING[name]
    wrap = jax.jit if jit else (lambda f: f)
    calls = {
        "function": lambda x: fn(x),
        "function, axis 0": lambda x: fn(x.T, axis=0),
        "module": lambda x: module(x),
        "activation": lambda x: module.activation(x),
    }
    for what, call in calls.items():
        with pytest.raises(ValueError, match="`x` has size 0 along `axis`") as e:
            wrap(call)(jnp.zeros((2, 0)))
        assert f"`{name} / L" in str(e.value), what
    # Entries along `axis` but none along another axis: nothing to refuse.
    assert fn(jnp.zeros((0, 3))).shape == (0, 1)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("jit", [False, True])
def test_beta_beyond_a_half_precision_range_is_its_largest_finite(dtype, jit):
    # beta = 1e5 is +inf in float16, and inf * 0 is NaN: a beta beyond the format's
    # range is evaluated at its largest finite number, the limit beta -> inf to the
    # format's precision (value and activation finite, never NaN).
    x = jnp.asarray([-0.5, 0.0, 0.25, 1.0], dtype)
    relu, step = jnp.maximum(x, 0), (x > 0).astype(dtype)
    cases = {
        "LTanh": (hl.LTanh(1e5), jnp.sum(jnp.abs(x)), jnp.sign(x)),
        "LSigmoid": (hl.LSigmoid(1e5), jnp.sum(relu), jnp.where(x == 0, 0.5, step)),
        "LSoftmax": (hl.LSoftmax(1e5), x[3], jnp.asarray([0, 0, 0, 1], dtype)),
        "LGhostmax": (hl.LGhostmax(1e5), x[3], jnp.asarray([0, 0, 0, 1], dtype)),
        "LSparsemax": (hl.LSparsemax(1e5), x[3], jnp.asarray([0, 0, 0, 1], dtype)),
        "LNormmax": (hl.LNormmax(2.0, 1e5), x[3], jnp.asarray([0, 0, 0, 1], dtype)),
    }
    for name, (lagrangian, value, activation) in cases.items():
        fn = jax.value_and_grad(lagrangian)
        fn = jax.jit(fn) if jit else fn
        got_value, got_activation = fn(x)
        assert tree_allclose(got_value, value.astype(dtype), atol=1e-2), name
        assert tree_allclose(got_activation, activation, atol=1e-2), name
    # The exponentials overflow (the true value), but never to NaN.
    for lagrangian in (hl.LExp(1e5), hl.LRexp(1e5)):
        value, activation = jax.value_and_grad(lagrangian)(x)
        assert not bool(jnp.any(jnp.isnan(activation))), lagrangian
        assert not bool(jnp.isnan(value)), lagrangian


@pytest.mark.parametrize("jit", [False, True])
def test_softmax_and_ghostmax_at_infinite_entries_give_the_limits(jit):
    # The value at an infinite maximum is the maximum; the activation is its limit,
    # the one-hot at a +inf entry (uniform over several) or, all entries -inf, the
    # uniform distribution (the ghostmax: all 0, the ghost takes the mass). Never NaN.
    inf = np.inf
    cases = [
        ([inf, 0.3, -inf], inf, [1, 0, 0], inf, [1, 0, 0]),
        ([inf, inf, 1.0], inf, [0.5, 0.5, 0], inf, [0.5, 0.5, 0]),
        ([-inf, -inf, -inf], -inf, [1 / 3] * 3, 0.0, [0, 0, 0]),
    ]
    for x, sv, sg, gv, gg in cases:
        x = jnp.asarray(x)
        for lagrangian, value, activation in (
            (hl.LSoftmax(2.0), sv, sg),
            (hl.LGhostmax(2.0), gv, gg),
        ):
            fn = eqx.filter_value_and_grad(lambda m, x: m(x))
            grad_x = jax.grad(lambda x: lagrangian(x))
            if jit:
                fn, grad_x = eqx.filter_jit(fn), jax.jit(grad_x)
            got, grads = fn(lagrangian, x)
            assert float(got) == value, (lagrangian, x)
            assert tree_allclose(grad_x(x), jnp.asarray(activation, x.dtype)), x
            assert float(grads.beta) == 0.0, (lagrangian, x)
