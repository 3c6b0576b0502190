import io

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest
from conftest import tree_allclose

import hamux_lagr as hl


LAGRANGIANS = [
    hl.LIdentity(),
    hl.LRepu(n=3.0),
    hl.LTanh(beta=2.0),
    hl.LSoftmax(beta=1.5),
    hl.LLayerNorm(gamma=2.0, delta=0.5),
]


@pytest.mark.parametrize(
    "lagrangian", LAGRANGIANS, ids=lambda lagr: type(lagr).__name__
)
def test_activations_and_energy_follow_the_lagrangian(lagrangian, rng):
    layer = hl.NeuronLayer(lagrangian, (3, 4))
    x = rng.standard_normal((3, 4))

    @jax.jit
    def run(x):
        g = layer.activations(x)
        return g, jax.grad(lagrangian)(x), layer.energy(x), lagrangian(x)

    g, grad, energy, value = run(x)
    assert g.shape == x.shape
    assert tree_allclose(g, grad)
    # The layer energy is the Legendre transform <x, g> - L(x).
    assert jnp.allclose(energy, jnp.sum(x * g) - value)


def test_energy_gradient_wrt_activations_is_the_state(rng):
    # dE/dg = x: the defining property of the Legendre transform, checked through the
    # chain rule dE/dx = H_L(x) x (H_L the Hessian of the Lagrangian).
    lagr = hl.LTanh(beta=1.3)
    layer = hl.NeuronLayer(lagr, (5,))
    x = rng.standard_normal((5,))
    dEdx, hessian = jax.jit(
        lambda x: (jax.grad(layer.energy)(x), jax.hessian(lagr)(x))
    )(x)
    assert jnp.allclose(dEdx, hessian @ x)


def test_init_zeros_random_and_batched(getkey):
    layer = hl.NeuronLayer(hl.LRelu(), (2, 3))
    x = layer.init()
    assert x.shape == (2, 3) and x.dtype == jnp.float64  # default float (x64 on)
    assert jnp.all(x == 0)
    assert layer.init(batch_size=4).shape == (4, 2, 3)
    key = getkey()
    a, b = layer.init(key=key), layer.init(key=key)
    assert a.shape == (2, 3) and jnp.array_equal(a, b) and jnp.std(a) > 0
    assert not jnp.array_equal(a, layer.init(key=getkey()))
    batch = layer.init(batch_size=5, key=getkey(), dtype=jnp.float32)
    assert batch.shape == (5, 2, 3) and batch.dtype == jnp.float32


def test_shape_and_tau_are_static_config():
    layer = hl.NeuronLayer(hl.LSoftmax(), 7, tau=0.5)
    assert layer.shape == (7,) and layer.tau == 0.5
    leaves = jax.tree_util.tree_leaves(layer)
    assert len(leaves) == 1  # only LSoftmax's beta is a (learnable) leaf
    assert "NeuronLayer" in repr(layer)


def test_vmap_jit_and_grad_of_parameters(rng):
    layer = hl.NeuronLayer(hl.LSoftmax(beta=2.0), (6,))
    xs = rng.standard_normal((4, 6))
    energies = jax.jit(jax.vmap(layer.energy))(xs)
    assert energies.shape == (4,)
    assert jnp.allclose(energies[1], layer.energy(xs[1]))
    grads = eqx.filter_jit(eqx.filter_grad(lambda layer, x: layer.energy(x)))(
        layer, xs[0]
    )
    assert grads.lagrangian.beta.shape == () and grads.lagrangian.beta != 0


def test_serialisation_round_trip():
    layer = hl.NeuronLayer(hl.LSigmoid(beta=3.0, scale=2.0), (3,), tau=0.1)
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, layer)
    buffer.seek(0)
    like = hl.NeuronLayer(hl.LSigmoid(), (3,), tau=0.1)
    loaded = eqx.tree_deserialise_leaves(buffer, like)
    assert loaded.lagrangian.beta == 3.0 and loaded.lagrangian.scale == 2.0


def test_bad_arguments():
    # (Under the test suite's jaxtyping hook a wrongly typed argument is caught by the
    # type checker, itself a TypeError naming the parameter.)
    with pytest.raises(TypeError, match="lagrangian"):
        hl.NeuronLayer(jnp.tanh, (3,))  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match="`shape`"):
        hl.NeuronLayer(hl.LIdentity(), (3, -1))
    with pytest.raises(TypeError, match="shape"):
        hl.NeuronLayer(hl.LIdentity(), "3")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="`tau`"):
        hl.NeuronLayer(hl.LIdentity(), (3,), tau=0.0)
    with pytest.raises(ValueError, match="`tau`"):
        hl.NeuronLayer(hl.LIdentity(), (3,), tau=float("nan"))
    with pytest.raises(ValueError, match="`batch_size`"):
        hl.NeuronLayer(hl.LIdentity(), (3,)).init(batch_size=-1)
