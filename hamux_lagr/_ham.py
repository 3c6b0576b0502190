r"""The hierarchical associative memory (HAM): a hypergraph of layers and synapses.

Neuron layers are the nodes, synapses the hyperedges. The total energy is

$$E(x) = \sum_{\ell} \big(\langle x_\ell, g_\ell\rangle - \mathcal{L}_\ell(x_\ell)\big)
+ \sum_{(\ell_1, \dots, \ell_k) \to s} E_s(g_{\ell_1}, \dots, g_{\ell_k}),$$

and, because $\partial(\langle x, g\rangle - \mathcal{L}(x))/\partial g = x$, its
gradient with respect to a layer's activations is
$\partial E/\partial g_\ell = x_\ell + \sum_s \partial E_s/\partial g_\ell$
(Hoover et al. 2022). A layer built with `leak=False` leaves its own energy (and the
$x_\ell$ term) out, as the Energy Transformer does (Hoover et al. 2023).
"""

import functools as ft
from collections.abc import Callable, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PRNGKeyArray

from ._clamp import check_clamp, hold
from ._custom_types import Clamp, Connection, Masks, States, StatesLike
from ._lagrangians.base import checked_parameters
from ._misc import common_dtype
from ._neurons import NeuronLayer
from ._validation import as_state, check_key


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{what} names must be strings, got {name!r}.")
    return name


