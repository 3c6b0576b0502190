r"""Synapses: learnable interaction energies between the activations of neuron layers.

A synapse is an Equinox module whose `__call__(*gs)` takes the activations of the layers
it connects (one sample each) and returns a scalar energy. A synapse with `k` inputs is
a `k`-body interaction; the total energy of a `hamux_lagr.HAM` sums the synapses'
energies and the layers' energies.

This file holds the abstract `Synapse`, the dense `LinearSynapse` and the `BiasSynapse`,
and the helpers the other synapse files share. The dense associative memory, the
convolutional and pooling synapses and the attention synapse live in `_dense_memory.py`,
`_conv.py` and `_attention.py`.
"""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PRNGKeyArray

from ._custom_types import Scalar
from ._validation import default_float_dtype


# ----------------------------------------------------------------------------------
# helpers shared by the synapse files
# ----------------------------------------------------------------------------------


#: Activations as synapses accept them: JAX or NumPy arrays.
AnyArray = Array | np.ndarray


def as_weight(value: object, name: str, where: str, ndim: int | None = None) -> Array:
    """A learnable parameter as an inexact JAX array of the expected rank.

    Inexact arrays keep their dtype; Python numbers and integer arrays become the
    default float dtype.
    """
    if value is None or isinstance(value, (str, bytes, bool)):
        raise TypeError(
            f"`{name}` must be an array in `{where}`, got {type(value).__name__} "
            f"{value!r}."
        )
    try:
        arr = jnp.asarray(value)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"`{name}` must be an array in `{where}`, got {type(value).__name__}."
        ) from e
    if getattr(arr, "weak_type", False) or not jnp.issubdtype(arr.dtype, jnp.inexact):
        arr = jnp.asarray(arr, dtype=default_float_dtype())
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(
            f"`{name}` must have {ndim} dimension(s) in `{where}`, got shape "
            f"{arr.shape}."
        )
    return arr


def as_size(shape: object, name: str, where: str) -> int:
    """The number of neurons of a layer given as an int or a shape tuple."""
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(shape)  # pyright: ignore[reportArgumentType]
    except TypeError:
        dims = None
    if dims is None or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims
    ):
        raise TypeError(
            f"`{name}` must be a positive int or a tuple of positive ints in "
            f"`{where}`, got {shape!r}."
        )
    return math.prod(dims)


def as_pair(value: object, name: str, where: str) -> tuple[int, int]:
    """An int or a pair of positive ints, as a pair (for 2-D window sizes, strides)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        pair = tuple(value)  # pyright: ignore[reportArgumentType]
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair
    ):
        raise ValueError(
            f"`{name}` must be a positive int or a pair of positive ints in "
            f"`{where}`, got {value!r}."
        )
    return pair  # pyright: ignore[reportReturnType]


def check_key(key: object, where: str) -> None:
    """Raises a `TypeError` unless `key` looks like a JAX PRNG key."""
    if not isinstance(key, jax.Array):
        raise TypeError(
            f"`key` must be a JAX PRNG key in `{where}`, got {type(key).__name__}; "
            "pass `key=jax.random.key(0)`."
        )


def float_dtype(dtype) -> jnp.dtype:
    """The requested dtype, or JAX's default float dtype."""
    return jnp.dtype(default_float_dtype() if dtype is None else dtype)


# ----------------------------------------------------------------------------------
# the abstract synapse
# ----------------------------------------------------------------------------------


