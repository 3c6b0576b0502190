r"""Parameterized Lagrangians: Equinox modules with learnable parameters.

A `Lagrangian` module maps one (unbatched) state to the **reduced**, scalar Lagrangian
$\mathcal{L}(x)$. Its gradient is the activation $g = \nabla\mathcal{L}(x)$ and its
Legendre transform is the layer's energy $E(x) = \langle x, g\rangle - \mathcal{L}(x)$.
Batches go through `jax.vmap`.

The families that share parameters share one abstract class each, with the one
`__init__` and the one `__call__`: `_AbstractTemperatureLagrangian` (`beta`,
`min_beta`), `_AbstractSoftmaxLagrangian` (`beta`, `axis`, `min_beta`) and
`_AbstractNormLagrangian` (`gamma`, `delta`, `eps`). The concrete classes are final:
they name the unchecked kernel of their functional Lagrangian.

Checks run where a value is born, once. Concrete parameters are checked at construction.
A module called directly checks its traced parameters once per call
(`checked_parameters`: one reduction, one `eqx.error_if`) and then evaluates its
unchecked `_unchecked(x)`; the solves (`descend`, `fixed_point`) check every parameter
of the model once, at their entry, and their loops call `unchecked_call`, which never
checks.
"""

import abc
import math
from collections.abc import Callable
from typing import Any, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.core import Tracer
from jaxtyping import Array, Float

from .._custom_types import ParamLike, Scalar, StateLike
from .._misc import all_finite, default_float_dtype
from .._validation import (
    as_state,
    check_broadcasts,
    concrete_value,
    learnable,
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
        return legendre(self._reduced, x)


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
    """`beta` clamped at `min_beta`, in `x`'s dtype, checked to broadcast to `shape`
    (a structural check, at trace time; its values are checked by
    `checked_parameters`)."""
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


def _owner(cls: type, name: str) -> type | None:
    """The class of `cls`'s MRO that defines `name`, or `None`."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass
    return None


def unchecked_call(lagrangian: Lagrangian, x: Array) -> Array:
    """The reduced Lagrangian of a prepared (floating) state, without parameter checks.

    For the loops of the solves, whose entry has checked the parameters. A built-in
    family evaluates its `_unchecked` kernel; a user's Lagrangian, or a subclass that
    overrides `__call__` (so that the family's kernel is no longer what it computes),
    is called as written.
    """
    cls = type(lagrangian)
    own = _owner(cls, "_unchecked")
    if own is not None and own is _owner(cls, "__call__"):
        return lagrangian._unchecked(x)  # pyright: ignore[reportAttributeAccessIssue]
    return lagrangian._reduced(x)


_Checked = TypeVar("_Checked")
_M = TypeVar("_M", bound=eqx.Module)


def checked_parameters(module: eqx.Module, where: str, token: _Checked) -> _Checked:
    """`token` (the input of the call), returned once `module`'s floating parameters
    are checked finite, with ONE check.

    Concrete parameters were checked at construction; they are checked again here
    on the device (one boolean fetched, no copy; at trace time under `jax.jit`),
    since `eqx.tree_at` builds modules around `__init__`. Traced ones (a module passed
    through `jax.jit`, a parameter under `jax.grad`) are reduced on the device to one
    boolean, and `token`, not the parameters, goes through the `eqx.error_if`: an
    error check on the parameters would copy them (and gather sharded ones). Keep
    using the returned token, so that the check stays in the computation.
    """
    params = eqx.filter(module, eqx.is_inexact_array)
    leaves = jax.tree.leaves(params)
    if not leaves:
        return token
    names = ", ".join(
        f"`{jax.tree_util.keystr(path)[1:]}`"
        for path, _ in jax.tree_util.tree_leaves_with_path(params)
    )
    message = f"{names} must be finite (no NaN or inf) in `{where}`"
    if not any(isinstance(leaf, Tracer) for leaf in leaves):
        with jax.ensure_compile_time_eval():
            if not bool(all_finite(params)):
                raise ValueError(f"{message}. {_NON_FINITE_HINT}")
        return token
    return eqx.error_if(
        token,
        ~all_finite(params),
        f"{message} (checked at run time, under a JAX transformation). "
        f"{_NON_FINITE_HINT}",
    )


def legendre(lagrangian: Callable[[Array], Array], x: Array) -> tuple[Array, Array]:
    """The Legendre transform `<x, g> - L(x)` and the activation `g = dL/dx`, from one
    pass of the reduced Lagrangian `lagrangian` (the one place it is written)."""
    value, g = jax.value_and_grad(lagrangian)(x)
    return jnp.sum(x * g) - value, g


def unchecked_energy_and_activation(
    lagrangian: Lagrangian, x: Array
) -> tuple[Array, Array]:
    """`lagrangian.energy_and_activation(x)` on a prepared state, without parameter
    checks (for the loops of the solves)."""
    return legendre(lambda y: unchecked_call(lagrangian, y), x)


def checked_module(module: _M, where: str) -> _M:
    """`module`, its floating parameters checked finite with ONE check, for a
    Lagrangian called directly: its few scalar parameters, not its input, go through
    the `eqx.error_if` (so differentiating the call in its input adds no second
    check). Keep using the returned module, so that the check stays in the
    computation. (A HAM, whose parameters include the patterns, threads its input
    through `checked_parameters` instead: no copy of the weights.)"""
    params, static = eqx.partition(module, eqx.is_inexact_array)
    params = checked_parameters(module, where, params)
    return eqx.combine(params, static)
