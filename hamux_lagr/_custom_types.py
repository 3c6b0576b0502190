"""Shared jaxtyping aliases."""

from typing import TypeAlias

from jax.typing import ArrayLike
from jaxtyping import Array, Float, Shaped


#: Anything `jnp.asarray` accepts: a Python scalar, a NumPy or JAX array (of any dtype:
#: integer and boolean states are promoted to the default float dtype).
StateLike: TypeAlias = Shaped[ArrayLike, "..."]
#: A (learnable) parameter: a Python number or a scalar/array that broadcasts with `x`.
ParamLike: TypeAlias = ArrayLike
#: The scalar value of a reduced Lagrangian or an energy.
Scalar: TypeAlias = Float[Array, ""]

__all__ = ["Array", "ArrayLike", "Float", "ParamLike", "Scalar", "Shaped", "StateLike"]
