r"""`HopfieldPooling`: learned state patterns (queries) attending over the input."""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PRNGKeyArray, Shaped

from .._lagrangians.base import Lagrangian
from . import _config as cfg
from ._hopfield import Hopfield, hopfield_arguments
from ._report import HopfieldSolution
from ._torch import from_state_dict, hopfield_entries, to_state_dict, weights_entry


class HopfieldPooling(eqx.Module):
    r"""Hopfield pooling (Ramsauer et al. 2020): `quantity` learned state patterns
    attend over the stored patterns of one sample, whose retrieved patterns are
    concatenated: a set of `S` inputs becomes one vector. hopfield-layers'
    `HopfieldPooling`, one sample per call.

    The arguments are `Hopfield`'s (see there), plus:

    - `quantity`: the number of learned state patterns (queries).
    - `trainable`: whether they are trained (`False` stops their gradient).
    - `key`: a JAX PRNG key (keyword-only); the state patterns start as
      normal(0, 0.02).

    Unlike hopfield-layers' pooling layer, it takes the LayerNorm `eps` arguments
    (`normalize_*_eps`), as `Hopfield` does.
    """

    hopfield: Hopfield
    pooling_weights: Float[Array, "quantity d"]
    quantity: int = eqx.field(static=True)
    trainable: bool = eqx.field(static=True)

    def __init__(
        self,
        input_size: int,
        hidden_size: int | None = None,
        output_size: int | None = None,
        pattern_size: int | None = None,
        num_heads: int = 1,
        scaling: float | Sequence[float] | ArrayLike | None = None,
        update_steps_max: int | Sequence[int | None] | None = 0,
        update_steps_eps: float | Sequence[float] | ArrayLike = 1e-4,
        normalize_stored_pattern: bool = True,
        normalize_stored_pattern_affine: bool = True,
        normalize_stored_pattern_eps: float = 1e-5,
        normalize_state_pattern: bool = True,
        normalize_state_pattern_affine: bool = True,
        normalize_state_pattern_eps: float = 1e-5,
        normalize_pattern_projection: bool = True,
        normalize_pattern_projection_affine: bool = True,
        normalize_pattern_projection_eps: float = 1e-5,
        normalize_hopfield_space: bool = False,
        normalize_hopfield_space_affine: bool = False,
        normalize_hopfield_space_eps: float = 1e-5,
        stored_pattern_as_static: bool = False,
        state_pattern_as_static: bool = False,
        pattern_projection_as_static: bool = False,
        pattern_projection_as_connected: bool = False,
        stored_pattern_size: int | None = None,
        pattern_projection_size: int | None = None,
        association_activation: str | None = None,
        dropout: float = 0.0,
        input_bias: bool = True,
        concat_bias_pattern: bool = False,
        add_zero_association: bool = False,
        disable_out_projection: bool = False,
        lagrangian: Lagrangian | None = None,
        quantity: int = 1,
        trainable: bool = True,
        *,
        key: PRNGKeyArray,
    ):
        where = "HopfieldPooling"
        hkey, wkey = jax.random.split(key)
        self.hopfield = Hopfield(**hopfield_arguments(locals()), key=hkey)
        self.quantity = cfg.required_size(quantity, "quantity", where)
        self.trainable = cfg.flag(trainable, "trainable", where)
        size = self.hopfield.hidden_size if state_pattern_as_static else input_size
        dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
        self.pooling_weights = 0.02 * jax.random.normal(
            wkey, (self.quantity, size or input_size), dtype
        )

    def _queries(self) -> Array:
        w = self.pooling_weights
        return w if self.trainable else jax.lax.stop_gradient(w)

    def retrieve(
        self,
        stored: Shaped[ArrayLike, "S d_stored"],
        *,
        stored_mask: Shaped[ArrayLike, " S"] | None = None,
        key: PRNGKeyArray | None = None,
        inference: bool | None = None,
    ) -> HopfieldSolution:
        r"""As `__call__`, with the association and the report of the update
        steps (`Hopfield.retrieve`); `output` is `(quantity, out_dim)`, not yet
        flattened."""
        stored = cfg.features(stored, None, "stored", "HopfieldPooling")
        queries = self._queries().astype(stored.dtype)
        return self.hopfield.retrieve(
            queries,
            stored,
            stored,
            stored_mask=stored_mask,
            key=key,
            inference=inference,
        )

    def __call__(
        self,
        stored: Shaped[ArrayLike, "S d_stored"],
        *,
        stored_mask: Shaped[ArrayLike, " S"] | None = None,
        key: PRNGKeyArray | None = None,
        inference: bool | None = None,
    ) -> Float[Array, " out"]:
        r"""Pools one sample's set of patterns.

        **Arguments:**

        - `stored`: the patterns to pool, shape `(S, input_size)` (stored patterns
          and pattern projections).
        - `stored_mask`: `(S,)` mask, True / non-zero = may be attended to.
        - `key`, `inference`: dropout, as in `Hopfield`.

        **Returns:**

        Shape `(quantity * out_dim,)`.
        """
        out = self.retrieve(
            stored, stored_mask=stored_mask, key=key, inference=inference
        ).output
        return out.reshape(-1)

    def association_matrix(
        self,
        stored: Shaped[ArrayLike, "S d_stored"],
        *,
        stored_mask: Shaped[ArrayLike, " S"] | None = None,
    ) -> Float[Array, "H quantity S2"]:
        r"""The final association, shape `(num_heads, quantity, S)`."""
        stored = cfg.features(stored, None, "stored", "HopfieldPooling")
        queries = self._queries().astype(stored.dtype)
        return self.hopfield.association_matrix(
            queries, stored, stored, stored_mask=stored_mask
        )

    @classmethod
    def from_torch_state_dict(cls, state_dict, **config) -> "HopfieldPooling":
        r"""The layer of a hopfield-layers `HopfieldPooling`, from its
        `state_dict()` (keys `pooling_weights`, `hopfield.*`) and the keyword
        arguments it was built with; see `Hopfield.from_torch_state_dict`."""
        config.pop("batch_first", None)
        layer = cls(**config, key=jax.random.key(0))
        return from_state_dict(layer, state_dict, _entries(layer))

    def to_torch_state_dict(self) -> dict:
        r"""The parameters under hopfield-layers' keys, as NumPy arrays."""
        return to_state_dict(self, _entries(self))


def _entries(layer: HopfieldPooling):
    return weights_entry(layer, "pooling_weights", "pooling_weights") + (
        hopfield_entries(layer.hopfield, ("hopfield",), "hopfield.")
    )
