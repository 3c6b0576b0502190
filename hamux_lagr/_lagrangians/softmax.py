r"""The softmax family of Lagrangians: log-sum-exp over an axis.

Each returns `x`'s shape with `axis` kept at size 1; the sum is the scalar Lagrangian.
"""

import abc
import functools as ft

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from .._custom_types import ParamLike, Scalar, StateLike
from .._misc import largest_finite, select
from .._validation import (
    as_state,
    learnable,
    normalise_axis,
    state_and_beta,
    static_axis,
)
from .axis_ops import axis_dot, axis_expand, check_nonempty_axis
from .base import (
    _array_or_as_given,
    _axis_or_as_given,
    _evaluated_beta,
    _float_or_as_given,
    _min_beta,
    checked_module,
    Lagrangian,
)
from .jvp import tangent_sum
from .streaming import StreamedLogSumExp


def _reduced_shape(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    return tuple(1 if i == axis else d for i, d in enumerate(shape))


def _prepare(x, beta, axis, fn):
    x = as_state(x, fn)
    axis = normalise_axis(axis, x.ndim, fn)
    x, beta = state_and_beta(x, beta, fn, _reduced_shape(x.shape, axis))
    # `beta` may vary across the other axes but not along `axis` (that would not be
    # the gradient of a scalar function): state_and_beta checks it broadcasts to the
    # reduced shape.
    return x, beta, axis


# The broadcasts back along `axis` and the tangents' contractions go through
# `_axis_ops`, which keeps the layout of a `jax.vmap`ped batch of vectors (no
# transposes of a dense memory's `(K, batch)` similarities).


def _finite_range(x):
    """`x` clipped to the finite numbers of its dtype.

    Shifted by the maximum, an infinite entry would give `inf - inf = NaN`; clipped,
    a `+inf` entry is the maximum and its shifted value is 0, so `exp(y) / s` is the
    activation's limit: the one-hot at a `+inf` entry (uniform over several), and
    uniform when every entry is `-inf`. (Entries at the largest finite number count
    as the infinite ones.) Two maxima, not a clamp or a select: XLA's CPU backend
    keeps the similarities' matrix product, their maximum and the exponential in one
    kernel only for such arithmetic.
    """
    top = jnp.finfo(x.dtype).max
    return -jnp.maximum(-jnp.maximum(x, -top), -top)


def _at_infinite_maximum(m, value):
    """`value`, or where the (clipped) maximum `m` is infinite, `m`'s infinity."""
    top = jnp.finfo(m.dtype).max
    return select(jnp.abs(m) < top, value, m * jnp.inf)


def _softmax_parts(x, beta, axis):
    # Shift *before* scaling: for beta > 0, max(beta x) = beta max(x), and
    # beta * (x - max(x)) is exactly 0 at the maximum. (The other order, beta x -
    # max(beta x), XLA fuses into one multiply-add whose rounding error, about
    # |beta x| * eps, overflows exp at a large beta: -inf and NaN under jit.)
    check_nonempty_axis(x, axis, "lagr_softmax / LSoftmax")
    beta = largest_finite(beta)
    xc = _finite_range(x)
    m = lax.stop_gradient(jnp.max(xc, axis=axis, keepdims=True))
    y = beta * (xc - axis_expand(m, x.shape))
    e = jnp.exp(y)
    s = jnp.sum(e, axis=axis, keepdims=True)
    log_s = jnp.log(s)
    # An infinite maximum (clipped to the largest finite number): the log-sum-exp is
    # the maximum itself, as in `jax.nn.logsumexp`.
    lse = _at_infinite_maximum(m, m + log_s / beta)
    return y, e, s, log_s, lse


def _safe_log_p(p, log_p):
    """`log_p`, with 0 where `p == 0` (there `log_p` may be -inf; `p log p` is 0)."""
    return select(p > 0, log_p, 0)


@ft.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _softmax(x, beta, axis):
    return _softmax_parts(x, beta, axis)[-1]


@ft.partial(_softmax.defjvp, symbolic_zeros=True)
def _softmax_jvp(axis, primals, tangents):
    x, beta = primals
    x_dot, beta_dot = tangents
    y, e, s, log_s, out = _softmax_parts(x, beta, axis)
    p = e / axis_expand(s, e.shape)

    def dbeta():
        # d/dbeta logsumexp(beta x) / beta = sum(p log p) / beta**2 (minus the entropy);
        # 0 at an infinite maximum, where the value is the maximum.
        log_p = _safe_log_p(p, y - axis_expand(log_s, y.shape))
        neg_h = select(jnp.isfinite(out), axis_dot(p, log_p, axis), 0)
        return neg_h / beta**2 * beta_dot

    tangent = tangent_sum(
        out,
        (x_dot, lambda: axis_dot(p, x_dot, axis)),
        (beta_dot, dbeta),
    )
    return out, tangent


def lagr_softmax(
    x: StateLike, beta: ParamLike = 1.0, axis: int = -1
) -> Float[Array, "..."]:
    r"""The Lagrangian of the softmax: the log-sum-exp (Ramsauer et al. 2020).

    $$\mathcal{L}(x) = \frac{1}{\beta} \log \sum_i e^{\beta x_i}, \qquad
    \frac{\partial \mathcal{L}}{\partial x} = \operatorname{softmax}(\beta x).$$

    Stable at every magnitude (the maximum is subtracted before exponentiating); at an
    infinite maximum (a `+inf` entry, or every entry `-inf`) the value is the maximum
    and the activation its limit, the one-hot at the `+inf` entry (uniform over
    several) or the uniform distribution. A
    custom JVP gives the softmax for `x` and the exact derivative for `beta`,
    $\frac{1}{\beta^2}\sum_i p_i \log p_i$ with $p = \operatorname{softmax}(\beta x)$,
    computed without cancellation.

    Convex but not strictly: it is linear along the all-ones direction (see
    `lagr_ghostmax` for a strictly convex sibling).

    **Arguments:**

    - `x`: the state, at least one dimension.
    - `beta`: inverse temperature, positive and finite; a scalar (or an array
      broadcasting to the output shape). One beyond the range of `x`'s dtype (float16:
      65504) is evaluated at the dtype's largest finite number, the limit
      $\beta\to\infty$ ($\max_i x_i$) to the format's precision.
    - `axis`: the axis over which to apply the log-sum-exp.

    **Returns:**

    An array of `x`'s shape with `axis` kept at size 1.
    """
    x, beta, axis = _prepare(x, beta, axis, "lagr_softmax")
    return _softmax(x, beta, axis)


def lagr_softmax_unstable(
    x: StateLike, beta: ParamLike = 1.0, axis: int = -1
) -> Float[Array, "..."]:
    r"""The log-sum-exp coded with elementary operations only.

    Same value and activation as `lagr_softmax`,
    $\frac{1}{\beta}\log\sum_i e^{\beta x_i}$, but written with `max`, subtract,
    multiply, `exp`, `sum`, `log` and `stop_gradient` alone, for runtimes without a
    log-sum-exp kernel (e.g. TensorFlow.js, for porting models to the browser). It is
    as stable as `lagr_softmax`:
    $m + \frac{1}{\beta}\log\sum_i e^{\beta(x_i - m)}$ with $m$ the stop-gradiented
    maximum; the function does not depend on $m$, so every derivative is exact, and the
    `beta` gradient has no cancellation. (The name is kept from HAMUX for
    compatibility.)

    **Arguments:**

    - `x`: the state, at least one dimension.
    - `beta`: inverse temperature, positive and finite.
    - `axis`: the axis over which to apply the log-sum-exp.

    **Returns:**

    An array of `x`'s shape with `axis` kept at size 1.
    """
    x, beta, axis = _prepare(x, beta, axis, "lagr_softmax_unstable")
    return _softmax_unstable(x, beta, axis)


def _softmax_unstable(x, beta, axis):
    # Shifted before scaling, like `_softmax_parts`.
    check_nonempty_axis(x, axis, "lagr_softmax_unstable / LSoftmaxUnstable")
    beta = largest_finite(beta)
    m = lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    return (
        m + jnp.log(jnp.sum(jnp.exp(beta * (x - m)), axis=axis, keepdims=True)) / beta
    )


def _ghostmax_parts(x, beta, axis):
    # Shift by max(max(x), 0) before scaling (the ghost logit is 0; see
    # `_softmax_parts` for why the shift comes first, and how a `+inf` entry is
    # shifted).
    check_nonempty_axis(x, axis, "lagr_ghostmax / LGhostmax")
    beta = largest_finite(beta)
    xc = _finite_range(x)
    m = lax.stop_gradient(jnp.maximum(jnp.max(xc, axis=axis, keepdims=True), 0))
    y = beta * (xc - axis_expand(m, x.shape))
    bm = beta * m
    e = jnp.exp(y)
    e0 = jnp.exp(-bm)
    s = e0 + jnp.sum(e, axis=axis, keepdims=True)
    log_s = jnp.log(s)
    # A +inf entry: the Lagrangian is +inf (see `_softmax_parts`).
    lse = _at_infinite_maximum(m, m + log_s / beta)
    return bm, y, e, s, log_s, lse


@ft.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _ghostmax(x, beta, axis):
    return _ghostmax_parts(x, beta, axis)[-1]


@ft.partial(_ghostmax.defjvp, symbolic_zeros=True)
def _ghostmax_jvp(axis, primals, tangents):
    x, beta = primals
    x_dot, beta_dot = tangents
    bm, y, e, s, log_s, out = _ghostmax_parts(x, beta, axis)
    p = e / axis_expand(s, e.shape)

    def dbeta():
        # Minus the entropy of (p, p0), p0 = 1 - sum(p) the ghost's probability.
        log_p0 = -bm - log_s
        p0 = jnp.exp(log_p0)
        log_p = _safe_log_p(p, y - axis_expand(log_s, y.shape))
        neg_h = axis_dot(p, log_p, axis) + p0 * _safe_log_p(p0, log_p0)
        neg_h = select(jnp.isfinite(out), neg_h, 0)  # a +inf entry: see above
        return neg_h / beta**2 * beta_dot

    tangent = tangent_sum(
        out,
        (x_dot, lambda: axis_dot(p, x_dot, axis)),
        (beta_dot, dbeta),
    )
    return out, tangent


def lagr_ghostmax(
    x: StateLike, beta: ParamLike = 1.0, axis: int = -1
) -> Float[Array, "..."]:
    r"""The Lagrangian of the "ghostmax": a softmax with an extra zero logit.

    $$\mathcal{L}(x) = \frac{1}{\beta} \log\Big(1 + \sum_i e^{\beta x_i}\Big), \qquad
    \frac{\partial \mathcal{L}}{\partial x_i} =
    \frac{e^{\beta x_i}}{1 + \sum_j e^{\beta x_j}}.$$

    The strictly convex sibling of `lagr_softmax`: the log-sum-exp is linear along the
    all-ones direction, the ghostmax is not, so its Hessian is positive definite and
    the activations may all be small (the "ghost" takes the rest of the mass). HAMUX
    ships it undocumented. Stable at every magnitude, with an exact `beta` gradient.

    Its activation is the $\operatorname{softmax}_1$, the "softmax plus one" of
    Miller (2023, "Attention is off by one"), which outlier-efficient Hopfield layers
    use to let an attention head attend to nothing (Hu et al. 2024, "Outlier-efficient
    Hopfield layers for large transformer-based models"):
    $\operatorname{softmax}_1(z)_i = e^{z_i}/(1 + \sum_j e^{z_j})$ with $z = \beta x$.

    **Arguments:**

    - `x`: the state, at least one dimension.
    - `beta`: inverse temperature, positive and finite (beyond the range of `x`'s
      dtype, evaluated at its largest finite number, as in `lagr_softmax`).
    - `axis`: the axis over which to reduce.

    **Returns:**

    An array of `x`'s shape with `axis` kept at size 1.
    """
    x, beta, axis = _prepare(x, beta, axis, "lagr_ghostmax")
    return _ghostmax(x, beta, axis)


class _AbstractSoftmaxLagrangian(Lagrangian):
    """A log-sum-exp over `axis` with a learnable inverse temperature `beta`, clamped
    at the static `min_beta` when evaluated."""

    beta: Float[Array, "..."] = eqx.field(default=1.0, converter=_array_or_as_given)
    axis: int = eqx.field(static=True, default=-1, converter=_axis_or_as_given)
    min_beta: float = eqx.field(static=True, default=1e-6, converter=_float_or_as_given)

    def __check_init__(self):
        where = type(self).__name__
        learnable(self.beta, "beta", where)
        static_axis(self.axis, where)
        _min_beta(self.min_beta, where)

    @abc.abstractmethod
    def _kernel(self, x: Array, beta: Array, axis: int) -> Array:
        """The unchecked functional Lagrangian, reducing `axis` (non-negative)."""
        raise NotImplementedError

    def __call__(self, x: StateLike) -> Scalar:
        r"""The scalar Lagrangian of one unbatched state, `beta` clamped at
        `min_beta`.

        **Arguments:**

        - `x`: one unbatched state, at least one dimension; `axis` is reduced, the
          other axes summed.

        **Returns:**

        The scalar $\mathcal{L}(x)$.
        """
        where = type(self).__name__
        return checked_module(self, where)._unchecked(as_state(x, where))

    def _unchecked(self, x: Array) -> Array:
        # The Lagrangian of a floating state without the parameter checks: the
        # solves check every parameter once, at their entry, never in their loops.
        where = type(self).__name__
        axis = normalise_axis(self.axis, x.ndim, where)
        shape = _reduced_shape(x.shape, axis)
        beta = _evaluated_beta(self.beta, self.min_beta, x, shape, where)
        return jnp.sum(self._kernel(x, beta, axis))


class LSoftmax(_AbstractSoftmaxLagrangian):
    r"""Reduced Lagrangian whose activation function is the softmax
    (Ramsauer et al. 2020).

    $\mathcal{L}(x) = \frac{1}{\beta}\log\sum_i e^{\beta x_i}$ over `axis` (summed
    over the other axes), $g(x) = \operatorname{softmax}(\beta x)$. See `lagr_softmax`.

    **Arguments:**

    - `beta`: inverse temperature. Learnable; clamped at `min_beta` when evaluated.
      NaN or infinite values are refused (a `ValueError`; under `jax.jit`, a run-time
      error).
    - `axis`: the axis over which to apply the softmax (static).
    - `min_beta`: minimal accepted value of `beta` (static, a positive Python
      number). For energy dynamics, it is important that `beta` be positive.
    """

    streaming = StreamedLogSumExp()

    def _kernel(self, x: Array, beta: Array, axis: int) -> Array:
        return _softmax(x, beta, axis)


class LSoftmaxUnstable(_AbstractSoftmaxLagrangian):
    r"""Like `LSoftmax`, with the log-sum-exp coded from elementary operations.

    For runtimes without a log-sum-exp kernel (e.g. TensorFlow.js, to port models to
    the browser). Despite the name, it is as stable as `LSoftmax`. See
    `lagr_softmax_unstable`.

    **Arguments:**

    - `beta`: inverse temperature. Learnable; clamped at `min_beta` when evaluated.
      NaN or infinite values are refused (a `ValueError`; under `jax.jit`, a run-time
      error).
    - `axis`: the axis over which to apply the softmax (static).
    - `min_beta`: minimal accepted value of `beta` (static, a positive Python
      number). For energy dynamics, it is important that `beta` be positive.
    """

    streaming = StreamedLogSumExp()

    def _kernel(self, x: Array, beta: Array, axis: int) -> Array:
        return _softmax_unstable(x, beta, axis)


class LGhostmax(_AbstractSoftmaxLagrangian):
    r"""Reduced Lagrangian whose activation is the softmax with a zero "ghost" logit.

    $\mathcal{L}(x) = \frac{1}{\beta}\log\big(1 + \sum_i e^{\beta x_i}\big)$ over
    `axis`, $g_i(x) = e^{\beta x_i} / (1 + \sum_j e^{\beta x_j})$: the
    $\operatorname{softmax}_1$ ("softmax plus one") of outlier-efficient Hopfield
    layers (Hu et al. 2024). Strictly convex, unlike `LSoftmax`. See `lagr_ghostmax`.

    **Arguments:**

    - `beta`: inverse temperature. Learnable; clamped at `min_beta` when evaluated.
      NaN or infinite values are refused (a `ValueError`; under `jax.jit`, a run-time
      error).
    - `axis`: the axis over which to reduce (static).
    - `min_beta`: minimal accepted value of `beta` (static, a positive Python
      number). For energy dynamics, it is important that `beta` be positive.
    """

    streaming = StreamedLogSumExp(ghost=True)

    def _kernel(self, x: Array, beta: Array, axis: int) -> Array:
        return _ghostmax(x, beta, axis)
