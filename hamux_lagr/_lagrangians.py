r"""Parameterized Lagrangians: Equinox modules with learnable parameters.

A `Lagrangian` module maps one (unbatched) state to the **reduced**, scalar Lagrangian
$\mathcal{L}(x)$. Its gradient is the activation $g = \nabla\mathcal{L}(x)$ and its
Legendre transform is the layer's energy $E(x) = \langle x, g\rangle - \mathcal{L}(x)$.
Batches go through `jax.vmap`.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._custom_types import ParamLike, Scalar, StateLike
from ._functional import (
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
from ._validation import as_state, default_float_dtype


class Lagrangian(eqx.Module):
    r"""Abstract base class of all Lagrangians; subclass it for your own.

    A subclass implements `__call__(x)`, returning the scalar Lagrangian of one
    unbatched state `x`; it must be convex and differentiable in `x`. It inherits:

    - `activation(x)`: $g = \partial\mathcal{L}/\partial x$, by `jax.grad`. The built-in
      Lagrangians carry custom JVPs whose rules are the closed-form activations, so this
      *is* the closed form (e.g. `jnp.tanh`) under `jax.jit`, at no extra cost;
    - `energy(x)`: the Legendre transform
      $E(x) = \langle x, g\rangle - \mathcal{L}(x)$, the layer's energy.

    !!! example

        ```python
        class LSoftplus(hamux_lagr.Lagrangian):
            beta: jax.Array

            def __call__(self, x):
                return jnp.sum(jnp.logaddexp(self.beta * x, 0.0)) / self.beta

        LSoftplus(jnp.array(2.0)).activation(jnp.ones(3))  # = sigmoid(2.0)
        ```
    """

    @abc.abstractmethod
    def __call__(self, x: StateLike) -> Scalar:
        r"""The scalar Lagrangian $\mathcal{L}(x)$ of one unbatched state `x`."""
        raise NotImplementedError

    def activation(self, x: StateLike) -> Float[Array, "..."]:
        r"""The activation $g = \partial\mathcal{L}/\partial x$, of `x`'s shape.

        **Arguments:**

        - `x`: one unbatched state (integer or boolean states are promoted to the
          default float dtype).

        **Returns:**

        The activation, with the shape and floating dtype of `x`.
        """
        x = as_state(x, f"{type(self).__name__}.activation")
        return jax.grad(self)(x)

    def energy(self, x: StateLike) -> Scalar:
        r"""The layer energy, the Legendre transform of the Lagrangian.

        $$E(x) = \langle x, g(x)\rangle - \mathcal{L}(x), \qquad g = \nabla\mathcal{L}.$$

        **Arguments:**

        - `x`: one unbatched state.

        **Returns:**

        The scalar energy.
        """
        return self.energy_and_activation(x)[0]

    def energy_and_activation(self, x: StateLike) -> tuple[Scalar, Float[Array, "..."]]:
        r"""The layer energy and the activation, from one pass.

        $$E(x) = \langle x, g(x)\rangle - \mathcal{L}(x), \qquad g = \nabla\mathcal{L}(x).$$

        The one place where the Legendre transform is written: `energy`, and
        `hamux_lagr.NeuronLayer` and `hamux_lagr.HAM`, use it.

        **Arguments:**

        - `x`: one unbatched state.

        **Returns:**

        A pair `(energy, activation)`: the scalar energy and the activation, of `x`'s
        shape.
        """
        x = as_state(x, f"{type(self).__name__}.energy")
        value, g = jax.value_and_grad(self)(x)
        return jnp.sum(x * g) - value, g


# ----------------------------------------------------------------------------------
# construction helpers
# ----------------------------------------------------------------------------------


def _learnable(value: object, name: str, cls: str) -> Array:
    """A learnable parameter as an inexact JAX array (default float dtype unless an
    inexact array is given)."""
    if value is None or isinstance(value, (str, bytes, bool)):
        raise TypeError(
            f"`{name}` must be a number or an array in `{cls}`, got "
            f"{type(value).__name__} {value!r}."
        )
    try:
        arr = jnp.asarray(value)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"`{name}` must be a number or an array in `{cls}`, got "
            f"{type(value).__name__}."
        ) from e
    weak = getattr(arr, "weak_type", False)
    if weak or not jnp.issubdtype(arr.dtype, jnp.inexact):
        # Python numbers (weakly typed) and integer arrays: the default float dtype.
        arr = jnp.asarray(arr, dtype=default_float_dtype())
    return arr


def _positive_static(value: object, name: str, cls: str) -> float:
    try:
        out = float(value)  # pyright: ignore[reportArgumentType]
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"`{name}` must be a Python number in `{cls}`, got {type(value).__name__}."
        ) from e
    if not (np.isfinite(out) and out > 0):
        raise ValueError(
            f"`{name}` must be a finite positive number in `{cls}`, got {value!r}: it "
            "is the smallest inverse temperature the dynamics may use."
        )
    return out


def _static_axis(axis: object, cls: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"`axis` must be an int in `{cls}`, got {axis!r}.")
    return int(axis)


def _clamped(beta: Array, min_beta: float) -> Array:
    """`beta`, clamped from below at `min_beta` (energy dynamics need `beta > 0`)."""
    return jnp.maximum(beta, min_beta)


_BETA_DOC = """
    **Arguments:**

    - `beta`: inverse temperature, for the sharpness of the activation. Learnable;
      clamped at `min_beta` when the Lagrangian is evaluated.
    - `min_beta`: minimal accepted value of `beta` (static). For energy dynamics, it is
      important that `beta` be positive.
