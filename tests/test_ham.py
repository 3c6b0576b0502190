import io

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import run_without_hook, tree_allclose

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
    assert tree_allclose(tree, jax.tree.map(jnp.asarray, expected))


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


def test_init_states_makes_batches_and_zeros(rng, getkey):
    ham = make_ham(rng)
    xs = random_states(ham, rng, batch=3)
    # `init_states` makes batches (it makes data, it does not consume it).
    init = jax.eval_shape(lambda key: ham.init_states(batch_size=3, key=key), getkey())
    assert {k: v.shape for k, v in init.items()} == {k: v.shape for k, v in xs.items()}
    assert ham.init_states(batch_size=np.int64(2))["aux"].shape == (2, 2)
    zeros = ham.init_states()
    assert all(v.shape == ham.neurons[k].shape for k, v in zeros.items())
    assert all(not np.any(v) for v in zeros.values())


def test_a_batched_dict_points_at_vmap(rng):
    ham = make_ham(rng)
    xs = random_states(ham, rng, batch=3)
    for method in ("energy", "energy_tree", "dEdg", "energy_and_dEdg", "activations"):
        hint = rf"`xs\['visible'\]` has shape \(3, 4\) in `HAM.{method}`: a batch .*"
        hint += rf"`jax.vmap\(ham.{method}\)\(xs\)`"
        with pytest.raises(ValueError, match=hint):
            getattr(ham, method)(xs)
    with pytest.raises(ValueError, match=r"`gs\['visible'\]`.*jax.vmap"):
        ham.synapse_energies(xs)
    # A batch on one layer only is a batch too.
    one = random_states(ham, rng)
    with pytest.raises(ValueError, match=r"`xs\['aux'\]` has shape \(5, 2\).*vmap"):
        ham.energy({**one, "aux": jnp.ones((5, 2))})


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


