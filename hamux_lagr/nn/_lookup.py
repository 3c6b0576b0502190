r"""`HopfieldLayer`: the input attending over learned stored patterns (a lookup)."""

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


class HopfieldLayer(eqx.Module):
    r"""A Hopfield lookup layer (Ramsauer et al. 2020): each state pattern of the
    input attends over `quantity` learned stored patterns, a learned memory that
    replaces a fully connected layer. hopfield-layers' `HopfieldLayer`, one sample
    per call.

    The arguments are `Hopfield`'s (see there), plus:

    - `quantity`: the number of learned stored patterns.
    - `lookup_weights_as_separated`: learn separate pattern projections (values,
      `target_weights`) instead of reusing the stored patterns.
    - `lookup_targets_as_trainable`: whether the separate targets are trained.
    - `trainable`: whether the stored patterns are trained (`False` stops their
      gradient).
    - `key`: a JAX PRNG key (keyword-only); the learned patterns start as
      normal(0, 0.02).

    Unlike hopfield-layers' lookup layer, it takes the LayerNorm `eps` arguments
    (`normalize_*_eps`), as `Hopfield` does.
    """

    hopfield: Hopfield
    lookup_weights: Float[Array, "quantity d"]
    target_weights: Float[Array, "quantity dt"] | None
    quantity: int = eqx.field(static=True)
    lookup_targets_as_trainable: bool = eqx.field(static=True)
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
        lookup_weights_as_separated: bool = False,
        lookup_targets_as_trainable: bool = True,
        trainable: bool = True,
        *,
        key: PRNGKeyArray,
    ):
        where = "HopfieldLayer"
        hkey, wkey = jax.random.split(key)
        self.hopfield = Hopfield(**hopfield_arguments(locals()), key=hkey)
        self.quantity = cfg.required_size(quantity, "quantity", where)
        self.trainable = cfg.flag(trainable, "trainable", where)
        self.lookup_targets_as_trainable = cfg.flag(
            lookup_targets_as_trainable, "lookup_targets_as_trainable", where
        )
        separated = cfg.flag(
            lookup_weights_as_separated, "lookup_weights_as_separated", where
        )
        hop = self.hopfield
        size = hop.hidden_size if stored_pattern_as_static else hop.stored_pattern_size
        size = size or input_size
        dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
        lkey, tkey = jax.random.split(wkey)
        self.lookup_weights = 0.02 * jax.random.normal(
            lkey, (self.quantity, size), dtype
        )
        if separated:
            tsize = size if pattern_projection_size is None else pattern_projection_size
            self.target_weights = 0.02 * jax.random.normal(
                tkey, (self.quantity, tsize), dtype
            )
        else:
            self.target_weights = None

    def _patterns(self, dtype) -> tuple[Array, Array]:
        stored = self.lookup_weights
        if not self.trainable:
            stored = jax.lax.stop_gradient(stored)
        if self.target_weights is None:
            return stored.astype(dtype), stored.astype(dtype)
        targets = self.target_weights
        if not self.lookup_targets_as_trainable:
            targets = jax.lax.stop_gradient(targets)
        return stored.astype(dtype), targets.astype(dtype)

    def retrieve(
        self,
        state: Shaped[ArrayLike, "L d_state"],
        *,
        key: PRNGKeyArray | None = None,
        inference: bool | None = None,
    ) -> HopfieldSolution:
        r"""As `__call__`, with the association and the report of the update
        steps (`Hopfield.retrieve`)."""
        state = cfg.features(state, None, "state", "HopfieldLayer")
        stored, targets = self._patterns(state.dtype)
        return self.hopfield.retrieve(
            state, stored, targets, key=key, inference=inference
        )

    def __call__(
        self,
        state: Shaped[ArrayLike, "L d_state"],
        *,
        key: PRNGKeyArray | None = None,
        inference: bool | None = None,
    ) -> Float[Array, "L out"]:
        r"""Looks each state pattern up in the learned memory.

        **Arguments:**

        - `state`: the state patterns, shape `(L, input_size)`.
        - `key`, `inference`: dropout, as in `Hopfield`.

        **Returns:**

        Shape `(L, out_dim)`.
        """
        return self.retrieve(state, key=key, inference=inference).output

    def association_matrix(
        self, state: Shaped[ArrayLike, "L d_state"]
    ) -> Float[Array, "H L quantity"]:
        r"""The final association, shape `(num_heads, L, quantity)`."""
        state = cfg.features(state, None, "state", "HopfieldLayer")
        stored, targets = self._patterns(state.dtype)
        return self.hopfield.association_matrix(state, stored, targets)

    @classmethod
    def from_torch_state_dict(cls, state_dict, **config) -> "HopfieldLayer":
        r"""The layer of a hopfield-layers `HopfieldLayer`, from its
        `state_dict()` (keys `lookup_weights`, `target_weights`, `hopfield.*`) and the keyword
        arguments it was built with; see `Hopfield.from_torch_state_dict`."""
        config.pop("batch_first", None)
        layer = cls(**config, key=jax.random.key(0))
        return from_state_dict(layer, state_dict, _entries(layer))

    def to_torch_state_dict(self) -> dict:
        r"""The parameters under hopfield-layers' keys, as NumPy arrays."""
        return to_state_dict(self, _entries(self))


def _entries(layer: HopfieldLayer):
    return (
        weights_entry(layer, "lookup_weights", "lookup_weights")
        + weights_entry(layer, "target_weights", "target_weights")
    ) + (hopfield_entries(layer.hopfield, ("hopfield",), "hopfield."))
