r"""The normmax Lagrangian: the convex conjugate of the $\alpha$-norm on the simplex.

Santos et al. (2024), "Hopfield-Fenchel-Young networks: a unified framework for
associative memory retrieval": with $\Omega(p) = \|p\|_\alpha - 1$ on the probability
simplex $\Delta$ and $z = \beta x$,

$$\mathcal{L}(x) = \frac{1}{\beta}\max_{p\in\Delta}\big(\langle p, z\rangle
- \|p\|_\alpha + 1\big), \qquad \nabla\mathcal{L}(x) = p^\star =
\operatorname{normmax}_\alpha(z).$$

The maximiser. The KKT conditions on the support give
$(p_i/\|p\|_\alpha)^{\alpha-1} = z_i - \tau$, so $p_i = \|p\|_\alpha\, q_i$ with
$q_i = (z_i - \tau)_+^{1/(\alpha-1)}$; taking the $\alpha$-norm of both sides,
$\|q\|_\alpha = 1$, i.e. $\sum_i (z_i - \tau)_+^{\alpha/(\alpha-1)} = 1$, and
$p = q / \sum_i q_i$ (so $\|p^\star\|_\alpha = 1/\sum_i q_i$). Every $q_i \le 1$, so
$\tau \in [\max z - 1, \max z)$; the maximiser is unique ($\|\cdot\|_\alpha$ is strictly
convex on $\Delta$ for $1 < \alpha < \infty$).

Numerics. As in `lagr_sparsemax`, the maximum of `x` along `axis` is subtracted before
scaling, $y = \beta(x - \max x)$, and the value is
$\max x + (\langle p^\star, y\rangle - \|p^\star\|_\alpha + 1)/\beta$. The threshold
is found by bisection without derivatives; the derivatives of $p^\star$ (in $y$ and
$\alpha$) are closed forms from implicit differentiation of the threshold, in a custom
JVP written in terms of $p^\star$ itself, so every order of derivative is exact and
none goes through the bisection loop.
"""

import functools as ft

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float

from .._custom_types import ParamLike, Scalar, StateLike
from .._validation import (
    as_state,
    check_broadcasts,
    checked_param,
    ensure,
    learnable,
    normalise_axis,
    state_and_beta,
    static_axis,
)
from .axis_ops import axis_dot, check_nonempty_axis
from .base import _evaluated_beta, _min_beta, checked_module, Lagrangian
from .jvp import tangent_sum
from .softmax import _reduced_shape
from .sparse import _compute_dtype, _safe_log, _shifted, bisect_threshold
from .streaming import NotStreamed


_ALPHA_HINT = (
    "The normmax is defined for 1 < alpha < inf (it tends to the argmax as alpha "
    "-> 1); pass e.g. alpha=2.0."
)


def _is_bad_alpha(v):
    return ~((v > 1) & (v < np.inf))


def _alpha_requirement(where: str) -> str:
    return f"`alpha` must be finite and > 1 in `{where}`"


def _threshold(y, alpha, axis):
    # sum_i (y_i - tau)_+^k = 1, k = alpha / (alpha - 1), with max(y) = 0.
    return bisect_threshold(y, alpha / (alpha - 1), axis)


def _probabilities(y, alpha, axis):
    # Never differentiated: `_normmax_p`'s rule gives the derivatives.
    tau = _threshold(y, alpha, axis)
    q = jnp.power(jnp.maximum(y - tau, 0), 1 / (alpha - 1))
    return q / jnp.sum(q, axis=axis, keepdims=True)


def _norm_terms(p, alpha, axis):
    """$\\|p\\|_\\alpha$ and its derivative in $\\alpha$ at fixed `p`, relative to the
    largest entry $c = \\max_i p_i$.

    With $d_i = \\log(p_i / c) \\le 0$ (as `log1p((p_i - c) / c)`, accurate for entries
    near $c$) and $S = \\sum_i e^{\\alpha d_i} \\in [1, n]$:
    $\\|p\\|_\\alpha = c\\, S^{1/\\alpha}$ and $\\partial_\\alpha\\|p\\|_\\alpha =
    -\\|p\\|_\\alpha H(w)/\\alpha^2$, $H(w)$ the entropy of $w_i = e^{\\alpha d_i}/S$.
    (The powers $p_i^\\alpha$ underflow from $\\alpha \\approx 100$ in float32, 1000 in
    float64, which made the norm 0 and its derivative NaN; and the derivative, a
    difference of two terms near $\\log c$, lost every digit at a large $\\alpha$.)
    """
    on = p > 0
    # Exact for any constant c: stopping its gradient changes no derivative.
    c = lax.stop_gradient(jnp.max(p, axis=axis, keepdims=True))
    d = jnp.log1p(jnp.where(on, (p - c) / c, 0))
    a = alpha * d
    e = jnp.where(on, jnp.exp(a), 0)
    s = jnp.sum(e, axis=axis, keepdims=True)
    log_s = jnp.log(s)
    n = c * jnp.exp(log_s / alpha)
    entropy = -jnp.sum(jnp.where(on, e / s * (a - log_s), 0), axis=axis, keepdims=True)
    dn = -n * entropy / alpha**2
    return n, dn


