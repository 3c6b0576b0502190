r"""Sparse members of the softmax family: the sparsemax and the alpha-entmax Lagrangians.

Both are convex conjugates of a regulariser $\Omega$ restricted to the probability
simplex $\Delta$, scaled by $1/\beta$:

$$\mathcal{L}(x) = \frac{1}{\beta}\max_{p\in\Delta}\big(\langle p, \beta x\rangle
- \Omega(p)\big), \qquad \nabla\mathcal{L}(x) = p^\star(\beta x),$$

with $\Omega(p) = \frac{1}{2}\|p\|^2$ for the sparsemax (Martins & Astudillo 2016) and
$\Omega = -H_\alpha$, the Tsallis $\alpha$-entropy, for the $\alpha$-entmax (Peters,
Niculae & Martins 2019). Each returns `x`'s shape with `axis` kept at size 1; the sum is
the scalar Lagrangian.

Numerics. The maximum of `x` along `axis` is subtracted *before* scaling (as in
`lagr_softmax`): $y = \beta(x - \max x)$ is exactly 0 at the maximum, and the
maximiser $p^\star$ does not depend on the shift. The value is
$\max x + (\langle p^\star, y\rangle - \Omega(p^\star))/\beta$; being a maximum over
$p$, it is insensitive to first order to the error of $p^\star$. The threshold of
$p^\star$ is computed without derivatives (sorting, or bisection); the derivatives of
$p^\star$ (with respect to $y$ and $\alpha$) are closed forms in a custom JVP, so every
order of derivative is available away from ties at the edge of the support.
Half-precision inputs (float16, bfloat16) are computed in float32 and rounded back.
"""

import functools as ft

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float

from .._custom_types import ParamLike, Scalar, StateLike
from .._misc import largest_finite
from .._validation import (
    as_state,
    check_broadcasts,
    checked_param,
    concrete_value,
    learnable,
    normalise_axis,
    state_and_beta,
    static_axis,
    static_float,
)
from .axis_ops import axis_dot, axis_expand, check_nonempty_axis
from .base import _min_beta, checked_module, Lagrangian
from .jvp import tangent_sum
from .softmax import _AbstractSoftmaxLagrangian, _reduced_shape, _softmax
from .streaming import NotStreamed


def bisection_steps(dtype) -> int:
    """The number of bisection steps for the threshold of `lagr_entmax` in `dtype`.

    The bracket has width below 1 and halves each step: after `nmant + 2` steps (54
    in float64, 25 in float32) it is below the spacing of the floats near the
    threshold, whose magnitude is at most 1.
    """
    return int(jnp.finfo(dtype).nmant) + 2


def _compute_dtype(dtype):
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if jnp.finfo(dtype).bits < 32 else dtype


def _shifted(x, beta, axis):
    """The stop-gradiented maximum `m` and $y = \\beta(x - m)$ (0 at the maximum).

    An infinite maximum makes `x - m` NaN (`inf - inf`); `y` is then the limit: 0 at
    the entries equal to `m` and `-inf` elsewhere, so that the maximiser is the
    uniform distribution over the `+inf` entries (the one-hot at a single one), or
    over all entries when every one is `-inf`.
    """
    beta = largest_finite(beta)
    m = lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    y = beta * (x - axis_expand(m, x.shape))
    infinite = ~jnp.isfinite(m)
    limit = jnp.where(x == m, jnp.zeros((), y.dtype), -jnp.inf)
    return m, jnp.where(infinite, limit, y)


def _along(values, ndim, axis):
    """`values` (1-d) shaped to broadcast along `axis` of an `ndim`-dimensional array."""
    return values.reshape(tuple(-1 if i == axis else 1 for i in range(ndim)))


def _safe_log(p):
    # The double `where` keeps derivatives finite at p == 0 (where p log p is 0).
    return jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1)), 0)


