r"""The Energy Transformer's attention energy with each token's own key left out.

$$E(g) = -\frac{1}{\beta}\sum_h\sum_{n}\log\sum_{m \ne n}
e^{\beta\langle W^Q_h g_n,\, W^K_h g_m\rangle}$$

(Hoover et al. 2023, the form of their paper). `hamux_lagr.AttentionSynapse` keeps the
term $m = n$ (as the authors' released image model was trained); this synapse is
what `ImageEnergyTransformer(prevent_self_attention=True)` uses.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import AnyArray
from .._synapses.base import as_activations, Synapse


class NoSelfAttention(Synapse):
    r"""Multi-head energy self-attention without the diagonal (Hoover et al. 2023).

    **Arguments:**

    - `Wq`: the query projections, of shape `(num_heads, head_dim, dim)`. Learnable.
    - `Wk`: the key projections, of the same shape. Learnable.
    - `beta`: the inverse temperature, a positive Python float (static).
    """

    Wq: Float[Array, "heads head_dim dim"]
    Wk: Float[Array, "heads head_dim dim"]
    beta: float = eqx.field(static=True)

    def __check_init__(self):
        if self.Wq.ndim != 3 or self.Wq.shape != self.Wk.shape:
            raise ValueError(
                "`Wq` and `Wk` must have one shape (num_heads, head_dim, dim), got "
                f"{self.Wq.shape} and {self.Wk.shape}."
            )
        if not self.beta > 0:
            raise ValueError(f"`beta` must be positive, got {self.beta}.")

    def __call__(self, g: Float[AnyArray, "N dim"]) -> Float[Array, ""]:
        r"""The attention energy of the tokens `g`, of shape `(N, dim)` with $N \ge 2$
        (a token needs another token to attend to)."""
        (g,) = as_activations("NoSelfAttention", g=g)
        if g.ndim != 2 or g.shape[1] != self.Wq.shape[2] or g.shape[0] < 2:
            raise ValueError(
                f"`NoSelfAttention` with projections of shape {self.Wq.shape} expects "
                f"`g` of shape (num_tokens >= 2, {self.Wq.shape[2]}), got {g.shape}."
            )
        q = jnp.einsum("hyd,nd->hny", self.Wq.astype(g.dtype), g)
        k = jnp.einsum("hyd,md->hmy", self.Wk.astype(g.dtype), g)
        scores = self.beta * jnp.einsum("hny,hmy->hnm", q, k)
        others = ~jnp.eye(g.shape[0], dtype=bool)
        # Scores of a token with itself drop out: -inf weighs nothing in the
        # log-sum-exp, and its gradient there is 0 (a softmax weight of 0).
        scores = jnp.where(others, scores, -jnp.inf)
        return -jnp.sum(jax.nn.logsumexp(scores, axis=-1)) / self.beta