def test_state_errors(rng):
    ham = make_ham(rng)
    xs = random_states(ham, rng)
    with pytest.raises(ValueError, match=r"missing \['aux'\]"):
        ham.energy({k: v for k, v in xs.items() if k != "aux"})
    with pytest.raises(ValueError, match=r"unknown \['extra'\]"):
        ham.energy({**xs, "extra": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"layer 'hidden' has shape \(4,\).*\(3,\)"):
        ham.dEdg({**xs, "hidden": jnp.ones(4)})
    with pytest.raises(ValueError, match=r"layer 'hidden' has shape \(2, 4\)"):
        ham.dEdg({**xs, "hidden": jnp.ones((2, 4))})
    with pytest.raises(TypeError, match=r"`xs\['aux'\]` must be real"):
        ham.energy({**xs, "aux": jnp.ones(2, jnp.complex64)})
    # Integer and boolean states are promoted to the default float dtype.
    energy = ham.energy({**xs, "aux": jnp.ones(2, jnp.int32)})
    assert energy.dtype == jnp.float64


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
    match = r"synapse 's' \(NotScalar\) of the connection .* shape \(3,\).*scalar"
    with pytest.raises(ValueError, match=match):
        eqx.filter_jit(ham.energy)(ham.init_states())


def test_a_synapse_given_as_a_class_is_refused():
    layer = hl.NeuronLayer(hl.LIdentity(), (3,))
    with pytest.raises(TypeError, match=r"`synapses\['m'\]` is the class DenseMemory"):
        hl.HAM({"a": layer}, {"m": hl.DenseMemory}, [(("a",), "m")])


def test_a_synapse_must_return_a_floating_energy():
    class Count(eqx.Module):
        def __call__(self, g):
            return 3

    ham = hl.HAM(
        {"a": hl.NeuronLayer(hl.LIdentity(), (3,))}, {"s": Count()}, [(("a",), "s")]
    )
    match = r"synapse 's' \(Count\) of the connection \('a',\) -> 's'.*dtype int"
    for method in (ham.energy, ham.dEdg, ham.energy_and_dEdg):
        with pytest.raises(TypeError, match=match):
            eqx.filter_jit(method)(ham.init_states())


def test_a_lagrangian_that_is_not_a_scalar_names_the_layer():
    class Elementwise(hl.Lagrangian):
        def __call__(self, x):
            return x**2 / 2  # forgot the sum

    ham = hl.HAM(
        {
            "ok": hl.NeuronLayer(hl.LIdentity(), (2,)),
            "bad": hl.NeuronLayer(Elementwise(), (3,)),
        },
        {},
        [],
    )
    match = r"In layer 'bad' \(Elementwise, shape \(3,\)\).*must return the reduced"
    for method in (ham.energy, ham.dEdg, ham.activations, ham.energy_tree):
        with pytest.raises(TypeError, match=match):
            eqx.filter_jit(method)(ham.init_states())
    with pytest.raises(TypeError, match="In `descend`: " + match):
        hl.descend(ham, ham.init_states(), steps=2, dt=0.1)


def test_empty_layers_contribute_zero_energy(rng):
    class Coupling(hl.Synapse):
        def __call__(self, e, a):
            return -jnp.sum(e) * jnp.sum(a)

    ham = hl.HAM(
        {
            "empty": hl.NeuronLayer(hl.LSoftmax(beta=2.0), (0,)),
            "a": hl.NeuronLayer(hl.LTanh(), (2,)),
        },
        {"c": Coupling()},
        [(("empty", "a"), "c")],
    )
    xs = {"empty": jnp.zeros(0), "a": jnp.asarray(rng.standard_normal(2))}
    tree, (energy, dEdg) = eqx.filter_jit(
        lambda xs: (ham.energy_tree(xs), ham.energy_and_dEdg(xs))
    )(xs)
    zero = jnp.zeros((), jnp.float64)
    assert tree_allclose(tree["neurons"]["empty"], zero)
    assert tree_allclose(tree["synapses"]["c"], -zero)
    assert tree_allclose(energy, tree["neurons"]["a"])
    assert dEdg["empty"].shape == (0,) and tree_allclose(dEdg["a"], xs["a"])


def test_wrongly_typed_states_get_our_messages():
    # Without the jaxtyping hook (which rejects these first in the test suite).
    out = run_without_hook(
        """
        import jax.numpy as jnp
        import hamux_lagr as hl

        ham = hl.HAM(
            {"a": hl.NeuronLayer(hl.LIdentity(), (2,))},
            {"b": hl.BiasSynapse(jnp.ones(2))},
            [(("a",), "b")],
        )
        for xs in ({"a": "1.0"}, {"a": None}, [jnp.zeros(2)]):
            try:
                ham.energy(xs)
                print("no error")
            except (TypeError, ValueError) as e:
                print(f"{type(e).__name__}: {e}")
        layer = hl.NeuronLayer(hl.LIdentity(), (2,))
        bias = hl.BiasSynapse(jnp.ones(2))
        for args in (
            ({"a": layer}, {"s": 3}, []),
            ({"a": hl.LIdentity()}, {}, []),
            ({"a": layer}, {"s": bias}, [(("a",), "s", "extra")]),
            ({"a": layer}, {"s": bias}, "a"),
        ):
            try:
                hl.HAM(*args)
                print("no error")
            except (TypeError, ValueError) as e:
                print(f"{type(e).__name__}: {e}")
        """
    )
    lines = out.splitlines()
    assert lines[0].startswith("TypeError: `xs['a']` must be array-like"), lines[0]
    assert "HAM.energy" in lines[0] and "str" in lines[0]
    assert lines[1].startswith("TypeError: `xs['a']` must be array-like"), lines[1]
    assert "NoneType" in lines[1]
    assert lines[2].startswith("TypeError: `xs` must be a dict"), lines[2]
    assert lines[3].startswith("TypeError: `synapses['s']` must be callable"), lines[3]
    assert lines[4].startswith("TypeError: `neurons['a']` must be a `NeuronLayer`")
    assert lines[5].startswith("ValueError: `connections[0]` must be a pair"), lines[5]
    assert lines[6].startswith("TypeError: `connections` must be a list"), lines[6]
