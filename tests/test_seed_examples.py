"""HAMUX's documentation of its Lagrangians (github.com/bhoov/hamux, Hoover et al.
2023): its printed examples
reproduce, and its names, signatures and defaults are ours.

Its random examples were printed with JAX's old (non-partitionable) threefry
stream; JAX's default has since changed. To reproduce them:

    jax.config.update("jax_threefry_partitionable", False)
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hamux_lagr as hl


@pytest.fixture
def legacy_prng():
    """The random stream the examples were printed with, restored after."""
    old = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", False)
    try:
        yield
    finally:
        jax.config.update("jax_threefry_partitionable", old)


def test_lrepu_example(legacy_prng):
    lag = hl.LRepu(n=4)
    x = jax.random.normal(jax.random.PRNGKey(1), (7,), dtype=jnp.float32)
    out = lag(x)
    assert out.shape == () and out.dtype == jnp.float32
    np.testing.assert_allclose(out, 8.217218, rtol=1e-6)


def test_lrepu_vmap_example(legacy_prng):
    lag = jax.vmap(hl.LRepu(n=4))
    batch_size = 4
    x = jax.random.normal(jax.random.PRNGKey(1), (batch_size, 7), dtype=jnp.float32)
    out = lag(x)
    assert out.shape == (4,) and out.dtype == jnp.float32
    expected = [0.79066116, 0.634871, 0.13261071, 3.3233747]
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "beta,expected", [(0.5, 1.2130613), (1.0, 0.36787945), (1.5, 0.14875345)]
)
def test_lagr_exp_printed_values(beta, expected):
    """HAMUX's documentation prints three values of `lagr_exp` without their inputs: they are
    exp(-beta)/beta, i.e. `lagr_exp` at x = -1 for beta = 0.5, 1, 1.5."""
    out = hl.lagr_exp(jnp.float32(-1.0), beta)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, expected, rtol=1e-7)


def test_hamux_custom_jvp_tanh_agrees():
    """HAMUX's own `_lagr_tanh` (naive log cosh with a custom JVP for x) agrees
    with ours where it does not overflow; ours also has the beta gradient."""

    @jax.custom_jvp
    def _lagr_tanh(x, beta=1.0):
        return 1 / beta * jnp.log(jnp.cosh(beta * x))

    @_lagr_tanh.defjvp
    def _lagr_tanh_defjvp(primals, tangents):
        x, beta = primals
        x_dot, beta_dot = tangents
        primal_out = _lagr_tanh(x, beta)
        tangent_out = jnp.tanh(beta * x) * x_dot
        return primal_out, tangent_out

    @jax.jit
    def run(x, beta):
        return (
            hl.lagr_tanh(x, beta),
            _lagr_tanh(x, beta),
            jax.grad(lambda x: hl.lagr_tanh(x, beta).sum())(x),
            jax.grad(lambda x: _lagr_tanh(x, beta).sum())(x),
            jax.grad(lambda b: hl.lagr_tanh(x, b).sum())(beta),
            jax.grad(lambda b: _lagr_tanh(x, b).sum())(beta),
        )

    x = jnp.linspace(-3.0, 3.0, 13)
    ours, hamux_values, ours_act, hamux_act, ours_db, hamux_db = run(
        x, jnp.asarray(1.7)
    )
    np.testing.assert_allclose(ours, hamux_values, rtol=1e-12)
    np.testing.assert_allclose(ours_act, hamux_act, rtol=1e-14)
    np.testing.assert_allclose(ours_act, jnp.tanh(1.7 * x), rtol=1e-14)
    # HAMUX's rule drops beta's tangent (HAMUX's bug); ours does not
    assert hamux_db == 0
    assert ours_db > 0


_EMPTY = inspect.Parameter.empty
FUNCTION_SIGNATURES = {
    "lagr_identity": [("x", _EMPTY)],
    "lagr_repu": [("x", _EMPTY), ("n", _EMPTY)],
    "lagr_relu": [("x", _EMPTY)],
    "lagr_exp": [("x", _EMPTY), ("beta", 1.0)],
    "lagr_rexp": [("x", _EMPTY), ("beta", 1.0)],
    "lagr_tanh": [("x", _EMPTY), ("beta", 1.0)],
    "lagr_sigmoid": [("x", _EMPTY), ("beta", 1.0), ("scale", 1.0)],
    "lagr_softmax": [("x", _EMPTY), ("beta", 1.0), ("axis", -1)],
    "lagr_softmax_unstable": [("x", _EMPTY), ("beta", 1.0), ("axis", -1)],
    "lagr_ghostmax": [("x", _EMPTY), ("beta", 1.0), ("axis", -1)],
    "lagr_layernorm": [
        ("x", _EMPTY),
        ("gamma", 1.0),
        ("delta", 0.0),
        ("axis", -1),
        ("eps", 1e-5),
    ],
    "lagr_spherical_norm": [
        ("x", _EMPTY),
        ("gamma", 1.0),
        ("delta", 0.0),
        ("axis", -1),
        ("eps", 1e-5),
    ],
}
MODULE_SIGNATURES = {
    "LIdentity": [],
    "LRelu": [],
    "LRepu": [("n", 2.0)],
    "LExp": [("beta", 1.0), ("min_beta", 1e-6)],
    "LRexp": [("beta", 1.0), ("min_beta", 1e-6)],
    "LTanh": [("beta", 1.0), ("min_beta", 1e-6)],
    "LSigmoid": [("beta", 1.0), ("scale", 1.0), ("min_beta", 1e-6)],
    "LSoftmax": [("beta", 1.0), ("axis", -1), ("min_beta", 1e-6)],
    "LSoftmaxUnstable": [("beta", 1.0), ("axis", -1), ("min_beta", 1e-6)],
    "LGhostmax": [("beta", 1.0), ("axis", -1), ("min_beta", 1e-6)],
    "LLayerNorm": [("gamma", 1.0), ("delta", 0.0), ("eps", 1e-5)],
    "LSphericalNorm": [("gamma", 1.0), ("delta", 0.0), ("eps", 1e-5)],
}


def _params(obj):
    return [
        (p.name, p.default)
        for p in inspect.signature(obj).parameters.values()
        if p.name != "self"
    ]


@pytest.mark.parametrize("name", list(FUNCTION_SIGNATURES))
def test_function_signatures(name):
    assert _params(getattr(hl, name)) == FUNCTION_SIGNATURES[name]
    assert _params(getattr(hl.functional, name)) == FUNCTION_SIGNATURES[name]


@pytest.mark.parametrize("name", list(MODULE_SIGNATURES))
def test_module_signatures(name):
    cls = getattr(hl, name)
    assert _params(cls) == MODULE_SIGNATURES[name]
    # every default is a working default: the module builds with no arguments and
    # with every argument given by keyword at its default
    cls()
    cls(**dict(MODULE_SIGNATURES[name]))


def test_lrepu_default_is_relu():
    x = jnp.asarray([-1.5, -0.2, 0.3, 2.0])
    np.testing.assert_array_equal(hl.LRepu()(x), hl.LRelu()(x))
    np.testing.assert_array_equal(hl.LRepu()(x), hl.lagr_relu(x).sum())
