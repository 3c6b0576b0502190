"""Small helpers shared across the package."""

import functools as ft
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree


def default_float_dtype() -> np.dtype:
    """JAX's current default floating dtype (float64 when x64 is enabled)."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def common_dtype(xs: Mapping) -> jnp.dtype:
    """The dtype the values of `xs` (arrays or dtypes) promote to."""
    with jax.numpy_dtype_promotion("standard"):
        return jnp.result_type(*xs.values())


def all_finite(xs: PyTree) -> Array:
    """Whether every array of `xs` (states, or any pytree) is finite, a boolean
    scalar."""
    return ft.reduce(
        jnp.logical_and,
        [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(xs)],
        jnp.array(True),
    )


def largest_finite(beta: Array) -> Array:
    """`beta` with +inf replaced by the largest finite number of its dtype.

    A finite inverse temperature beyond a half-precision format's range (float16:
    65504) is +inf once cast to the state's dtype, and `inf * 0` at the maximum is NaN;
    the largest finite number is the limit beta -> inf to the format's precision.
    """
    return jnp.minimum(beta, jnp.finfo(beta.dtype).max)
