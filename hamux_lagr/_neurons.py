r"""Neuron layers: a Lagrangian plus the shape of the state it acts on.

A layer with state $x$ and Lagrangian $\mathcal{L}$ has activations
$g = \nabla\mathcal{L}(x)$ and energy $E(x) = \langle x, g\rangle - \mathcal{L}(x)$, the
Legendre transform of $\mathcal{L}$ (Krotov & Hopfield 2021; Hoover et al. 2022).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._custom_types import Scalar, StateLike
from ._lagrangians import Lagrangian
from ._validation import default_float_dtype


def _as_shape(shape: object, name: str, where: str) -> tuple[int, ...]:
    """A state shape as a tuple of non-negative Python ints."""
    if isinstance(shape, (int,)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        out = tuple(shape)  # pyright: ignore[reportArgumentType]
    except TypeError:
        out = None
    if out is None or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in out
    ):
        raise TypeError(
            f"`{name}` must be an int or a tuple of non-negative ints in `{where}`, got "
            f"{shape!r}; e.g. `{where}(..., shape=(784,))`."
        )
    return out


def _positive_float(value: object, name: str, where: str) -> float:
    """A positive, finite Python float (for static hyper-parameters such as `tau`)."""
    if isinstance(value, bool):
        out = math.nan
    else:
        try:
            out = float(value)  # pyright: ignore[reportArgumentType]
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"`{name}` must be a positive Python number in `{where}`, got "
                f"{type(value).__name__} {value!r}."
            ) from e
    if not (math.isfinite(out) and out > 0):
        raise ValueError(
            f"`{name}` must be a finite positive number in `{where}`, got {value!r}; "
            f"pass e.g. `{name}=1.0`."
        )
    return out


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
    `jax.vmap`, or through the batched conveniences of `hamux_lagr.HAM`.

    **Arguments:**

    - `lagrangian`: a `hamux_lagr.Lagrangian`, e.g. `LSoftmax(beta=2.0)`. Its
      parameters are learnable.
    - `shape`: the shape of one sample's state, an int or a tuple of ints.
    - `tau`: the layer's time constant, a positive Python number (static). Smaller is
      faster: a layer with a small `tau` relaxes quickly to its input.

    !!! example

        ```python
        layer = hamux_lagr.NeuronLayer(hamux_lagr.LSoftmax(beta=2.0), shape=(10,))
        x = layer.init(key=jax.random.key(0))   # normal samples; zeros without a key
        layer.activations(x)                    # softmax(2 x)
        layer.energy(x)                         # <x, g> - L(x)
        ```
    """

    lagrangian: Lagrangian
    shape: tuple[int, ...] = eqx.field(static=True)
    tau: float = eqx.field(static=True)

    def __init__(
        self,
        lagrangian: Lagrangian,
        shape: int | tuple[int, ...],
        tau: float | int = 1.0,
    ):
        if not isinstance(lagrangian, Lagrangian):
            raise TypeError(
                "`lagrangian` must be a `hamux_lagr.Lagrangian` (e.g. "
                f"`LSoftmax(beta=1.0)`), got {type(lagrangian).__name__}; wrap a "
                "function by subclassing `hamux_lagr.Lagrangian`."
            )
        self.lagrangian = lagrangian
        self.shape = _as_shape(shape, "shape", "NeuronLayer")
        self.tau = _positive_float(tau, "tau", "NeuronLayer")

    def activations(self, x: StateLike) -> Float[Array, "..."]:
        r"""The activations $g = \partial\mathcal{L}/\partial x$.

        **Arguments:**

        - `x`: one sample's state, of shape `self.shape`.

        **Returns:**

        The activations, of `x`'s shape and floating dtype.
        """
        return self.lagrangian.activation(x)

    def energy(self, x: StateLike) -> Scalar:
        r"""The layer's energy, the Legendre transform of its Lagrangian.

        $$E_\text{layer}(x) = \langle x, g(x)\rangle - \mathcal{L}(x).$$

        **Arguments:**

        - `x`: one sample's state, of shape `self.shape`.

        **Returns:**

        The scalar energy.
        """
        return self.lagrangian.energy(x)

    def init(
        self,
        batch_size: int | None = None,
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
            if isinstance(batch_size, bool) or not isinstance(batch_size, int):
                raise TypeError(
                    "`batch_size` must be a Python int or None in `NeuronLayer.init`, "
                    f"got {batch_size!r}."
                )
            if batch_size < 0:
                raise ValueError(
                    f"`batch_size` must be >= 0 in `NeuronLayer.init`, got {batch_size}."
                )
            shape = (batch_size, *shape)
        dtype = default_float_dtype() if dtype is None else dtype
        if key is None:
            return jnp.zeros(shape, dtype)
        return jax.random.normal(key, shape, dtype)


__all__ = ["NeuronLayer"]
