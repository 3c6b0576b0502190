"""Argument conversion and checks, in one place for the whole library.

One converter per kind of argument:

- states: `as_state` (a floating array; integers and booleans promoted, complex refused);
- parameters of the functional Lagrangians: `as_param`, `positive_param`, `finite_param`;
- learnable arrays of modules (Lagrangian parameters, synapse weights): `learnable`;
- static hyper-parameters: `static_float`, `static_int`, `as_shape`, `as_pair`,
  `static_axis` / `normalise_axis`, `check_key`.

Checks on *values* go through `ensure`: when the value is concrete (a Python number, a
NumPy array, a JAX array outside any trace) a failed check raises a `ValueError` at
once; when it is traced (under `jax.jit`, `jax.vmap`, `jax.grad`) the check is an
`eqx.error_if`, so it still raises, at run time, with the same message.

Every message names the argument in backticks and the function or class it was given
to, shows what was received, and says how to fix it.
"""

import math
from collections.abc import Callable
from typing import Any, cast, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jaxtyping import Array

from ._misc import default_float_dtype


def concrete_value(value: object) -> np.ndarray | None:
    """The value as a NumPy array, or `None` when it is traced."""
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _shown(arr: np.ndarray) -> object:
    return arr.item() if arr.size == 1 else arr


_Checked = TypeVar("_Checked", Array, np.ndarray)


def ensure(
    value: _Checked,
    is_bad: Callable[[Any], Any],
    requirement: str,
    hint: str = "",
) -> _Checked:
    """Returns `value`, checked: `is_bad(value)` must be False everywhere.

    A concrete `value` that fails raises `ValueError(f"{requirement}, got {value}.
    {hint}")` at once: a JAX array is reduced where it lives (its devices, or the
    processes it is spread over) and one boolean is fetched, never a copy of it. A
    traced one is wrapped in `eqx.error_if`, which raises at run time with the same
    requirement and hint: keep using the returned array, so that the check stays in
    the computation.

    `is_bad` must work on NumPy and on JAX arrays (use operators, `np.isnan` does not
    take tracers: write `v != v` for NaN).
    """
    hint = f" {hint}" if hint else ""
    if isinstance(value, jax.Array) and not isinstance(value, Tracer):
        with jax.ensure_compile_time_eval():  # concrete even under `jax.jit`
            bad = value.size > 0 and bool(jnp.any(is_bad(value)))
        if bad:
            if not value.is_fully_addressable or value.size > 16:
                where = (
                    ""
                    if value.is_fully_addressable
                    else " spread over several processes"
                )
                raise ValueError(
                    f"{requirement}, got a bad entry in an array of shape "
                    f"{value.shape}{where}.{hint}"
                )
            raise ValueError(f"{requirement}, got {_shown(np.asarray(value))}.{hint}")
        return value
    arr = concrete_value(value)
    if arr is not None:
        if arr.size and np.any(np.asarray(is_bad(arr))):
            raise ValueError(f"{requirement}, got {_shown(arr)}.{hint}")
        return value
    checked = eqx.error_if(
        value,
        jnp.any(is_bad(value)),
        f"{requirement} (checked at run time, under a JAX transformation).{hint}",
    )
    return cast(_Checked, checked)


def is_not_positive_finite(v):
    """True where `v` is not a finite positive number (NaN included)."""
    return ~((v > 0) & (v < np.inf))


def is_not_finite(v):
    """True where `v` is NaN or infinite."""
    return ~((v > -np.inf) & (v < np.inf))


def _as_array(value: object, name: str, where: str, what: str) -> Array:
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(
            f"`{name}` must be {what} in `{where}`, got {type(value).__name__} "
            f"{value!r}."
        )
    try:
        arr = jnp.asarray(value)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"`{name}` must be {what} in `{where}`, got {type(value).__name__}: {e}"
        ) from e
    if jnp.issubdtype(arr.dtype, jnp.complexfloating):
        raise TypeError(
            f"`{name}` must be real in `{where}`, got dtype {arr.dtype}: energies and "
            "their dynamics are real-valued. Pass the real part (`.real`) explicitly, "
            "or split real and imaginary parts into two layers."
        )
    if not (
        jnp.issubdtype(arr.dtype, jnp.number) or jnp.issubdtype(arr.dtype, jnp.bool_)
    ):
        raise TypeError(
            f"`{name}` must be {what} with a numeric dtype in `{where}`, got dtype "
            f"{arr.dtype}."
        )
    return arr


