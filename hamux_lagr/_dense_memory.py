r"""The dense associative memory: stored patterns behind a Lagrangian.

$E(g) = -\mathcal{L}(\Xi g)$, the energy of Krotov & Hopfield (2016), Demircigil et al.
(2017) and Ramsauer et al. (2020) with the hidden (memory) layer integrated out.
"""

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PRNGKeyArray

from ._custom_types import Scalar
from ._lagrangians import Lagrangian
from ._synapses import AnyArray, as_activations, ShapeLike, SizeLike, Synapse
from ._validation import (
    as_shape,
    check_key,
    check_nonempty,
    float_dtype,
    learnable,
    static_int,
)


class DenseMemory(Synapse):
    r"""A dense associative memory over one layer, its memory layer integrated out.

    With the $K$ stored patterns $\xi_\mu$ as the rows of $\Xi$ and a Lagrangian
    $\mathcal{L}$ for the memories,

    $$E(g) = -\mathcal{L}(\Xi g), \qquad (\Xi g)_\mu = \langle \xi_\mu, g\rangle,$$

    and the layer receives the input current
    $-\partial E/\partial g = \Xi^\top \nabla\mathcal{L}(\Xi g)$. With an identity
    visible layer (`LIdentity`) the total energy is
    $\tfrac{1}{2}\lVert x\rVert^2 - \mathcal{L}(\Xi x)$ and:

    - `lagrangian=LSoftmax(beta)` gives the modern Hopfield energy of Ramsauer et al.
      (2020), $\tfrac12\lVert x\rVert^2 - \tfrac{1}{\beta}\log\sum_\mu
      e^{\beta\langle\xi_\mu, x\rangle}$; one Euler step with `dt = tau` is their update
      $x \leftarrow \Xi^\top\operatorname{softmax}(\beta\,\Xi x)$;
    - `lagrangian=LRepu(n)` gives the dense associative memory of Krotov & Hopfield
      (2016) with the rectified polynomial $F(s) = \max(s, 0)^n / n$;
    - `lagrangian=LExp(beta)` gives the exponential memory of Demircigil et al. (2017).

    It is the same model as a two-layer HAM whose memory layer (Lagrangian
    $\mathcal{L}$) is connected by a `LinearSynapse` holding $\Xi^\top$, once the memory
    layer has relaxed: at its fixed point its state is $\Xi g$.

    **Arguments:**

    - `patterns`: the stored patterns, of shape `(K, *shape)` with `shape` the layer's
      shape (`(K, D)` for a vector layer). Learnable.
    - `lagrangian`: the Lagrangian of the (integrated-out) memory layer, a
      `hamux_lagr.Lagrangian` acting on the `K` similarities; its parameters are
      learnable.
    """

    patterns: Float[Array, "K ..."]
    lagrangian: Lagrangian

    def __init__(self, patterns: ArrayLike, lagrangian: Lagrangian):
        self.patterns = learnable(patterns, "patterns", "DenseMemory")
        if self.patterns.ndim < 2:
            raise ValueError(
                "`patterns` must have shape (num_memories, *layer_shape), at least 2 "
                f"dimensions, in `DenseMemory`; got shape {self.patterns.shape}. For a "
                "single pattern `p`, pass `p[None]`."
            )
        check_nonempty(
            self.patterns,
            "patterns",
            "DenseMemory",
            "Store at least one pattern, of the layer's (non-empty) shape: `patterns` "
            "has shape (num_memories, *layer_shape).",
        )
        if not isinstance(lagrangian, Lagrangian):
            raise TypeError(
                "`lagrangian` must be a `hamux_lagr.Lagrangian` in `DenseMemory`, e.g. "
                f"`DenseMemory(patterns, LSoftmax(beta=1.0))`; got "
                f"{type(lagrangian).__name__}."
            )
        self.lagrangian = lagrangian

    def similarities(self, g: Float[AnyArray, "..."]) -> Float[Array, " K"]:
        r"""The similarities $\Xi g$ of the activations to each stored pattern.

        **Arguments:**

        - `g`: the layer's activations, of shape `patterns.shape[1:]`.

        **Returns:**

        The `K` overlaps $\langle\xi_\mu, g\rangle$, the memory layer's state.
        """
        (g,) = as_activations("DenseMemory", g=g)
        if g.shape != self.patterns.shape[1:]:
            raise ValueError(
                f"`DenseMemory` with `patterns` of shape {self.patterns.shape} stores "
                f"patterns of shape {self.patterns.shape[1:]}, but got activations of "
                f"shape {g.shape}; the patterns must have the layer's shape."
            )
        # Patterns first: under `jax.vmap` a batch's similarities come out as
        # (K, batch), the layout of `patterns @ queries.T`, which XLA's CPU matmuls
        # run about 10% faster than (batch, K) (see `benchmarks/bench_memory.py`).
        axes = tuple(range(g.ndim))
        dims = ((tuple(a + 1 for a in axes), axes), ((), ()))
        return lax.dot_general(self.patterns.astype(g.dtype), g, dims)

    def __call__(self, g: Float[AnyArray, "..."]) -> Scalar:
        r"""The energy $-\mathcal{L}(\Xi g)$.

        **Arguments:**

        - `g`: the layer's activations, of shape `patterns.shape[1:]`.

        **Returns:**

        The scalar energy.
        """
        return -self.lagrangian(self.similarities(g))

    @classmethod
    def random(
        cls,
        num_memories: SizeLike,
        shape: ShapeLike,
        lagrangian: Lagrangian,
        *,
        key: PRNGKeyArray,
        dtype=None,
    ) -> "DenseMemory":
        r"""A `DenseMemory` with random unit-norm patterns.

        Each pattern is a standard normal sample divided by its norm.

        **Arguments:**

        - `num_memories`: the number of patterns $K$.
        - `shape`: the layer's shape (an int for a vector layer).
        - `lagrangian`: the memory Lagrangian, e.g. `LSoftmax(beta=10.0)`.
        - `key`: a JAX PRNG key (keyword-only).
        - `dtype`: the floating dtype; by default JAX's default float.

        **Returns:**

        A `DenseMemory` with `patterns` of shape `(num_memories, *shape)`.
        """
        where = "DenseMemory.random"
        check_key(key, where)
        num_memories = static_int(num_memories, "num_memories", where, lower=1)
        shape = as_shape(shape, "shape", where, allow_zero=False)
        dims = tuple(range(1, len(shape) + 1))
        xi = jax.random.normal(key, (num_memories, *shape), float_dtype(dtype))
        xi = xi / jnp.sqrt(jnp.sum(xi**2, axis=dims, keepdims=True))
        return cls(xi, lagrangian)


__all__ = ["DenseMemory"]
