r"""Checks and conversions of the Hopfield layers' constructor arguments (static)."""

import math
from collections.abc import Callable, Sequence
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array


def size(value: object, name: str, where: str, *, optional: bool = True) -> int | None:
    """A positive Python int, or `None` when `optional`."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"`{name}` must be a positive int{' or None' if optional else ''} in "
            f"`{where}`, got {value!r}."
        )
    if value < 1:
        raise ValueError(f"`{name}` must be a positive int in `{where}`, got {value}.")
    return int(value)


def required_size(value: object, name: str, where: str) -> int:
    """A positive Python int."""
    out = size(value, name, where, optional=False)
    assert out is not None
    return out


def flag(value: object, name: str, where: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool in `{where}`, got {value!r}.")
    return bool(value)


def positive_float(value: object, name: str, where: str) -> float:
    try:
        out = float(value)  # pyright: ignore[reportArgumentType]
    except (TypeError, ValueError):
        raise TypeError(
            f"`{name}` must be a positive number in `{where}`, got {value!r}."
        ) from None
    if not (out > 0 and math.isfinite(out)):
        raise ValueError(
            f"`{name}` must be a positive finite number in `{where}`, got {value!r}."
        )
    return out


def per_head(
    value: object, name: str, where: str, num_heads: int, convert: Callable
) -> tuple:
    """One value per head: a scalar repeated, or a sequence/array of `num_heads`."""
    if isinstance(value, (Sequence, np.ndarray, jax.Array)) and not isinstance(
        value, str
    ):
        try:
            values = list(np.asarray(value).reshape(-1).tolist())
        except jax.errors.ConcretizationTypeError:
            raise TypeError(
                f"`{name}` must be concrete (a number or a sequence of numbers) in "
                f"`{where}`; it is a static hyper-parameter."
            ) from None
        if np.ndim(value) != 1 or len(values) != num_heads:
            raise ValueError(
                f"`{name}` must be a number or hold one entry per head "
                f"(num_heads={num_heads}) in `{where}`, got shape {np.shape(value)}."
            )
        return tuple(convert(v, name, where) for v in values)
    return (convert(value, name, where),) * num_heads


def steps_max(value: object, name: str, where: str) -> int:
    """`update_steps_max` of one head: an int >= 0, or -1 for `None` (no limit)."""
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"`{name}` must be an int >= 0 or None in `{where}`, got {value!r}."
        )
    if value < 0:
        raise ValueError(
            f"`{name}` must be >= 0 (or None for no limit) in `{where}`, got {value}."
        )
    return int(value)


def activation(name: str | None, where: str) -> Callable[[Array], Array] | None:
    """`association_activation`: the name of a `jax.nn` or `jax.numpy` function (as
    hopfield-layers takes the name of a `torch` function)."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise TypeError(
            f"`association_activation` must be None or the name of a function of "
            f"`jax.nn` or `jax.numpy` (e.g. 'relu', 'tanh') in `{where}`, got {name!r}."
        )
    fn = getattr(jax.nn, name, None) or getattr(jnp, name, None)
    if not callable(fn):
        raise ValueError(
            f"`association_activation` {name!r} is not a function of `jax.nn` or "
            f"`jax.numpy` in `{where}`; pass e.g. 'relu', 'tanh', 'sigmoid' or 'gelu'."
        )
    return cast(Callable[[Array], Array], fn)


def mask(value: object, shape: tuple[int, ...], name: str, where: str) -> Array | None:
    """A mask in Equinox's convention (True / non-zero = may attend), as booleans."""
    if value is None:
        return None
    arr = jnp.asarray(value)
    if arr.dtype != jnp.bool_ and not jnp.issubdtype(arr.dtype, jnp.integer):
        raise TypeError(
            f"`{name}` must be a boolean or integer (e.g. uint8) mask, True / non-zero "
            f"= may attend, in `{where}`; got dtype {arr.dtype}."
        )
    if arr.shape != shape:
        raise ValueError(
            f"`{name}` must have shape {shape} in `{where}`, got {arr.shape}. Masks "
            "follow `eqx.nn.MultiheadAttention`: True = may attend; hopfield-layers' "
            "masks (True = blocked) are inverted: pass `~mask`. One sample per call: "
            "batch with `jax.vmap`."
        )
    return arr if arr.dtype == jnp.bool_ else arr != 0


def features(
    x: object, dim: int | None, name: str, where: str, hint: str = ""
) -> Array:
    """A floating `(length, dim)` array."""
    arr = jnp.asarray(x)
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        if jnp.issubdtype(arr.dtype, jnp.complexfloating):
            raise TypeError(f"`{name}` must be real in `{where}`, got {arr.dtype}.")
        arr = arr.astype(jax.dtypes.canonicalize_dtype(jnp.float64))
    if arr.ndim != 2 or (dim is not None and arr.shape[1] != dim):
        want = f"(length, {dim})" if dim is not None else "(length, features)"
        batched = arr.ndim == 3 and (dim is None or arr.shape[2] == dim)
        raise ValueError(
            f"`{name}` must have shape {want} in `{where}`, got {arr.shape}. {hint}"
            + (
                " The layer acts on one sample: batch with `jax.vmap`."
                if batched
                else ""
            )
        )
    return arr
