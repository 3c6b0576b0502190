r"""Parameterized Lagrangians: Equinox modules with learnable parameters.

A `Lagrangian` module maps one (unbatched) state to the **reduced**, scalar Lagrangian
$\mathcal{L}(x)$. Its gradient is the activation $g = \nabla\mathcal{L}(x)$ and its
Legendre transform is the layer's energy $E(x) = \langle x, g\rangle - \mathcal{L}(x)$.
Batches go through `jax.vmap`.

The families that share parameters share one abstract class each, with the one
`__init__` and the one `__call__`: `_AbstractTemperatureLagrangian` (`beta`,
`min_beta`), `_AbstractSoftmaxLagrangian` (`beta`, `axis`, `min_beta`) and
`_AbstractNormLagrangian` (`gamma`, `delta`, `eps`). The concrete classes are final:
they name the unchecked kernel of their functional Lagrangian. A module checks its
parameters with at most one run-time check per evaluation (`ensure_finite`), since it
runs in every step of the dynamics.
"""

import abc
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._custom_types import ParamLike, Scalar, StateLike
from ._functional import _exp, _identity, _repu, _rexp, _sigmoid, _tanh
from ._functional_norms import (
    _layernorm,
    _spherical,
    placed_delta,
    scalar_gamma,
    static_eps,
)
from ._functional_softmax import _ghostmax, _reduced_shape, _softmax, _softmax_unstable
from ._validation import (
    as_state,
    check_broadcasts,
    concrete_value,
    default_float_dtype,
    ensure_finite,
    learnable,
    normalise_axis,
    static_axis,
    static_float,
)


