import io

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tree_allclose

import hamux_lagr as hl


# ----------------------------------------------------------------------------------
# dense and bias synapses
# ----------------------------------------------------------------------------------


def test_linear_synapse_energy_and_currents(rng):
    W = rng.standard_normal((6, 4))
    b = rng.standard_normal((4,))
    g1 = rng.standard_normal((2, 3))  # multi-dimensional layers are flattened
    g2 = rng.standard_normal((4,))
    synapse = hl.LinearSynapse(W, b)

    @jax.jit
    def run(g1, g2):
        return synapse(g1, g2), jax.grad(synapse, argnums=(0, 1))(g1, g2)

    energy, (d1, d2) = run(g1, g2)
    v1 = np.asarray(g1).reshape(-1)
    assert np.allclose(energy, -(v1 @ W @ g2) - b @ g2)
    # Each layer's input current is minus the gradient: W g2 and W^T g1 + b.
    assert np.allclose(d1, -(W @ g2).reshape(2, 3))
    assert np.allclose(d2, -(v1 @ W) - b)
    assert np.allclose(hl.LinearSynapse(W)(g1, g2), -(v1 @ W @ g2))


def test_linear_synapse_random(getkey):
    key = getkey()
    synapse = hl.LinearSynapse.random((2, 50), 30, key=key, use_bias=True)
    assert synapse.W.shape == (100, 30) and synapse.W.dtype == jnp.float64
    assert synapse.bias is not None and jnp.all(synapse.bias == 0)
    assert abs(float(jnp.std(synapse.W)) - 0.1) < 0.01  # 1 / sqrt(fan-in)
    again = hl.LinearSynapse.random((2, 50), 30, key=key, use_bias=True)
    assert jnp.array_equal(synapse.W, again.W)
    small = hl.LinearSynapse.random(3, 2, key=key, std=0.0, dtype=jnp.float32)
    assert small.bias is None and small.W.dtype == jnp.float32 and jnp.all(small.W == 0)
    with pytest.raises(TypeError):
        hl.LinearSynapse.random(3, 2, key)  # pyright: ignore[reportCallIssue]


def test_linear_synapse_errors():
    with pytest.raises(ValueError, match="`W`"):
        hl.LinearSynapse(jnp.ones(3))
    with pytest.raises(ValueError, match="`bias`"):
        hl.LinearSynapse(jnp.ones((3, 2)), jnp.ones(3))
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(4,\)"):
        hl.LinearSynapse(jnp.ones((3, 2)))(jnp.ones(4), jnp.ones(2))


def test_bias_synapse(getkey, rng):
    g = rng.standard_normal((3, 4, 4))
    per_channel = hl.BiasSynapse(np.arange(3.0)[:, None, None])
    random = hl.BiasSynapse.random((3, 4, 4), key=getkey(), std=0.5)
    assert random.bias.shape == (3, 4, 4) and 0.2 < np.std(random.bias) < 1.0
    e_channel, (e_random, grad) = jax.jit(
        lambda g: (per_channel(g), jax.value_and_grad(random)(g))
    )(g)
    assert np.allclose(e_channel, -np.sum(np.arange(3.0) * g.sum((1, 2))))
    assert np.allclose(e_random, -np.sum(np.asarray(random.bias) * g))
    assert np.allclose(grad, -random.bias)
    with pytest.raises(ValueError, match="does not broadcast"):
        hl.BiasSynapse(np.ones(5))(g)


# ----------------------------------------------------------------------------------
# dense associative memory
# ----------------------------------------------------------------------------------


def test_dense_memory_is_the_modern_hopfield_energy(rng):
    patterns = rng.standard_normal((7, 5))
    g = rng.standard_normal((5,))
    beta = 3.0
    memory = hl.DenseMemory(patterns, hl.LSoftmax(beta))
    energy, grad = jax.jit(jax.value_and_grad(memory))(g)
    assert np.allclose(energy, -jax.nn.logsumexp(beta * patterns @ g) / beta)
    # The input current is the Ramsauer et al. update, patterns^T softmax(beta P g).
    assert np.allclose(-grad, patterns.T @ jax.nn.softmax(beta * patterns @ g))


def test_dense_memory_is_krotov_hopfield_with_repu(rng):
    patterns = rng.standard_normal((7, 5))
    g = rng.standard_normal((5,))
    memory = hl.DenseMemory(patterns, hl.LRepu(n=3.0))
    h = np.maximum(np.asarray(patterns @ g), 0)
    assert np.allclose(memory(g), -np.sum(h**3) / 3)
    assert np.allclose(-jax.grad(memory)(g), patterns.T @ h**2)


def test_dense_memory_image_patterns_and_random(getkey, rng):
    memory = hl.DenseMemory.random(4, (2, 3, 3), hl.LSoftmax(1.0), key=getkey())
    assert memory.patterns.shape == (4, 2, 3, 3)
    flat = np.asarray(memory.patterns).reshape(4, -1)
    assert np.allclose(np.sum(flat**2, axis=1), 1.0)
    g = rng.standard_normal((2, 3, 3))
    h, energy = jax.jit(lambda g: (memory.similarities(g), memory(g)))(g)
    h_ref = flat @ g.reshape(-1)
    assert np.allclose(h, h_ref)
    assert np.allclose(
        energy, -(h_ref.max() + np.log(np.sum(np.exp(h_ref - h_ref.max()))))
    )


