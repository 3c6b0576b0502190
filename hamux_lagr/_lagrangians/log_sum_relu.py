r"""The log-sum-ReLU separation of the Epanechnikov dense associative memory.

$\mathcal{L}(s) = \frac{1}{\beta}\log\big(\epsilon + \sum_\mu \max(1 + \beta s_\mu,
0)\big)$ on the similarities $s_\mu = -\tfrac12\lVert g - \xi_\mu\rVert^2$ gives the
energy $E(g) = -\frac{1}{\beta}\log\big(\epsilon + \sum_\mu \max(1 - \frac{\beta}{2}
\lVert g - \xi_\mu\rVert^2, 0)\big)$ of Hoover et al. (2025), "Dense associative memory
with Epanechnikov energy": the negative log of a kernel density estimate with the
Epanechnikov kernel.
"""

import functools as ft

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import ParamLike, Scalar, StateLike
from .._misc import largest_finite
from .._validation import (
    as_state,
    learnable,
    normalise_axis,
    state_and_beta,
    static_axis,
    static_float,
)
from .axis_ops import axis_dot, axis_expand, check_nonempty_axis
from .base import _array_or_as_given, _evaluated_beta, checked_module, Lagrangian
from .jvp import tangent_sum
from .softmax import _reduced_shape
from .sparse import _compute_dtype as compute_dtype
from .streaming import StreamedLogSumReLU


def _eps(eps: object, where: str) -> float:
    return static_float(
        eps,
        "eps",
        where,
        hint="It keeps the logarithm finite where no pattern is within reach; pass "
        "e.g. `eps=1e-6`.",
    )


def _parts(x, beta, eps, axis):
    z = jnp.ones((), x.dtype) + beta * x
    on = z > 0
    # eps + sum of the active terms (the kernels that reach x).
    mass = jnp.asarray(eps, x.dtype) + jnp.sum(
        jnp.where(on, z, 0), axis=axis, keepdims=True
    )
    return on, mass, jnp.log(mass) / beta


@ft.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _log_sum_relu_kernel(x, beta, eps, axis):
    return _parts(x, beta, eps, axis)[-1]


@ft.partial(_log_sum_relu_kernel.defjvp, symbolic_zeros=True)
def _log_sum_relu_jvp(eps, axis, primals, tangents):
    # The activation is 1[1 + beta x > 0] / mass: 0 at the kink (the subgradient the
    # docstring promises; `jnp.maximum` would give a tie half), and written as a
    # quotient so that a state beyond every kernel's reach has 0 / eps, never
    # 0 * (1 / eps), which is NaN where 1 / eps overflows (1e6 in float16).
    x, beta = primals
    x_dot, beta_dot = tangents
    on, mass, out = _parts(x, beta, eps, axis)
    activation = on.astype(x.dtype) / axis_expand(mass, x.shape)

    def dx():
        return axis_dot(activation, x_dot, axis)

    def dbeta():
        # d/dbeta log(mass) / beta = (sum of the active x / mass - out) / beta.
        active_x = jnp.sum(jnp.where(on, x, 0), axis=axis, keepdims=True)
        return (active_x / mass - out) / beta * beta_dot

    return out, tangent_sum(out, (x_dot, dx), (beta_dot, dbeta))


def _log_sum_relu(x: Array, beta: Array, eps: float, axis: int) -> Array:
    """The unchecked Lagrangian; half precision is computed in float32 (`eps` = 1e-6
    is a subnormal float16, and `1 / eps` overflows it)."""
    check_nonempty_axis(x, axis, "lagr_log_sum_relu / LLogSumReLU")
    beta = largest_finite(beta)
    dtype = compute_dtype(x.dtype)
    if dtype == x.dtype:
        return _log_sum_relu_kernel(x, beta, eps, axis)
    out = _log_sum_relu_kernel(x.astype(dtype), beta.astype(dtype), eps, axis)
    return out.astype(x.dtype)


