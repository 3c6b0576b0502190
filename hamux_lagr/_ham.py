r"""The hierarchical associative memory (HAM): a hypergraph of layers and synapses.

Neuron layers are the nodes, synapses the hyperedges. The total energy is

$$E(x) = \sum_{\ell} \big(\langle x_\ell, g_\ell\rangle - \mathcal{L}_\ell(x_\ell)\big)
+ \sum_{(\ell_1, \dots, \ell_k) \to s} E_s(g_{\ell_1}, \dots, g_{\ell_k}),$$

and, because $\partial(\langle x, g\rangle - \mathcal{L}(x))/\partial g = x$, its
gradient with respect to a layer's activations is
$\partial E/\partial g_\ell = x_\ell + \sum_s \partial E_s/\partial g_\ell$
(Hoover et al. 2022).
"""

import functools as ft
from collections.abc import Callable, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PRNGKeyArray, Shaped

from ._neurons import NeuronLayer
from ._validation import default_float_dtype


#: One sample's (or one batch's) states or activations: a dict from layer name to array.
States = dict[str, Float[Array, "..."]]
#: States as the user may give them: any array-likes.
StatesLike = Mapping[str, Shaped[ArrayLike, "..."]]
#: A connection: the names of the layers a synapse connects, and the synapse's name.
Connection = tuple[tuple[str, ...], str]


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

    States are dicts from layer name to array. Every method takes the states of one
    sample (each of its layer's shape) **or of a batch** (each with one leading batch
    axis of a common size): a batch is handled by `jax.vmap` of the one-sample method,
    and batched energies have shape `(batch,)`. Methods compose with `jax.jit`,
    `jax.vmap` and `jax.grad`; the HAM is a pytree whose learnable leaves are its
    layers' Lagrangian parameters and its synapses' parameters. (To compile a method,
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
        xs = ham.init_states(batch_size=8, key=key)   # {"image": (8, 784)}
        ham.energy(xs)                                # shape (8,)
        xs, energies = hl.descend(ham, xs, steps=20, dt=0.1)
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

    # ------------------------------------------------------------------------------
    # states
    # ------------------------------------------------------------------------------

    def init_states(
        self, batch_size: int | None = None, key: PRNGKeyArray | None = None
    ) -> States:
        r"""Initial states of every layer: zeros, or standard normal with a key.

        **Arguments:**

        - `batch_size`: if given, each state gets a leading batch axis of this size.
        - `key`: a JAX PRNG key, split across the layers. Without one, all zeros.

        **Returns:**

        A dict from layer name to state.
        """
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

        - `xs`: the states, one sample or a batch.

        **Returns:**

        A dict from layer name to activations, shaped like `xs`.
        """
        xs, batch = prepare_states(self, xs, "HAM.activations")
        if batch is not None:
            return jax.vmap(self.activations)(xs)
        return {
            name: layer.lagrangian.activation(xs[name])
            for name, layer in self.neurons.items()
        }

    # ------------------------------------------------------------------------------
    # energies
    # ------------------------------------------------------------------------------

    def synapse_energies(self, gs: StatesLike) -> dict[str, Float[Array, "*batch"]]:
        r"""Each synapse's energy of the *activations* `gs`.

        A synapse used in several connections gets the sum of their energies; a
        synapse in no connection gets zero. A synapse whose shapes do not fit the
        layers of its connection raises a `ValueError` naming the connection.

        **Arguments:**

        - `gs`: the activations (not the states), one sample or a batch, e.g. from
          `activations(xs)`.

        **Returns:**

        A dict from synapse name to energy: a scalar for one sample, shape `(batch,)`
        for a batch.
        """
        gs, batch = prepare_states(self, gs, "HAM.synapse_energies")
        if batch is not None:
            return jax.vmap(self.synapse_energies)(gs)
        out: dict[str, Array] = {}
        for layers, name in self.connections:
            synapse = self.synapses[name]
            args = [gs[layer] for layer in layers]
            try:
                energy = synapse(*args)
            except (TypeError, ValueError) as e:
                shapes = ", ".join(f"{layer!r}: {gs[layer].shape}" for layer in layers)
                raise ValueError(
                    f"The synapse {name!r} ({type(synapse).__name__}) does not fit the "
                    f"connection {layers!r} -> {name!r}, whose activations have shapes "
                    f"{{{shapes}}}: {e}"
                ) from e
            if jnp.shape(energy) != ():
                raise ValueError(
                    f"The synapse {name!r} ({type(synapse).__name__}) of connection "
                    f"{layers!r} -> {name!r} returned an energy of shape "
                    f"{jnp.shape(energy)}; a synapse must return a scalar (sum it)."
                )
            out[name] = out[name] + energy if name in out else energy
        # A synapse in no connection contributes nothing.
        dtype = jnp.result_type(*gs.values())
        return {name: out.get(name, jnp.zeros((), dtype)) for name in self.synapses}

    def _synapse_energy(self, gs: States) -> Float[Array, ""]:
        energies = [e for e in self.synapse_energies(gs).values()]
        if not energies:
            return jnp.zeros((), jnp.result_type(*gs.values()))
        return ft.reduce(jnp.add, energies)

    def energy_tree(
        self, xs: StatesLike
    ) -> dict[str, dict[str, Float[Array, "*batch"]]]:
        r"""The energy of each layer and of each synapse.

        **Arguments:**

        - `xs`: the states, one sample or a batch.

        **Returns:**

        `{"neurons": {layer: E_layer}, "synapses": {synapse: E_synapse}}`; the leaves
        sum to `energy(xs)`. Scalars for one sample, shape `(batch,)` for a batch.
        """
        xs, batch = prepare_states(self, xs, "HAM.energy_tree")
        if batch is not None:
            return jax.vmap(self.energy_tree)(xs)
        neurons, gs = {}, {}
        for name, layer in self.neurons.items():
            value, gs[name] = jax.value_and_grad(layer.lagrangian)(xs[name])
            neurons[name] = jnp.sum(xs[name] * gs[name]) - value
        return {"neurons": neurons, "synapses": self.synapse_energies(gs)}

    def energy(self, xs: StatesLike) -> Float[Array, "*batch"]:
        r"""The total energy $E$ of the states.

        **Arguments:**

        - `xs`: the states, one sample or a batch.

        **Returns:**

        The energy: a scalar for one sample, shape `(batch,)` for a batch.
        """
        xs, batch = prepare_states(self, xs, "HAM.energy")
        if batch is not None:
            return jax.vmap(self.energy)(xs)
        tree = self.energy_tree(xs)
        leaves = [*tree["neurons"].values(), *tree["synapses"].values()]
        return ft.reduce(jnp.add, leaves)

    def dEdg(self, xs: StatesLike) -> States:
        r"""The gradient of the energy with respect to each layer's activations.

        $$\frac{\partial E}{\partial g_\ell} = x_\ell +
        \sum_s \frac{\partial E_s}{\partial g_\ell},$$

        the layer term being exactly the state (a property of the Legendre transform),
        the synapse terms one reverse-mode pass through the synapse energies. The
        dynamics are $\tau_\ell \dot x_\ell = -\partial E/\partial g_\ell$.

        **Arguments:**

        - `xs`: the states, one sample or a batch.

        **Returns:**

        A dict from layer name to $\partial E/\partial g_\ell$, shaped like `xs`.
        """
        xs, batch = prepare_states(self, xs, "HAM.dEdg")
        if batch is not None:
            return jax.vmap(self.dEdg)(xs)
        gs = {
            name: layer.lagrangian.activation(xs[name])
            for name, layer in self.neurons.items()
        }
        dsyn = jax.grad(self._synapse_energy)(gs)
        return {name: xs[name] + dsyn[name] for name in self.neurons}

    def energy_and_dEdg(self, xs: StatesLike) -> tuple[Float[Array, "*batch"], States]:
        r"""The total energy and its gradient `dEdg`, sharing one pass.

        One forward pass gives every Lagrangian, activation and synapse energy; one
        reverse pass through the synapses gives their gradients, so the energy costs
        next to nothing on top of `dEdg`.

        **Arguments:**

        - `xs`: the states, one sample or a batch.

        **Returns:**

        A pair `(energy, dEdg)`, as from `energy(xs)` and `dEdg(xs)`.
        """
        xs, batch = prepare_states(self, xs, "HAM.energy_and_dEdg")
        if batch is not None:
            return jax.vmap(self.energy_and_dEdg)(xs)
        layer_energy, gs = None, {}
        for name, layer in self.neurons.items():
            value, gs[name] = jax.value_and_grad(layer.lagrangian)(xs[name])
            term = jnp.sum(xs[name] * gs[name]) - value
            layer_energy = term if layer_energy is None else layer_energy + term
        syn_energy, dsyn = jax.value_and_grad(self._synapse_energy)(gs)
        dEdg = {name: xs[name] + dsyn[name] for name in self.neurons}
        return layer_energy + syn_energy, dEdg


def prepare_states(ham: HAM, xs: object, where: str) -> tuple[States, int | None]:
    """Checks that `xs` holds one state per layer, of one sample or of a batch.

    Returns the states as floating JAX arrays, and the batch size (`None` for one
    sample).
    """
    if not isinstance(xs, Mapping):
        raise TypeError(
            f"`xs` must be a dict from layer name to state in `{where}`, got "
            f"{type(xs).__name__}; see `HAM.init_states`."
        )
    missing = [name for name in ham.neurons if name not in xs]
    extra = [name for name in xs if name not in ham.neurons]
    if missing or extra:
        raise ValueError(
            f"`xs` must have one state per layer in `{where}`: "
            + (f"missing {missing}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unknown {extra}" if extra else "")
            + f" (the layers are {list(ham.neurons)})."
        )
    out, batch, batched_layer = {}, None, None
    for name, layer in ham.neurons.items():
        x = jnp.asarray(xs[name])
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(default_float_dtype())
        if x.shape == layer.shape:
            size = None
        elif x.ndim == len(layer.shape) + 1 and x.shape[1:] == layer.shape:
            size = x.shape[0]
        else:
            raise ValueError(
                f"The state of layer {name!r} has shape {x.shape} in `{where}`, but "
                f"the layer has shape {layer.shape}: give a state of shape "
                f"{layer.shape}, or (batch, *{layer.shape}) for a batch."
            )
        if name == next(iter(ham.neurons)):
            batch, batched_layer = size, name
        elif size != batch:
            raise ValueError(
                f"Inconsistent batching in `{where}`: layer {batched_layer!r} has "
                f"{'no batch axis' if batch is None else f'a batch of {batch}'} but "
                f"layer {name!r} has "
                f"{'no batch axis' if size is None else f'a batch of {size}'}; batch "
                "every layer's state alike."
            )
        out[name] = x
    return out, batch


__all__ = ["HAM", "Connection", "States", "StatesLike", "prepare_states"]