def test_dense_memory_errors():
    with pytest.raises(ValueError, match="`patterns`"):
        hl.DenseMemory(jnp.ones(4), hl.LSoftmax())
    with pytest.raises(TypeError, match="lagrangian"):
        hl.DenseMemory(jnp.ones((2, 4)), jax.nn.logsumexp)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match=r"shape \(4,\).*\(3,\)"):
        hl.DenseMemory(jnp.ones((2, 4)), hl.LSoftmax())(jnp.ones(3))


# ----------------------------------------------------------------------------------
# convolution and pooling
# ----------------------------------------------------------------------------------


def _conv_reference(image, kernel, stride, pad):
    """Cross-correlation of a (C, H, W) image, written with loops."""
    image = np.pad(np.asarray(image), ((0, 0), (pad, pad), (pad, pad)))
    c_out, _, kh, kw = kernel.shape
    h = (image.shape[1] - kh) // stride + 1
    w = (image.shape[2] - kw) // stride + 1
    out = np.zeros((c_out, h, w))
    for o in range(c_out):
        for i in range(h):
            for j in range(w):
                patch = image[
                    :, i * stride : i * stride + kh, j * stride : j * stride + kw
                ]
                out[o, i, j] = np.sum(patch * np.asarray(kernel[o]))
    return out


def test_conv_synapse_energy(rng):
    kernel = rng.standard_normal((3, 2, 3, 3))
    bias = rng.standard_normal((3,))
    synapse = hl.ConvSynapse(kernel, bias, stride=2, padding=1)
    g1 = rng.standard_normal((2, 7, 7))
    current = _conv_reference(g1, kernel, 2, 1) + np.asarray(bias)[:, None, None]
    assert current.shape == (3, 4, 4)
    g2 = rng.standard_normal(current.shape)
    energy, (d1, d2) = jax.jit(jax.value_and_grad(synapse, argnums=(0, 1)))(g1, g2)
    assert np.allclose(synapse.forward(g1), current)
    assert np.allclose(energy, -np.sum(np.asarray(g2) * current))
    assert np.allclose(d2, -current)
    # Layer 1 receives the transposed convolution of g2: check it by linearity.
    assert np.allclose(
        jnp.sum(d1 * g1), -np.sum(np.asarray(g2) * (current - bias[:, None, None]))
    )


def test_conv_synapse_random_and_errors(getkey):
    synapse = hl.ConvSynapse.random(2, 5, (3, 1), key=getkey(), padding="SAME")
    assert synapse.kernel.shape == (5, 2, 3, 1) and synapse.bias is None
    assert synapse.forward(jnp.ones((2, 6, 6))).shape == (5, 6, 6)
    with pytest.raises(ValueError, match="channels"):
        synapse.forward(jnp.ones((3, 6, 6)))
    with pytest.raises(ValueError, match=r"\(5, 6, 6\).*\(5, 3, 3\)"):
        synapse(jnp.ones((2, 6, 6)), jnp.ones((5, 3, 3)))
    with pytest.raises(ValueError, match="`padding`"):
        hl.ConvSynapse(jnp.ones((1, 1, 2, 2)), padding="FULL")
    with pytest.raises(ValueError, match="`bias`"):
        hl.ConvSynapse(jnp.ones((2, 1, 2, 2)), jnp.ones(3))


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pool_synapse(mode, rng):
    g1 = rng.standard_normal((2, 4, 6))
    g2 = rng.standard_normal((2, 2, 3))
    synapse = hl.PoolSynapse(2, mode=mode)
    blocks = np.asarray(g1).reshape(2, 2, 2, 3, 2)
    pooled = blocks.max((2, 4)) if mode == "max" else blocks.mean((2, 4))
    energy, (d1, d2) = jax.jit(jax.value_and_grad(synapse, argnums=(0, 1)))(g1, g2)
    assert np.allclose(energy, -np.sum(pooled * np.asarray(g2)))
    assert np.allclose(d2, -pooled)
    # Layer 1 receives g2 at each window's maximum, or spread over the window.
    spread = np.repeat(np.repeat(np.asarray(g2), 2, axis=1), 2, axis=2)
    if mode == "max":
        is_max = np.asarray(g1) == np.repeat(np.repeat(pooled, 2, axis=1), 2, axis=2)
        assert np.allclose(-d1, np.where(is_max, spread, 0))
    else:
        assert np.allclose(-d1, spread / 4)


