r"""The normalisation Lagrangians: layer norm and spherical (L2) norm.

Each reduces over `axis` and returns `x`'s shape with `axis` kept at size 1. Their
activations are the (centred) normalisation of `x`, scaled by `gamma` and shifted by
`delta`, as in the Energy Transformer (Hoover et al. 2023).
"""

import abc
import functools as ft

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import ParamLike, Scalar, StateLike
from .._validation import (
    as_state,
    check_broadcasts,
    finite_param,
    learnable,
    normalise_axis,
    static_float,
)
from .axis_ops import check_nonempty_axis
from .base import (
    _array_or_as_given,
    _float_or_as_given,
    _gamma_or_as_given,
    checked_module,
    Lagrangian,
)
from .jvp import tangent_sum
from .streaming import NotStreamed


def scalar_gamma(gamma: Array, where: str) -> Array:
    """`gamma` as a 0-d array; a `ValueError` unless it has exactly one entry."""
    if gamma.size != 1:
        raise ValueError(
            f"`gamma` must be a scalar in `{where}`, got shape {gamma.shape}: a "
            "per-feature gamma makes the activation no longer the gradient of a "
            "scalar Lagrangian."
        )
    return gamma.reshape(())


def placed_delta(delta: Array, x: Array, axis: int, where: str) -> Array:
    """`delta` ready to broadcast against `x`: a vector is a per-feature shift along
    the normalised `axis` (non-negative); anything else must broadcast to `x`."""
    if delta.ndim == 1 and x.ndim > 1:
        if delta.shape[0] not in (1, x.shape[axis]):
            raise ValueError(
                f"`delta` of shape {delta.shape} must have length {x.shape[axis]} "
                f"(the size of `axis`={axis}) or 1 in `{where}`."
            )
        shape = [1] * x.ndim
        shape[axis] = delta.shape[0]
        delta = delta.reshape(shape)
    check_broadcasts(delta, x.shape, "delta", where)
    return delta


def static_eps(eps: object, where: str) -> float:
    """`eps`, a static Python float `>= 0`."""
    return static_float(
        eps, "eps", where, inclusive=True, hint="It only guards a division by 0."
    )


def _prepare(x, gamma, delta, axis, eps, fn):
    x = as_state(x, fn)
    axis = normalise_axis(axis, x.ndim, fn)
    gamma = scalar_gamma(finite_param(gamma, "gamma", fn, x.dtype), fn)
    delta = placed_delta(finite_param(delta, "delta", fn, x.dtype), x, axis, fn)
    return x, gamma, delta, axis, static_eps(eps, fn)


def _layernorm_parts(x, gamma, delta, axis, eps):
    check_nonempty_axis(x, axis, "lagr_layernorm / LLayerNorm")
    xc = x - jnp.mean(x, axis=axis, keepdims=True)
    s = jnp.sqrt(jnp.mean(xc * xc, axis=axis, keepdims=True) + eps)
    dim = x.shape[axis]
    out = dim * gamma * s + jnp.sum(delta * x, axis=axis, keepdims=True)
    return xc, s, dim, out


@ft.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _layernorm(x, gamma, delta, axis, eps):
    return _layernorm_parts(x, gamma, delta, axis, eps)[-1]


@ft.partial(_layernorm.defjvp, symbolic_zeros=True)
def _layernorm_jvp(axis, eps, primals, tangents):
    x, gamma, delta = primals
    x_dot, gamma_dot, delta_dot = tangents
    xc, s, dim, out = _layernorm_parts(x, gamma, delta, axis, eps)

    def dx():
        g = gamma * xc / s + delta
        return jnp.sum(g * x_dot, axis=axis, keepdims=True)

    tangent = tangent_sum(
        out,
        (x_dot, dx),
        (gamma_dot, lambda: dim * s * gamma_dot),
        (delta_dot, lambda: jnp.sum(delta_dot * x, axis=axis, keepdims=True)),
    )
    return out, tangent