def _sorted_desc(y, axis):
    d = y.shape[axis]
    ys = -jnp.sort(-y, axis=axis)
    k = _along(jnp.arange(1, d + 1, dtype=y.dtype), y.ndim, axis)
    return ys, k


def _take(values, count, axis):
    # `count` (>= 1) counts the entries of the support: the threshold is at its end.
    index = jnp.clip(count - 1, 0, values.shape[axis] - 1)
    return jnp.take_along_axis(values, index, axis=axis)


def _sparsemax_tau(y, axis):
    # Martins & Astudillo (2016): the support is the k largest entries with
    # 1 + k y_(k) > sum_{j <= k} y_(j); tau = (sum of the support - 1) / k.
    ys, k = _sorted_desc(y, axis)
    cs = jnp.cumsum(ys, axis=axis)
    count = jnp.sum(1 + k * ys > cs, axis=axis, keepdims=True)
    kk = jnp.maximum(count, 1).astype(y.dtype)
    return (_take(cs, count, axis) - 1) / kk


def _entmax15_tau(y, axis):
    # Peters, Niculae & Martins (2019), Algorithm 2, on X = y / 2: for each k, tau_k
    # solves sum_{j <= k} (X_(j) - tau)^2 = 1; the support is where tau_k <= X_(k).
    # The entries of the support lie in [-1, 0] (X is 0 at the maximum), so the
    # variance over a prefix loses no precision there; beyond the support it is
    # large, and the condition fails.
    xs, k = _sorted_desc(y / 2, axis)
    mean = jnp.cumsum(xs, axis=axis) / k
    mean_sq = jnp.cumsum(xs * xs, axis=axis) / k
    ss = k * (mean_sq - mean * mean)
    delta = jnp.maximum((1 - ss) / k, 0)
    tau = mean - jnp.sqrt(delta)
    count = jnp.sum(tau <= xs, axis=axis, keepdims=True)
    return _take(tau, count, axis)


# Jitted: outside `jax.jit`, an eager `fori_loop` would trace its loop again at every
# call.
@ft.partial(jax.jit, static_argnums=2)
def bisect_threshold(z, exponent, axis):
    """The threshold `tau` with `sum_i max(z_i - tau, 0)**exponent = 1` along `axis`,
    for `max(z) = 0`: the mass falls with `tau`, is >= 1 at `tau = -1` (the maximum
    alone gives 1) and <= 1 at `tau = -(1/d)**(1/exponent)` (each of the `d` terms is
    at most 1/d). Bisection, `bisection_steps` halvings; returns the lower end, where
    the mass is at least 1 (so the support is never empty). Shared by entmax and
    normmax."""
    d = z.shape[axis]
    shape = _reduced_shape(z.shape, axis)
    lo = jnp.full(shape, -1, z.dtype)
    hi = jnp.broadcast_to(-jnp.power(jnp.asarray(1 / d, z.dtype), 1 / exponent), shape)

    def step(_, bracket):
        lo, hi = bracket
        mid = (lo + hi) / 2
        mass = jnp.sum(
            jnp.power(jnp.maximum(z - mid, 0), exponent), axis, keepdims=True
        )
        above = mass >= 1
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    lo, _ = lax.fori_loop(0, bisection_steps(z.dtype), step, (lo, hi))
    return lo


def _bisect_tau(y, alpha, axis):
    # p_i = [(alpha - 1) y_i - tau]_+^{1/(alpha-1)}, sum_i p_i = 1, with max(y) = 0.
    a = alpha - 1
    return bisect_threshold(a * y, 1 / a, axis)


