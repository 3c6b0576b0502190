r"""The elementwise functional Lagrangians, and the public `lagr_*` namespace.

Each `lagr_*` returns an array of `x`'s shape whose sum is the scalar Lagrangian
$\mathcal{L}(x)$; `jax.grad(lambda x: lagr(x).sum())` is the layer's activation function.
The reducing Lagrangians (softmax family, norms) live in `_functional_softmax.py` and
`_functional_norms.py` and are re-exported here.

Numerics. Where the naive formula overflows (`log(cosh(z))`, `log(1 + exp(z))`) or its
autodiff is slow or inexact, the function is a `jax.custom_jvp` whose rule is the closed
form of every partial derivative: the activation for `x`, and the exact derivative for
each parameter (`beta`, `scale`, `n`), so learnable parameters get true gradients.
"""

import functools as ft
import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._custom_types import ParamLike, StateLike
from ._jvp import tangent_sum
from ._validation import (
    as_state,
    check_broadcasts,
    checked_param,
    finite_param,
    state_and_beta,
)


_LOG2 = math.log(2.0)


# ----------------------------------------------------------------------------------
# identity and RePU
# ----------------------------------------------------------------------------------


@jax.custom_jvp
def _identity(x):
    return 0.5 * x * x


@_identity.defjvp
def _identity_jvp(primals, tangents):
    # The derivative is exactly `x` (autodiff of `0.5 * x * x` gives `0.5 x + 0.5 x`,
    # two more operations in every step of the dynamics).
    (x,), (x_dot,) = primals, tangents
    return _identity(x), x * x_dot


def lagr_identity(x: StateLike) -> Float[Array, "..."]:
    r"""The Lagrangian whose activation function is the identity.

    $$\mathcal{L}(x) = \tfrac{1}{2} x^2, \qquad \frac{\partial \mathcal{L}}{\partial x} = x.$$

    **Arguments:**

    - `x`: the state, any shape.

    **Returns:**

    An array of `x`'s shape; its sum is the scalar Lagrangian.
    """
    x = as_state(x, "lagr_identity")
    return _identity(x)


@jax.custom_jvp
def _repu(x, n):
    pos = x > 0
    xs = jnp.where(pos, x, 1)  # "double where": no 0**(n-2) = inf in the Hessian
    return jnp.where(pos, xs**n, 0) / n


@ft.partial(_repu.defjvp, symbolic_zeros=True)
def _repu_jvp(primals, tangents):
    x, n = primals
    x_dot, n_dot = tangents
    pos = x > 0
    xs = jnp.where(pos, x, 1)
    xs_n = xs**n
    out = jnp.where(pos, xs_n, 0) / n
    tangent = tangent_sum(
        out,
        (x_dot, lambda: jnp.where(pos, xs ** (n - 1), 0) * x_dot),
        (n_dot, lambda: jnp.where(pos, xs_n * (n * jnp.log(xs) - 1), 0) / n**2 * n_dot),
    )
    return out, tangent


def _is_not_a_degree(v):
    """True where `v` is not a finite degree `>= 1` (NaN included)."""
    return ~((v >= 1) & (v < math.inf))


def lagr_repu(x: StateLike, n: ParamLike) -> Float[Array, "..."]:
    r"""Rectified Power Unit of degree `n` (Krotov & Hopfield 2016).

    $$\mathcal{L}(x) = \frac{1}{n} \max(x, 0)^n, \qquad
    \frac{\partial \mathcal{L}}{\partial x} = \max(x, 0)^{n-1}.$$

    Convex for `n >= 1`. The Hessian is finite (zero) at negative inputs for every
    degree, fractional ones (`n = 1.5`) included.

    **Arguments:**

    - `x`: the state, any shape.
    - `n`: degree of the polynomial in the power unit, `n >= 1`.

    **Returns:**

    An array of `x`'s shape; its sum is the scalar Lagrangian.

    **Raises:**

    `ValueError` if `n < 1` (the Lagrangian would not be convex) or `n` is not finite;
    under `jax.jit` the check runs at run time, through `eqx.error_if`.
    """
    x = as_state(x, "lagr_repu")
    n = checked_param(
        n,
        "n",
        "lagr_repu",
        x.dtype,
        _is_not_a_degree,
        "`n` must be >= 1 and finite in `lagr_repu`",
        "A RePU of degree below 1 is not convex.",
    )
    check_broadcasts(n, x.shape, "n", "lagr_repu")
    return _repu(x, n)