class Synapse(eqx.Module):
    r"""Abstract base class of synapses; subclass it for your own.

    A synapse is an interaction energy $E_\text{syn}(g_1, \dots, g_k)$ of the
    activations of the `k` layers it connects. A subclass implements
    `__call__(*gs)`, returning that scalar for one sample; its learnable parameters are
    ordinary array fields. The dynamics only need its gradient
    $\partial E_\text{syn}/\partial g_i$, which JAX computes.

    Any callable Equinox module returning a scalar works as a synapse in a
    `hamux_lagr.HAM`; subclassing `Synapse` documents the intent.

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


# ----------------------------------------------------------------------------------
# dense and bias synapses
# ----------------------------------------------------------------------------------


class LinearSynapse(Synapse):
    r"""A dense (bilinear) synapse between two layers, with an optional bias.

    $$E(g_1, g_2) = -\,g_1^\top W g_2 \;-\; b^\top g_2,$$

    with the activations flattened to vectors, $g_1 \in \mathbb{R}^{D_1}$,
    $g_2 \in \mathbb{R}^{D_2}$. Layer 2 receives the input current
    $-\partial E/\partial g_2 = W^\top g_1 + b$, layer 1 receives $W g_2$: the same
    weights act both ways, as in a Hopfield network or a restricted Boltzmann machine.
    With the rows of $W^\top$ holding stored patterns and a softmax hidden layer, this
    is the two-layer form of the modern Hopfield network (Krotov & Hopfield 2021).

    **Arguments:**

    - `W`: the weight matrix, of shape `(D1, D2)` with `D1`, `D2` the number of neurons
      of the first and second layer. Learnable.
    - `bias`: an optional bias of shape `(D2,)` on the second layer. Learnable.
    """

    W: Float[Array, "d1 d2"]
    bias: Float[Array, " d2"] | None

    def __init__(self, W: ArrayLike, bias: ArrayLike | None = None):
        self.W = as_weight(W, "W", "LinearSynapse", ndim=2)
        if bias is None:
            self.bias = None
        else:
            self.bias = as_weight(bias, "bias", "LinearSynapse", ndim=1)
            if self.bias.shape[0] != self.W.shape[1]:
                raise ValueError(
                    f"`bias` must have shape ({self.W.shape[1]},) to match `W` of shape "
                    f"{self.W.shape} in `LinearSynapse`, got {self.bias.shape}."
                )

    def __call__(
        self, g1: Float[AnyArray, "..."], g2: Float[AnyArray, "..."]
    ) -> Scalar:
        r"""The energy $-g_1^\top W g_2 - b^\top g_2$.

        **Arguments:**

        - `g1`: the first layer's activations, with `W.shape[0]` elements.
        - `g2`: the second layer's activations, with `W.shape[1]` elements.

        **Returns:**

        The scalar energy.
        """
        g1, g2 = jnp.asarray(g1), jnp.asarray(g2)
        d1, d2 = self.W.shape
        if g1.size != d1 or g2.size != d2:
            raise ValueError(
                f"`LinearSynapse` with `W` of shape {self.W.shape} connects layers of "
                f"{d1} and {d2} neurons, got activations of shapes {g1.shape} and "
                f"{g2.shape}; build it with `LinearSynapse.random({g1.shape}, "
                f"{g2.shape}, key=...)` or swap the layers in the connection."
            )
        v2 = g2.reshape(-1)
        energy = -jnp.dot(jnp.dot(g1.reshape(-1), self.W), v2)
        if self.bias is not None:
            energy = energy - jnp.dot(self.bias, v2)
        return energy

    @classmethod
    def random(
        cls,
        in_shape: int | tuple[int, ...],
        out_shape: int | tuple[int, ...],
        *,
        key: PRNGKeyArray,
        use_bias: bool = False,
        std: float | int | None = None,
        dtype=None,
    ) -> "LinearSynapse":
        r"""A `LinearSynapse` with normal random weights.

        $W_{ij} \sim \mathcal{N}(0, \sigma^2)$ with $\sigma = 1/\sqrt{D_1}$ by default,
        so that the input current $W^\top g_1$ has unit scale for unit activations;
        the bias (if any) starts at zero.

        **Arguments:**

        - `in_shape`: the first layer's shape (or number of neurons), `D1` neurons.
        - `out_shape`: the second layer's shape (or number of neurons), `D2` neurons.
        - `key`: a JAX PRNG key (keyword-only).
        - `use_bias`: whether to add a (zero-initialised) bias on the second layer.
        - `std`: the weights' standard deviation; by default `1 / sqrt(D1)`.
        - `dtype`: the floating dtype; by default JAX's default float.

        **Returns:**

        A `LinearSynapse` with `W` of shape `(D1, D2)`.
        """
        check_key(key, "LinearSynapse.random")
        d1 = as_size(in_shape, "in_shape", "LinearSynapse.random")
        d2 = as_size(out_shape, "out_shape", "LinearSynapse.random")
        dtype = float_dtype(dtype)
        std = 1 / math.sqrt(d1) if std is None else float(std)
        W = std * jax.random.normal(key, (d1, d2), dtype)
        return cls(W, jnp.zeros((d2,), dtype) if use_bias else None)


class BiasSynapse(Synapse):
    r"""A bias on one layer: $E(g) = -\langle b, g\rangle$.

    The layer receives the constant input current $b$.

    **Arguments:**

    - `bias`: the bias, of the layer's shape or broadcasting to it (e.g. `(C, 1, 1)`
      for one bias per channel of a `(C, H, W)` image). Learnable.
    """

    bias: Float[Array, "..."]

    def __init__(self, bias: ArrayLike):
        self.bias = as_weight(bias, "bias", "BiasSynapse")

    def __call__(self, g: Float[AnyArray, "..."]) -> Scalar:
        r"""The energy $-\langle b, g\rangle$.

        **Arguments:**

        - `g`: the layer's activations; `bias` must broadcast to its shape.

        **Returns:**

        The scalar energy.
        """
        g = jnp.asarray(g)
        try:
            fits = jnp.broadcast_shapes(self.bias.shape, g.shape) == g.shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                f"`BiasSynapse` with `bias` of shape {self.bias.shape} does not "
                f"broadcast to the layer's activations of shape {g.shape}; give a "
                "bias of the layer's shape."
            )
        return -jnp.sum(self.bias * g)

    @classmethod
    def random(
        cls,
        shape: int | tuple[int, ...],
        *,
        key: PRNGKeyArray,
        std: float | int = 0.1,
        dtype=None,
    ) -> "BiasSynapse":
        r"""A `BiasSynapse` with normal random entries, $b_i \sim \mathcal{N}(0,
        \sigma^2)$.

        **Arguments:**

        - `shape`: the layer's shape (an int for a vector layer).
        - `key`: a JAX PRNG key (keyword-only).
        - `std`: the standard deviation $\sigma$ (`0.0` gives a zero bias).
        - `dtype`: the floating dtype; by default JAX's default float.

        **Returns:**

        A `BiasSynapse` whose bias has shape `shape`.
        """
        check_key(key, "BiasSynapse.random")
        as_size(shape, "shape", "BiasSynapse.random")
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        return cls(float(std) * jax.random.normal(key, shape, float_dtype(dtype)))


__all__ = ["AnyArray", "BiasSynapse", "LinearSynapse", "Synapse"]
