r"""The dense synapses: `LinearSynapse` (a weight matrix) and `BiasSynapse`."""

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import AnyArray, RealLike, Scalar, ShapeLike
from .._validation import (
    as_shape,
    check_key,
    check_nonempty,
    float_dtype,
    learnable,
    static_float,
)
from .base import as_activations, optional_bias, Synapse


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
        self.W = learnable(W, "W", "LinearSynapse", ndim=2)
        check_nonempty(self.W, "W", "LinearSynapse")
        self.bias = optional_bias(
            bias, self.W.shape[1], "LinearSynapse", per="column of `W`"
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
        g1, g2 = as_activations("LinearSynapse", g1=g1, g2=g2)
        d1, d2 = self.W.shape
        if g1.size != d1 or g2.size != d2:
            raise ValueError(
                f"`LinearSynapse` with `W` of shape {self.W.shape} connects layers of "
                f"{d1} and {d2} neurons, got activations of shapes {g1.shape} and "
                f"{g2.shape}; build it with `LinearSynapse.random({g1.shape}, "
                f"{g2.shape}, key=...)` or swap the layers in the connection."
            )
        v2 = g2.reshape(-1)
        energy = -jnp.dot(jnp.dot(g1.reshape(-1), self.W.astype(g1.dtype)), v2)
        if self.bias is not None:
            energy = energy - jnp.dot(self.bias.astype(g2.dtype), v2)
        return energy

    @classmethod
    def random(
        cls,
        in_shape: ShapeLike,
        out_shape: ShapeLike,
        *,
        key: PRNGKeyArray,
        use_bias: bool = False,
        std: RealLike | None = None,
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
        where = "LinearSynapse.random"
        check_key(key, where)
        d1 = math.prod(as_shape(in_shape, "in_shape", where, allow_zero=False))
        d2 = math.prod(as_shape(out_shape, "out_shape", where, allow_zero=False))
        dtype = float_dtype(dtype)
        if std is None:
            std = 1 / math.sqrt(d1)
        else:
            std = static_float(std, "std", where, inclusive=True)
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
        self.bias = learnable(bias, "bias", "BiasSynapse")
        check_nonempty(self.bias, "bias", "BiasSynapse")

    def __call__(self, g: Float[AnyArray, "..."]) -> Scalar:
        r"""The energy $-\langle b, g\rangle$.

        **Arguments:**

        - `g`: the layer's activations; `bias` must broadcast to its shape.

        **Returns:**

        The scalar energy.
        """
        (g,) = as_activations("BiasSynapse", g=g)
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
        return -jnp.sum(self.bias.astype(g.dtype) * g)

    @classmethod
    def random(
        cls,
        shape: ShapeLike,
        *,
        key: PRNGKeyArray,
        std: RealLike = 0.1,
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
        where = "BiasSynapse.random"
        check_key(key, where)
        shape = as_shape(shape, "shape", where, allow_zero=False)
        std = static_float(std, "std", where, inclusive=True)
        return cls(std * jax.random.normal(key, shape, float_dtype(dtype)))
