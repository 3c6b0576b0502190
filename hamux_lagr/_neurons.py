r"""Neuron layers: a Lagrangian plus the shape of the state it acts on.

A layer with state $x$ and Lagrangian $\mathcal{L}$ has activations
$g = \nabla\mathcal{L}(x)$ and energy $E(x) = \langle x, g\rangle - \mathcal{L}(x)$, the
Legendre transform of $\mathcal{L}$ (Krotov & Hopfield 2021; Hoover et al. 2022).
"""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._custom_types import Scalar, StateLike
from ._lagrangians.base import (
    Lagrangian,
    unchecked_call,
    unchecked_energy_and_activation,
)
from ._validation import (
    as_shape,
    as_state,
    check_key,
    float_dtype,
    static_float,
    static_int,
)


class NeuronLayer(eqx.Module):
    r"""A layer of neurons: a Lagrangian, the shape of its state and a time constant.

    The layer's state $x$ (of shape `shape`) is the neurons' internal state; its
    *activations* are $g = \nabla_x\mathcal{L}(x)$ and its *energy* is the Legendre
    transform

    $$E_\text{layer}(x) = \langle x, g\rangle - \mathcal{L}(x),$$

    whose gradient with respect to the activations is the state itself,
    $\partial E_\text{layer}/\partial g = x$. In a `hamux_lagr.HAM` the layer
    evolves as $\tau\,\dot x = -\partial E/\partial g$ (Krotov & Hopfield 2021,
    Hoover et al. 2022).

    A layer acts on one sample (a state of shape `shape`); batches go through
    `jax.vmap`, e.g. `jax.vmap(layer.energy)(xs)`. Only `init` makes a batch.

    **Arguments:**

    - `lagrangian`: a `hamux_lagr.Lagrangian`, e.g. `LSoftmax(beta=2.0)`. Its
      parameters are learnable.
    - `shape`: the shape of one sample's state, an int or a tuple of ints (Python or
      NumPy); a dimension may be 0 (an empty layer: energy 0).
    - `tau`: the layer's time constant, a positive Python number (static). Smaller is
      faster: a layer with a small `tau` relaxes quickly to its input.
    - `leak`: whether the layer's own energy is part of a HAM's total energy (static,
      default `True`). With `leak=False` it is left out, and so is its $-x$ term in the
      dynamics: $\tau\,\dot x = -\partial E_\text{synapses}/\partial g$, the update of
      the Energy Transformer (Hoover et al. 2023), e.g. a layer-norm layer of tokens.
      The energy still never rises along the dynamics, since
      $\dot E = -\tau^{-1}\langle \partial E/\partial g, \nabla^2\mathcal{L}\,
      \partial E/\partial g\rangle \le 0$ for a convex Lagrangian. (The layer's
      `energy` method still returns its Legendre energy; the HAM leaves it out.)

    !!! example

        ```python
        layer = hamux_lagr.NeuronLayer(hamux_lagr.LSoftmax(beta=2.0), shape=(10,))
        x = layer.init(key=jax.random.key(0))   # normal samples; zeros without a key
        layer.activations(x)                    # softmax(2 x)
        layer.energy(x)                         # <x, g> - L(x)
        jax.vmap(layer.energy)(layer.init(batch_size=8))  # a batch: shape (8,)
        ```
    """

    lagrangian: Lagrangian
    shape: tuple[int, ...] = eqx.field(static=True)
    tau: float = eqx.field(static=True)
    leak: bool = eqx.field(static=True)

    def __init__(
        self,
        lagrangian: Lagrangian,
        shape: int | np.integer | Sequence[int | np.integer],
        tau: float | int | np.floating | np.integer = 1.0,
        leak: bool | np.bool_ = True,
    ):
        if not isinstance(lagrangian, Lagrangian):
            raise TypeError(
                "`lagrangian` must be a `hamux_lagr.Lagrangian` (e.g. "
                f"`LSoftmax(beta=1.0)`), got {type(lagrangian).__name__}; wrap a "
                "function by subclassing `hamux_lagr.Lagrangian`."
            )
        self.lagrangian = lagrangian
        self.shape = as_shape(shape, "shape", "NeuronLayer")
        self.tau = static_float(
            tau, "tau", "NeuronLayer", hint="Pass e.g. `tau=1.0` (a time constant)."
        )
        if not isinstance(leak, (bool, np.bool_)):
            raise TypeError(
                f"`leak` must be True or False in `NeuronLayer`, got {leak!r}."
            )
        self.leak = bool(leak)

    def activations(self, x: StateLike) -> Float[Array, "..."]:
        r"""The activations $g = \partial\mathcal{L}/\partial x$.

        **Arguments:**

        - `x`: one sample's state, of shape `self.shape`.

        **Returns:**

        The activations, of `x`'s shape and floating dtype.
        """
        x = as_state(x, "NeuronLayer.activations")
        if x.size == 0:
            return x
        return self.lagrangian.activation(x)

    def energy(self, x: StateLike) -> Scalar:
        r"""The layer's energy, the Legendre transform of its Lagrangian.

        $$E_\text{layer}(x) = \langle x, g(x)\rangle - \mathcal{L}(x).$$

        **Arguments:**

        - `x`: one sample's state, of shape `self.shape`.

        **Returns:**

        The scalar energy; 0 for an empty layer (a state with a zero-size
        dimension), whose Lagrangian is not evaluated.
        """
        return self.energy_and_activations(x)[0]

    def energy_and_activations(
        self, x: StateLike
    ) -> tuple[Scalar, Float[Array, "..."]]:
        r"""The layer's energy and its activations, from one pass.

        $$E_\text{layer}(x) = \langle x, g\rangle - \mathcal{L}(x), \qquad
        g = \nabla\mathcal{L}(x),$$

        as `hamux_lagr.Lagrangian.energy_and_activation` computes them (the one place
        the Legendre transform is written).

        **Arguments:**

        - `x`: one sample's state, of shape `self.shape`.

        **Returns:**

        A pair `(energy, activations)`: the scalar energy and the activations, of
        `x`'s shape.
        """
        x = as_state(x, "NeuronLayer.energy")
        if x.size == 0:  # an empty layer: no neurons, no energy
            return jnp.zeros((), x.dtype), x
        return self.lagrangian.energy_and_activation(x)

    def _activations(self, x: Array) -> Array:
        # Unchecked, on a prepared state: for the loops of the solves.
        if x.size == 0:
            return x
        return jax.grad(lambda y: unchecked_call(self.lagrangian, y))(x)

    def _energy_and_activations(self, x: Array) -> tuple[Array, Array]:
        # Unchecked, on a prepared state: for the loops of the solves.
        if x.size == 0:
            return jnp.zeros((), x.dtype), x
        return unchecked_energy_and_activation(self.lagrangian, x)

    def init(
        self,
        batch_size: int | np.integer | None = None,
        key: PRNGKeyArray | None = None,
        *,
        dtype=None,
    ) -> Float[Array, "..."]:
        r"""An initial state: zeros, or standard normal samples when a key is given.

        **Arguments:**

        - `batch_size`: if given, a leading batch axis of this size is added.
        - `key`: a JAX PRNG key. Without one the state is all zeros.
        - `dtype`: the floating dtype; by default JAX's default float (float64 when
          x64 is enabled).

        **Returns:**

        An array of shape `self.shape`, or `(batch_size, *self.shape)`.
        """
        shape = self.shape
        if batch_size is not None:
            batch_size = static_int(batch_size, "batch_size", "NeuronLayer.init")
            shape = (batch_size, *shape)
        dtype = float_dtype(dtype)
        if key is None:
            return jnp.zeros(shape, dtype)
        check_key(key, "NeuronLayer.init")
        return jax.random.normal(key, shape, dtype)
