"""Helpers for writing `jax.custom_jvp` rules with symbolic zeros.

The Lagrangians' JVP rules are registered with `symbolic_zeros=True`, so that a tangent
nobody asked for (the usual case: the gradient with respect to `x` only) costs nothing.
Every rule still carries the tangent of *every* differentiable argument when it is given.
"""

from collections.abc import Callable

import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array


def is_zero(tangent: object) -> bool:
    """Whether `tangent` is a symbolic zero (the argument is not being differentiated)."""
    return isinstance(tangent, SymbolicZero)


def tangent_sum(out: Array, *terms: tuple[object, Callable[[], Array]]) -> Array:
    """Sums the tangent contributions `(tangent, make_term)` whose tangent is non-zero.

    `make_term()` is only called for a non-zero tangent, so unused partial derivatives
    are never computed. The result has the shape and dtype of the primal output `out`.
    """
    total = None
    for tangent, make_term in terms:
        if is_zero(tangent):
            continue
        term = make_term()
        total = term if total is None else total + term
    if total is None:
        return jnp.zeros_like(out)
    return jnp.broadcast_to(total, out.shape).astype(out.dtype)