def _probabilities(y, alpha, solver, axis):
    """The maximiser $p^\\star$, from a threshold computed without derivatives."""
    y = lax.stop_gradient(y)
    alpha = lax.stop_gradient(alpha)
    if solver == "sparsemax":
        return jnp.maximum(y - _sparsemax_tau(y, axis), 0)
    if solver == "entmax15":
        u = jnp.maximum(y / 2 - _entmax15_tau(y, axis), 0)
        return u * u
    a = alpha - 1
    # Normalised at the end (the bisection's threshold is at the lower end of the
    # bracket, where the mass is at least 1, so the sum is positive).
    u = jnp.power(jnp.maximum(a * y - _bisect_tau(y, alpha, axis), 0), 1 / a)
    return u / jnp.sum(u, axis=axis, keepdims=True)


@ft.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _entmax_p(y, alpha, solver, axis):
    return _probabilities(y, alpha, solver, axis)


@ft.partial(_entmax_p.defjvp, symbolic_zeros=True)
def _entmax_p_jvp(solver, axis, primals, tangents):
    # p_i = u_i^{1/(alpha-1)}, u_i = (alpha-1) y_i - tau on the support S. With
    # s_i = p_i^{2-alpha} on S (0 elsewhere), differentiating sum(p) = 1 gives
    #   dp = s dy - s <s, dy> / sum(s)                   (Peters et al. 2019),
    #   dp/dalpha = (q - s sum(q) / sum(s)) / (alpha-1), q = s y - p log p
    # (Correia, Niculae & Martins 2019). Both are written in terms of p itself, so
    # they are differentiable again (through this rule).
    y, alpha = primals
    y_dot, alpha_dot = tangents
    p = _entmax_p(y, alpha, solver, axis)
    on = p > 0
    if solver == "sparsemax":
        s = on.astype(p.dtype)
    else:
        s = jnp.where(on, jnp.power(jnp.where(on, p, 1), 2 - alpha), 0)
    s_sum = jnp.sum(s, axis=axis, keepdims=True)

    def project(v):
        return s * v - s * (axis_dot(s, v, axis) / s_sum)

    def dalpha():
        q = jnp.where(on, s * y, 0) - p * _safe_log(p)
        dp = (q - s * (jnp.sum(q, axis=axis, keepdims=True) / s_sum)) / (alpha - 1)
        return dp * alpha_dot

    tangent = tangent_sum(p, (y_dot, lambda: project(y_dot)), (alpha_dot, dalpha))
    return p, tangent


def _tsallis_terms(p, alpha, axis):
    """$-H_\\alpha(p)$ and $dH_\\alpha(p)/d\\alpha$ at fixed `p`."""
    a = alpha - 1
    log_p = _safe_log(p)
    s1 = jnp.sum(p * jnp.expm1(a * log_p), axis=axis, keepdims=True)
    ds1 = jnp.sum(p * log_p * jnp.exp(a * log_p), axis=axis, keepdims=True)
    c = alpha * a
    # H = -s1 / c, c = alpha (alpha - 1), dc/dalpha = 2 alpha - 1.
    return s1 / c, -ds1 / c + s1 * (2 * alpha - 1) / (c * c)


def _omega(p, alpha, kind, axis):
    if kind == "sparsemax":
        return axis_dot(p, p, axis) / 2
    return _tsallis_terms(p, alpha, axis)[0]


def _parts(x, beta, alpha, solver, kind, axis):
    m, y = _shifted(x, beta, axis)
    p = _entmax_p(y, alpha, solver, axis)
    # 0 * (-inf) would be NaN where an entry is -inf (and p is 0 there).
    py = axis_dot(p, jnp.where(p > 0, y, 0), axis)
    value = py - _omega(p, alpha, kind, axis)
    # An infinite maximum: the Lagrangian is the maximum itself (as `lagr_softmax`).
    out = jnp.where(jnp.isfinite(m), m + value / beta, m)
    return p, out


@ft.partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5))
def _entmax_lagr(x, beta, alpha, solver, kind, axis):
    return _parts(x, beta, alpha, solver, kind, axis)[1]