def lagr_relu(x: StateLike) -> Float[Array, "..."]:
    r"""Rectified Linear Unit: the RePU of degree 2.

    $$\mathcal{L}(x) = \tfrac{1}{2} \max(x, 0)^2, \qquad
    \frac{\partial \mathcal{L}}{\partial x} = \max(x, 0).$$

    **Arguments:**

    - `x`: the state, any shape.

    **Returns:**

    An array of `x`'s shape; its sum is the scalar Lagrangian.
    """
    return lagr_repu(x, 2)


# ----------------------------------------------------------------------------------
# exponentials
# ----------------------------------------------------------------------------------


@jax.custom_jvp
def _exp(x, beta):
    return jnp.exp(beta * x) / beta


@ft.partial(_exp.defjvp, symbolic_zeros=True)
def _exp_jvp(primals, tangents):
    x, beta = primals
    x_dot, beta_dot = tangents
    z = beta * x
    ez = jnp.exp(z)
    out = ez / beta
    tangent = tangent_sum(
        out,
        (x_dot, lambda: ez * x_dot),
        (beta_dot, lambda: ez * (z - 1) / beta**2 * beta_dot),
    )
    return out, tangent


def lagr_exp(x: StateLike, beta: ParamLike = 1.0) -> Float[Array, "..."]:
    r"""Exponential Lagrangian (Demircigil et al. 2017). Operates elementwise.

    $$\mathcal{L}(x) = \frac{1}{\beta} e^{\beta x}, \qquad
    \frac{\partial \mathcal{L}}{\partial x} = e^{\beta x}.$$

    The value grows like $e^{\beta x}$: it overflows to `inf` once $\beta x$ passes
    `log(finfo(dtype).max)` (about 88.7 in float32, 11.1 in float16). That is the true
    value, not a numerical failure.

    **Arguments:**

    - `x`: the state, any shape.
    - `beta`: inverse temperature, positive and finite; a scalar or an array
      broadcasting to `x`.

    **Returns:**

    An array of `x`'s shape; its sum is the scalar Lagrangian.
    """
    x, beta = state_and_beta(x, beta, "lagr_exp")
    return _exp(x, beta)


@jax.custom_jvp
def _rexp(x, beta):
    xb = jnp.maximum(x, 0)
    return jnp.exp(beta * xb) / beta - xb


@ft.partial(_rexp.defjvp, symbolic_zeros=True)
def _rexp_jvp(primals, tangents):
    x, beta = primals
    x_dot, beta_dot = tangents
    xb = jnp.maximum(x, 0)
    z = beta * xb
    ez = jnp.exp(z)
    out = ez / beta - xb
    tangent = tangent_sum(
        out,
        # expm1(beta * max(x, 0)) is exactly 0 for x <= 0.
        (x_dot, lambda: jnp.expm1(z) * x_dot),
        (beta_dot, lambda: ez * (z - 1) / beta**2 * beta_dot),
    )
    return out, tangent


def lagr_rexp(x: StateLike, beta: ParamLike = 1.0) -> Float[Array, "..."]:
    r"""Rectified exponential Lagrangian. Operates elementwise.

    $$\mathcal{L}(x) = \frac{1}{\beta} e^{\beta \bar{x}} - \bar{x}, \quad
    \bar{x} = \max(x, 0), \qquad
    \frac{\partial \mathcal{L}}{\partial x} = e^{\beta \bar{x}} - 1.$$

    The activation is 0 for $x \le 0$. Like `lagr_exp`, the value overflows to `inf`
    once $\beta x$ passes `log(finfo(dtype).max)`: that is the true value.

    **Arguments:**

    - `x`: the state, any shape.
    - `beta`: inverse temperature, positive and finite; a scalar or an array
      broadcasting to `x`.

    **Returns:**

    An array of `x`'s shape; its sum is the scalar Lagrangian.
    """
    x, beta = state_and_beta(x, beta, "lagr_rexp")
    return _rexp(x, beta)