def as_state(x: object, where: str, name: str = "x") -> Array:
    """A state (or activations) as a floating JAX array.

    Floating inputs keep their dtype; integer and boolean inputs are promoted to the
    default float dtype. Strings, `None`, complex and other non-numeric inputs raise a
    `TypeError`.
    """
    arr = _as_array(x, name, where, "array-like (a JAX/NumPy array or a Python number)")
    if jnp.issubdtype(arr.dtype, jnp.floating):
        return arr
    return arr.astype(default_float_dtype())


def as_param(value: object, name: str, where: str, dtype) -> Array:
    """A parameter of a functional Lagrangian as an array of the state's dtype."""
    if isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be a number or an array in `{where}`, got the bool {value}."
        )
    arr = _as_array(value, name, where, "a number or an array")
    return arr.astype(dtype)


def checked_param(
    value: object,
    name: str,
    where: str,
    dtype,
    is_bad: Callable[[Any], Any],
    requirement: str,
    hint: str = "",
) -> Array:
    """A parameter of a functional Lagrangian, converted by `as_param` and checked
    by `ensure`."""
    arr = as_param(value, name, where, dtype)
    # A Python or NumPy number (or a concrete array) is checked as given, *before*
    # `jnp.asarray` makes it a tracer under `jax.jit`: a ValueError at once, and no
    # run-time check in the compiled computation.
    raw = concrete_value(value)
    if raw is not None:
        ensure(raw.astype(np.dtype(arr.dtype)), is_bad, requirement, hint)
        return arr
    return ensure(arr, is_bad, requirement, hint)


def positive_param(
    value: object, name: str, where: str, dtype, hint: str = ""
) -> Array:
    """A parameter that must be finite and positive everywhere (e.g. `beta`)."""
    return checked_param(
        value,
        name,
        where,
        dtype,
        is_not_positive_finite,
        f"`{name}` must be positive and finite in `{where}`",
        hint,
    )


def finite_param(value: object, name: str, where: str, dtype) -> Array:
    """A parameter that must be finite everywhere (e.g. `scale`, `gamma`, `delta`)."""
    return checked_param(
        value,
        name,
        where,
        dtype,
        is_not_finite,
        f"`{name}` must be finite in `{where}`",
    )


def positive_scalar(value: object, name: str, where: str, hint: str = "") -> Array:
    """A positive, finite, real 0-d array (a step size `dt`, say).

    Floating values keep their dtype, integers become the default float dtype;
    checked at once when concrete (a Python number even under `jax.jit`), at run time
    when traced.
    """
    arr = _as_array(value, name, where, "a positive number")
    if isinstance(value, (bool, np.bool_)) or arr.dtype == jnp.bool_ or arr.ndim != 0:
        raise TypeError(
            f"`{name}` must be a positive real scalar in `{where}`, got "
            f"{type(value).__name__} of shape {arr.shape} and dtype {arr.dtype}."
        )
    dtype = arr.dtype if jnp.issubdtype(arr.dtype, jnp.floating) else None
    return checked_param(
        value,
        name,
        where,
        default_float_dtype() if dtype is None else dtype,
        is_not_positive_finite,
        f"`{name}` must be positive and finite in `{where}`",
        hint,
    )