@ft.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _normmax_p(y, alpha, axis):
    return _probabilities(y, alpha, axis)


@ft.partial(_normmax_p.defjvp, symbolic_zeros=True)
def _normmax_p_jvp(axis, primals, tangents):
    # With q = p / ||p||_alpha (the unnormalised q_i = (y_i - tau)^r, r = 1/(alpha-1),
    # sum(q) = 1/||p||), differentiating sum_S (y_i - tau)^(alpha r) = 1 gives
    #   dtau = <q, dy> / sum(q),   dtau/dalpha = -sum(q^alpha log q) / (alpha sum(q)),
    # and on the support dq = s (dy - dtau) - r q log q dalpha, s = r q^(2 - alpha);
    # then dp = (dq - p sum(dq)) / sum(q). All in terms of p: differentiable again.
    y, alpha = primals
    y_dot, alpha_dot = tangents
    p = _normmax_p(y, alpha, axis)
    on = p > 0
    n, _ = _norm_terms(p, alpha, axis)
    q = p / n
    r = 1 / (alpha - 1)
    log_q = _safe_log(q)
    s = jnp.where(on, r * jnp.exp((2 - alpha) * log_q), 0)
    q_sum = jnp.sum(q, axis=axis, keepdims=True)

    def normalised(dq):
        return n * (dq - p * jnp.sum(dq, axis=axis, keepdims=True))

    def dy():
        return normalised(s * (y_dot - axis_dot(q, y_dot, axis) / q_sum))

    def dalpha():
        qa = jnp.where(on, jnp.exp(alpha * log_q), 0)
        dtau = -jnp.sum(qa * log_q, axis=axis, keepdims=True) / (alpha * q_sum)
        return normalised(-s * dtau - r * q * log_q) * alpha_dot

    tangent = tangent_sum(p, (y_dot, dy), (alpha_dot, dalpha))
    return p, tangent


def _parts(x, beta, alpha, axis):
    m, y = _shifted(x, beta, axis)
    p = _normmax_p(y, alpha, axis)
    n, dn = _norm_terms(p, alpha, axis)
    # 0 * (-inf) would be NaN where an entry is -inf (and p is 0 there).
    value = axis_dot(p, jnp.where(p > 0, y, 0), axis) - n + 1
    # An infinite maximum: the Lagrangian is the maximum itself (as `lagr_softmax`).
    out = jnp.where(jnp.isfinite(m), m + value / beta, m)
    return p, n, dn, out


@ft.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _normmax_lagr(x, beta, alpha, axis):
    return _parts(x, beta, alpha, axis)[-1]


@ft.partial(_normmax_lagr.defjvp, symbolic_zeros=True)
def _normmax_lagr_jvp(axis, primals, tangents):
    x, beta, alpha = primals
    x_dot, beta_dot, alpha_dot = tangents
    p, n, dn, out = _parts(x, beta, alpha, axis)
    # Danskin's theorem, at the maximiser p*: d/dbeta (1/beta) f(beta x) =
    # (||p*|| - 1) / beta^2 and d/dalpha = -(1/beta) d||p*||_alpha/dalpha.
    tangent = tangent_sum(
        out,
        (x_dot, lambda: axis_dot(p, x_dot, axis)),
        (beta_dot, lambda: (n - 1) / beta**2 * beta_dot),
        (alpha_dot, lambda: -dn / beta * alpha_dot),
    )
    return out, tangent