class HAM(eqx.Module):
    r"""A hierarchical associative memory: named layers, named synapses, connections.

    The total energy sums each layer's energy (the Legendre transform of its
    Lagrangian) and each connection's synapse energy of the activations it connects:

    $$E = \sum_\ell \big(\langle x_\ell, g_\ell\rangle - \mathcal{L}_\ell(x_\ell)\big)
    + \sum_{(\ell_1, \dots, \ell_k) \to s} E_s(g_{\ell_1}, \dots, g_{\ell_k}).$$

    The dynamics $\tau_\ell \dot x_\ell = -\partial E/\partial g_\ell$ (see
    `hamux_lagr.descend`) descend it (Hoover et al. 2022).

    States are dicts from layer name to array. Every method acts on the states of
    **one sample** (each of its layer's shape), as Equinox modules do; a batch is
    `jax.vmap` of it, e.g. `jax.vmap(ham.energy)(xs)`. A batched dict (states of shape
    `(batch, *shape)`) raises a `ValueError` that says so. Methods compose with
    `jax.jit`, `jax.vmap` and `jax.grad`; the HAM is a pytree whose learnable leaves
    are its layers' Lagrangian parameters and its synapses' parameters. (To compile a
    method,
    use `eqx.filter_jit(ham.energy)` or `jax.jit(lambda xs: ham.energy(xs))`: like
    every Equinox module holding arrays, a HAM is not hashable, which
    `jax.jit(ham.energy)` needs.)

    **Arguments:**

    - `neurons`: a dict from layer name to `hamux_lagr.NeuronLayer`.
    - `synapses`: a dict from synapse name to synapse: an Equinox module (e.g. a
      `hamux_lagr.Synapse`) whose `__call__(*gs)` returns a scalar energy.
    - `connections`: a list of `(layer_names, synapse_name)` pairs: the synapse is
      called with the activations of these layers, in this order. A synapse may appear
      in several connections (shared weights); a connection of `k` layers is a
      `k`-body interaction.

    !!! example

        ```python
        import jax, hamux_lagr as hl

        key = jax.random.key(0)
        ham = hl.HAM(
            neurons={"image": hl.NeuronLayer(hl.LIdentity(), (784,))},
            synapses={"memory": hl.DenseMemory.random(100, 784, hl.LSoftmax(10.0), key=key)},
            connections=[(("image",), "memory")],
        )
        x = ham.init_states(key=key)                  # one sample: {"image": (784,)}
        ham.energy(x)                                 # a scalar
        xs = ham.init_states(batch_size=8, key=key)   # {"image": (8, 784)}
        jax.vmap(ham.energy)(xs)                      # shape (8,)
        sol = jax.vmap(lambda x: hl.fixed_point(ham, x))(xs)  # retrieve: sol.xs, sol.converged
        sol = jax.vmap(lambda x: hl.descend(ham, x, steps=20, dt=0.1))(xs)  # sol.energies: (8, 21)
        ```
    """

    neurons: dict[str, NeuronLayer]
    synapses: dict[str, Callable]
    connections: tuple[Connection, ...] = eqx.field(static=True)

    def __init__(
        self,
        neurons: Mapping[str, NeuronLayer],
        synapses: Mapping[str, Callable],
        connections: Sequence[tuple[Sequence[str], str]],
    ):
        if not isinstance(neurons, Mapping) or len(neurons) == 0:
            raise TypeError(
                "`neurons` must be a non-empty dict from layer name to `NeuronLayer` in "
                f"`HAM`, got {neurons!r}."
            )
        for name, layer in neurons.items():
            _check_name(name, "Layer")
            if not isinstance(layer, NeuronLayer):
                raise TypeError(
                    f"`neurons[{name!r}]` must be a `NeuronLayer`, got "
                    f"{type(layer).__name__}; wrap a Lagrangian as "
                    f"`NeuronLayer(lagrangian, shape)`."
                )
        if not isinstance(synapses, Mapping):
            raise TypeError(
                "`synapses` must be a dict from synapse name to synapse module in `HAM`, "
                f"got {type(synapses).__name__}."
            )
        for name, synapse in synapses.items():
            _check_name(name, "Synapse")
            if isinstance(synapse, type):
                raise TypeError(
                    f"`synapses[{name!r}]` is the class {synapse.__name__}, not a "
                    f"synapse: construct one, e.g. `{synapse.__name__}(...)` with its "
                    "weights."
                )
            if not callable(synapse):
                raise TypeError(
                    f"`synapses[{name!r}]` must be callable (an Equinox module whose "
                    f"`__call__(*gs)` returns a scalar energy), got "
                    f"{type(synapse).__name__}."
                )
        if isinstance(connections, (str, bytes)) or not isinstance(
            connections, Sequence
        ):
            raise TypeError(
                "`connections` must be a list of `(layer_names, synapse_name)` pairs in "
                f"`HAM`, got {connections!r}."
            )
        checked = []
        for i, connection in enumerate(connections):
            try:
                layers, synapse = connection
            except (TypeError, ValueError):
                raise ValueError(
                    f"`connections[{i}]` must be a pair `(layer_names, synapse_name)`, "
                    f"e.g. `(('visible', 'hidden'), 'W')`; got {connection!r}."
                ) from None
            if isinstance(layers, str):
                raise ValueError(
                    f"`connections[{i}]` names its layers as the string {layers!r}; "
                    f"give a tuple of layer names, e.g. `(({layers!r},), {synapse!r})`."
                )
            layers = tuple(layers)
            if len(layers) == 0:
                raise ValueError(
                    f"`connections[{i}]` connects no layer; name at least one."
                )
            for layer in layers:
                if layer not in neurons:
                    raise ValueError(
                        f"`connections[{i}]` = {connection!r} names the unknown layer "
                        f"{layer!r}; the layers are {sorted(neurons)}."
                    )
            if synapse not in synapses:
                raise ValueError(
                    f"`connections[{i}]` = {connection!r} names the unknown synapse "
                    f"{synapse!r}; the synapses are {sorted(synapses)}."
                )
            checked.append((layers, synapse))
        self.neurons = dict(neurons)
        self.synapses = dict(synapses)
        self.connections = tuple(checked)

    def init_states(
        self,
        batch_size: int | np.integer | None = None,
        key: PRNGKeyArray | None = None,
    ) -> States:
        r"""Initial states of every layer: zeros, or standard normal with a key.

        **Arguments:**

        - `batch_size`: if given, each state gets a leading batch axis of this size.
        - `key`: a JAX PRNG key, split across the layers. Without one, all zeros.

        **Returns:**

        A dict from layer name to state.
        """
        if key is not None:
            check_key(key, "HAM.init_states")
        keys = (
            [None] * len(self.neurons)
            if key is None
            else list(jax.random.split(key, len(self.neurons)))
        )
        return {
            name: layer.init(batch_size, k)
            for (name, layer), k in zip(self.neurons.items(), keys)
        }

    def activations(self, xs: StatesLike) -> States:
        r"""Every layer's activations $g_\ell = \nabla\mathcal{L}_\ell(x_\ell)$.

        **Arguments:**

        - `xs`: the states of one sample.

        **Returns:**

        A dict from layer name to activations, shaped like `xs`.
        """
        return self._activations(
            checked_parameters(
                self, "HAM.activations", prepare_states(self, xs, "HAM.activations")
            )
        )

    def _activations(self, xs: States) -> States:
        return {
            name: _in_layer(name, layer, layer._activations, xs[name])
            for name, layer in self.neurons.items()
        }

    def _layer_energies_and_activations(self, xs: States) -> tuple[dict, States]:
        energies, gs = {}, {}
        for name, layer in self.neurons.items():
            if layer.leak:
                energies[name], gs[name] = _in_layer(
                    name, layer, layer._energy_and_activations, xs[name]
                )
            else:  # a layer without leak adds no energy of its own
                gs[name] = _in_layer(name, layer, layer._activations, xs[name])
                energies[name] = jnp.zeros((), gs[name].dtype)
        return energies, gs

    def _dEdg(self, xs: States, dsyn: States) -> States:
        """dE/dg from the synapses' gradients: plus the state for leaky layers."""
        return {
            name: xs[name] + dsyn[name] if layer.leak else dsyn[name]
            for name, layer in self.neurons.items()
        }

    def synapse_energies(self, gs: StatesLike) -> dict[str, Float[Array, ""]]:
        r"""Each synapse's energy of the *activations* `gs`.

        A synapse used in several connections gets the sum of their energies; a
        synapse in no connection gets zero. A synapse whose shapes do not fit the
        layers of its connection, or that does not return a floating scalar, raises
        an error naming the synapse and the connection.

        **Arguments:**

        - `gs`: the activations (not the states) of one sample, e.g. from
          `activations(xs)`.

        **Returns:**

        A dict from synapse name to its scalar energy.
        """
        gs = prepare_states(self, gs, "HAM.synapse_energies", "gs")
        return self._synapse_energies(
            checked_parameters(self, "HAM.synapse_energies", gs)
        )

    def _synapse_energies(self, gs: States) -> dict[str, Array]:
        out: dict[str, Array] = {}
        for layers, name in self.connections:
            synapse = self.synapses[name]
            args = [gs[layer] for layer in layers]
            what = (
                f"The synapse {name!r} ({type(synapse).__name__}) of the connection "
                f"{layers!r} -> {name!r}"
            )
            try:
                energy = synapse(*args)
            except (TypeError, ValueError) as e:
                shapes = ", ".join(f"{layer!r}: {gs[layer].shape}" for layer in layers)
                raise ValueError(
                    f"{what} does not fit the activations of its layers, of shapes "
                    f"{{{shapes}}}: {e}"
                ) from e
            try:
                energy = jnp.asarray(energy)
            except TypeError as e:
                raise TypeError(
                    f"{what} returned a {type(energy).__name__}; a synapse must return "
                    "its energy as a floating scalar array."
                ) from e
            if not jnp.issubdtype(energy.dtype, jnp.floating):
                raise TypeError(
                    f"{what} returned an energy of dtype {energy.dtype}; a synapse "
                    "must return a floating scalar (energies are differentiated)."
                )
            if energy.shape != ():
                raise ValueError(
                    f"{what} returned an energy of shape {energy.shape}; a synapse "
                    "must return a scalar (sum it)."
                )
            out[name] = out[name] + energy if name in out else energy
        # A synapse in no connection contributes nothing.
        dtype = common_dtype(gs)
        return {name: out.get(name, jnp.zeros((), dtype)) for name in self.synapses}

    def _synapse_energy(self, gs: States) -> Float[Array, ""]:
        energies = [e for e in self._synapse_energies(gs).values()]
        if not energies:
            return jnp.zeros((), common_dtype(gs))
        return ft.reduce(jnp.add, energies)

    def energy_tree(self, xs: StatesLike) -> dict[str, dict[str, Float[Array, ""]]]:
        r"""The energy of each layer and of each synapse.

        **Arguments:**

        - `xs`: the states of one sample.

        **Returns:**

        `{"neurons": {layer: E_layer}, "synapses": {synapse: E_synapse}}`, scalars
        whose sum is `energy(xs)`.
        """
        return self._energy_tree(
            checked_parameters(
                self, "HAM.energy_tree", prepare_states(self, xs, "HAM.energy_tree")
            )
        )

    def _energy_tree(self, xs: States) -> dict[str, dict[str, Array]]:
        neurons, gs = self._layer_energies_and_activations(xs)
        return {"neurons": neurons, "synapses": self._synapse_energies(gs)}

    def energy(self, xs: StatesLike) -> Float[Array, ""]:
        r"""The total energy $E$ of the states.

        **Arguments:**

        - `xs`: the states of one sample.

        **Returns:**

        The scalar energy.
        """
        xs = prepare_states(self, xs, "HAM.energy")
        return self._energy(checked_parameters(self, "HAM.energy", xs))

    def _energy(self, xs: States) -> Array:
        # Unchecked, on prepared states: for the loops of the solves.
        tree = self._energy_tree(xs)
        leaves = [*tree["neurons"].values(), *tree["synapses"].values()]
        return ft.reduce(jnp.add, leaves)

    def dEdg(self, xs: StatesLike) -> States:
        r"""The gradient of the energy with respect to each layer's activations.

        $$\frac{\partial E}{\partial g_\ell} = x_\ell +
        \sum_s \frac{\partial E_s}{\partial g_\ell},$$

        the layer term being exactly the state (a property of the Legendre transform;
        absent for a layer with `leak=False`, whose energy the HAM leaves out), the
        synapse terms one reverse-mode pass through the synapse energies. The
        dynamics are $\tau_\ell \dot x_\ell = -\partial E/\partial g_\ell$.

        **Arguments:**

        - `xs`: the states of one sample.

        **Returns:**

        A dict from layer name to $\partial E/\partial g_\ell$, shaped like `xs`.
        """
        return self._dEdg_only(
            checked_parameters(self, "HAM.dEdg", prepare_states(self, xs, "HAM.dEdg"))
        )

    def _dEdg_only(self, xs: States) -> States:
        # Unchecked: the loops of the solves call it on prepared states.
        return self._dEdg(xs, self._dsyn(xs))

    def _dsyn(self, xs: States) -> States:
        # The synapses' part of dE/dg (`_dEdg` adds the states of leaky layers).
        return jax.grad(self._synapse_energy)(self._activations(xs))

    def energy_and_dEdg(self, xs: StatesLike) -> tuple[Float[Array, ""], States]:
        r"""The total energy and its gradient `dEdg`, sharing one pass.

        One forward pass gives every Lagrangian, activation and synapse energy; one
        reverse pass through the synapses gives their gradients, so the energy costs
        next to nothing on top of `dEdg`.

        **Arguments:**

        - `xs`: the states of one sample.

        **Returns:**

        A pair `(energy, dEdg)`, as from `energy(xs)` and `dEdg(xs)`.
        """
        return self._energy_and_dEdg(
            checked_parameters(
                self,
                "HAM.energy_and_dEdg",
                prepare_states(self, xs, "HAM.energy_and_dEdg"),
            )
        )

    def _energy_and_dEdg(self, xs: States) -> tuple[Array, States]:
        # Unchecked: the loops of the solves call it on prepared states.
        energy, dsyn = self._energy_and_dsyn(xs)
        return energy, self._dEdg(xs, dsyn)

    def _energy_and_dsyn(self, xs: States) -> tuple[Array, States]:
        layer_energies, gs = self._layer_energies_and_activations(xs)
        syn_energy, dsyn = jax.value_and_grad(self._synapse_energy)(gs)
        return ft.reduce(jnp.add, [*layer_energies.values(), syn_energy]), dsyn

    def vector_field(
        self, t: ArrayLike | None, xs: StatesLike, clamp: Clamp | None = None
    ) -> States:
        r"""The right-hand side of the dynamics, $\dot x_\ell =
        -\tau_\ell^{-1}\,\partial E/\partial g_\ell$, for one sample.

        Clamped neurons are held: their rate of change is 0. Its signature is diffrax's,
        so diffrax users can integrate the dynamics themselves:

        ```python
        term = diffrax.ODETerm(lambda t, y, args: ham.vector_field(t, y, args))
        sol = diffrax.diffeqsolve(term, diffrax.Tsit5(), t0=0.0, t1=10.0, dt0=0.1,
                                  y0=xs, args=clamp)   # clamp: a dict, or None
        ```

        (`hamux_lagr.descend(..., solver=...)` is a thin adapter over it.)

        **Arguments:**

        - `t`: the time; the dynamics do not depend on it (any value, or `None`).
        - `xs`: the states of one sample.
        - `clamp`: as in `hamux_lagr.descend`: a dict from layer name to `True` or a
          boolean mask of the layer's shape, or `None`.

        **Returns:**

        A dict from layer name to $\dot x_\ell$, shaped and typed like `xs`.
        """
        del t
        xs = prepare_states(self, xs, "HAM.vector_field")
        masks = check_clamp(self.neurons, clamp, "HAM.vector_field")
        return self._vector_field(
            checked_parameters(self, "HAM.vector_field", xs), masks
        )

    def _vector_field(self, xs: States, masks: Masks) -> States:
        # Unchecked, on prepared states: for the loops of the solves.
        dEdg = self._dEdg_only(xs)
        rates = {name: -dEdg[name] / layer.tau for name, layer in self.neurons.items()}
        zeros = {name: jnp.zeros_like(x) for name, x in xs.items()}
        return hold(masks, zeros, rates)