def learnable(
    value: object, name: str, where: str, *, ndim: int | None = None
) -> Array:
    """A learnable array of a module (Lagrangian parameter, synapse weight).

    Inexact arrays keep their dtype; Python numbers (weakly typed) and integer arrays
    become the default float dtype. Non-finite entries of a concrete array are refused
    at construction (a `ValueError`); a traced one (a module built inside `jax.jit`)
    is checked where it is used: at the entry of a solve, or by a Lagrangian called
    directly.
    """
    if isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be a number or an array in `{where}`, got the bool {value}."
        )
    arr = _as_array(value, name, where, "a number or an array")
    if getattr(arr, "weak_type", False) or not jnp.issubdtype(arr.dtype, jnp.inexact):
        arr = jnp.asarray(arr, dtype=default_float_dtype())
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(
            f"`{name}` must have {ndim} dimension(s) in `{where}`, got shape "
            f"{arr.shape}."
        )
    if isinstance(arr, Tracer):
        # Built under a transformation (`jax.jit`, `jax.grad`): checked once at the
        # entry of each solve, not here, where a check would copy the array.
        return arr
    return ensure(
        arr,
        is_not_finite,
        f"`{name}` must be finite (no NaN or inf) in `{where}`",
    )


def check_nonempty(arr: Array, name: str, where: str, hint: str = "") -> None:
    """Raises a `ValueError` when `arr` has no entries (a zero-size dimension), e.g.
    a memory with no patterns or a layer of no neurons."""
    if arr.size == 0:
        hint = f" {hint}" if hint else ""
        raise ValueError(
            f"`{name}` must not be empty in `{where}`, got shape {arr.shape}.{hint}"
        )


def check_broadcasts(
    param: Array, shape: tuple[int, ...], name: str, where: str
) -> None:
    """Raises a `ValueError` unless `param` broadcasts to `shape` without enlarging it."""
    try:
        ok = jnp.broadcast_shapes(param.shape, tuple(shape)) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"`{name}` of shape {param.shape} does not broadcast to the shape "
            f"{tuple(shape)} required in `{where}`; pass a scalar or an array that "
            "broadcasts to it."
        )


def state_and_beta(
    x: object, beta: object, where: str, beta_shape: tuple[int, ...] | None = None
) -> tuple[Array, Array]:
    """A state and a positive, finite inverse temperature `beta` of its dtype.

    `beta` must broadcast to `beta_shape` (by default `x`'s shape).
    """
    x = as_state(x, where)
    beta = positive_param(
        beta,
        "beta",
        where,
        x.dtype,
        "`beta` is an inverse temperature; pass a positive value (the L* modules clamp "
        "it at `min_beta` instead).",
    )
    check_broadcasts(beta, x.shape if beta_shape is None else beta_shape, "beta", where)
    return x, beta


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(
        value, (bool, np.bool_)
    )


def static_float(
    value: object,
    name: str,
    where: str,
    *,
    lower: float = 0.0,
    inclusive: bool = False,
    hint: str = "",
) -> float:
    """A finite Python float `> lower` (or `>= lower` with `inclusive`), for static
    hyper-parameters (`tau`, `min_beta`, `eps`, `n`, `tol`, ...).

    Python and NumPy numbers and concrete 0-d arrays are accepted; strings, bools and
    traced values are not.
    """
    bound = f">= {lower:g}" if inclusive else f"> {lower:g}"
    if isinstance(value, (bool, np.bool_, str, bytes)) or value is None:
        raise TypeError(
            f"`{name}` must be a Python number {bound} in `{where}`, got "
            f"{type(value).__name__} {value!r}."
        )
    arr = concrete_value(value) if isinstance(value, jax.Array) else None
    if isinstance(value, jax.Array) and arr is None:
        raise TypeError(
            f"`{name}` is a static hyper-parameter of `{where}` and cannot be traced; "
            "pass a Python number (close over it rather than passing it through "
            "`jax.jit`)."
        )
    if isinstance(value, (int, float, np.integer, np.floating)):
        out = float(value)
    elif arr is not None and arr.ndim == 0 and np.issubdtype(arr.dtype, np.number):
        out = float(arr)
    elif (
        isinstance(value, np.ndarray)
        and value.ndim == 0
        and np.issubdtype(value.dtype, np.number)
    ):
        out = float(value)
    else:
        raise TypeError(
            f"`{name}` must be a Python number {bound} in `{where}`, got "
            f"{type(value).__name__} {value!r}."
        )
    ok = math.isfinite(out) and (out >= lower if inclusive else out > lower)
    if not ok:
        hint = f" {hint}" if hint else ""
        raise ValueError(
            f"`{name}` must be a finite number {bound} in "
            f"`{where}`, got {value!r}.{hint}"
        )
    return out