@ft.partial(_entmax_lagr.defjvp, symbolic_zeros=True)
def _entmax_lagr_jvp(solver, kind, axis, primals, tangents):
    x, beta, alpha = primals
    x_dot, beta_dot, alpha_dot = tangents
    p, out = _parts(x, beta, alpha, solver, kind, axis)

    def dbeta():
        # Danskin: d/dbeta (1/beta) max_p (<p, beta x> - Omega(p)) = Omega(p*) / beta^2.
        return _omega(p, alpha, kind, axis) / beta**2 * beta_dot

    def dalpha():
        # Danskin: (1/beta) dH_alpha(p*)/dalpha at fixed p*.
        return _tsallis_terms(p, alpha, axis)[1] / beta * alpha_dot

    tangent = tangent_sum(
        out,
        (x_dot, lambda: axis_dot(p, x_dot, axis)),
        (beta_dot, dbeta),
        (alpha_dot, dalpha),
    )
    return out, tangent


# Jitted, so that an eager call compiles one program per shape rather than each of
# its many small operations (under `jax.jit` it is inlined).
@ft.partial(jax.jit, static_argnums=(3, 4, 5))
def _kernel(x, beta, alpha, solver, kind, axis):
    """The unchecked Lagrangian; half precision is computed in float32."""
    check_nonempty_axis(x, axis, f"lagr_{kind} / L{kind.capitalize()}")
    dtype = _compute_dtype(x.dtype)
    if dtype == x.dtype:
        return _entmax_lagr(x, beta, alpha, solver, kind, axis)
    out = _entmax_lagr(
        x.astype(dtype), beta.astype(dtype), alpha.astype(dtype), solver, kind, axis
    )
    return out.astype(x.dtype)


def _sparsemax(x: Array, beta: Array, axis: int) -> Array:
    """The unchecked `lagr_sparsemax` (`axis` non-negative)."""
    return _kernel(x, beta, jnp.asarray(2, x.dtype), "sparsemax", "sparsemax", axis)


def solver_for(alpha: Array) -> str:
    """The threshold solver for `alpha`: exact (sorting) for a concrete alpha equal
    to 1.5 or 2 everywhere, bisection otherwise (a traced alpha included)."""
    raw = concrete_value(alpha)
    if raw is not None and raw.size:
        if np.all(raw == 1.5):
            return "entmax15"
        if np.all(raw == 2):
            return "sparsemax"
    return "bisect"


def _entmax(x: Array, beta: Array, alpha: Array, axis: int) -> Array:
    """The unchecked `lagr_entmax` for `alpha > 1` (`axis` non-negative)."""
    return _kernel(x, beta, alpha, solver_for(alpha), "entmax", axis)


def _prepare(x, beta, axis, fn):
    x = as_state(x, fn)
    axis = normalise_axis(axis, x.ndim, fn)
    shape = _reduced_shape(x.shape, axis)
    x, beta = state_and_beta(x, beta, fn, shape)
    return x, beta, axis, shape