class Lagrangian(eqx.Module):
    r"""Abstract base class of all Lagrangians; subclass it for your own.

    A subclass implements `__call__(x)`, returning the scalar Lagrangian of one
    unbatched state `x`; it must be convex and differentiable in `x`. It inherits:

    - `activation(x)`: $g = \partial\mathcal{L}/\partial x$, by `jax.grad`. The built-in
      Lagrangians carry custom JVPs whose rules are the closed-form activations, so this
      *is* the closed form (e.g. `jnp.tanh`) under `jax.jit`, at no extra cost;
    - `energy(x)`: the Legendre transform
      $E(x) = \langle x, g\rangle - \mathcal{L}(x)$, the layer's energy;
    - `energy_and_activation(x)`: both, from one pass.

    `__call__` must return a floating scalar (a 0-d array): sum over the state, as the
    built-in Lagrangians do. Anything else is a `TypeError` naming the subclass.

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

    def _reduced(self, x: Array) -> Array:
        """`self(x)`, checked to be a floating scalar (what `jax.grad` needs)."""
        out = self(x)
        shape, dtype = jnp.shape(out), jnp.result_type(out)
        if shape != () or not jnp.issubdtype(dtype, jnp.floating):
            name = type(self).__name__
            raise TypeError(
                f"`{name}.__call__` must return the reduced Lagrangian, a floating "
                f"scalar, got an array of shape {shape} and dtype {dtype}. Reduce over "
                f"the state in `{name}.__call__` (e.g. `return jnp.sum(...)`); batches "
                "go through `jax.vmap`."
            )
        return out

    def activation(self, x: StateLike) -> Float[Array, "..."]:
        r"""The activation $g = \partial\mathcal{L}/\partial x$, of `x`'s shape.

        **Arguments:**

        - `x`: one unbatched state (integer or boolean states are promoted to the
          default float dtype).

        **Returns:**

        The activation, with the shape and floating dtype of `x`.
        """
        x = as_state(x, f"{type(self).__name__}.activation")
        return jax.grad(self._reduced)(x)

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
        value, g = jax.value_and_grad(self._reduced)(x)
        return jnp.sum(x * g) - value, g


# ----------------------------------------------------------------------------------
# parameter checks at evaluation
# ----------------------------------------------------------------------------------

_NON_FINITE_HINT = (
    "Clamping at `min_beta` cannot repair a NaN or infinite parameter; if training "
    "produced it, lower the learning rate or clip the gradients."
)


def _min_beta(min_beta: object, where: str) -> float:
    return static_float(
        min_beta,
        "min_beta",
        where,
        hint="It is the smallest inverse temperature the dynamics may use.",
    )


def _evaluated_beta(
    beta: Array, min_beta: float, x: Array, shape: tuple[int, ...], where: str
) -> Array:
    """`beta` checked finite (the one check), clamped at `min_beta`, in `x`'s dtype.

    The stored `beta` is checked before any operation on it: when the module is closed
    over (concrete), even under `jax.jit`, the check runs once, at trace time.
    """
    (beta,) = ensure_finite(where, _NON_FINITE_HINT, beta=beta)
    beta = jnp.maximum(beta, min_beta).astype(x.dtype)
    check_broadcasts(beta, shape, "beta", where)
    return beta


def _array_or_as_given(value: ParamLike) -> Any:
    """Field converter: a learnable array, or the value as given when it is not one.

    The class's `__check_init__` then names the class and the argument in the error
    (a converter does not know them). A traced value is converted without a check:
    the module checks its parameters, naming itself, when it is evaluated.
    """
    if isinstance(value, jax.Array) and concrete_value(value) is None:
        if jnp.issubdtype(value.dtype, jnp.inexact):
            return value
        return value.astype(default_float_dtype())
    try:
        return learnable(value, "value", "Lagrangian")
    except (TypeError, ValueError):
        return value


def _float_or_as_given(value: int | float) -> Any:
    """Field converter: a Python float, or the value as given (see above)."""
    try:
        return static_float(
            value, "value", "Lagrangian", lower=-math.inf, inclusive=True
        )
    except (TypeError, ValueError):
        return value


def _axis_or_as_given(value: int) -> Any:
    """Field converter: a Python int, or the value as given (see above)."""
    try:
        return static_axis(value, "Lagrangian")
    except TypeError:
        return value


def _gamma_or_as_given(value: ParamLike) -> Any:
    """Field converter: a learnable 0-d array, or the value as given (see above)."""
    arr = _array_or_as_given(value)
    if isinstance(arr, jax.Array) and arr.size == 1:
        return arr.reshape(())
    return arr


# ----------------------------------------------------------------------------------
# parameter-free Lagrangians
# ----------------------------------------------------------------------------------


class LIdentity(Lagrangian):
    r"""Reduced Lagrangian whose activation function is the identity.

    $\mathcal{L}(x) = \frac{1}{2}\sum_i x_i^2$, $g(x) = x$. See `lagr_identity`.
    """

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


# ----------------------------------------------------------------------------------
# Lagrangians with an inverse temperature
# ----------------------------------------------------------------------------------


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
        x = as_state(x, where)
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
        x = as_state(x, "LSigmoid")
        beta, scale = ensure_finite(
            "LSigmoid", _NON_FINITE_HINT, beta=self.beta, scale=self.scale
        )
        beta = jnp.maximum(beta, self.min_beta).astype(x.dtype)
        scale = scale.astype(x.dtype)
        check_broadcasts(beta, x.shape, "beta", "LSigmoid")
        check_broadcasts(scale, x.shape, "scale", "LSigmoid")
        return jnp.sum(_sigmoid(x, beta, scale))


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
        x = as_state(x, where)
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

    def _kernel(self, x: Array, beta: Array, axis: int) -> Array:
        return _ghostmax(x, beta, axis)


# ----------------------------------------------------------------------------------
# normalisations
# ----------------------------------------------------------------------------------


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
        x = as_state(x, where)
        axis = normalise_axis(-1, x.ndim, where)
        gamma, delta = ensure_finite(where, gamma=self.gamma, delta=self.delta)
        gamma, delta = gamma.astype(x.dtype), delta.astype(x.dtype)
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

    def _kernel(
        self, x: Array, gamma: Array, delta: Array, axis: int, eps: float
    ) -> Array:
        return _spherical(x, gamma, delta, axis, eps)


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