_INT32_MAX = 2**31 - 1


def static_int(
    value: object,
    name: str,
    where: str,
    *,
    lower: int = 0,
    upper: int = _INT32_MAX,
    hint: str = "",
) -> int:
    """A Python int in `[lower, upper]` (Python or NumPy integers; no bools, floats,
    strings)."""
    if not _is_int(value):
        raise TypeError(
            f"`{name}` must be a Python int in `{where}`, got {type(value).__name__} "
            f"{value!r}."
        )
    out = int(value)  # pyright: ignore[reportArgumentType]
    if not lower <= out <= upper:
        hint = f" {hint}" if hint else ""
        raise ValueError(
            f"`{name}` must be an int in [{lower}, {upper}] in `{where}`, got "
            f"{out}.{hint}"
        )
    return out


def as_shape(
    value: object, name: str, where: str, *, allow_zero: bool = True
) -> tuple[int, ...]:
    """A shape as a tuple of Python ints (an int is a 1-d shape; NumPy ints accepted).

    With `allow_zero=False` every dimension must be positive.
    """
    if _is_int(value):
        value = (value,)
    try:
        dims = tuple(value)  # pyright: ignore[reportArgumentType]
    except TypeError:
        dims = None
    least = 0 if allow_zero else 1
    if (
        dims is None
        or isinstance(value, (str, bytes))
        or not all(_is_int(d) and d >= least for d in dims)
    ):
        kind = "non-negative" if allow_zero else "positive"
        raise TypeError(
            f"`{name}` must be a {kind} int or a tuple of {kind} ints in `{where}`, "
            f"got {value!r}; e.g. `{name}=(784,)`."
        )
    return tuple(int(d) for d in dims)  # pyright: ignore[reportArgumentType]


def as_pair(value: object, name: str, where: str) -> tuple[int, int]:
    """An int or a pair of positive ints, as a pair (window sizes, strides)."""
    if _is_int(value):
        value = (value, value)
    try:
        pair = tuple(value)  # pyright: ignore[reportArgumentType]
    except TypeError:
        pair = ()
    if (
        isinstance(value, (str, bytes))
        or len(pair) != 2
        or not all(_is_int(v) and v > 0 for v in pair)
    ):
        raise ValueError(
            f"`{name}` must be a positive int or a pair of positive ints in "
            f"`{where}`, got {value!r}."
        )
    return (int(pair[0]), int(pair[1]))


def static_axis(axis: object, where: str) -> int:
    """An axis as a Python int (its range is checked against a state's rank later)."""
    if not _is_int(axis):
        raise TypeError(
            f"`axis` must be an int in `{where}`, got {type(axis).__name__} {axis!r}."
        )
    return int(axis)  # pyright: ignore[reportArgumentType]


def normalise_axis(axis: object, ndim: int, where: str) -> int:
    """Checks that `axis` is an integer in `[-ndim, ndim)` and returns it non-negative."""
    axis = static_axis(axis, where)
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"`axis` is out of range in `{where}`: got axis={axis} for an input of rank "
            f"{ndim}; pass an axis in [{-ndim}, {ndim - 1}]"
            + (
                " (a scalar input has no axis to reduce: give x at least one dimension)"
                if ndim == 0
                else ""
            )
            + "."
        )
    return axis % ndim


def check_key(key: object, where: str) -> None:
    """Raises a `TypeError` unless `key` looks like a JAX PRNG key."""
    if not isinstance(key, jax.Array):
        raise TypeError(
            f"`key` must be a JAX PRNG key in `{where}`, got {type(key).__name__}; "
            "pass `key=jax.random.key(0)`."
        )


def float_dtype(dtype) -> np.dtype:
    """The requested floating dtype, or JAX's default float dtype."""
    out = np.dtype(default_float_dtype() if dtype is None else dtype)
    if not jnp.issubdtype(out, jnp.floating):
        raise TypeError(f"`dtype` must be a floating dtype, got {out}.")
    return out
