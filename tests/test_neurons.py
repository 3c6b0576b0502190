import io

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import run_without_hook, tree_allclose

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
    assert tree_allclose(energy, jnp.sum(jnp.asarray(x) * g) - value)


def test_energy_and_activations_are_the_lagrangians_one_pass(rng):
    layer = hl.NeuronLayer(hl.LSoftmax(beta=1.5), (2, 3))
    x = jnp.asarray(rng.standard_normal((2, 3)))
    both, energy, g, reference = jax.jit(
        lambda x: (
            layer.energy_and_activations(x),
            layer.energy(x),
            layer.activations(x),
            layer.lagrangian.energy_and_activation(x),
        )
    )(x)
    assert tree_allclose(both, (energy, g))
    assert tree_allclose(both, reference)


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


def test_numpy_numbers_are_accepted_for_shape_tau_and_batch_size():
    layer = hl.NeuronLayer(hl.LIdentity(), np.int64(3), tau=np.float32(0.5))
    assert layer.shape == (3,) and type(layer.shape[0]) is int and layer.tau == 0.5
    layer = hl.NeuronLayer(hl.LIdentity(), (np.int32(2), np.int64(3)))
    assert layer.shape == (2, 3) and all(type(d) is int for d in layer.shape)
    assert layer.init(batch_size=np.int64(4)).shape == (4, 2, 3)


def test_an_empty_layer_has_zero_energy_and_empty_activations():
    # A zero-size layer holds no neurons: its energy is 0 and its Lagrangian is not
    # evaluated (a softmax over no neurons would be log(0)).
    for lagrangian in (hl.LSoftmax(beta=2.0), hl.LIdentity(), hl.LLayerNorm()):
        layer = hl.NeuronLayer(lagrangian, (2, 0))
        x = layer.init()
        energy, g = eqx.filter_jit(layer.energy_and_activations)(x)
        assert tree_allclose(energy, jnp.zeros((), x.dtype))
        assert g.shape == (2, 0) and g.dtype == x.dtype
        assert layer.activations(x).shape == (2, 0)


def test_a_lagrangian_that_is_not_a_scalar_is_named():
    class Elementwise(hl.Lagrangian):
        def __call__(self, x):
            return x**2 / 2  # forgot the sum

    layer = hl.NeuronLayer(Elementwise(), (3,))
    for method in (layer.energy, layer.activations, layer.energy_and_activations):
        with pytest.raises(TypeError, match=r"`Elementwise.__call__` must return"):
            eqx.filter_jit(method)(jnp.zeros(3))


def test_shape_and_tau_are_static_config():
    layer = hl.NeuronLayer(hl.LSoftmax(), 7, tau=0.5)
    assert layer.shape == (7,) and layer.tau == 0.5
    leaves = jax.tree_util.tree_leaves(layer)
    assert len(leaves) == 1  # only LSoftmax's beta is a (learnable) leaf


def test_grad_of_parameters(rng):
    layer = hl.NeuronLayer(hl.LSoftmax(beta=2.0), (6,))
    xs = rng.standard_normal((4, 6))
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
    with pytest.raises(TypeError, match="`shape` must be a non-negative int"):
        hl.NeuronLayer(hl.LIdentity(), (3, -1))
    with pytest.raises(ValueError, match="`tau` must be a finite number > 0"):
        hl.NeuronLayer(hl.LIdentity(), (3,), tau=0.0)
    with pytest.raises(ValueError, match="`tau` must be a finite number > 0"):
        hl.NeuronLayer(hl.LIdentity(), (3,), tau=float("nan"))
    with pytest.raises(ValueError, match="`batch_size` must be an int in"):
        hl.NeuronLayer(hl.LIdentity(), (3,)).init(batch_size=-1)


def test_wrongly_typed_arguments_get_our_messages():
    # Without the jaxtyping hook (which rejects these first in the test suite).
    out = run_without_hook(
        """
        import jax.numpy as jnp
        import hamux_lagr as hl

        def message(f):
            try:
                f()
            except (TypeError, ValueError) as e:
                return f"{type(e).__name__}: {e}"
            return "no error"

        layer = hl.NeuronLayer(hl.LIdentity(), (3,))
        print(message(lambda: hl.NeuronLayer(hl.LIdentity(), (3,), tau="2")))
        print(message(lambda: hl.NeuronLayer(hl.LIdentity(), "3")))
        print(message(lambda: layer.init(batch_size=2.0)))
        print(message(lambda: layer.init(batch_size="2")))
        print(message(lambda: layer.energy("x")))
        print(message(lambda: layer.activations(None)))
        print(message(lambda: layer.energy(jnp.zeros(3, jnp.complex64))))
        print(message(lambda: layer.init(key=0)))
        print(message(lambda: hl.NeuronLayer(jnp.tanh, (3,))))
        """
    )
    lines = out.splitlines()
    assert lines[0].startswith("TypeError: `tau` must be a Python number"), lines[0]
    assert lines[1].startswith("TypeError: `shape` must be"), lines[1]
    assert lines[2].startswith("TypeError: `batch_size` must be a Python int"), lines[2]
    assert lines[3].startswith("TypeError: `batch_size` must be a Python int"), lines[3]
    assert lines[4].startswith("TypeError: `x` must be array-like"), lines[4]
    assert lines[5].startswith("TypeError: `x` must be array-like"), lines[5]
    assert lines[6].startswith("TypeError: `x` must be real"), lines[6]
    assert lines[7].startswith("TypeError: `key` must be a JAX PRNG key"), lines[7]
    assert lines[8].startswith("TypeError: `lagrangian` must be a"), lines[8]