"""


# ----------------------------------------------------------------------------------
# parameter-free Lagrangians
# ----------------------------------------------------------------------------------


class LIdentity(Lagrangian):
    r"""Reduced Lagrangian whose activation function is the identity.

    $\mathcal{L}(x) = \frac{1}{2}\sum_i x_i^2$, $g(x) = x$. See `lagr_identity`.
    """

    def __call__(self, x: StateLike) -> Scalar:
        return jnp.sum(lagr_identity(x))


class LRelu(Lagrangian):
    r"""Reduced Lagrangian whose activation function is the rectified linear unit.

    $\mathcal{L}(x) = \frac{1}{2}\sum_i \max(x_i, 0)^2$, $g(x) = \max(x, 0)$. See
    `lagr_relu`.
    """

    def __call__(self, x: StateLike) -> Scalar:
        return jnp.sum(lagr_relu(x))


class LRepu(Lagrangian):
    r"""Reduced Lagrangian whose activation is the rectified polynomial unit of degree
    `n` (Krotov & Hopfield 2016).

    $\mathcal{L}(x) = \frac{1}{n}\sum_i \max(x_i, 0)^n$, $g(x) = \max(x, 0)^{n-1}$.
    See `lagr_repu`.

    **Arguments:**

    - `n`: the degree of the RePU (static, `n >= 1`). By default 2, the ReLU.
    """

    n: float = eqx.field(static=True)

    def __init__(self, n: int | float = 2.0):
        try:
            n = float(n)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"`n` must be a Python number in `LRepu`, got {n!r}."
            ) from e
        if not n >= 1:
            raise ValueError(
                f"`n` must be >= 1 in `LRepu`, got {n}: a RePU of degree below 1 is "
                "not convex."
            )
        self.n = n

    def __call__(self, x: StateLike) -> Scalar:
        return jnp.sum(lagr_repu(x, self.n))


# ----------------------------------------------------------------------------------
# Lagrangians with an inverse temperature
# ----------------------------------------------------------------------------------


class LExp(Lagrangian):
    __doc__ = (
        r"""Reduced Lagrangian whose activation function is the exponential
    (Demircigil et al. 2017).

    $\mathcal{L}(x) = \frac{1}{\beta}\sum_i e^{\beta x_i}$, $g(x) = e^{\beta x}$.
    See `lagr_exp`.
