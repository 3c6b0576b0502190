r"""Lagrangians with an inverse temperature: exponential, rectified exponential, log-cosh
(tanh) and softplus (sigmoid), as functions and as modules.

Each `lagr_*` returns an array of `x`'s shape whose sum is the scalar Lagrangian
$\mathcal{L}(x)$; `jax.grad(lambda x: lagr(x).sum())` is the layer's activation function.
The reducing Lagrangians (softmax family, norms) live in `_functional_softmax.py` and
`_functional_norms.py` and are re-exported here.

Numerics. Where the naive formula overflows (`log(cosh(z))`, `log(1 + exp(z))`) or its
autodiff is slow or inexact, the function is a `jax.custom_jvp` whose rule is the closed
form of every partial derivative: the activation for `x`, and the exact derivative for
each parameter (`beta`, `scale`, `n`), so learnable parameters get true gradients.
"""

import abc
import functools as ft
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import ParamLike, Scalar, StateLike
from .._misc import largest_finite
from .._validation import (
    as_state,
    check_broadcasts,
    finite_param,
    learnable,
    state_and_beta,
)
from .base import (
    _array_or_as_given,
    _evaluated_beta,
    _float_or_as_given,
    _min_beta,
    checked_module,
    Lagrangian,
)
from .jvp import tangent_sum
from .streaming import StreamedSum


_LOG2 = math.log(2.0)


@jax.custom_jvp
def _exp(x, beta):
    beta = largest_finite(beta)  # a beta beyond the dtype: its largest finite
    return jnp.exp(beta * x) / beta


@ft.partial(_exp.defjvp, symbolic_zeros=True)
def _exp_jvp(primals, tangents):
    x, beta = primals
    beta = largest_finite(beta)
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
    beta = largest_finite(beta)  # a beta beyond the dtype: its largest finite
    xb = jnp.maximum(x, 0)
    return jnp.exp(beta * xb) / beta - xb


@ft.partial(_rexp.defjvp, symbolic_zeros=True)
def _rexp_jvp(primals, tangents):
    x, beta = primals
    beta = largest_finite(beta)
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
    beta = largest_finite(beta)  # a beta beyond the dtype: its largest finite
    return _tanh_value(x, beta)


@ft.partial(_tanh.defjvp, symbolic_zeros=True)
def _tanh_jvp(primals, tangents):
    x, beta = primals
    beta = largest_finite(beta)
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
    beta = largest_finite(beta)  # a beta beyond the dtype: its largest finite
    return scale * _sigmoid_value_per_scale(x, beta)


@ft.partial(_sigmoid.defjvp, symbolic_zeros=True)
def _sigmoid_jvp(primals, tangents):
    x, beta, scale = primals
    beta = largest_finite(beta)
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


class _AbstractTemperatureLagrangian(Lagrangian):
    """An elementwise Lagrangian with a learnable inverse temperature `beta`, clamped
    at the static `min_beta` when evaluated."""

    beta: Float[Array, "..."] = eqx.field(default=1.0, converter=_array_or_as_given)
    min_beta: float = eqx.field(static=True, default=1e-6, converter=_float_or_as_given)

    def __check_init__(self):
        where = type(self).__name__
        learnable(self.beta, "beta", where)
        _min_beta(self.min_beta, where)

    @abc.abstractmethod
    def _kernel(self, x: Array, beta: Array) -> Array:
        """The unchecked functional Lagrangian, elementwise."""
        raise NotImplementedError

    def __call__(self, x: StateLike) -> Scalar:
        r"""The scalar Lagrangian of one unbatched state, `beta` clamped at
        `min_beta`.

        **Arguments:**

        - `x`: one unbatched state, any shape.

        **Returns:**

        The scalar $\mathcal{L}(x)$, summed over every entry.
        """
        where = type(self).__name__
        return checked_module(self, where)._unchecked(as_state(x, where))

    def _unchecked(self, x: Array) -> Array:
        # The Lagrangian of a floating state without the parameter checks: the
        # solves check every parameter once, at their entry, never in their loops.
        where = type(self).__name__
        beta = _evaluated_beta(self.beta, self.min_beta, x, x.shape, where)
        return jnp.sum(self._kernel(x, beta))


