import io

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tree_allclose

import hamux_lagr as hl


class ThreeBody(hl.Synapse):
    """A 3-body synapse, E = -sum_ijk T_ijk g1_i g2_j g3_k."""

    T: jax.Array

    def __call__(self, g1, g2, g3):
        return -jnp.einsum("ijk,i,j,k->", self.T, g1, g2, g3)


def make_ham(rng):
    neurons = {
        "visible": hl.NeuronLayer(hl.LIdentity(), (4,)),
        "hidden": hl.NeuronLayer(hl.LSoftmax(beta=2.0), (3,), tau=0.5),
        "aux": hl.NeuronLayer(hl.LTanh(beta=1.5), (2,)),
    }
    synapses = {
        "W": hl.LinearSynapse(rng.standard_normal((4, 3)), rng.standard_normal(3)),
        "bias": hl.BiasSynapse(rng.standard_normal(2)),
        "memory": hl.DenseMemory(rng.standard_normal((5, 4)), hl.LSoftmax(1.0)),
        "triple": ThreeBody(jnp.asarray(rng.standard_normal((4, 3, 2)))),
    }
    connections = [
        (("visible", "hidden"), "W"),
        (("aux",), "bias"),
        (("visible",), "memory"),
        (("visible", "hidden", "aux"), "triple"),
    ]
    return hl.HAM(neurons, synapses, connections)


def random_states(ham, rng, batch=None):
    lead = () if batch is None else (batch,)
    return {
        name: jnp.asarray(rng.standard_normal(lead + layer.shape))
        for name, layer in ham.neurons.items()
    }


def _logsumexp(z):
    top = np.max(z)
    return top + np.log(np.sum(np.exp(z - top)))


def test_energy_is_the_sum_of_layer_and_synapse_energies(rng):
    ham = make_ham(rng)
    xs = random_states(ham, rng)

    @jax.jit
    def run(xs):
        return ham.energy(xs), ham.energy_tree(xs), ham.activations(xs)

    energy, tree, gs = run(xs)
    assert set(tree["neurons"]) == set(ham.neurons)
    assert set(tree["synapses"]) == set(ham.synapses)
    assert np.allclose(energy, np.sum(jax.tree_util.tree_leaves(tree)))
    # Closed forms, in NumPy.
    v, h, a = (np.asarray(xs[k]) for k in ("visible", "hidden", "aux"))
    gh = np.exp(2.0 * h - _logsumexp(2.0 * h))
    ga = np.tanh(1.5 * a)
    assert np.allclose(gs["hidden"], gh) and np.allclose(gs["aux"], ga)
    syn = ham.synapses
    W, b = np.asarray(syn["W"].W), np.asarray(syn["W"].bias)
    expected = {
        "neurons": {
            "visible": 0.5 * np.sum(v**2),
            "hidden": np.sum(h * gh) - _logsumexp(2.0 * h) / 2.0,
            "aux": np.sum(a * ga - np.log(np.cosh(1.5 * a)) / 1.5),
        },
        "synapses": {
            "W": -(v @ W @ gh) - b @ gh,
            "bias": -np.sum(np.asarray(syn["bias"].bias) * ga),
            "memory": -_logsumexp(np.asarray(syn["memory"].patterns) @ v),
            "triple": -np.einsum("ijk,i,j,k->", np.asarray(syn["triple"].T), v, gh, ga),
        },
    }
    assert tree_allclose(tree, expected)


def test_dEdg_is_the_state_plus_the_synapse_gradient(rng):
    ham = make_ham(rng)
    xs = random_states(ham, rng)

    @jax.jit
    def run(xs):
        gs = ham.activations(xs)

        def synapse_energy(gs):
            return sum(jax.tree_util.tree_leaves(ham.synapse_energies(gs)))

        # Chain rule: dE/dx = (dg/dx)^T dE/dg, with dg/dx the Lagrangian's Hessian.
        dEdg = ham.dEdg(xs)
        pullback = {
            name: jax.vjp(layer.activations, xs[name])[1](dEdg[name])[0]
            for name, layer in ham.neurons.items()
        }
        return (
            dEdg,
            jax.grad(synapse_energy)(gs),
            jax.grad(ham.energy)(xs),
            pullback,
            (ham.energy_and_dEdg(xs)),
        )

    dEdg, dsyn, dEdx, pullback, (energy, dEdg2) = run(xs)
    assert tree_allclose(dEdg, jax.tree.map(jnp.add, xs, dsyn))
    assert tree_allclose(dEdx, pullback)
    assert tree_allclose(dEdg2, dEdg)
    assert np.allclose(energy, eqx.filter_jit(ham.energy)(xs))


