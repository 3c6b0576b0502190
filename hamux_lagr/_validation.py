"""Argument checks shared by the functional Lagrangians.

Checks on *values* (`beta > 0`, `n >= 1`) run only when the value is concrete: under
`jax.jit`, `jax.vmap` or `jax.grad` a traced parameter cannot be inspected without a host
sync, so it is not checked (the `L*` modules clamp `beta` at `min_beta` instead).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array


def default_float_dtype() -> np.dtype:
    """JAX's current default floating dtype (float64 when x64 is enabled)."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def as_state(x: object, fn: str) -> Array:
    """Converts `x` to a floating JAX array.

    Floating inputs keep their dtype; integer and boolean inputs are promoted to the
    default float dtype. Anything that is not array-like raises a `TypeError`.
    """
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(
            f"`x` must be array-like (a JAX/NumPy array or a Python number), got "
            f"{type(x).__name__} {x!r} in `{fn}`."
        )
    try:
        arr = jnp.asarray(x)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"`x` must be array-like (a JAX/NumPy array or a Python number), got "
            f"{type(x).__name__} in `{fn}`: {e}"
        ) from e
    if jnp.issubdtype(arr.dtype, jnp.floating):
        return arr
    if jnp.issubdtype(arr.dtype, jnp.integer) or arr.dtype == jnp.bool_:
        return arr.astype(default_float_dtype())
    raise TypeError(
        f"`x` must have a real (floating, integer or boolean) dtype, got {arr.dtype} "
        f"in `{fn}`."
    )


def as_param(value: object, name: str, dtype, fn: str) -> Array:
    """Converts a parameter to an array of the state's dtype."""
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(
            f"`{name}` must be a number or an array, got {type(value).__name__} "
            f"{value!r} in `{fn}`."
        )
    try:
        return jnp.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"`{name}` must be a number or an array, got {type(value).__name__} in "
            f"`{fn}`: {e}"
        ) from e


def concrete_value(value: object) -> np.ndarray | None:
    """The value as a NumPy array, or `None` when it is traced."""
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def check_positive(value: object, name: str, fn: str, hint: str = "") -> None:
    """Raises a `ValueError` if a concrete `value` has an entry `<= 0` (or NaN)."""
    arr = concrete_value(value)
    if arr is not None and not np.all(arr > 0):
        shown = arr.item() if arr.size == 1 else arr
        raise ValueError(f"`{name}` must be positive in `{fn}`, got {shown}.{hint}")


def check_at_least(value: object, bound: float, name: str, fn: str, why: str) -> None:
    """Raises a `ValueError` if a concrete `value` has an entry `< bound` (or NaN)."""
    arr = concrete_value(value)
    if arr is not None and not np.all(arr >= bound):
        shown = arr.item() if arr.size == 1 else arr
        raise ValueError(f"`{name}` must be >= {bound} in `{fn}`, got {shown}: {why}")


def normalise_axis(axis: object, ndim: int, fn: str) -> int:
    """Checks that `axis` is an integer in `[-ndim, ndim)` and returns it non-negative."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(
            f"`axis` must be an int in `{fn}`, got {type(axis).__name__} {axis!r}."
        )
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"`axis` is out of range in `{fn}`: got axis={axis} for an input of rank "
            f"{ndim}; pass an axis in [{-ndim}, {ndim - 1}]"
            + (
                " (a scalar input has no axis to reduce: give x at least one dimension)"
                if ndim == 0
                else ""
            )
            + "."
        )
    return int(axis) % ndim


def check_broadcasts(param: Array, shape: tuple[int, ...], name: str, fn: str) -> None:
    """Raises a `ValueError` unless `param` broadcasts to `shape` without enlarging it."""
    try:
        ok = jnp.broadcast_shapes(param.shape, tuple(shape)) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"`{name}` of shape {param.shape} does not broadcast to the shape "
            f"{tuple(shape)} required in `{fn}`; pass a scalar or an array that "
            "broadcasts to it."
        )


def state_and_beta(
    x: object, beta: object, fn: str, beta_shape: tuple[int, ...] | None = None
) -> tuple[Array, Array]:
    """Converts `x` and a positive inverse temperature `beta` to arrays of one dtype.

    `beta` must broadcast to `beta_shape` (by default `x`'s shape).
    """
    x = as_state(x, fn)
    check_positive(
        beta,
        "beta",
        fn,
        " `beta` is an inverse temperature; pass a positive value (the L* modules "
        "clamp it at `min_beta` instead).",
    )
    beta = as_param(beta, "beta", x.dtype, fn)
    check_broadcasts(beta, x.shape if beta_shape is None else beta_shape, "beta", fn)
    return x, beta


__all__ = [
    "concrete_value",
    "check_broadcasts",
    "state_and_beta",
    "as_param",
    "as_state",
    "check_at_least",
    "check_positive",
    "default_float_dtype",
    "normalise_axis",
]