# ----------------------------------------------------------------------------------
# tanh and sigmoid: the stable log-cosh and softplus
# ----------------------------------------------------------------------------------

# Below this |z| the log-cosh and its beta-derivative use forms that are accurate near
# zero; above it, forms that cannot overflow. Both are accurate at the switch.
_SWITCH = 1.0


def _logcosh_small(a):
    """log(cosh(a)) for 0 <= a <= _SWITCH, accurate to relative precision near 0."""
    return jnp.log1p(2 * jnp.sinh(a / 2) ** 2)


def _tanh_value(x, beta):
    a = jnp.abs(beta * x)
    small = a < _SWITCH
    a_small = jnp.where(small, a, 0)
    # log(cosh(z)) / beta = |x| + (log1p(exp(-2|z|)) - log 2) / beta for large |z|:
    # finite even where beta * x overflows.
    big = jnp.abs(x) + (jnp.log1p(jnp.exp(-2 * a)) - _LOG2) / beta
    return jnp.where(small, _logcosh_small(a_small) / beta, big)


def _tanh_dbeta(x, beta):
    """d/dbeta of log(cosh(beta x)) / beta = (z tanh z - log cosh z) / beta**2."""
    a = jnp.abs(beta * x)
    small = a < _SWITCH
    a_small = jnp.where(small, a, 0)
    a_fin = jnp.where(jnp.isfinite(a), a, 0)  # a * (1 - tanh a) -> 0 as a -> inf
    g_small = a_small * jnp.tanh(a_small) - _logcosh_small(a_small)
    # z tanh z - log cosh z = log 2 - log1p(exp(-2a)) - a (1 - tanh a), 1 - tanh a =
    # 2 sigmoid(-2a): no cancellation, no overflow.
    g_big = _LOG2 - jnp.log1p(jnp.exp(-2 * a)) - a_fin * (2 * jax.nn.sigmoid(-2 * a))
    return jnp.where(small, g_small, g_big) / beta**2


@jax.custom_jvp
def _tanh(x, beta):
    return _tanh_value(x, beta)


@ft.partial(_tanh.defjvp, symbolic_zeros=True)
def _tanh_jvp(primals, tangents):
    x, beta = primals
    x_dot, beta_dot = tangents
    out = _tanh_value(x, beta)
    tangent = tangent_sum(
        out,
        (x_dot, lambda: jnp.tanh(beta * x) * x_dot),
        (beta_dot, lambda: _tanh_dbeta(x, beta) * beta_dot),
    )
    return out, tangent


def lagr_tanh(x: StateLike, beta: ParamLike = 1.0) -> Float[Array, "..."]:
    r"""Lagrangian of the tanh activation function. Operates elementwise.

    $$\mathcal{L}(x) = \frac{1}{\beta} \log\cosh(\beta x), \qquad
    \frac{\partial \mathcal{L}}{\partial x} = \tanh(\beta x).$$

    Computed stably: $\log\cosh z = |z| + \log(1 + e^{-2|z|}) - \log 2$ for large $|z|$
    and $\log(1 + 2\sinh^2(z/2))$ near zero, so the value is accurate at every
    magnitude and never overflows (the naive form overflows near $|z| = 89$ in float32).
    A custom JVP returns `tanh(beta * x)` for `x` and the exact derivative
    $(z\tanh z - \log\cosh z)/\beta^2$ for `beta`.

    **Arguments:**

    - `x`: the state, any shape.
    - `beta`: inverse temperature, positive and finite; a scalar or an array
      broadcasting to `x`.

    **Returns:**

    An array of `x`'s shape; its sum is the scalar Lagrangian.
    """
    x, beta = state_and_beta(x, beta, "lagr_tanh")
    return _tanh(x, beta)