def lagr_log_sum_relu(
    x: StateLike, beta: ParamLike = 1.0, eps: int | float = 1e-6, axis: int = -1
) -> Float[Array, "..."]:
    r"""The log-sum-ReLU (Epanechnikov) separation of a dense associative memory.

    $$\mathcal{L}(x) = \frac{1}{\beta}\log\Big(\epsilon + \sum_i \max(1 + \beta x_i,
    0)\Big), \qquad \frac{\partial\mathcal{L}}{\partial x_i} =
    \frac{\mathbb{1}[1 + \beta x_i > 0]}{\epsilon + \sum_j \max(1 + \beta x_j, 0)}.$$

    Used as the separation of a `DenseMemory(patterns, LLogSumReLU(beta),
    similarity="l2")`, whose similarities are $x_\mu = -\tfrac12\lVert g -
    \xi_\mu\rVert^2$, it gives the energy $E(g) = -\frac{1}{\beta}\log\big(\epsilon +
    \sum_\mu \max(1 - \frac{\beta}{2}\lVert g - \xi_\mu\rVert^2, 0)\big)$ of Hoover et al.
    (2025): each pattern is the centre of an Epanechnikov kernel of radius
    $\sqrt{2/\beta}$. A stored pattern farther than that from every other one is an
    exact fixed point ($\partial E/\partial g = 0$ there), and where kernels overlap the
    energy has *emergent* minima besides the stored patterns.

    **Not convex**: the logarithm of a piecewise-linear function. It belongs in a
    memory's separation (a synapse), not as the Lagrangian of a neuron layer, whose
    energy and dynamics need a convex Lagrangian. The gradient is piecewise constant in
    each $x_i$; a custom JVP gives it in closed form, with the subgradient 0 at the kink
    $1 + \beta x_i = 0$, and 0 (not NaN) where no kernel reaches $x$, in every dtype
    (half precision is computed in float32).

    **Arguments:**

    - `x`: the similarities, at least one dimension.
    - `beta`: inverse temperature (the kernels' radius is $\sqrt{2/\beta}$ on
      `similarity="l2"`), positive and finite.
    - `eps`: the constant $\epsilon > 0$ inside the logarithm, which keeps the energy
      finite (and flat) where no pattern is within reach; a Python number.
    - `axis`: the axis summed over (the patterns).

    **Returns:**

    An array of `x`'s shape with `axis` kept at size 1; its sum is the scalar
    Lagrangian.
    """
    where = "lagr_log_sum_relu"
    x = as_state(x, where)
    axis = normalise_axis(axis, x.ndim, where)
    x, beta = state_and_beta(x, beta, where, _reduced_shape(x.shape, axis))
    return _log_sum_relu(x, beta, _eps(eps, where), axis)


class LLogSumReLU(Lagrangian):
    r"""The log-sum-ReLU (Epanechnikov) separation of a dense associative memory
    (Hoover et al. 2025), as a module with a learnable inverse temperature.

    $\mathcal{L}(x) = \frac{1}{\beta}\log\big(\epsilon + \sum_i \max(1 + \beta x_i,
    0)\big)$ over `axis`. See `lagr_log_sum_relu`. Give it to
    `DenseMemory(patterns, LLogSumReLU(beta), similarity="l2")`; it is **not convex**,
    so not a neuron layer's Lagrangian.

    **Arguments:**

    - `beta`: inverse temperature. Learnable; clamped at `min_beta` when evaluated.
      NaN or infinite values are refused (a `ValueError`; under `jax.jit`, a run-time
      error).
    - `eps`: the constant inside the logarithm (static, a positive Python number).
    - `axis`: the axis summed over (static).
    - `min_beta`: minimal accepted value of `beta` (static, a positive Python
      number).
    """

    streaming = StreamedLogSumReLU()

    beta: Float[Array, "..."] = eqx.field(default=1.0, converter=_array_or_as_given)
    eps: float = eqx.field(static=True, default=1e-6)
    axis: int = eqx.field(static=True, default=-1)
    min_beta: float = eqx.field(static=True, default=1e-6)

    def __check_init__(self):
        where = "LLogSumReLU"
        learnable(self.beta, "beta", where)
        _eps(self.eps, where)
        static_axis(self.axis, where)
        static_float(self.min_beta, "min_beta", where)

    def __call__(self, x: StateLike) -> Scalar:
        r"""The scalar Lagrangian of one unbatched state, `beta` clamped at
        `min_beta`.

        **Arguments:**

        - `x`: the similarities, at least one dimension; `axis` is reduced, the other
          axes summed.

        **Returns:**

        The scalar $\mathcal{L}(x)$.
        """
        where = "LLogSumReLU"
        return checked_module(self, where)._unchecked(as_state(x, where))

    def _unchecked(self, x: Array) -> Array:
        # The Lagrangian of a floating state without the parameter checks: the
        # solves check every parameter once, at their entry, never in their loops.
        where = "LLogSumReLU"
        axis = normalise_axis(self.axis, x.ndim, where)
        shape = _reduced_shape(x.shape, axis)
        beta = _evaluated_beta(self.beta, self.min_beta, x, shape, where)
        return jnp.sum(_log_sum_relu(x, beta, self.eps, axis))