def lagr_sparsemax(
    x: StateLike, beta: ParamLike = 1.0, axis: int = -1
) -> Float[Array, "..."]:
    r"""The Lagrangian of the sparsemax (Martins & Astudillo 2016).

    The convex conjugate of $\frac{1}{2}\|p\|^2$ on the probability simplex $\Delta$,
    scaled by $1/\beta$: with $z = \beta x$ and $p^\star = \operatorname{sparsemax}(z)$,

    $$\mathcal{L}(x) = \frac{1}{\beta}\max_{p\in\Delta}\Big(\langle p, z\rangle
    - \tfrac{1}{2}\|p\|^2\Big) = \frac{1}{\beta}\Big(\langle p^\star, z\rangle
    - \tfrac{1}{2}\|p^\star\|^2\Big), \qquad
    \frac{\partial \mathcal{L}}{\partial x} = \operatorname{sparsemax}(\beta x),$$

    where $\operatorname{sparsemax}(z) = \max(z - \tau, 0)$, the Euclidean projection
    of $z$ onto the simplex, with the threshold $\tau$ found exactly by sorting. The
    activation has exact zeros. The `beta` derivative (Danskin's theorem) is
    $\frac{\partial\mathcal{L}}{\partial\beta} = \frac{\|p^\star\|^2}{2\beta^2}$, and the
    Hessian is $\beta\,(\operatorname{diag}(s) - s s^\top/|s|)$, $s$ the indicator of
    the support. The layer energy is $E = \langle x, p^\star\rangle - \mathcal{L} =
    \frac{1}{2\beta}\|p^\star\|^2$. In Hopfield networks: the sparse modern Hopfield
    network (Hu et al. 2023; Santos et al. 2024).

    Stable at every magnitude: the maximum is subtracted before scaling. Infinite
    entries give the limits: with a `+inf` entry the value is `+inf` and the activation
    the one-hot at it (uniform over several), with every entry `-inf` the value is
    `-inf` and the activation uniform; a `-inf` entry alone gets 0. The value
    equals `lagr_entmax(x, alpha=2.0, beta, axis)` minus $\frac{1}{2\beta}$ (the
    Tsallis entropy at $\alpha = 2$ is $\frac{1}{2}(1 - \|p\|^2)$); the activations
    are equal.

    **Arguments:**

    - `x`: the state, at least one dimension.
    - `beta`: inverse temperature, positive and finite; a scalar (or an array
      broadcasting to the output shape).
    - `axis`: the axis over which to apply the sparsemax.

    **Returns:**

    An array of `x`'s shape with `axis` kept at size 1.
    """
    x, beta, axis, _ = _prepare(x, beta, axis, "lagr_sparsemax")
    return _sparsemax(x, beta, axis)


def _is_bad_alpha(v):
    return ~((v > 1) & (v < np.inf))