def _normmax(x: Array, beta: Array, alpha: Array, axis: int) -> Array:
    """The unchecked `lagr_normmax` (`axis` non-negative); half precision is computed
    in float32."""
    check_nonempty_axis(x, axis, "lagr_normmax / LNormmax")
    dtype = _compute_dtype(x.dtype)
    if dtype == x.dtype:
        return _normmax_lagr(x, beta, alpha, axis)
    out = _normmax_lagr(x.astype(dtype), beta.astype(dtype), alpha.astype(dtype), axis)
    return out.astype(x.dtype)


def lagr_normmax(
    x: StateLike, alpha: ParamLike = 2.0, beta: ParamLike = 1.0, axis: int = -1
) -> Float[Array, "..."]:
    r"""The Lagrangian of the $\alpha$-normmax (Santos et al. 2024,
    "Hopfield-Fenchel-Young networks").

    The convex conjugate of $\Omega(p) = \|p\|_\alpha - 1$ on the probability simplex
    $\Delta$, scaled by $1/\beta$: with $z = \beta x$,

    $$\mathcal{L}(x) = \frac{1}{\beta}\max_{p\in\Delta}\big(\langle p, z\rangle
    - \|p\|_\alpha + 1\big) = \frac{1}{\beta}\big(\langle p^\star, z\rangle
    - \|p^\star\|_\alpha + 1\big), \qquad \frac{\partial\mathcal{L}}{\partial x}
    = p^\star = \operatorname{normmax}_\alpha(z).$$

    The maximiser (from the KKT conditions): $p^\star = q/\sum_i q_i$ with
    $q_i = (z_i - \tau)_+^{1/(\alpha-1)}$, the threshold $\tau$ solving
    $\|q\|_\alpha = 1$, i.e. $\sum_i (z_i - \tau)_+^{\alpha/(\alpha-1)} = 1$, and
    $\tau \in [\max z - 1, \max z)$; then $\|p^\star\|_\alpha = 1/\sum_i q_i$. The
    activation sums to 1 and has exact zeros (entries below $\tau$). As
    $\alpha \to 1$ it tends to the argmax (the regulariser $\|p\|_1 - 1$ is 0 on
    $\Delta$), and as $\alpha \to \infty$ to the uniform distribution on the support
    of the sparsemax ($\sum_i (z_i - \tau)_+ = 1$, $q_i \to 1$ on it).

    Infinite entries give the limits, as in `lagr_sparsemax` (a `+inf` entry: value
    `+inf`, one-hot activation; all `-inf`: value `-inf`, uniform activation).

    The threshold is found by bisection: `nmant + 2` halvings (54 in float64, 25 in
    float32) of a bracket of width below 1 (the maximum is subtracted first), to the
    spacing of the floats near it; half precision is computed in float32. Against a
    200-step reference bisection, the activation agrees to about $2\times10^{-16}$ and
    the value to $10^{-15}$ in float64, both to about $2\times10^{-7}$ in float32.

    The norm is evaluated relative to the largest entry,
    $\|p\|_\alpha = c\,(\sum_i (p_i/c)^\alpha)^{1/\alpha}$ with $c = \max_i p_i$, and
    its $\alpha$ derivative as $-\|p\|_\alpha H(w)/\alpha^2$ ($H$ the entropy of
    $w \propto p^\alpha$): value and gradients stay exact at any finite `alpha` (the
    powers $p_i^\alpha$ alone underflow from $\alpha \approx 100$ in float32), and
    tend to the max-norm's as $\alpha \to \infty$.

    Derivatives, in custom JVPs: $\partial\mathcal{L}/\partial\beta =
    (\|p^\star\|_\alpha - 1)/\beta^2$ and $\partial\mathcal{L}/\partial\alpha =
    -\frac{1}{\beta}\partial_\alpha\|p^\star\|_\alpha$ (Danskin's theorem, at fixed
    $p^\star$). The Jacobian of the activation (the Hessian of $\mathcal{L}$) comes
    from implicit differentiation of $\tau$: with $s_i = \frac{q_i^{2-\alpha}}
    {\alpha-1}$ on the support,
    $dq = s\odot(dz - \frac{\langle q, dz\rangle}{\sum_i q_i})$ and
    $dp = (dq - p^\star \sum_i dq_i)/\sum_i q_i$; its $\alpha$ derivative likewise.
    Both are exact at every order (no derivative goes through the bisection). The
    layer energy is $E = \langle x, p^\star\rangle - \mathcal{L} =
    (\|p^\star\|_\alpha - 1)/\beta \le 0$.

    **Arguments:**

    - `x`: the state, at least one dimension.
    - `alpha`: the norm's order, finite and `> 1`; a scalar or an array broadcasting
      to the output shape. Differentiable (the gradient is exact).
    - `beta`: inverse temperature, positive and finite; a scalar (or an array
      broadcasting to the output shape).
    - `axis`: the axis over which to apply the normmax.

    **Returns:**

    An array of `x`'s shape with `axis` kept at size 1.
    """
    fn = "lagr_normmax"
    x = as_state(x, fn)
    axis = normalise_axis(axis, x.ndim, fn)
    shape = _reduced_shape(x.shape, axis)
    x, beta = state_and_beta(x, beta, fn, shape)
    alpha = checked_param(
        alpha, "alpha", fn, x.dtype, _is_bad_alpha, _alpha_requirement(fn), _ALPHA_HINT
    )
    check_broadcasts(alpha, shape, "alpha", fn)
    return _normmax(x, beta, alpha, axis)


