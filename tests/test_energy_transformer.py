import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tree_allclose

import hamux_lagr as hl


# The Energy Transformer's reference configuration (Hoover et al. 2023): ViT-Base
# tokens (196 patches and a class token) of dimension 768, 12 heads of 64, 3072
# memories; 12 steps of alpha = 0.1.
N, D, HEADS, HEAD_DIM, K = 197, 768, 12, 64, 3072
STEPS, ALPHA = 12, 0.1


def layer_norm(x, eps=1e-5):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mean) ** 2, axis=-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps)


def reference_energy(Wq, Wk, Xi, beta):
    """The Energy Transformer's energy of the normalised tokens g, written out: the
    energy attention plus the Hopfield network, -1/2 sum ReLU(xi . g)^2."""

    def energy(g):
        q = jnp.einsum("hyd,nd->hny", Wq, g)
        k = jnp.einsum("hyd,md->hmy", Wk, g)
        scores = jnp.einsum("hny,hmy->hnm", q, k)
        attention = -jnp.sum(jax.nn.logsumexp(beta * scores, axis=-1)) / beta
        hopfield = -0.5 * jnp.sum(jax.nn.relu(g @ Xi.T) ** 2)
        return attention + hopfield

    return energy


def energy_transformer(attention, patterns):
    return hl.HAM(
        {"tokens": hl.NeuronLayer(hl.LLayerNorm(), (N, D), leak=False)},
        {"attention": attention, "hopfield": hl.DenseMemory(patterns, hl.LRelu())},
        [(("tokens",), "attention"), (("tokens",), "hopfield")],
    )


def test_it_reproduces_the_reference_update_for_twelve_steps():
    k_att, k_mem, k_x = jax.random.split(jax.random.key(0), 3)
    dtype = jnp.float32
    attention = hl.AttentionSynapse.random(D, HEADS, HEAD_DIM, key=k_att, dtype=dtype)
    patterns = jax.random.normal(k_mem, (K, D), dtype) / D**0.5
    x0 = jax.random.normal(k_x, (N, D), dtype)
    ham = energy_transformer(attention, patterns)
    energy = reference_energy(attention.Wq, attention.Wk, patterns, attention.beta)

    @jax.jit
    def reference(x):
        def step(x, _):
            e, grad = jax.value_and_grad(energy)(layer_norm(x))
            return x - ALPHA * grad, e

        return jax.lax.scan(step, x, length=STEPS)

    @jax.jit
    def ours(x):
        return hl.descend(ham, {"tokens": x}, steps=STEPS, dt=ALPHA)

    expected, expected_energies = reference(x0)
    sol = ours(x0)
    got = sol.xs["tokens"]
    assert float(jnp.max(jnp.abs(got - expected)) / jnp.max(jnp.abs(expected))) < 1e-5
    # The energy is the Energy Transformer's (no layer energy), and it falls.
    assert tree_allclose(sol.energies[:-1], expected_energies, rtol=1e-5)
    assert np.all(np.diff(np.asarray(sol.energies)) <= 0)


def small_block(leak, seed=0):
    k_att, k_mem = jax.random.split(jax.random.key(seed))
    return hl.HAM(
        {"t": hl.NeuronLayer(hl.LLayerNorm(gamma=1.3), (5, 8), leak=leak)},
        {
            "attention": hl.AttentionSynapse.random(8, 2, 4, key=k_att),
            "hopfield": hl.DenseMemory.random(6, 8, hl.LRelu(), key=k_mem),
        },
        [(("t",), "attention"), (("t",), "hopfield")],
    )