def test_batched_states_are_the_vmap_of_one_sample(rng, getkey):
    ham = make_ham(rng)
    xs = random_states(ham, rng, batch=3)

    @jax.jit
    def run(xs):
        batched = (
            ham.energy(xs),
            ham.dEdg(xs),
            ham.energy_tree(xs),
            ham.activations(xs),
        )
        mapped = jax.vmap(
            lambda x: (
                ham.energy(x),
                ham.dEdg(x),
                ham.energy_tree(x),
                ham.activations(x),
            )
        )(xs)
        return batched, mapped

    batched, mapped = run(xs)
    assert batched[0].shape == (3,)
    assert tree_allclose(batched, mapped)
    init = jax.eval_shape(lambda key: ham.init_states(batch_size=3, key=key), getkey())
    assert {k: v.shape for k, v in init.items()} == {k: v.shape for k, v in xs.items()}
    zeros = ham.init_states()
    assert all(v.shape == ham.neurons[k].shape for k, v in zeros.items())
    assert all(not np.any(v) for v in zeros.values())


def test_shared_synapse_sums_its_connections(rng):
    layer = hl.NeuronLayer(hl.LIdentity(), (3,))
    W = rng.standard_normal((3, 3))
    ham = hl.HAM(
        {"a": layer, "b": layer, "c": layer},
        {"W": hl.LinearSynapse(W), "unused": hl.BiasSynapse(np.ones(3))},
        [(("a", "b"), "W"), (("b", "c"), "W")],
    )
    xs = random_states(ham, rng)
    tree = eqx.filter_jit(ham.energy_tree)(xs)
    a, b, c = (np.asarray(xs[k]) for k in "abc")
    assert np.allclose(tree["synapses"]["W"], -(a @ W @ b) - (b @ W @ c))
    assert tree["synapses"]["unused"] == 0


def test_ham_is_a_trainable_serialisable_pytree(rng):
    ham = make_ham(rng)
    xs = random_states(ham, rng)
    grads = eqx.filter_jit(eqx.filter_grad(lambda ham, xs: ham.energy(xs)))(ham, xs)
    assert grads.neurons["hidden"].lagrangian.beta != 0
    assert np.any(grads.synapses["memory"].patterns != 0)
    assert np.any(grads.synapses["triple"].T != 0)
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, ham)
    buffer.seek(0)
    loaded = eqx.tree_deserialise_leaves(buffer, make_ham(np.random.default_rng(0)))
    assert tree_allclose(loaded, ham)


def test_construction_errors_name_the_culprit(rng):
    layer = hl.NeuronLayer(hl.LIdentity(), (3,))
    synapse = hl.BiasSynapse(np.ones(3))
    with pytest.raises(ValueError, match="unknown layer 'b'"):
        hl.HAM({"a": layer}, {"s": synapse}, [(("b",), "s")])
    with pytest.raises(ValueError, match="unknown synapse 't'"):
        hl.HAM({"a": layer}, {"s": synapse}, [(("a",), "t")])
    with pytest.raises(ValueError, match=r"\(\('a',\), 's'\)"):
        hl.HAM({"a": layer}, {"s": synapse}, [("a", "s")])
    with pytest.raises((TypeError, ValueError), match="connections"):
        hl.HAM({"a": layer}, {"s": synapse}, [(("a",), "s", "extra")])  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match="NeuronLayer"):
        hl.HAM({"a": hl.LIdentity()}, {}, [])  # pyright: ignore[reportArgumentType]


def test_state_errors(rng):
    ham = make_ham(rng)
    xs = random_states(ham, rng)
    with pytest.raises(ValueError, match=r"missing \['aux'\]"):
        ham.energy({k: v for k, v in xs.items() if k != "aux"})
    with pytest.raises(ValueError, match="layer 'hidden' has shape"):
        ham.dEdg({**xs, "hidden": jnp.ones(4)})
    with pytest.raises(ValueError, match="Inconsistent batching"):
        ham.energy({**xs, "aux": jnp.ones((5, 2))})


def test_a_synapse_that_does_not_fit_is_named_at_the_first_energy(rng):
    ham = hl.HAM(
        {
            "a": hl.NeuronLayer(hl.LIdentity(), (3,)),
            "b": hl.NeuronLayer(hl.LIdentity(), (2,)),
        },
        {"W": hl.LinearSynapse(rng.standard_normal((2, 3)))},  # transposed
        [(("a", "b"), "W")],
    )
    xs = ham.init_states()
    with pytest.raises(
        ValueError, match=r"synapse 'W' \(LinearSynapse\).*\('a', 'b'\)"
    ):
        ham.energy(xs)
    with pytest.raises(ValueError, match=r"synapse 'W'"):
        eqx.filter_jit(ham.dEdg)(xs)


def test_a_synapse_must_return_a_scalar():
    class NotScalar(eqx.Module):
        def __call__(self, g):
            return -g

    ham = hl.HAM(
        {"a": hl.NeuronLayer(hl.LIdentity(), (3,))}, {"s": NotScalar()}, [(("a",), "s")]
    )
    with pytest.raises(ValueError, match="scalar"):
        eqx.filter_jit(ham.energy)(ham.init_states())