class LExp(_AbstractTemperatureLagrangian):
    r"""Reduced Lagrangian whose activation function is the exponential
    (Demircigil et al. 2017).

    $\mathcal{L}(x) = \frac{1}{\beta}\sum_i e^{\beta x_i}$, $g(x) = e^{\beta x}$.
    See `lagr_exp`.

    **Arguments:**

    - `beta`: inverse temperature, for the sharpness of the activation. Learnable;
      clamped at `min_beta` when the Lagrangian is evaluated. NaN or infinite values
      are refused (a `ValueError`; under `jax.jit`, a run-time error).
    - `min_beta`: minimal accepted value of `beta` (static, a positive Python
      number). For energy dynamics, it is important that `beta` be positive.
    """

    streaming = StreamedSum()

    def _kernel(self, x: Array, beta: Array) -> Array:
        return _exp(x, beta)


class LRexp(_AbstractTemperatureLagrangian):
    r"""Reduced Lagrangian whose activation function is the rectified exponential.

    $\mathcal{L}(x) = \sum_i \frac{1}{\beta} e^{\beta \bar{x}_i} - \bar{x}_i$ with
    $\bar{x} = \max(x, 0)$, $g(x) = e^{\beta \bar{x}} - 1$. See `lagr_rexp`.

    **Arguments:**

    - `beta`: inverse temperature, for the sharpness of the activation. Learnable;
      clamped at `min_beta` when the Lagrangian is evaluated. NaN or infinite values
      are refused (a `ValueError`; under `jax.jit`, a run-time error).
    - `min_beta`: minimal accepted value of `beta` (static, a positive Python
      number). For energy dynamics, it is important that `beta` be positive.
    """

    streaming = StreamedSum()

    def _kernel(self, x: Array, beta: Array) -> Array:
        return _rexp(x, beta)


class LTanh(_AbstractTemperatureLagrangian):
    r"""Reduced Lagrangian whose activation function is the tanh.

    $\mathcal{L}(x) = \frac{1}{\beta}\sum_i \log\cosh(\beta x_i)$,
    $g(x) = \tanh(\beta x)$. Stable at every magnitude, with a true `beta` gradient.
    See `lagr_tanh`.

    **Arguments:**

    - `beta`: inverse temperature, for the sharpness of the activation. Learnable;
      clamped at `min_beta` when the Lagrangian is evaluated. NaN or infinite values
      are refused (a `ValueError`; under `jax.jit`, a run-time error).
    - `min_beta`: minimal accepted value of `beta` (static, a positive Python
      number). For energy dynamics, it is important that `beta` be positive.
    """

    streaming = StreamedSum()

    def _kernel(self, x: Array, beta: Array) -> Array:
        return _tanh(x, beta)


class LSigmoid(Lagrangian):
    r"""Reduced Lagrangian whose activation function is the sigmoid.

    $\mathcal{L}(x) = \frac{s}{\beta}\sum_i \log(1 + e^{\beta x_i})$,
    $g(x) = s\,\sigma(\beta x)$. See `lagr_sigmoid`.

    **Arguments:**

    - `beta`: inverse temperature. Learnable; clamped at `min_beta` when evaluated.
      NaN or infinite values are refused (a `ValueError`; under `jax.jit`, a run-time
      error).
    - `scale`: amount $s$ to stretch the sigmoid. Learnable; finite.
    - `min_beta`: minimal accepted value of `beta` (static, a positive Python
      number). For energy dynamics, it is important that `beta` be positive.
    """

    streaming = StreamedSum()

    beta: Float[Array, "..."]
    scale: Float[Array, "..."]
    min_beta: float = eqx.field(static=True)

    def __init__(
        self,
        beta: ParamLike = 1.0,
        scale: ParamLike = 1.0,
        min_beta: int | float = 1e-6,
    ):
        self.beta = learnable(beta, "beta", "LSigmoid")
        self.scale = learnable(scale, "scale", "LSigmoid")
        self.min_beta = _min_beta(min_beta, "LSigmoid")

    def __call__(self, x: StateLike) -> Scalar:
        r"""The scalar Lagrangian of one unbatched state, `beta` clamped at
        `min_beta`.

        **Arguments:**

        - `x`: one unbatched state, any shape.

        **Returns:**

        The scalar $\mathcal{L}(x)$, summed over every entry.
        """
        where = "LSigmoid"
        return checked_module(self, where)._unchecked(as_state(x, where))

    def _unchecked(self, x: Array) -> Array:
        # The Lagrangian of a floating state without the parameter checks: the
        # solves check every parameter once, at their entry, never in their loops.
        beta = jnp.maximum(self.beta, self.min_beta).astype(x.dtype)
        scale = self.scale.astype(x.dtype)
        check_broadcasts(beta, x.shape, "beta", "LSigmoid")
        check_broadcasts(scale, x.shape, "scale", "LSigmoid")
        return jnp.sum(_sigmoid(x, beta, scale))