def lagr_entmax(
    x: StateLike, alpha: ParamLike = 1.5, beta: ParamLike = 1.0, axis: int = -1
) -> Float[Array, "..."]:
    r"""The Lagrangian of the $\alpha$-entmax (Peters, Niculae & Martins 2019).

    The convex conjugate of the negative Tsallis $\alpha$-entropy on the simplex,
    scaled by $1/\beta$: with $z = \beta x$,

    $$\mathcal{L}(x) = \frac{1}{\beta}\max_{p\in\Delta}\big(\langle p, z\rangle
    + H_\alpha(p)\big), \qquad H_\alpha(p) = \frac{1 - \sum_i p_i^\alpha}
    {\alpha(\alpha - 1)}, \qquad \frac{\partial\mathcal{L}}{\partial x} =
    \alpha\text{-entmax}(\beta x),$$

    where $\alpha\text{-entmax}(z)_i = [(\alpha - 1) z_i - \tau]_+^{1/(\alpha-1)}$, the
    threshold $\tau$ making the entries sum to 1. $\alpha \to 1$ is the softmax
    (`lagr_softmax`; a concrete `alpha` equal to 1 is computed as it), $\alpha = 2$
    the sparsemax (the activation of `lagr_sparsemax`; the values differ by the
    constant $\frac{1}{2\beta}$), and $1 < \alpha < 2$ interpolates: sparse
    activations with a smooth profile.

    The threshold is exact (by sorting) for a concrete `alpha` equal to 1.5 (Peters et
    al. 2019, Algorithm 2) or 2, and found by bisection otherwise (also for a traced
    `alpha`): `nmant + 2` halvings of a bracket of width below 1 (54 in float64, 25 in
    float32), then the activation is renormalised. Against the exact solvers (alpha
    1.5 and 2, 200 random 16-vectors) the activation differs by at most
    $5\cdot10^{-16}$ in float64 and $3\cdot10^{-7}$ in float32, the value by a
    relative $3\cdot10^{-16}$ and $1.1\cdot10^{-7}$.

    Infinite entries give the limits, as in `lagr_sparsemax` (a `+inf` entry: value
    `+inf`, one-hot activation; all `-inf`: value `-inf`, uniform activation).

    Derivatives, in a custom JVP (each by Danskin's theorem, at the maximiser
    $p^\star$): $\partial\mathcal{L}/\partial\beta = -H_\alpha(p^\star)/\beta^2$,
    $\partial\mathcal{L}/\partial\alpha = \frac{1}{\beta}\,\partial_\alpha
    H_\alpha(p^\star)$; the Jacobian of the activation is
    $\beta(\operatorname{diag}(s) - s s^\top/\sum_i s_i)$, $s_i = p_i^{2-\alpha}$ on the
    support, and its $\alpha$ derivative is the closed form of Correia, Niculae &
    Martins (2019), "Adaptively sparse transformers". The layer energy is
    $E = -H_\alpha(p^\star)/\beta$. In Hopfield networks: Santos et al. (2024),
    "Sparse and structured Hopfield networks"; Hu et al. (2023).

    **Arguments:**

    - `x`: the state, at least one dimension.
    - `alpha`: the entmax parameter, finite and `> 1` (a concrete value equal to 1 is
      the softmax); a scalar or an array broadcasting to the output shape.
    - `beta`: inverse temperature, positive and finite; a scalar (or an array
      broadcasting to the output shape).
    - `axis`: the axis over which to apply the entmax.

    **Returns:**

    An array of `x`'s shape with `axis` kept at size 1.
    """
    fn = "lagr_entmax"
    x, beta, axis, shape = _prepare(x, beta, axis, fn)
    raw = concrete_value(alpha)
    if (
        raw is not None
        and raw.size
        and np.issubdtype(raw.dtype, np.number)
        and np.all(raw == 1)
    ):
        check_broadcasts(jnp.asarray(alpha), shape, "alpha", fn)
        return _softmax(x, beta, axis)
    alpha = checked_param(
        alpha,
        "alpha",
        fn,
        x.dtype,
        _is_bad_alpha,
        f"`alpha` must be finite and > 1 in `{fn}`",
        "alpha = 1 exactly is the softmax (`lagr_softmax`), alpha = 2 the sparsemax.",
    )
    check_broadcasts(alpha, shape, "alpha", fn)
    return _entmax(x, beta, alpha, axis)


class LSparsemax(_AbstractSoftmaxLagrangian):
    r"""Reduced Lagrangian whose activation function is the sparsemax
    (Martins & Astudillo 2016).

    $\mathcal{L}(x) = \frac{1}{\beta}\max_{p\in\Delta}(\langle p, \beta x\rangle -
    \frac{1}{2}\|p\|^2)$ over `axis` (summed over the other axes),
    $g(x) = \operatorname{sparsemax}(\beta x)$, with exact zeros; the energy is
    $E = \frac{1}{2\beta}\|g\|^2$. The sparse modern Hopfield network of Hu et al.
    (2023). See `lagr_sparsemax`.

    **Arguments:**

    - `beta`: inverse temperature. Learnable; clamped at `min_beta` when evaluated.
      NaN or infinite values are refused (a `ValueError`; under `jax.jit`, a run-time
      error).
    - `axis`: the axis over which to apply the sparsemax (static).
    - `min_beta`: minimal accepted value of `beta` (static, a positive Python
      number). For energy dynamics, it is important that `beta` be positive.
    """

    streaming = NotStreamed("its threshold couples all the similarities")

    def _kernel(self, x: Array, beta: Array, axis: int) -> Array:
        return _sparsemax(x, beta, axis)


