r"""The dense associative memory: stored patterns behind a Lagrangian.

$E(g) = -\mathcal{L}(s(g))$ with the similarities $s_\mu = \langle\xi_\mu, g\rangle$
(Krotov & Hopfield 2016, Demircigil et al. 2017, Ramsauer et al. 2020) or
$s_\mu = -\tfrac12\lVert g - \xi_\mu\rVert^2$ (Millidge et al. 2022), the hidden
(memory) layer integrated out.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import AnyArray, Scalar, ShapeLike, SizeLike
from .._lagrangians.base import Lagrangian, unchecked_call
from .._validation import (
    as_shape,
    check_key,
    check_nonempty,
    float_dtype,
    learnable,
    static_int,
)
from .base import as_activations, Synapse
from .chunked import check_chunkable, streamed_energy


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

    With `similarity="l2"` the similarities are minus half the squared distances,
    $s_\mu = -\tfrac12\lVert g - \xi_\mu\rVert^2$, as in the universal Hopfield
    networks of Millidge et al. (2022): the energy is $-\mathcal{L}(s)$, and with
    `LSoftmax(beta)` the update weighs each pattern by
    $\operatorname{softmax}(-\tfrac{\beta}{2}\lVert g - \xi_\mu\rVert^2)$, a
    Gaussian-kernel memory that does not favour patterns of large norm. (Since the
    log-sum-exp is shift invariant, `similarity="l2"` with `LSoftmax` differs from
    `"dot"` only through the patterns' norms and a term $\tfrac12\lVert g\rVert^2$.)
    That term already pulls the state towards the patterns: on a leaky `LIdentity`
    layer, whose energy adds another $\tfrac12\lVert x\rVert^2$, the fixed points sit
    at *half* the softmax-weighted patterns, $x = \tfrac12\sum_\mu p_\mu\xi_\mu$;
    descend the memory's own energy to retrieve the patterns themselves.

    **Arguments:**

    - `patterns`: the stored patterns, of shape `(K, *shape)` with `shape` the layer's
      shape (`(K, D)` for a vector layer). Learnable.
    - `lagrangian`: the Lagrangian of the (integrated-out) memory layer, a
      `hamux_lagr.Lagrangian` acting on the `K` similarities; its parameters are
      learnable.
    - `similarity`: `"dot"` (default) for $s_\mu = \langle\xi_\mu, g\rangle$, or
      `"l2"` for $s_\mu = -\tfrac12\lVert g - \xi_\mu\rVert^2$ (static).
    - `chunk_size`: `None` (default) to compute the $K$ similarities at once, or a
      positive int $c$ to stream the energy and its gradients over the patterns $c$
      at a time (static; see below).

    Streamed similarities (`chunk_size=c`): a batch of $B$ states against $K$
    patterns holds a $(K, B)$ matrix of similarities; with a chunk size, the energy
    walks over the patterns $c$ at a time in a `jax.checkpoint`-ed `lax.scan`,
    keeping running statistics only (an online log-sum-exp for `LSoftmax`,
    `LSoftmaxUnstable` and `LGhostmax`; a running sum for the separable `LIdentity`,
    `LRelu`, `LRepu`, `LExp`, `LRexp`, `LTanh`, `LSigmoid` and for `LLogSumReLU`),
    so that peak memory is $O(B \times c)$, in the energy, in its gradient in the
    state (one pass, two products per chunk, like the unchunked memory) and under
    `jax.grad` in the patterns and the Lagrangian's parameters (the chunks'
    similarities are recomputed, not stored). The numbers equal the unchunked
    memory's to float rounding; `K` need not be a multiple of `c` (a `c` that
    divides `K` keeps sharded patterns local), and `c >= K` is the unchunked memory.
    The Lagrangian's class declares its reduction over the memories (its class
    variable `streaming`, a `hamux_lagr.StreamedReduction`): your own Lagrangian opts
    in with `streaming = hamux_lagr.StreamedSum()` (a sum over the memories) or
    `hamux_lagr.StreamedLogSumExp()`. Lagrangians that couple all the memories
    (`LSparsemax`, `LEntmax`, `LNormmax`, `LLayerNorm`, `LSphericalNorm`), those that
    declare nothing (a subclass with its own `__call__` does not inherit its parent's
    declaration) and Lagrangian parameters that are not scalars are refused with a
    `ValueError`.
    `similarities(g)` still returns all $K$ of them. See the "Scaling out" page of
    the documentation.

    Token-wise: on a layer of tokens (state of shape `(N, D)` with patterns of shape
    `(K, D)`), each token meets the memory on its own and the energies add up, as in
    the Energy Transformer's Hopfield module: `DenseMemory(patterns, LRelu())`.
    """

    patterns: Float[Array, "K ..."]
    lagrangian: Lagrangian
    similarity: str = eqx.field(static=True)
    chunk_size: int | None = eqx.field(static=True)

    def __init__(
        self,
        patterns: ArrayLike,
        lagrangian: Lagrangian,
        similarity: str = "dot",
        chunk_size: SizeLike | None = None,
    ):
        if similarity not in ("dot", "l2"):
            raise ValueError(
                "`similarity` must be 'dot' or 'l2' in `DenseMemory`, got "
                f"{similarity!r}."
            )
        self.similarity = similarity
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
        if chunk_size is not None:
            chunk_size = static_int(
                chunk_size,
                "chunk_size",
                "DenseMemory",
                lower=1,
                hint="It is the number of patterns whose similarities are held at "
                "once; pass `None` to hold all of them.",
            )
            check_chunkable(lagrangian, "DenseMemory")
        self.chunk_size = chunk_size

    def _token_shape(self, g: Array) -> tuple[int, ...]:
        """The leading (token) axes of `g` before the pattern shape; `()` for one
        pattern-shaped activation. Raises for any other shape."""
        shape = self.patterns.shape[1:]
        lead = g.ndim - len(shape)
        if lead >= 0 and g.shape[lead:] == shape:
            return g.shape[:lead]
        raise ValueError(
            f"`DenseMemory` with `patterns` of shape {self.patterns.shape} stores "
            f"patterns of shape {shape}, but got activations of shape {g.shape}; the "
            f"activations must have the patterns' shape {shape}, or be tokens of it, "
            f"shape (num_tokens, {', '.join(map(str, shape))})."
        )

    def _similarities(self, g: Array) -> Array:
        """The `K` similarities of one pattern-shaped activation."""
        # Patterns first: under `jax.vmap` a batch's similarities come out as
        # (K, batch), the layout of `patterns @ queries.T`, which XLA's CPU matmuls
        # run about 10% faster than (batch, K) (see `benchmarks/bench_memory.py`).
        axes = tuple(range(g.ndim))
        dims = ((tuple(a + 1 for a in axes), axes), ((), ()))
        patterns = self.patterns.astype(g.dtype)
        if self.similarity == "dot":
            return lax.dot_general(patterns, g, dims)
        # -|g - xi|^2 / 2 = <xi, g> - |xi|^2 / 2 - |g|^2 / 2, as ONE product of the
        # patterns augmented with (|xi|^2, 1) and the activations with
        # (-1/2, -|g|^2 / 2): a `jax.vmap` batch then keeps the (K, batch) layout of
        # the overlaps (adding the per-pattern and per-sample terms separately would
        # make vmap transpose it), and the augmented patterns do not depend on the
        # state, so XLA computes them once per loop.
        flat = patterns.reshape(patterns.shape[0], -1)
        ones = jnp.ones((flat.shape[0], 1), g.dtype)
        aug_patterns = jnp.concatenate(
            [flat, jnp.sum(flat * flat, axis=1, keepdims=True), ones], axis=1
        )
        v = g.reshape(-1)
        half = jnp.asarray(-0.5, g.dtype)
        aug_g = jnp.concatenate([v, half[None], (half * jnp.sum(v * v))[None]])
        return lax.dot_general(aug_patterns, aug_g, (((1,), (0,)), ((), ())))

    def _token_similarities(self, flat: Array) -> Array:
        """The `(N, K)` similarities of `N` pattern-shaped tokens, tokens first: one
        product `tokens @ patterns.T`, as the Energy Transformer computes `g @ Xi`
        (a `jax.vmap` of `_similarities` would compute `(K, N)` and transpose)."""
        n, k = flat.shape[0], self.patterns.shape[0]
        patterns = self.patterns.astype(flat.dtype).reshape(k, -1)
        tokens = flat.reshape(n, -1)
        dims = (((1,), (1,)), ((), ()))
        if self.similarity == "dot":
            return lax.dot_general(tokens, patterns, dims)
        # -|g - xi|^2 / 2 as one product of augmented tokens and patterns (above).
        half = jnp.asarray(-0.5, flat.dtype)
        aug_patterns = jnp.concatenate(
            [
                patterns,
                jnp.sum(patterns * patterns, axis=1, keepdims=True),
                jnp.ones((k, 1), flat.dtype),
            ],
            axis=1,
        )
        aug_tokens = jnp.concatenate(
            [
                tokens,
                jnp.full((n, 1), half),
                half * jnp.sum(tokens * tokens, axis=1, keepdims=True),
            ],
            axis=1,
        )
        return lax.dot_general(aug_tokens, aug_patterns, dims)

    def similarities(self, g: Float[AnyArray, "..."]) -> Float[Array, "*tokens K"]:
        r"""The similarities of the activations to each stored pattern.

        **Arguments:**

        - `g`: the layer's activations, of shape `patterns.shape[1:]`, or tokens of
          it, of shape `(N, *patterns.shape[1:])` (any number of leading axes).

        **Returns:**

        The `K` similarities (per token: shape `(N, K)`), the memory layer's state:
        the overlaps $\langle\xi_\mu, g\rangle$ (`similarity="dot"`), or
        $-\tfrac12\lVert g - \xi_\mu\rVert^2$ (`similarity="l2"`).
        """
        (g,) = as_activations("DenseMemory", g=g)
        tokens = self._token_shape(g)
        if not tokens:
            return self._similarities(g)
        flat = g.reshape(-1, *self.patterns.shape[1:])
        sims = self._token_similarities(flat)
        return sims.reshape(*tokens, sims.shape[-1])

    def __call__(self, g: Float[AnyArray, "..."]) -> Scalar:
        r"""The energy $-\mathcal{L}(s(g))$ of the similarities $s$.

        Given tokens (activations of shape `(N, *patterns.shape[1:])`), each token
        meets the memory on its own and the energies add up,
        $E = -\sum_n \mathcal{L}(s(g_n))$: the Hopfield module of the Energy
        Transformer (Hoover et al. 2023) with `LRelu()`.

        **Arguments:**

        - `g`: the layer's activations, of shape `patterns.shape[1:]`, or tokens of
          it (leading axes).

        **Returns:**

        The scalar energy.
        """
        (g,) = as_activations("DenseMemory", g=g)
        tokens = self._token_shape(g)
        if not tokens:
            return self._energy(g)
        flat = g.reshape(-1, *self.patterns.shape[1:])
        if self.chunk_size is None or self.chunk_size >= self.patterns.shape[0]:
            sims = self._token_similarities(flat)
            energies = jax.vmap(lambda s: unchecked_call(self.lagrangian, s))(sims)
            return -jnp.sum(energies)
        return jnp.sum(jax.vmap(self._energy)(flat))

    def _energy(self, g: Array) -> Array:
        """The energy of one pattern-shaped activation."""
        if self.chunk_size is None or self.chunk_size >= self.patterns.shape[0]:
            # One chunk holds every pattern: nothing to stream.
            return -unchecked_call(self.lagrangian, self._similarities(g))
        return streamed_energy(
            self.lagrangian,
            self.patterns,
            g,
            chunk_size=self.chunk_size,
            similarity=self.similarity,
        )

    @classmethod
    def random(
        cls,
        num_memories: SizeLike,
        shape: ShapeLike,
        lagrangian: Lagrangian,
        *,
        key: PRNGKeyArray,
        similarity: str = "dot",
        chunk_size: SizeLike | None = None,
        dtype=None,
    ) -> "DenseMemory":
        r"""A `DenseMemory` with random unit-norm patterns.

        Each pattern is a standard normal sample divided by its norm.

        **Arguments:**

        - `num_memories`: the number of patterns $K$.
        - `shape`: the layer's shape (an int for a vector layer).
        - `lagrangian`: the memory Lagrangian, e.g. `LSoftmax(beta=10.0)`.
        - `key`: a JAX PRNG key (keyword-only).
        - `similarity`: `"dot"` or `"l2"`, as in `DenseMemory`.
        - `chunk_size`: `None` or a positive int, as in `DenseMemory`.
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
        return cls(xi, lagrangian, similarity, chunk_size)
