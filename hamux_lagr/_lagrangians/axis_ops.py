r"""Broadcasts along an axis, and contractions over it, that keep `jax.vmap`'s layout.

A Lagrangian acts on one sample; batches come through `jax.vmap`. When the sample is a
vector produced by a matrix product with the sample on the right (a dense memory's
similarities $\Xi g$), a batch of them comes out as a `(K, batch)` array: `jax.vmap`
puts the batch axis *last*. A reduction over the vector (a max, a sum) has its batch
axis first, and an elementwise operation between the two (`x - max(x)`, `e / sum(e)`,
or in reverse mode `p * cotangent`) makes `jax.vmap` transpose the `(K, batch)` array
to `(batch, K)`: a copy in every step of the dynamics, and a split of XLA's fused
kernels, about a tenth of a dense memory's step on the CPU (see
`benchmarks/bench_memory.py`).

For vectors these helpers write the broadcast back along the axis as a matrix product
with a column of ones, and the contraction $\sum_i p_i v_i$ as a dot product (whose
transpose, in reverse mode, is such a broadcast): `jax.vmap` batches a matrix product by
making the batch axis a free axis of the result, in place, so no transpose appears, and
XLA turns the product with ones back into a broadcast. The products are exact (each
multiplies by one, or is the dot product itself, at `Precision.HIGHEST` so that no
backend rounds the operands). Arrays of more than one dimension, and half-precision
arrays (whose products might accumulate in half precision), take the plain `jnp` path.
"""

import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float


_HIGHEST = lax.Precision.HIGHEST


def _by_product(x: Array) -> bool:
    return x.ndim == 1 and jnp.finfo(x.dtype).bits >= 32


def axis_dot(
    p: Float[Array, "..."], v: Float[Array, "..."], axis: int
) -> Float[Array, "..."]:
    """`jnp.sum(p * v, axis=axis, keepdims=True)`, for `p` and `v` of one shape."""
    if not (_by_product(p) and p.dtype == v.dtype):
        return jnp.sum(p * v, axis=axis, keepdims=True)
    return lax.dot_general(p, v, (((0,), (0,)), ((), ())), precision=_HIGHEST)[None]


def axis_expand(m: Float[Array, "..."], shape: tuple[int, ...]) -> Float[Array, "..."]:
    """`jnp.broadcast_to(m, shape)`, for `m` of `shape` with the reduced axis of size 1."""
    if not (len(shape) == 1 and _by_product(m)):
        return jnp.broadcast_to(m, shape)
    ones = jnp.ones((shape[0], 1), m.dtype)
    return lax.dot_general(ones, m, (((1,), (0,)), ((), ())), precision=_HIGHEST)


def check_nonempty_axis(x: Array, axis: int, where: str) -> None:
    """A `ValueError` naming `x` and `axis` when `x` has no entry along `axis` (a
    static check on the shape: it costs nothing under `jax.jit`)."""
    if x.shape[axis] == 0:
        raise ValueError(
            f"`x` has size 0 along `axis` (axis {axis} of shape {x.shape}) in "
            f"`{where}`, which reduces over `axis`: a reduction over no entries has no "
            "activation. Pass a state with at least one entry along `axis`, or choose "
            "another `axis`."
        )