def test_without_leak_the_layer_energy_and_the_state_term_are_left_out():
    with_leak, without = small_block(True), small_block(False)
    x = {"t": jax.random.normal(jax.random.key(1), (5, 8))}

    @eqx.filter_jit  # one compilation for every quantity compared
    def quantities(with_leak, without, x):
        return {
            "tree": without.energy_tree(x),
            "energy": without.energy(x),
            "leaky_tree": with_leak.energy_tree(x),
            "layer": with_leak.neurons["t"].energy(x["t"]),
            "leaky_energy": with_leak.energy(x),
            "leaky_dEdg": with_leak.dEdg(x)["t"],
            "dEdg": without.dEdg(x)["t"],
            "both": without.energy_and_dEdg(x),
        }

    q = quantities(with_leak, without, x)
    assert q["tree"]["neurons"]["t"] == 0
    assert tree_allclose(q["energy"], sum(q["tree"]["synapses"].values()))
    assert tree_allclose(q["leaky_tree"]["neurons"]["t"], q["layer"])
    assert tree_allclose(q["leaky_energy"], q["energy"] + q["layer"])
    assert tree_allclose(q["leaky_dEdg"], q["dEdg"] + x["t"])
    e, d = q["both"]
    assert tree_allclose(e, q["energy"]) and tree_allclose(d["t"], q["dEdg"])


@pytest.mark.parametrize(
    "lagrangian",
    [hl.LLayerNorm(gamma=1.3), hl.LTanh(beta=2.0), hl.LSoftmax(beta=1.5)],
    ids=["layernorm", "tanh", "softmax"],
)
def test_without_leak_the_energy_never_rises(lagrangian):
    # d E / dt = -<dE/dg, Hessian(L) dE/dg> / tau <= 0 for a convex Lagrangian.
    k_att, k_mem, k_x = jax.random.split(jax.random.key(2), 3)
    ham = hl.HAM(
        {"t": hl.NeuronLayer(lagrangian, (5, 8), leak=False, tau=0.5)},
        {
            "attention": hl.AttentionSynapse.random(8, 2, 4, key=k_att),
            "hopfield": hl.DenseMemory.random(6, 8, hl.LRelu(), key=k_mem),
        },
        [(("t",), "attention"), (("t",), "hopfield")],
    )
    xs = {"t": jax.random.normal(k_x, (3, 5, 8))}
    sol = eqx.filter_jit(jax.vmap(lambda x: hl.descend(ham, x, steps=60, dt=0.01)))(xs)
    energies = np.asarray(sol.energies)
    assert np.all(np.diff(energies, axis=1) <= 1e-12 * (1 + np.abs(energies[:, :-1])))
    assert np.all(energies[:, -1] < energies[:, 0])


def test_the_vector_field_is_the_dynamics_and_diffrax_can_integrate_it():
    ham = small_block(True)
    x = {"t": jax.random.normal(jax.random.key(3), (5, 8))}
    rows = np.zeros((5, 8), bool)
    rows[:2] = True
    clamp = {"t": rows}

    @eqx.filter_jit
    def fields(ham, x, clamp):
        return ham.vector_field(0.0, x, clamp), ham.vector_field(None, x), ham.dEdg(x)

    field, free, dEdg = fields(ham, x, clamp)
    expected = jnp.where(rows, 0.0, -dEdg["t"] / ham.neurons["t"].tau)
    assert tree_allclose(field["t"], expected)
    assert tree_allclose(free["t"], -dEdg["t"])
    # A user's own diffeqsolve equals `descend(solver=...)`.
    term = diffrax.ODETerm(lambda t, y, args: ham.vector_field(t, y, args))
    own = eqx.filter_jit(diffrax.diffeqsolve)(
        term,
        diffrax.Tsit5(),
        t0=0.0,
        t1=1.0,
        dt0=0.1,
        y0=x,
        args=clamp,
        stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-8),
    )
    ours = hl.descend(
        ham,
        x,
        steps=10,
        dt=0.1,
        clamp=clamp,
        solver=diffrax.Tsit5(),
        stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-8),
    )
    assert tree_allclose(ours.xs["t"], own.ys["t"][-1], rtol=1e-6, atol=1e-8)
    assert np.array_equal(ours.xs["t"][:2], x["t"][:2])
    with pytest.raises(ValueError, match="unknown layer 'u' in `HAM.vector_field`"):
        ham.vector_field(0.0, x, {"u": True})