def _in_layer(name: str, layer: NeuronLayer, method: Callable, x: Array):
    """Calls a layer's method, naming the layer in the errors it raises."""
    try:
        return method(x)
    except (TypeError, ValueError) as e:
        if type(e) not in (TypeError, ValueError):
            raise
        raise type(e)(
            f"In layer {name!r} ({type(layer.lagrangian).__name__}, shape "
            f"{layer.shape}): {e}"
        ) from e


def _vmap_example(where: str) -> str:
    if where == "descend":
        return "`jax.vmap(lambda x: hl.descend(ham, x, steps=20, dt=0.1))(xs)`"
    if where == "fixed_point":
        return "`jax.vmap(lambda x: hl.fixed_point(ham, x))(xs)`"
    method = where.removeprefix("HAM.")
    return f"`jax.vmap(ham.{method})(xs)`"


def prepare_states(ham: HAM, xs: object, where: str, what: str = "xs") -> States:
    """Checks that `xs` holds one state per layer, each of its layer's shape (one
    sample), and returns them as floating JAX arrays.

    A batched dict (states of shape `(batch, *shape)`) raises a `ValueError` pointing
    at `jax.vmap`; any other shape, a `ValueError` naming the layer.
    """
    if not isinstance(xs, Mapping):
        raise TypeError(
            f"`{what}` must be a dict from layer name to state in `{where}`, got "
            f"{type(xs).__name__}; see `HAM.init_states`."
        )
    missing = [name for name in ham.neurons if name not in xs]
    extra = [name for name in xs if name not in ham.neurons]
    if missing or extra:
        raise ValueError(
            f"`{what}` must have one state per layer in `{where}`: "
            + (f"missing {missing}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unknown {extra}" if extra else "")
            + f" (the layers are {list(ham.neurons)})."
        )
    out = {}
    for name, layer in ham.neurons.items():
        x = as_state(xs[name], where, f"{what}[{name!r}]")
        if x.shape != layer.shape:
            if x.ndim == len(layer.shape) + 1 and x.shape[1:] == layer.shape:
                raise ValueError(
                    f"`{what}[{name!r}]` has shape {x.shape} in `{where}`: a batch of "
                    f"{x.shape[0]} states of layer {name!r} (shape {layer.shape}). "
                    f"`{where}` acts on one sample; batch it with `jax.vmap`, e.g. "
                    f"{_vmap_example(where)}."
                )
            raise ValueError(
                f"The state of layer {name!r} has shape {x.shape} in `{where}`, but "
                f"the layer has shape {layer.shape}: give one sample's state, of shape "
                f"{layer.shape}."
            )
        out[name] = x
    return out