def lagr_layernorm(
    x: StateLike,
    gamma: ParamLike = 1.0,
    delta: ParamLike = 0.0,
    axis: int = -1,
    eps: int | float = 1e-5,
) -> Float[Array, "..."]:
    r"""Lagrangian of the layer norm activation function (Hoover et al. 2023).

    With $D$ the size of `axis`, $\bar{x}$ the mean and $\operatorname{Var}(x)$ the
    (biased) variance over it:

    $$\mathcal{L}(x) = D\,\gamma \sqrt{\operatorname{Var}(x) + \epsilon}
    + \sum_i \delta_i x_i, \qquad
    \frac{\partial \mathcal{L}}{\partial x} =
    \gamma \frac{x - \bar{x}}{\sqrt{\operatorname{Var}(x) + \epsilon}} + \delta.$$

    Convex for `gamma >= 0`. A custom JVP returns the closed-form activation and the
    exact tangents of `gamma` and `delta`.

    **Arguments:**

    - `x`: the state, at least one dimension.
    - `gamma`: scale of the standard deviation, a scalar (a per-feature gamma would
      make the activation no longer the gradient of a scalar).
    - `delta`: shift of the mean: a scalar, a vector of the size of `axis` (placed
      along `axis`), or an array broadcasting to `x`.
    - `axis`: the axis to normalise.
    - `eps`: added to the variance to prevent division by 0; a Python number `>= 0`.

    **Returns:**

    An array of `x`'s shape with `axis` kept at size 1.
    """
    x, gamma, delta, axis, eps = _prepare(x, gamma, delta, axis, eps, "lagr_layernorm")
    return _layernorm(x, gamma, delta, axis, eps)


def _spherical_parts(x, gamma, delta, axis, eps):
    check_nonempty_axis(x, axis, "lagr_spherical_norm / LSphericalNorm")
    s = jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=True) + eps)
    out = gamma * s + jnp.sum(delta * x, axis=axis, keepdims=True)
    return s, out


@ft.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _spherical(x, gamma, delta, axis, eps):
    return _spherical_parts(x, gamma, delta, axis, eps)[-1]


@ft.partial(_spherical.defjvp, symbolic_zeros=True)
def _spherical_jvp(axis, eps, primals, tangents):
    x, gamma, delta = primals
    x_dot, gamma_dot, delta_dot = tangents
    s, out = _spherical_parts(x, gamma, delta, axis, eps)

    def dx():
        g = gamma * x / s + delta
        return jnp.sum(g * x_dot, axis=axis, keepdims=True)

    tangent = tangent_sum(
        out,
        (x_dot, dx),
        (gamma_dot, lambda: s * gamma_dot),
        (delta_dot, lambda: jnp.sum(delta_dot * x, axis=axis, keepdims=True)),
    )
    return out, tangent


def lagr_spherical_norm(
    x: StateLike,
    gamma: ParamLike = 1.0,
    delta: ParamLike = 0.0,
    axis: int = -1,
    eps: int | float = 1e-5,
) -> Float[Array, "..."]:
    r"""Lagrangian of the spherical (L2) norm activation function.

    $$\mathcal{L}(x) = \gamma \sqrt{\textstyle\sum_i x_i^2 + \epsilon}
    + \sum_i \delta_i x_i, \qquad
    \frac{\partial \mathcal{L}}{\partial x} =
    \gamma \frac{x}{\sqrt{\sum_i x_i^2 + \epsilon}} + \delta.$$

    Convex for `gamma >= 0`. A custom JVP returns the closed-form activation and the
    exact tangents of `gamma` and `delta`.

    **Arguments:**

    - `x`: the state, at least one dimension.
    - `gamma`: scale of the normalised vector, a scalar.
    - `delta`: shift: a scalar, a vector of the size of `axis` (placed along `axis`),
      or an array broadcasting to `x`.
    - `axis`: the axis to normalise.
    - `eps`: added to the squared norm to prevent division by 0; a Python number
      `>= 0`.

    **Returns:**

    An array of `x`'s shape with `axis` kept at size 1.
    """
    x, gamma, delta, axis, eps = _prepare(
        x, gamma, delta, axis, eps, "lagr_spherical_norm"
    )
    return _spherical(x, gamma, delta, axis, eps)