def test_pool_synapse_over_a_convolution(getkey, rng):
    synapse = hl.PoolSynapse.random(1, 3, 3, 2, key=getkey(), padding=1, mode="avg")
    assert isinstance(synapse.conv, hl.ConvSynapse)
    g1 = rng.standard_normal((1, 6, 6))
    conv = synapse.conv.forward(g1)
    pooled = np.asarray(conv).reshape(3, 3, 2, 3, 2).mean((2, 4))
    g2 = rng.standard_normal((3, 3, 3))
    assert np.allclose(synapse(g1, g2), -np.sum(pooled * np.asarray(g2)))
    with pytest.raises(ValueError, match=r"\(3, 3, 3\).*\(3, 2, 2\)"):
        synapse(g1, jnp.ones((3, 2, 2)))
    with pytest.raises(ValueError, match="`mode`"):
        hl.PoolSynapse(2, mode="min")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="`window`"):
        hl.PoolSynapse(0)


# ----------------------------------------------------------------------------------
# attention
# ----------------------------------------------------------------------------------


def _attention_reference(Wq, Wk, beta, g, gk):
    Wq, Wk, g, gk = map(np.asarray, (Wq, Wk, g, gk))
    total = 0.0
    for h in range(Wq.shape[0]):
        q = g @ Wq[h].T  # (N, Y)
        k = gk @ Wk[h].T  # (M, Y)
        for n in range(q.shape[0]):
            scores = beta * (k @ q[n])
            top = scores.max()
            total += (top + np.log(np.sum(np.exp(scores - top)))) / beta
    return -total


def test_attention_synapse_energy(getkey, rng):
    synapse = hl.AttentionSynapse.random(6, num_heads=2, head_dim=3, key=getkey())
    assert synapse.Wq.shape == (2, 3, 6) and synapse.beta == pytest.approx(3**-0.5)
    g = rng.standard_normal((5, 6))
    gk = rng.standard_normal((4, 6))
    ref_self = _attention_reference(synapse.Wq, synapse.Wk, synapse.beta, g, g)
    ref_cross = _attention_reference(synapse.Wq, synapse.Wk, synapse.beta, g, gk)
    self_e, cross_e = jax.jit(lambda g, gk: (synapse(g), synapse(g, gk)))(g, gk)
    assert np.allclose(self_e, ref_self)
    assert np.allclose(cross_e, ref_cross)
    # Its gradient (the attention update) is exact: central finite differences.
    energy_and_grad = jax.jit(jax.value_and_grad(lambda g: synapse(g)))
    direction, eps = rng.standard_normal(g.shape), 1e-6
    numerical = (
        energy_and_grad(g + eps * direction)[0]
        - energy_and_grad(g - eps * direction)[0]
    ) / (2 * eps)
    assert np.allclose(np.sum(energy_and_grad(g)[1] * direction), numerical, rtol=1e-7)


def test_attention_synapse_errors():
    with pytest.raises(ValueError, match="same shape"):
        hl.AttentionSynapse(jnp.ones((1, 2, 3)), jnp.ones((1, 2, 4)))
    with pytest.raises(ValueError, match="`beta`"):
        hl.AttentionSynapse(jnp.ones((1, 2, 3)), jnp.ones((1, 2, 3)), beta=-1.0)
    with pytest.raises(ValueError, match=r"\(num_tokens, 3\)"):
        hl.AttentionSynapse(jnp.ones((1, 2, 3)), jnp.ones((1, 2, 3)))(jnp.ones((4, 2)))


# ----------------------------------------------------------------------------------
# all synapses: pytrees, jit, serialisation
# ----------------------------------------------------------------------------------


def _all_synapses(rng):
    normal = rng.standard_normal
    return {
        "linear": hl.LinearSynapse(normal((3, 4)), normal(4)),
        "bias": hl.BiasSynapse(normal(3)),
        "memory": hl.DenseMemory(normal((5, 3)), hl.LSoftmax(2.0)),
        "conv": hl.ConvSynapse(normal((2, 1, 3, 3)), normal(2)),
        "pool": hl.PoolSynapse(2, conv=hl.ConvSynapse(normal((2, 1, 3, 3)))),
        "attention": hl.AttentionSynapse(normal((2, 2, 4)), normal((2, 2, 4))),
    }


def test_synapses_are_trainable_serialisable_pytrees(rng):
    synapses = _all_synapses(rng)
    assert all(isinstance(s, hl.Synapse) for s in synapses.values())
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, synapses)
    buffer.seek(0)
    like = _all_synapses(np.random.default_rng(0))
    loaded = eqx.tree_deserialise_leaves(buffer, like)
    assert tree_allclose(loaded, synapses)
    # Gradients reach every learnable array (through jit, as a pytree argument).
    inputs = {
        "linear": (np.ones(3), np.ones(4)),
        "bias": (np.ones(3),),
        "memory": (np.ones(3),),
        "conv": (rng.standard_normal((1, 5, 5)), np.ones((2, 3, 3))),
        "pool": (rng.standard_normal((1, 6, 6)), np.ones((2, 2, 2))),
        "attention": (rng.standard_normal((2, 4)),),
    }

    @eqx.filter_jit
    @eqx.filter_grad
    def grads(synapses):
        return sum(synapses[name](*args) for name, args in inputs.items())

    for name, grad in grads(synapses).items():
        leaves = jax.tree_util.tree_leaves(eqx.filter(grad, eqx.is_inexact_array))
        assert leaves and all(np.any(np.asarray(leaf) != 0) for leaf in leaves), name
