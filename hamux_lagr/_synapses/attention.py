r"""The energy attention of the Energy Transformer (Hoover et al. 2023)."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import AnyArray, RealLike, Scalar, SizeLike
from .._validation import (
    check_key,
    check_nonempty,
    float_dtype,
    learnable,
    static_float,
    static_int,
)
from .base import as_activations, Synapse


class AttentionSynapse(Synapse):
    r"""Multi-head energy attention over token-shaped activations (Hoover et al. 2023).

    For queries from tokens $g \in \mathbb{R}^{N\times D}$ and keys from tokens
    $g' \in \mathbb{R}^{M\times D}$ (by default $g' = g$, self-attention),

    $$Q_{hn} = W^Q_h g_n,\quad K_{hm} = W^K_h g'_m,\qquad
    E(g, g') = -\frac{1}{\beta}\sum_{h}\sum_{n=1}^{N}
    \log\sum_{m=1}^{M} e^{\beta\,\langle Q_{hn}, K_{hm}\rangle}.$$

    Its negative gradient is an attention update in which every token is both a query
    and a key, so the tokens' dynamics descend one energy. Unlike the Energy
    Transformer paper, the sum over keys includes the query's own token ($m = n$);
    mask it yourself by subclassing `hamux_lagr.Synapse` if you need the exact form.

    In a `hamux_lagr.HAM` a connection with one layer gives self-attention; a
    connection with two layers `(queries, keys)` gives cross-attention.

    **Arguments:**

    - `Wq`: the query projections, of shape `(num_heads, head_dim, dim)`. Learnable.
    - `Wk`: the key projections, of the same shape. Learnable.
    - `beta`: the inverse temperature, a positive Python number (static); by default
      `1 / sqrt(head_dim)`.
    """

    Wq: Float[Array, "heads head_dim dim"]
    Wk: Float[Array, "heads head_dim dim"]
    beta: float = eqx.field(static=True)

    def __init__(self, Wq: ArrayLike, Wk: ArrayLike, beta: RealLike | None = None):
        self.Wq = learnable(Wq, "Wq", "AttentionSynapse", ndim=3)
        self.Wk = learnable(Wk, "Wk", "AttentionSynapse", ndim=3)
        check_nonempty(self.Wq, "Wq", "AttentionSynapse")
        if self.Wq.shape != self.Wk.shape:
            raise ValueError(
                "`Wq` and `Wk` must have the same shape (num_heads, head_dim, dim) in "
                f"`AttentionSynapse`, got {self.Wq.shape} and {self.Wk.shape}."
            )
        if beta is None:
            beta = 1 / math.sqrt(self.Wq.shape[1])
        self.beta = static_float(
            beta,
            "beta",
            "AttentionSynapse",
            hint="Pass e.g. `beta=1 / sqrt(head_dim)` (the default).",
        )

    def __call__(
        self,
        g: Float[AnyArray, "N dim"],
        g_keys: Float[AnyArray, "M dim"] | None = None,
    ) -> Scalar:
        r"""The attention energy.

        **Arguments:**

        - `g`: the query tokens' activations, of shape `(N, dim)`.
        - `g_keys`: the key tokens' activations, of shape `(M, dim)`; by default `g`
          (self-attention).

        **Returns:**

        The scalar energy.
        """
        if g_keys is None:
            (g,) = as_activations("AttentionSynapse", g=g)
            g_keys = g
        else:
            g, g_keys = as_activations("AttentionSynapse", g=g, g_keys=g_keys)
        dim = self.Wq.shape[2]
        for name, tokens in (("g", g), ("g_keys", g_keys)):
            if tokens.ndim != 2 or tokens.shape[1] != dim:
                raise ValueError(
                    f"`AttentionSynapse` with projections of shape {self.Wq.shape} "
                    f"expects `{name}` of shape (num_tokens, {dim}), got {tokens.shape}."
                )
        q = jnp.einsum("hyd,nd->hny", self.Wq.astype(g.dtype), g)
        k = jnp.einsum("hyd,md->hmy", self.Wk.astype(g.dtype), g_keys)
        scores = jnp.einsum("hny,hmy->hnm", q, k)
        return -jnp.sum(jax.nn.logsumexp(self.beta * scores, axis=-1)) / self.beta

    @classmethod
    def random(
        cls,
        dim: SizeLike,
        num_heads: SizeLike = 1,
        head_dim: SizeLike | None = None,
        *,
        key: PRNGKeyArray,
        beta: RealLike | None = None,
        dtype=None,
    ) -> "AttentionSynapse":
        r"""An `AttentionSynapse` with normal random projections.

        $W^Q, W^K \sim \mathcal{N}(0, 1/\text{dim})$.

        **Arguments:**

        - `dim`: the tokens' dimension.
        - `num_heads`: the number of heads.
        - `head_dim`: each head's query/key dimension; by default
          `max(dim // num_heads, 1)`.
        - `key`: a JAX PRNG key (keyword-only).
        - `beta`: the inverse temperature; by default `1 / sqrt(head_dim)`.
        - `dtype`: the floating dtype; by default JAX's default float.

        **Returns:**

        An `AttentionSynapse` with projections of shape `(num_heads, head_dim, dim)`.
        """
        where = "AttentionSynapse.random"
        check_key(key, where)
        dim = static_int(dim, "dim", where, lower=1)
        num_heads = static_int(num_heads, "num_heads", where, lower=1)
        if head_dim is None:
            head_dim = max(dim // num_heads, 1)
        head_dim = static_int(head_dim, "head_dim", where, lower=1)
        dtype = float_dtype(dtype)
        kq, kk = jax.random.split(key)
        shape = (num_heads, head_dim, dim)
        std = 1 / math.sqrt(dim)
        Wq = std * jax.random.normal(kq, shape, dtype)
        Wk = std * jax.random.normal(kk, shape, dtype)
        return cls(Wq, Wk, beta)