class _AbstractNormLagrangian(Lagrangian):
    """A normalisation of the last axis with a learnable scalar `gamma`, a learnable
    shift `delta` (a scalar or a vector along the last axis) and a static `eps`."""

    gamma: Float[Array, ""] = eqx.field(default=1.0, converter=_gamma_or_as_given)
    delta: Float[Array, "*d"] = eqx.field(default=0.0, converter=_array_or_as_given)
    eps: float = eqx.field(static=True, default=1e-5, converter=_float_or_as_given)

    def __check_init__(self):
        where = type(self).__name__
        scalar_gamma(learnable(self.gamma, "gamma", where), where)
        delta = learnable(self.delta, "delta", where)
        if delta.ndim > 1:
            raise ValueError(
                f"`delta` must be a scalar or a vector (one shift per feature of the "
                f"normalised last axis) in `{where}`, got shape {delta.shape}."
            )
        static_eps(self.eps, where)

    @abc.abstractmethod
    def _kernel(
        self, x: Array, gamma: Array, delta: Array, axis: int, eps: float
    ) -> Array:
        """The unchecked functional Lagrangian, normalising `axis` (non-negative)."""
        raise NotImplementedError

    def __call__(self, x: StateLike) -> Scalar:
        r"""The scalar Lagrangian of one unbatched state, normalising its last axis.

        **Arguments:**

        - `x`: one unbatched state, at least one dimension.

        **Returns:**

        The scalar $\mathcal{L}(x)$, summed over the other axes.
        """
        where = type(self).__name__
        return checked_module(self, where)._unchecked(as_state(x, where))

    def _unchecked(self, x: Array) -> Array:
        # The Lagrangian of a floating state without the parameter checks: the
        # solves check every parameter once, at their entry, never in their loops.
        where = type(self).__name__
        axis = normalise_axis(-1, x.ndim, where)
        gamma, delta = self.gamma.astype(x.dtype), self.delta.astype(x.dtype)
        delta = placed_delta(delta, x, axis, where)
        return jnp.sum(self._kernel(x, gamma, delta, axis, self.eps))


class LLayerNorm(_AbstractNormLagrangian):
    r"""Reduced Lagrangian whose activation function is the layer norm
    (Hoover et al. 2023). Normalises the last axis.

    $\mathcal{L}(x) = D\gamma\sqrt{\operatorname{Var}(x) + \epsilon} + \langle\delta,
    x\rangle$, $g(x) = \gamma (x - \bar{x})/\sqrt{\operatorname{Var}(x) + \epsilon}
    + \delta$. See `lagr_layernorm`.

    **Arguments:**

    - `gamma`: scale, a learnable finite scalar (convex for `gamma >= 0`).
    - `delta`: shift, a learnable finite scalar or vector along the normalised (last)
      axis.
    - `eps`: prevents division by 0 (static, a Python number `>= 0`).
    """

    streaming = NotStreamed("it normalises over all the similarities")

    def _kernel(
        self, x: Array, gamma: Array, delta: Array, axis: int, eps: float
    ) -> Array:
        return _layernorm(x, gamma, delta, axis, eps)


class LSphericalNorm(_AbstractNormLagrangian):
    r"""Reduced Lagrangian whose activation function is the spherical L2 norm.
    Normalises the last axis.

    $\mathcal{L}(x) = \gamma\sqrt{\sum_i x_i^2 + \epsilon} + \langle\delta, x\rangle$,
    $g(x) = \gamma x / \sqrt{\sum_i x_i^2 + \epsilon} + \delta$. See
    `lagr_spherical_norm`.

    **Arguments:**

    - `gamma`: scale, a learnable finite scalar (convex for `gamma >= 0`).
    - `delta`: shift, a learnable finite scalar or vector along the normalised (last)
      axis.
    - `eps`: prevents division by 0 (static, a Python number `>= 0`).
    """

    streaming = NotStreamed("it normalises over all the similarities")

    def _kernel(
        self, x: Array, gamma: Array, delta: Array, axis: int, eps: float
    ) -> Array:
        return _spherical(x, gamma, delta, axis, eps)