class LEntmax(Lagrangian):
    r"""Reduced Lagrangian whose activation function is the $\alpha$-entmax
    (Peters, Niculae & Martins 2019), with a learnable $\alpha$ (Correia, Niculae &
    Martins 2019).

    $\mathcal{L}(x) = \frac{1}{\beta}\max_{p\in\Delta}(\langle p, \beta x\rangle +
    H_\alpha(p))$ over `axis` (summed over the other axes), $H_\alpha$ the Tsallis
    entropy, $g(x) = \alpha\text{-entmax}(\beta x)$; the energy is
    $E = -H_\alpha(g)/\beta$. `alpha` near 1 is close to `LSoftmax`, `alpha = 2` is
    the sparsemax (`LSparsemax`, whose value is lower by $\frac{1}{2\beta}$). Both
    `alpha` and `beta` are trained by gradients: the value's derivative in `alpha` is
    exact (Danskin's theorem), and so is the activation's (Correia et al. 2019). In
    Hopfield networks: Santos et al. (2024). See `lagr_entmax`.

    The threshold is exact (sorting) when `alpha` is concrete and equal to 1.5 or 2;
    otherwise (in particular under `jax.jit`, when the module is an argument) it is
    found by bisection, accurate to about $10^{-15}$ in float64.

    **Arguments:**

    - `alpha`: the entmax parameter. Learnable; clamped at `min_alpha` when evaluated.
      NaN or infinite values are refused (a `ValueError`; under `jax.jit`, a run-time
      error).
    - `beta`: inverse temperature. Learnable; clamped at `min_beta` when evaluated.
      NaN or infinite values are refused.
    - `axis`: the axis over which to apply the entmax (static).
    - `min_beta`: minimal accepted value of `beta` (static, a positive Python
      number).
    - `min_alpha`: minimal accepted value of `alpha` (static, a Python number
      `> 1`; by default 1.01). The entmax is defined for `alpha > 1`; near 1 the
      `alpha` derivatives lose about $\log_{10}(1/(\alpha-1))$ digits to cancellation,
      so the default keeps them accurate in float32.
    """

    streaming = NotStreamed("its threshold couples all the similarities")

    alpha: Float[Array, "..."]
    beta: Float[Array, "..."]
    axis: int = eqx.field(static=True)
    min_beta: float = eqx.field(static=True)
    min_alpha: float = eqx.field(static=True)

    def __init__(
        self,
        alpha: ParamLike = 1.5,
        beta: ParamLike = 1.0,
        axis: int = -1,
        min_beta: int | float = 1e-6,
        min_alpha: int | float = 1.01,
    ):
        where = "LEntmax"
        self.alpha = learnable(alpha, "alpha", where)
        self.beta = learnable(beta, "beta", where)
        self.axis = static_axis(axis, where)
        self.min_beta = _min_beta(min_beta, where)
        self.min_alpha = static_float(
            min_alpha,
            "min_alpha",
            where,
            lower=1.0,
            hint="It is the smallest entmax parameter the dynamics may use; the "
            "entmax is defined for alpha > 1.",
        )

    def __call__(self, x: StateLike) -> Scalar:
        r"""The scalar Lagrangian of one unbatched state, `beta` clamped at
        `min_beta` and `alpha` at `min_alpha`.

        **Arguments:**

        - `x`: one unbatched state, at least one dimension; `axis` is reduced, the
          other axes summed.

        **Returns:**

        The scalar $\mathcal{L}(x)$.
        """
        where = "LEntmax"
        return checked_module(self, where)._unchecked(as_state(x, where))

    def _unchecked(self, x: Array) -> Array:
        # The Lagrangian of a floating state without the parameter checks: the
        # solves check every parameter once, at their entry, never in their loops.
        where = "LEntmax"
        axis = normalise_axis(self.axis, x.ndim, where)
        shape = _reduced_shape(x.shape, axis)
        beta = jnp.maximum(self.beta, self.min_beta).astype(x.dtype)
        alpha = jnp.maximum(self.alpha, self.min_alpha).astype(x.dtype)
        check_broadcasts(beta, shape, "beta", where)
        check_broadcasts(alpha, shape, "alpha", where)
        return jnp.sum(_entmax(x, beta, alpha, axis))