"""
        + _BETA_DOC
    )

    beta: Float[Array, "..."]
    min_beta: float = eqx.field(static=True)

    def __init__(self, beta: ParamLike = 1.0, min_beta: int | float = 1e-6):
        self.beta = _learnable(beta, "beta", "LExp")
        self.min_beta = _positive_static(min_beta, "min_beta", "LExp")

    def __call__(self, x: StateLike) -> Scalar:
        return jnp.sum(lagr_exp(x, _clamped(self.beta, self.min_beta)))


class LRexp(Lagrangian):
    __doc__ = (
        r"""Reduced Lagrangian whose activation function is the rectified exponential.

    $\mathcal{L}(x) = \sum_i \frac{1}{\beta} e^{\beta \bar{x}_i} - \bar{x}_i$ with
    $\bar{x} = \max(x, 0)$, $g(x) = e^{\beta \bar{x}} - 1$. See `lagr_rexp`.
"""
        + _BETA_DOC
    )

    beta: Float[Array, "..."]
    min_beta: float = eqx.field(static=True)

    def __init__(self, beta: ParamLike = 1.0, min_beta: int | float = 1e-6):
        self.beta = _learnable(beta, "beta", "LRexp")
        self.min_beta = _positive_static(min_beta, "min_beta", "LRexp")

    def __call__(self, x: StateLike) -> Scalar:
        return jnp.sum(lagr_rexp(x, _clamped(self.beta, self.min_beta)))


class LTanh(Lagrangian):
    __doc__ = (
        r"""Reduced Lagrangian whose activation function is the tanh.

    $\mathcal{L}(x) = \frac{1}{\beta}\sum_i \log\cosh(\beta x_i)$,
    $g(x) = \tanh(\beta x)$. Stable at every magnitude, with a true `beta` gradient.
    See `lagr_tanh`.
"""
        + _BETA_DOC
    )

    beta: Float[Array, "..."]
    min_beta: float = eqx.field(static=True)

    def __init__(self, beta: ParamLike = 1.0, min_beta: int | float = 1e-6):
        self.beta = _learnable(beta, "beta", "LTanh")
        self.min_beta = _positive_static(min_beta, "min_beta", "LTanh")

    def __call__(self, x: StateLike) -> Scalar:
        return jnp.sum(lagr_tanh(x, _clamped(self.beta, self.min_beta)))


class LSigmoid(Lagrangian):
    r"""Reduced Lagrangian whose activation function is the sigmoid.

    $\mathcal{L}(x) = \frac{s}{\beta}\sum_i \log(1 + e^{\beta x_i})$,
    $g(x) = s\,\sigma(\beta x)$. See `lagr_sigmoid`.

    **Arguments:**

    - `beta`: inverse temperature. Learnable; clamped at `min_beta` when evaluated.
    - `scale`: amount $s$ to stretch the sigmoid. Learnable.
    - `min_beta`: minimal accepted value of `beta` (static). For energy dynamics, it is
      important that `beta` be positive.
    """

    beta: Float[Array, "..."]
    scale: Float[Array, "..."]
    min_beta: float = eqx.field(static=True)

    def __init__(
        self,
        beta: ParamLike = 1.0,
        scale: ParamLike = 1.0,
        min_beta: int | float = 1e-6,
    ):
        self.beta = _learnable(beta, "beta", "LSigmoid")
        self.scale = _learnable(scale, "scale", "LSigmoid")
        self.min_beta = _positive_static(min_beta, "min_beta", "LSigmoid")

    def __call__(self, x: StateLike) -> Scalar:
        beta = _clamped(self.beta, self.min_beta)
        return jnp.sum(lagr_sigmoid(x, beta, self.scale))


_SOFTMAX_ARGS = """
    **Arguments:**

    - `beta`: inverse temperature. Learnable; clamped at `min_beta` when evaluated.
    - `axis`: the axis over which to apply the softmax (static).
    - `min_beta`: minimal accepted value of `beta` (static). For energy dynamics, it is
      important that `beta` be positive.