def _sigmoid_value_per_scale(x, beta):
    # softplus(z) / beta = max(x, 0) + log1p(exp(-|z|)) / beta: no overflow.
    return jnp.maximum(x, 0) + jnp.log1p(jnp.exp(-jnp.abs(beta * x))) / beta


def _sigmoid_dbeta_per_scale(x, beta):
    """d/dbeta of softplus(beta x) / beta = (z sigmoid z - softplus z) / beta**2."""
    # The numerator is even in z: -(a sigmoid(-a) + log1p(exp(-a))), a = |z|.
    a = jnp.abs(beta * x)
    a_fin = jnp.where(jnp.isfinite(a), a, 0)
    return -(a_fin * jax.nn.sigmoid(-a) + jnp.log1p(jnp.exp(-a))) / beta**2


@jax.custom_jvp
def _sigmoid(x, beta, scale):
    return scale * _sigmoid_value_per_scale(x, beta)


@ft.partial(_sigmoid.defjvp, symbolic_zeros=True)
def _sigmoid_jvp(primals, tangents):
    x, beta, scale = primals
    x_dot, beta_dot, scale_dot = tangents
    per_scale = _sigmoid_value_per_scale(x, beta)
    out = scale * per_scale
    tangent = tangent_sum(
        out,
        (x_dot, lambda: scale * jax.nn.sigmoid(beta * x) * x_dot),
        (beta_dot, lambda: scale * _sigmoid_dbeta_per_scale(x, beta) * beta_dot),
        (scale_dot, lambda: per_scale * scale_dot),
    )
    return out, tangent


def lagr_sigmoid(
    x: StateLike, beta: ParamLike = 1.0, scale: ParamLike = 1.0
) -> Float[Array, "..."]:
    r"""Lagrangian of the sigmoid activation function. Operates elementwise.

    $$\mathcal{L}(x) = \frac{s}{\beta} \log\left(1 + e^{\beta x}\right), \qquad
    \frac{\partial \mathcal{L}}{\partial x} = s\,\sigma(\beta x).$$

    Computed as $s\,(\max(x, 0) + \log(1 + e^{-\beta|x|})/\beta)$, which never
    overflows. A custom JVP carries exact tangents for `x`, `beta` and `scale`.

    **Arguments:**

    - `x`: the state, any shape.
    - `beta`: inverse temperature, positive and finite; a scalar or an array
      broadcasting to `x`.
    - `scale`: amount $s$ to stretch the range of the sigmoid, finite (convex for
      `scale >= 0`).

    **Returns:**

    An array of `x`'s shape; its sum is the scalar Lagrangian.
    """
    x, beta = state_and_beta(x, beta, "lagr_sigmoid")
    scale = finite_param(scale, "scale", "lagr_sigmoid", x.dtype)
    check_broadcasts(scale, x.shape, "scale", "lagr_sigmoid")
    return _sigmoid(x, beta, scale)


# The reducing Lagrangians, re-exported so that `_functional` is the one place to look.
from ._functional_norms import (  # noqa: E402
    lagr_layernorm as lagr_layernorm,
    lagr_spherical_norm as lagr_spherical_norm,
)
from ._functional_softmax import (  # noqa: E402
    lagr_ghostmax as lagr_ghostmax,
    lagr_softmax as lagr_softmax,
    lagr_softmax_unstable as lagr_softmax_unstable,
)


__all__ = [
    "lagr_exp",
    "lagr_ghostmax",
    "lagr_identity",
    "lagr_layernorm",
    "lagr_relu",
    "lagr_repu",
    "lagr_rexp",
    "lagr_sigmoid",
    "lagr_softmax",
    "lagr_softmax_unstable",
    "lagr_spherical_norm",
    "lagr_tanh",
]