class LNormmax(Lagrangian):
    r"""Reduced Lagrangian whose activation function is the $\alpha$-normmax
    (Santos et al. 2024, "Hopfield-Fenchel-Young networks").

    $\mathcal{L}(x) = \frac{1}{\beta}\max_{p\in\Delta}(\langle p, \beta x\rangle -
    \|p\|_\alpha + 1)$ over `axis` (summed over the other axes),
    $g(x) = \operatorname{normmax}_\alpha(\beta x)$, with exact zeros; the energy is
    $E = (\|g\|_\alpha - 1)/\beta$. `alpha` near 1 is close to the argmax; both
    `alpha` and `beta` are trained by gradients (exact, by Danskin's theorem and
    implicit differentiation). See `lagr_normmax`.

    **Arguments:**

    - `alpha`: the norm's order. Learnable; it must be finite and `> 1` (a
      `ValueError` at construction; under `jax.jit`, a run-time error when
      evaluated). Not clamped.
    - `beta`: inverse temperature. Learnable; clamped at `min_beta` when evaluated.
      NaN or infinite values are refused (a `ValueError`; under `jax.jit`, a run-time
      error).
    - `axis`: the axis over which to apply the normmax (static).
    - `min_beta`: minimal accepted value of `beta` (static, a positive Python
      number). For energy dynamics, it is important that `beta` be positive.
    """

    streaming = NotStreamed("its threshold couples all the similarities")

    alpha: Float[Array, "..."]
    beta: Float[Array, "..."]
    axis: int = eqx.field(static=True)
    min_beta: float = eqx.field(static=True)

    def __init__(
        self,
        alpha: ParamLike = 2.0,
        beta: ParamLike = 1.0,
        axis: int = -1,
        min_beta: int | float = 1e-6,
    ):
        where = "LNormmax"
        alpha = learnable(alpha, "alpha", where)
        self.alpha = ensure(
            alpha, _is_bad_alpha, _alpha_requirement(where), _ALPHA_HINT
        )
        self.beta = learnable(beta, "beta", where)
        self.axis = static_axis(axis, where)
        self.min_beta = _min_beta(min_beta, where)

    def __call__(self, x: StateLike) -> Scalar:
        r"""The scalar Lagrangian of one unbatched state, `beta` clamped at
        `min_beta`.

        **Arguments:**

        - `x`: one unbatched state, at least one dimension; `axis` is reduced, the
          other axes summed.

        **Returns:**

        The scalar $\mathcal{L}(x)$.
        """
        where = "LNormmax"
        alpha = ensure(
            self.alpha, _is_bad_alpha, _alpha_requirement(where), _ALPHA_HINT
        )
        checked = eqx.tree_at(lambda m: m.alpha, self, alpha)
        return checked_module(checked, where)._unchecked(as_state(x, where))

    def _unchecked(self, x: Array) -> Array:
        # The Lagrangian of a floating state without the parameter checks: the
        # solves check every parameter once, at their entry, never in their loops.
        where = "LNormmax"
        axis = normalise_axis(self.axis, x.ndim, where)
        shape = _reduced_shape(x.shape, axis)
        beta = _evaluated_beta(self.beta, self.min_beta, x, shape, where)
        alpha = self.alpha.astype(x.dtype)
        check_broadcasts(alpha, shape, "alpha", where)
        return jnp.sum(_normmax(x, beta, alpha, axis))