"""


class LSoftmax(Lagrangian):
    __doc__ = (
        r"""Reduced Lagrangian whose activation function is the softmax
    (Ramsauer et al. 2020).

    $\mathcal{L}(x) = \frac{1}{\beta}\log\sum_i e^{\beta x_i}$ over `axis` (summed
    over the other axes), $g(x) = \operatorname{softmax}(\beta x)$. See `lagr_softmax`.
"""
        + _SOFTMAX_ARGS
    )

    beta: Float[Array, "..."]
    axis: int = eqx.field(static=True)
    min_beta: float = eqx.field(static=True)

    def __init__(
        self, beta: ParamLike = 1.0, axis: int = -1, min_beta: int | float = 1e-6
    ):
        self.beta = _learnable(beta, "beta", "LSoftmax")
        self.axis = _static_axis(axis, "LSoftmax")
        self.min_beta = _positive_static(min_beta, "min_beta", "LSoftmax")

    def __call__(self, x: StateLike) -> Scalar:
        beta = _clamped(self.beta, self.min_beta)
        return jnp.sum(lagr_softmax(x, beta, self.axis))


class LSoftmaxUnstable(Lagrangian):
    __doc__ = (
        r"""Like `LSoftmax`, with the log-sum-exp coded from elementary operations.

    For runtimes without a log-sum-exp kernel (e.g. TensorFlow.js, to port models to
    the browser). Despite the name, it is as stable as `LSoftmax`. See
    `lagr_softmax_unstable`.
"""
        + _SOFTMAX_ARGS
    )

    beta: Float[Array, "..."]
    axis: int = eqx.field(static=True)
    min_beta: float = eqx.field(static=True)

    def __init__(
        self, beta: ParamLike = 1.0, axis: int = -1, min_beta: int | float = 1e-6
    ):
        self.beta = _learnable(beta, "beta", "LSoftmaxUnstable")
        self.axis = _static_axis(axis, "LSoftmaxUnstable")
        self.min_beta = _positive_static(min_beta, "min_beta", "LSoftmaxUnstable")

    def __call__(self, x: StateLike) -> Scalar:
        beta = _clamped(self.beta, self.min_beta)
        return jnp.sum(lagr_softmax_unstable(x, beta, self.axis))


class LGhostmax(Lagrangian):
    __doc__ = (
        r"""Reduced Lagrangian whose activation is the softmax with a zero "ghost" logit.

    $\mathcal{L}(x) = \frac{1}{\beta}\log\big(1 + \sum_i e^{\beta x_i}\big)$ over
    `axis`, $g_i(x) = e^{\beta x_i} / (1 + \sum_j e^{\beta x_j})$. Strictly convex,
    unlike `LSoftmax`. See `lagr_ghostmax`.
