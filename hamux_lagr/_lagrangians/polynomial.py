r"""Polynomial Lagrangians: the identity, the ReLU and the rectified polynomial unit
(Krotov & Hopfield 2016), as functions and as modules."""

import functools as ft
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import ParamLike, Scalar, StateLike
from .._validation import (
    as_state,
    check_broadcasts,
    checked_param,
    static_float,
)
from .base import Lagrangian
from .jvp import tangent_sum
from .streaming import StreamedSum


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


class LIdentity(Lagrangian):
    r"""Reduced Lagrangian whose activation function is the identity.

    $\mathcal{L}(x) = \frac{1}{2}\sum_i x_i^2$, $g(x) = x$. See `lagr_identity`.
    """

    streaming = StreamedSum()

    def __call__(self, x: StateLike) -> Scalar:
        r"""The scalar Lagrangian of one unbatched state.

        **Arguments:**

        - `x`: one unbatched state, any shape.

        **Returns:**

        The scalar $\mathcal{L}(x)$, summed over every entry.
        """
        return jnp.sum(_identity(as_state(x, "LIdentity")))


class LRelu(Lagrangian):
    r"""Reduced Lagrangian whose activation function is the rectified linear unit.

    $\mathcal{L}(x) = \frac{1}{2}\sum_i \max(x_i, 0)^2$, $g(x) = \max(x, 0)$. See
    `lagr_relu`.
    """

    streaming = StreamedSum()

    def __call__(self, x: StateLike) -> Scalar:
        r"""The scalar Lagrangian of one unbatched state.

        **Arguments:**

        - `x`: one unbatched state, any shape.

        **Returns:**

        The scalar $\mathcal{L}(x)$, summed over every entry.
        """
        return jnp.sum(_repu(as_state(x, "LRelu"), 2.0))


class LRepu(Lagrangian):
    r"""Reduced Lagrangian whose activation is the rectified polynomial unit of degree
    `n` (Krotov & Hopfield 2016).

    $\mathcal{L}(x) = \frac{1}{n}\sum_i \max(x_i, 0)^n$, $g(x) = \max(x, 0)^{n-1}$.
    See `lagr_repu`.

    **Arguments:**

    - `n`: the degree of the RePU (static): a finite Python number `n >= 1`. By
      default 2, the ReLU.
    """

    streaming = StreamedSum()

    n: float = eqx.field(static=True)

    def __init__(self, n: int | float = 2.0):
        self.n = static_float(
            n,
            "n",
            "LRepu",
            lower=1.0,
            inclusive=True,
            hint="A RePU of degree below 1 is not convex.",
        )

    def __call__(self, x: StateLike) -> Scalar:
        r"""The scalar Lagrangian of one unbatched state.

        **Arguments:**

        - `x`: one unbatched state, any shape.

        **Returns:**

        The scalar $\mathcal{L}(x)$, summed over every entry.
        """
        # `n` was checked at construction: the kernel, with no run-time check.
        return jnp.sum(_repu(as_state(x, "LRepu"), self.n))
