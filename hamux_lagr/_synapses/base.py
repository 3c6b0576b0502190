r"""Synapses: learnable interaction energies between the activations of neuron layers.

A synapse is an Equinox module whose `__call__(*gs)` takes the activations of the layers
it connects (one sample each) and returns a scalar energy. A synapse with `k` inputs is
a `k`-body interaction; the total energy of a `hamux_lagr.HAM` sums the synapses'
energies and the layers' energies.

This file holds the abstract `Synapse` and the helpers the other synapse files share;
each synapse family has a file of its own in this folder.
"""

import abc

import equinox as eqx
from jaxtyping import Array, Float

from .._custom_types import AnyArray, Scalar
from .._validation import (
    as_state,
    learnable,
)


def as_activations(where: str, **gs: object) -> tuple[Array, ...]:
    """The activations given to a synapse, as floating JAX arrays of one dtype.

    Each goes through `as_state` (integers and booleans promoted to the default float;
    complex, strings and `None` refused with a `TypeError`). Activations of different
    floating dtypes are a `TypeError`: a synapse computes in its activations' dtype and
    casts its parameters to it, and never mixes, say, float32 and float64 implicitly.
    """
    arrays = tuple(as_state(g, where, name) for name, g in gs.items())
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) > 1:
        shown = ", ".join(f"`{n}` {a.dtype}" for n, a in zip(gs, arrays))
        raise TypeError(
            f"The activations given to `{where}` must share one floating dtype, got "
            f"{shown}; give the connected layers states of one dtype (e.g. "
            "`x.astype(jnp.float32)`)."
        )
    return arrays


def optional_bias(bias: object, size: int, where: str, *, per: str) -> Array | None:
    """`None`, or a learnable bias vector of `size` entries, one `per` something."""
    if bias is None:
        return None
    arr = learnable(bias, "bias", where, ndim=1)
    if arr.shape != (size,):
        raise ValueError(
            f"`bias` must have shape ({size},), one entry per {per}, in `{where}`; got "
            f"{arr.shape}."
        )
    return arr


class Synapse(eqx.Module):
    r"""Abstract base class of synapses; subclass it for your own.

    A synapse is an interaction energy $E_\text{syn}(g_1, \dots, g_k)$ of the
    activations of the `k` layers it connects. A subclass implements
    `__call__(*gs)`, returning that scalar for one sample; its learnable parameters are
    ordinary array fields. The dynamics only need its gradient
    $\partial E_\text{syn}/\partial g_i$, which JAX computes.

    Any callable Equinox module returning a scalar works as a synapse in a
    `hamux_lagr.HAM`; subclassing `Synapse` documents the intent.

    The built-in synapses compute in their activations' floating dtype and cast their
    parameters to it (as the Lagrangians do): float32 weights given float64
    activations give a float64 energy, and the gradients keep each argument's dtype.
    The activations of one call must share a dtype (a `TypeError` otherwise); complex
    activations or weights are a `TypeError`. Learnable arrays must be non-empty and
    finite: a NaN or inf entry is a `ValueError` at construction, or, for a synapse
    built from traced arrays under `jax.jit`, an `eqx.error_if` error when it runs.

    !!! example

        ```python
        class ThreeBody(hamux_lagr.Synapse):
            W: jax.Array  # shape (D1, D2, D3)

            def __call__(self, g1, g2, g3):
                return -jnp.einsum("ijk,i,j,k->", self.W, g1, g2, g3)
        ```
    """

    @abc.abstractmethod
    def __call__(self, *gs: Float[AnyArray, "..."]) -> Scalar:
        r"""The scalar energy of the activations `gs`, one array per connected layer."""
        raise NotImplementedError