"""
        + _SOFTMAX_ARGS
    )

    beta: Float[Array, "..."]
    axis: int = eqx.field(static=True)
    min_beta: float = eqx.field(static=True)

    def __init__(
        self, beta: ParamLike = 1.0, axis: int = -1, min_beta: int | float = 1e-6
    ):
        self.beta = _learnable(beta, "beta", "LGhostmax")
        self.axis = _static_axis(axis, "LGhostmax")
        self.min_beta = _positive_static(min_beta, "min_beta", "LGhostmax")

    def __call__(self, x: StateLike) -> Scalar:
        beta = _clamped(self.beta, self.min_beta)
        return jnp.sum(lagr_ghostmax(x, beta, self.axis))


# ----------------------------------------------------------------------------------
# normalisations
# ----------------------------------------------------------------------------------


def _norm_params(gamma, delta, cls) -> tuple[Array, Array]:
    gamma = _learnable(gamma, "gamma", cls)
    if gamma.ndim != 0:
        raise ValueError(
            f"`gamma` must be a scalar in `{cls}`, got shape {gamma.shape}: a "
            "per-feature gamma makes the activation no longer the gradient of a "
            "scalar Lagrangian."
        )
    delta = _learnable(delta, "delta", cls)
    if delta.ndim > 1:
        raise ValueError(
            f"`delta` must be a scalar or a vector (one shift per feature of the "
            f"normalised last axis) in `{cls}`, got shape {delta.shape}."
        )
    return gamma, delta


def _static_eps(eps: object, cls: str) -> float:
    try:
        out = float(eps)  # pyright: ignore[reportArgumentType]
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"`eps` must be a Python number in `{cls}`, got {eps!r}."
        ) from e
    if not (np.isfinite(out) and out >= 0):
        raise ValueError(f"`eps` must be a finite number >= 0 in `{cls}`, got {eps!r}.")
    return out


_NORM_ARGS = """
    **Arguments:**

    - `gamma`: scale, a learnable scalar (convex for `gamma >= 0`).
    - `delta`: shift, a learnable scalar or vector along the normalised (last) axis.
    - `eps`: prevents division by 0 (static).
"""


class LLayerNorm(Lagrangian):
    __doc__ = (
        r"""Reduced Lagrangian whose activation function is the layer norm
    (Hoover et al. 2023). Normalises the last axis.

    $\mathcal{L}(x) = D\gamma\sqrt{\operatorname{Var}(x) + \epsilon} + \langle\delta,
    x\rangle$, $g(x) = \gamma (x - \bar{x})/\sqrt{\operatorname{Var}(x) + \epsilon}
    + \delta$. See `lagr_layernorm`.
"""
        + _NORM_ARGS
    )

    gamma: Float[Array, ""]
    delta: Float[Array, "*d"]
    eps: float = eqx.field(static=True)

    def __init__(
        self, gamma: ParamLike = 1.0, delta: ParamLike = 0.0, eps: float = 1e-5
    ):
        self.gamma, self.delta = _norm_params(gamma, delta, "LLayerNorm")
        self.eps = _static_eps(eps, "LLayerNorm")

    def __call__(self, x: StateLike) -> Scalar:
        return jnp.sum(lagr_layernorm(x, self.gamma, self.delta, -1, self.eps))


class LSphericalNorm(Lagrangian):
    __doc__ = (
        r"""Reduced Lagrangian whose activation function is the spherical L2 norm.
    Normalises the last axis.

    $\mathcal{L}(x) = \gamma\sqrt{\sum_i x_i^2 + \epsilon} + \langle\delta, x\rangle$,
    $g(x) = \gamma x / \sqrt{\sum_i x_i^2 + \epsilon} + \delta$. See
    `lagr_spherical_norm`.
"""
        + _NORM_ARGS
    )

    gamma: Float[Array, ""]
    delta: Float[Array, "*d"]
    eps: float = eqx.field(static=True)

    def __init__(
        self, gamma: ParamLike = 1.0, delta: ParamLike = 0.0, eps: float = 1e-5
    ):
        self.gamma, self.delta = _norm_params(gamma, delta, "LSphericalNorm")
        self.eps = _static_eps(eps, "LSphericalNorm")

    def __call__(self, x: StateLike) -> Scalar:
        return jnp.sum(lagr_spherical_norm(x, self.gamma, self.delta, -1, self.eps))


__all__ = [
    "LExp",
    "LGhostmax",
    "LIdentity",
    "LLayerNorm",
    "LRelu",
    "LRepu",
    "LRexp",
    "LSigmoid",
    "LSoftmax",
    "LSoftmaxUnstable",
    "LSphericalNorm",
    "LTanh",
    "Lagrangian",
]
