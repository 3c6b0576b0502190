import io

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import run_without_hook, tree_allclose

import hamux_lagr as hl


def _j(ref, dtype=jnp.float64):
    """A NumPy reference as a JAX array of the dtype the library should return."""
    return jnp.asarray(ref, dtype)


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
    v1 = g1.reshape(-1)
    assert tree_allclose(energy, _j(-(v1 @ W @ g2) - b @ g2))
    # Each layer's input current is minus the gradient: W g2 and W^T g1 + b.
    assert tree_allclose(d1, _j(-(W @ g2).reshape(2, 3)))
    assert tree_allclose(d2, _j(-(v1 @ W) - b))
    assert tree_allclose(hl.LinearSynapse(W)(g1, g2), _j(-(v1 @ W @ g2)))


def test_linear_synapse_random(getkey):
    key = getkey()
    synapse = hl.LinearSynapse.random((2, 50), 30, key=key, use_bias=True)
    assert synapse.W.shape == (100, 30) and synapse.W.dtype == jnp.float64
    assert synapse.bias is not None and jnp.all(synapse.bias == 0)
    assert abs(float(jnp.std(synapse.W)) - 0.1) < 0.01  # 1 / sqrt(fan-in)
    again = hl.LinearSynapse.random((2, 50), 30, key=key, use_bias=True)
    assert tree_allclose(synapse, again, rtol=0, atol=0)
    small = hl.LinearSynapse.random(3, 2, key=key, std=0.0, dtype=jnp.float32)
    assert small.bias is None and small.W.dtype == jnp.float32 and jnp.all(small.W == 0)
    with pytest.raises(TypeError):
        hl.LinearSynapse.random(3, 2, key)  # pyright: ignore[reportCallIssue]
    with pytest.raises(ValueError, match="`std` must be a finite number >= 0"):
        hl.LinearSynapse.random(3, 2, key=key, std=float("nan"))
    with pytest.raises(ValueError, match="`std` must be a finite number >= 0"):
        hl.BiasSynapse.random(3, key=key, std=-1.0)


def test_linear_synapse_errors():
    with pytest.raises(ValueError, match="`W` must have 2 dimension"):
        hl.LinearSynapse(jnp.ones(3))
    with pytest.raises(ValueError, match=r"`bias` must have shape \(2,\)"):
        hl.LinearSynapse(jnp.ones((3, 2)), jnp.ones(3))
    with pytest.raises(
        ValueError, match=r"\(3, 2\).*layers of 3 and 2 neurons.*\(4,\)"
    ):
        hl.LinearSynapse(jnp.ones((3, 2)))(jnp.ones(4), jnp.ones(2))


def test_bias_synapse(getkey, rng):
    g = rng.standard_normal((3, 4, 4))
    per_channel = hl.BiasSynapse(np.arange(3.0)[:, None, None])
    random = hl.BiasSynapse.random((3, 4, 4), key=getkey(), std=0.5)
    assert random.bias.shape == (3, 4, 4) and 0.2 < jnp.std(random.bias) < 1.0
    e_channel, (e_random, grad) = jax.jit(
        lambda g: (per_channel(g), jax.value_and_grad(random)(g))
    )(g)
    assert tree_allclose(e_channel, _j(-np.sum(np.arange(3.0) * g.sum((1, 2)))))
    assert tree_allclose(e_random, _j(-np.sum(np.asarray(random.bias) * g)))
    assert tree_allclose(grad, -random.bias)
    with pytest.raises(ValueError, match=r"`bias` of shape \(5,\) does not broadcast"):
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
    scores = beta * patterns @ g
    top = scores.max()
    assert tree_allclose(
        energy, _j(-(top + np.log(np.sum(np.exp(scores - top)))) / beta)
    )
    # The input current is the Ramsauer et al. update, patterns^T softmax(beta P g).
    softmax = np.exp(scores - top) / np.sum(np.exp(scores - top))
    assert tree_allclose(-grad, _j(patterns.T @ softmax))


def test_dense_memory_is_krotov_hopfield_with_repu(rng):
    patterns = rng.standard_normal((7, 5))
    g = rng.standard_normal((5,))
    memory = hl.DenseMemory(patterns, hl.LRepu(n=3.0))
    h = np.maximum(patterns @ g, 0)
    assert tree_allclose(memory(g), _j(-np.sum(h**3) / 3))
    assert tree_allclose(-jax.grad(memory)(g), _j(patterns.T @ h**2))


def test_dense_memory_image_patterns_and_random(getkey, rng):
    memory = hl.DenseMemory.random(4, (2, 3, 3), hl.LSoftmax(1.0), key=getkey())
    assert memory.patterns.shape == (4, 2, 3, 3)
    flat = np.asarray(memory.patterns).reshape(4, -1)
    assert tree_allclose(_j(np.sum(flat**2, axis=1)), jnp.ones(4))
    g = rng.standard_normal((2, 3, 3))
    h, energy = jax.jit(lambda g: (memory.similarities(g), memory(g)))(g)
    h_ref = flat @ g.reshape(-1)
    assert tree_allclose(h, _j(h_ref))
    top = h_ref.max()
    assert tree_allclose(energy, _j(-(top + np.log(np.sum(np.exp(h_ref - top))))))


def test_dense_memory_errors():
    with pytest.raises(ValueError, match="`patterns` must have shape"):
        hl.DenseMemory(jnp.ones(4), hl.LSoftmax())
    with pytest.raises(ValueError, match=r"patterns of shape \(4,\).*shape \(3,\)"):
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
    current = _conv_reference(g1, kernel, 2, 1) + bias[:, None, None]
    assert current.shape == (3, 4, 4)
    g2 = rng.standard_normal(current.shape)
    energy, (d1, d2) = jax.jit(jax.value_and_grad(synapse, argnums=(0, 1)))(g1, g2)
    assert tree_allclose(synapse.forward(g1), _j(current))
    assert tree_allclose(energy, _j(-np.sum(g2 * current)))
    assert tree_allclose(d2, _j(-current))
    # Layer 1 receives the transposed convolution of g2: check it by linearity.
    assert tree_allclose(
        jnp.sum(d1 * g1), _j(-np.sum(g2 * (current - bias[:, None, None])))
    )


def test_conv_synapse_random_and_errors(getkey):
    synapse = hl.ConvSynapse.random(2, 5, (3, 1), key=getkey(), padding="SAME")
    assert synapse.kernel.shape == (5, 2, 3, 1) and synapse.bias is None
    assert synapse.forward(jnp.ones((2, 6, 6))).shape == (5, 6, 6)
    with pytest.raises(ValueError, match="with 2 channels, got .* shape \\(3, 6, 6\\)"):
        synapse.forward(jnp.ones((3, 6, 6)))
    with pytest.raises(
        ValueError, match=r"to shape \(5, 6, 6\).*has shape \(5, 3, 3\).*`padding`"
    ):
        synapse(jnp.ones((2, 6, 6)), jnp.ones((5, 3, 3)))
    for padding in ("FULL", -1, ((1, 2), (3, -1))):
        with pytest.raises(ValueError, match="`padding` must be 'SAME', 'VALID'"):
            hl.ConvSynapse(jnp.ones((1, 1, 2, 2)), padding=padding)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match=r"`bias` must have shape \(2,\)"):
        hl.ConvSynapse(jnp.ones((2, 1, 2, 2)), jnp.ones(3))
    pads = hl.ConvSynapse(jnp.ones((1, 1, 2, 2)), padding=(np.int64(1), (0, 2)))
    assert pads.padding == ((1, 1), (0, 2))


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pool_synapse(mode, rng):
    g1 = rng.standard_normal((2, 4, 6))
    g2 = rng.standard_normal((2, 2, 3))
    synapse = hl.PoolSynapse(2, mode=mode)
    blocks = g1.reshape(2, 2, 2, 3, 2)
    pooled = blocks.max((2, 4)) if mode == "max" else blocks.mean((2, 4))
    energy, (d1, d2) = jax.jit(jax.value_and_grad(synapse, argnums=(0, 1)))(g1, g2)
    assert tree_allclose(energy, _j(-np.sum(pooled * g2)))
    assert tree_allclose(d2, _j(-pooled))
    # Layer 1 receives g2 at each window's maximum, or spread over the window.
    spread = np.repeat(np.repeat(g2, 2, axis=1), 2, axis=2)
    if mode == "max":
        is_max = g1 == np.repeat(np.repeat(pooled, 2, axis=1), 2, axis=2)
        assert tree_allclose(-d1, _j(np.where(is_max, spread, 0)))
    else:
        assert tree_allclose(-d1, _j(spread / 4))


def test_pool_synapse_over_a_convolution(getkey, rng):
    synapse = hl.PoolSynapse.random(1, 3, 3, 2, key=getkey(), padding=1, mode="avg")
    assert isinstance(synapse.conv, hl.ConvSynapse)
    g1 = rng.standard_normal((1, 6, 6))
    conv = synapse.conv.forward(g1)
    pooled = np.asarray(conv).reshape(3, 3, 2, 3, 2).mean((2, 4))
    g2 = rng.standard_normal((3, 3, 3))
    assert tree_allclose(synapse(g1, g2), _j(-np.sum(pooled * g2)))
    with pytest.raises(
        ValueError, match=r"to shape \(3, 3, 3\).*has shape \(3, 2, 2\).*`window`"
    ):
        synapse(g1, jnp.ones((3, 2, 2)))
    with pytest.raises(ValueError, match="`mode` must be 'max' or 'avg'"):
        hl.PoolSynapse(2, mode="min")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="`window` must be a positive int"):
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
    assert tree_allclose(self_e, _j(ref_self))
    assert tree_allclose(cross_e, _j(ref_cross))
    # Its gradient (the attention update) is exact: central finite differences.
    energy_and_grad = jax.jit(jax.value_and_grad(lambda g: synapse(g)))
    direction, eps = rng.standard_normal(g.shape), 1e-6
    numerical = (
        energy_and_grad(g + eps * direction)[0]
        - energy_and_grad(g - eps * direction)[0]
    ) / (2 * eps)
    analytic = jnp.sum(energy_and_grad(g)[1] * direction)
    assert tree_allclose(analytic, numerical, rtol=1e-7)


def test_attention_synapse_errors():
    W = jnp.ones((1, 2, 3))
    with pytest.raises(ValueError, match="`Wq` and `Wk` must have the same shape"):
        hl.AttentionSynapse(W, jnp.ones((1, 2, 4)))
    with pytest.raises(
        ValueError, match=r"`g` of shape \(num_tokens, 3\), got \(4, 2\)"
    ):
        hl.AttentionSynapse(W, W)(jnp.ones((4, 2)))


@pytest.mark.parametrize("beta", [-1.0, 0.0, float("nan"), float("inf"), np.float64(0)])
def test_attention_beta_must_be_positive_and_finite(beta):
    W = jnp.ones((1, 2, 3))
    with pytest.raises(ValueError, match="`beta` must be a finite number > 0.*default"):
        hl.AttentionSynapse(W, W, beta=beta)


def test_attention_head_dim_and_sizes_are_checked(getkey):
    key = getkey()
    for kwargs, name in [
        (dict(dim=4, head_dim=0), "head_dim"),
        (dict(dim=4, num_heads=0), "num_heads"),
        (dict(dim=0), "dim"),
    ]:
        with pytest.raises(ValueError, match=f"`{name}` must be an int in \\[1, "):
            hl.AttentionSynapse.random(**kwargs, key=key)


# ----------------------------------------------------------------------------------
# construction: what each synapse accepts and refuses
# ----------------------------------------------------------------------------------


# Each synapse's learnable arrays, built from a dict of arrays by name.
_BUILDERS = {
    "LinearSynapse": (
        lambda a: hl.LinearSynapse(a["W"], a["bias"]),
        {"W": (3, 4), "bias": (4,)},
    ),
    "BiasSynapse": (lambda a: hl.BiasSynapse(a["bias"]), {"bias": (3,)}),
    "DenseMemory": (
        lambda a: hl.DenseMemory(a["patterns"], hl.LSoftmax(2.0)),
        {"patterns": (5, 3)},
    ),
    "ConvSynapse": (
        lambda a: hl.ConvSynapse(a["kernel"], a["bias"]),
        {"kernel": (2, 1, 3, 3), "bias": (2,)},
    ),
    "AttentionSynapse": (
        lambda a: hl.AttentionSynapse(a["Wq"], a["Wk"]),
        {"Wq": (2, 2, 4), "Wk": (2, 2, 4)},
    ),
}
_ARRAYS = [(cls, name) for cls, (_, shapes) in _BUILDERS.items() for name in shapes]


def _build(cls, name=None, value=None):
    build, shapes = _BUILDERS[cls]
    arrays = {n: jnp.full(s, 0.5) for n, s in shapes.items()}
    if name is not None:
        arrays[name] = arrays[name] * value
    return build(arrays)


@pytest.mark.parametrize("cls, name", _ARRAYS)
def test_complex_weights_are_refused(cls, name):
    with pytest.raises(TypeError, match=f"`{name}` must be real in `{cls}`"):
        _build(cls, name, 1j)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("cls, name", _ARRAYS)
def test_non_finite_weights_are_refused(cls, name, bad):
    with pytest.raises(ValueError, match=f"`{name}` must be finite .* in `{cls}`"):
        _build(cls, name, bad)


def test_non_finite_weights_built_under_jit_are_caught_by_the_solve():
    # A module built inside a jitted function (say, from traced parameters in a loss)
    # is not checked there, where a check would copy its weights: the solve it enters
    # checks every parameter once, at its entry.
    layer = hl.NeuronLayer(hl.LIdentity(), (3,))

    @eqx.filter_jit
    def solve(scale, throw):
        memory = _build("DenseMemory", "patterns", scale)
        ham = hl.HAM({"v": layer}, {"m": memory}, [(("v",), "m")])
        return hl.descend(ham, {"v": jnp.ones(3)}, steps=2, dt=0.1, throw=throw)

    assert solve(1.0, False).finite
    assert solve(jnp.nan, False).result == hl.RESULTS.nonfinite_parameter
    with pytest.raises(Exception, match="A parameter of the model"):
        jax.block_until_ready(solve(jnp.nan, True))


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: hl.DenseMemory(jnp.zeros((0, 4)), hl.LSoftmax()), "patterns"),
        (lambda: hl.DenseMemory(jnp.zeros((3, 0)), hl.LSoftmax()), "patterns"),
        (lambda: hl.LinearSynapse(jnp.zeros((0, 4))), "W"),
        (lambda: hl.BiasSynapse(jnp.zeros((3, 0))), "bias"),
        (lambda: hl.ConvSynapse(jnp.zeros((2, 1, 0, 3))), "kernel"),
        (lambda: hl.AttentionSynapse(jnp.zeros((2, 0, 4)), jnp.zeros((2, 0, 4))), "Wq"),
    ],
)
def test_empty_weights_are_refused(make, name):
    with pytest.raises(ValueError, match=f"`{name}` must not be empty"):
        make()


def test_empty_memory_says_what_to_store():
    with pytest.raises(ValueError, match=r"got shape \(0, 4\)\. Store at least one"):
        hl.DenseMemory(jnp.zeros((0, 4)), hl.LSoftmax())


def test_sizes_accept_numpy_integers(getkey):
    key, i64, i32 = getkey(), np.int64, np.int32
    linear = hl.LinearSynapse.random(i64(3), (i32(2), i64(2)), key=key)
    assert linear.W.shape == (3, 4)
    assert hl.BiasSynapse.random(i64(3), key=key).bias.shape == (3,)
    memory = hl.DenseMemory.random(i64(4), (i32(2), 3), hl.LSoftmax(), key=key)
    assert memory.patterns.shape == (4, 2, 3)
    conv = hl.ConvSynapse.random(
        i64(1), i32(2), (i64(3), 1), key=key, stride=i64(2), padding=i32(1)
    )
    assert conv.kernel.shape == (2, 1, 3, 1) and conv.stride == (2, 2)
    assert conv.padding == ((1, 1), (1, 1))
    assert all(type(v) is int for v in conv.stride)
    pool = hl.PoolSynapse(i64(2), stride=(i32(1), i64(2)))
    assert pool.window == (2, 2) and pool.stride == (1, 2)
    attention = hl.AttentionSynapse.random(i64(4), i64(2), i32(3), key=key)
    assert attention.Wq.shape == (2, 3, 4)
    assert hl.AttentionSynapse(attention.Wq, attention.Wk, np.float32(2)).beta == 2.0


@pytest.mark.parametrize(
    "make, error, match",
    [
        (
            lambda k: hl.DenseMemory.random(0, 3, hl.LSoftmax(), key=k),
            ValueError,
            "`num_memories`",
        ),
        (
            lambda k: hl.DenseMemory.random(2, (3, 0), hl.LSoftmax(), key=k),
            TypeError,
            "`shape` must be a positive int",
        ),
        (
            lambda k: hl.LinearSynapse.random(0, 3, key=k),
            TypeError,
            "`in_shape` must be a positive int",
        ),
        (lambda k: hl.BiasSynapse.random((3, 0), key=k), TypeError, "`shape`"),
        (lambda k: hl.ConvSynapse.random(0, 1, 3, key=k), ValueError, "`in_channels`"),
        (lambda k: hl.ConvSynapse.random(1, 0, 3, key=k), ValueError, "`out_channels`"),
        (
            lambda k: hl.ConvSynapse.random(1, 1, (3, 0), key=k),
            ValueError,
            "`kernel_size`",
        ),
        (lambda k: hl.PoolSynapse(2, stride=0), ValueError, "`stride`"),
    ],
)
def test_zero_sizes_are_refused(getkey, make, error, match):
    with pytest.raises(error, match=match):
        make(getkey())


# ----------------------------------------------------------------------------------
# dtypes: a synapse computes in its activations' dtype
# ----------------------------------------------------------------------------------


def _all_synapses(rng, dtype=np.float64):
    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)

    return {
        "linear": hl.LinearSynapse(normal(3, 4), normal(4)),
        "bias": hl.BiasSynapse(normal(3)),
        "memory": hl.DenseMemory(normal(5, 3), hl.LSoftmax(2.0)),
        "conv": hl.ConvSynapse(normal(2, 1, 3, 3), normal(2)),
        "pool": hl.PoolSynapse(2, conv=hl.ConvSynapse(normal(2, 1, 3, 3))),
        "attention": hl.AttentionSynapse(normal(2, 2, 4), normal(2, 2, 4)),
    }


def _inputs(rng, dtype=np.float64):
    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)

    return {
        "linear": (normal(3), normal(4)),
        "bias": (normal(3),),
        "memory": (normal(3),),
        "conv": (normal(1, 5, 5), normal(2, 3, 3)),
        "pool": (normal(1, 6, 6), normal(2, 2, 2)),
        "attention": (normal(2, 4),),
    }


@pytest.mark.parametrize(
    "weights, states", [(np.float32, np.float64), (np.float64, np.float32)]
)
def test_synapses_compute_in_the_activations_dtype(rng, weights, states):
    # Parameters are cast to the activations' dtype (as the Lagrangians do): no
    # implicit float32/float64 mix, and gradients keep each argument's dtype.
    synapses = _all_synapses(rng, weights)
    inputs = _inputs(rng, states)

    @eqx.filter_jit
    def run(synapses, inputs):
        def total(synapses, inputs):
            energies = {k: synapses[k](*inputs[k]) for k in synapses}
            return sum(energies.values()), energies

        grads, energies = eqx.filter_grad(total, has_aux=True)(synapses, inputs)
        return energies, grads, jax.grad(lambda i: total(synapses, i)[0])(inputs)

    energies, grads, input_grads = run(synapses, inputs)
    for name, energy in energies.items():
        assert energy.shape == () and energy.dtype == states, name
    # (The memory's Lagrangian has parameters of its own dtype: leave them out.)
    grads["memory"] = grads["memory"].patterns
    for leaf in jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_inexact_array)):
        assert leaf.dtype == weights
    for leaf in jax.tree_util.tree_leaves(input_grads):
        assert leaf.dtype == states


def test_activations_of_different_dtypes_are_refused(rng):
    synapses = _all_synapses(rng)
    g32, g64 = jnp.ones((3, 3, 3), jnp.float32), jnp.ones((3, 3, 3))
    with pytest.raises(TypeError, match="`g1` float32, `g2` float64"):
        synapses["linear"](g32[0, 0], jnp.ones(4))
    with pytest.raises(TypeError, match="must share one floating dtype"):
        hl.PoolSynapse(3)(g32, g64[:, :1, :1])
    W = jnp.ones((1, 2, 3))
    with pytest.raises(TypeError, match="`g` float64, `g_keys` float32"):
        hl.AttentionSynapse(W, W)(g64[0], g32[0])


# ----------------------------------------------------------------------------------
# all synapses: pytrees, jit, serialisation
# ----------------------------------------------------------------------------------


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
    inputs = _inputs(rng)

    @eqx.filter_jit
    @eqx.filter_grad
    def grads(synapses):
        return sum(synapses[name](*args) for name, args in inputs.items())

    for name, grad in grads(synapses).items():
        leaves = jax.tree_util.tree_leaves(eqx.filter(grad, eqx.is_inexact_array))
        assert leaves and all(jnp.any(leaf != 0) for leaf in leaves), name


# ----------------------------------------------------------------------------------
# our messages for inputs of the wrong type (the type-checking hook would answer first)
# ----------------------------------------------------------------------------------


_WRONG_TYPES = """
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
import hamux_lagr as hl

key, W3 = jax.random.key(0), jnp.ones((1, 2, 3))
linear = hl.LinearSynapse(jnp.ones((3, 2)))
conv = hl.ConvSynapse(jnp.ones((1, 1, 2, 2)))
cases = {
    "beta_str": lambda: hl.AttentionSynapse(W3, W3, beta="2"),
    "beta_none_ok": lambda: hl.AttentionSynapse(W3, W3, beta=None).beta,
    "beta_array": lambda: hl.AttentionSynapse(W3, W3, beta=[2.0]),
    "dim_str": lambda: hl.AttentionSynapse.random("4", key=key),
    "head_dim_float": lambda: hl.AttentionSynapse.random(4, head_dim=2.0, key=key),
    "num_memories_bool": lambda: hl.DenseMemory.random(True, 3, hl.LSoftmax(), key=key),
    "shape_str": lambda: hl.DenseMemory.random(2, "3", hl.LSoftmax(), key=key),
    "channels_float": lambda: hl.ConvSynapse.random(1.0, 2, 3, key=key),
    "std_str": lambda: hl.LinearSynapse.random(3, 2, key=key, std="0.1"),
    "key_int": lambda: hl.BiasSynapse.random(3, key=0),
    "dtype_int": lambda: hl.BiasSynapse.random(3, key=key, dtype=jnp.int32),
    "W_none": lambda: hl.LinearSynapse(None),
    "W_str": lambda: hl.LinearSynapse("abc"),
    "W_class": lambda: hl.LinearSynapse(np.ndarray),
    "patterns_bool": lambda: hl.DenseMemory(True, hl.LSoftmax()),
    "lagrangian_class": lambda: hl.DenseMemory(jnp.ones((2, 3)), hl.LSoftmax),
    "lagrangian_function": lambda: hl.DenseMemory(jnp.ones((2, 3)), jax.nn.logsumexp),
    "conv_class": lambda: hl.PoolSynapse(2, conv=hl.ConvSynapse),
    "padding_float": lambda: hl.ConvSynapse(jnp.ones((1, 1, 2, 2)), padding=1.5),
    "padding_triple": lambda: hl.ConvSynapse(jnp.ones((1, 1, 2, 2)), padding=(1, 2, 3)),
    "padding_short": lambda: hl.ConvSynapse(jnp.ones((1, 1, 2, 2)), padding=((1, 2), (3,))),
    "window_str": lambda: hl.PoolSynapse("2"),
    "g1_none": lambda: linear(None, jnp.ones(2)),
    "g_str": lambda: hl.BiasSynapse(jnp.ones(3))("abc"),
    "g_class": lambda: hl.DenseMemory(jnp.ones((2, 3)), hl.LSoftmax())(np.ndarray),
    "g1_complex": lambda: linear(jnp.ones(3, complex), jnp.ones(2)),
    "g_complex": lambda: hl.DenseMemory(jnp.ones((2, 3)), hl.LSoftmax())(jnp.ones(3, complex)),
    "g2_complex": lambda: conv(jnp.ones((1, 3, 3)), jnp.ones((1, 2, 2), complex)),
    "pool_complex": lambda: hl.PoolSynapse(2)(jnp.ones((1, 4, 4), complex), jnp.ones((1, 2, 2))),
    "keys_complex": lambda: hl.AttentionSynapse(W3, W3)(jnp.ones((2, 3)), jnp.ones((2, 3), complex)),
    "g_int_ok": lambda: float(hl.BiasSynapse(jnp.ones(3))(np.arange(3))),
    "conv_rank": lambda: conv(jnp.ones((3, 3)), jnp.ones((1, 2, 2))),
    "pool_rank": lambda: hl.PoolSynapse(2)(jnp.ones((4, 4)), jnp.ones((1, 2, 2))),
    "tokens_rank": lambda: hl.AttentionSynapse(W3, W3)(jnp.ones(3)),
    "keys_dim": lambda: hl.AttentionSynapse(W3, W3)(jnp.ones((4, 3)), jnp.ones((4, 2))),
}
for name, case in cases.items():
    try:
        print(name, "|ok|", case())
    except Exception as e:
        print(name, "|" + type(e).__name__ + "|", str(e).replace("\\n", " "))
"""

_EXPECTED = {
    "beta_str": (
        "TypeError",
        "`beta` must be a Python number > 0 in `AttentionSynapse`",
    ),
    "beta_none_ok": ("ok", "0.7071"),
    "beta_array": ("TypeError", "`beta` must be a Python number"),
    "dim_str": ("TypeError", "`dim` must be a Python int in `AttentionSynapse.random`"),
    "head_dim_float": ("TypeError", "`head_dim` must be a Python int"),
    "num_memories_bool": ("TypeError", "`num_memories` must be a Python int"),
    "shape_str": ("TypeError", "`shape` must be a positive int or a tuple"),
    "channels_float": ("TypeError", "`in_channels` must be a Python int"),
    "std_str": ("TypeError", "`std` must be a Python number >= 0"),
    "key_int": ("TypeError", "`key` must be a JAX PRNG key in `BiasSynapse.random`"),
    "dtype_int": ("TypeError", "`dtype` must be a floating dtype"),
    "W_none": ("TypeError", "`W` must be a number or an array in `LinearSynapse`"),
    "W_str": ("TypeError", "`W` must be a number or an array in `LinearSynapse`"),
    "W_class": ("TypeError", "`W` must be a number or an array in `LinearSynapse`"),
    "patterns_bool": ("TypeError", "`patterns` must be a number or an array"),
    "lagrangian_class": ("TypeError", "`lagrangian` must be a `hamux_lagr.Lagrangian`"),
    "lagrangian_function": ("TypeError", "`lagrangian` must be a `hamux_lagr"),
    "conv_class": ("TypeError", "`conv` must be a `ConvSynapse` or None"),
    "padding_float": ("ValueError", "`padding` must be 'SAME', 'VALID'"),
    "padding_triple": ("ValueError", "`padding` must be 'SAME', 'VALID'"),
    "padding_short": ("ValueError", "`padding` must be 'SAME', 'VALID'"),
    "window_str": ("ValueError", "`window` must be a positive int"),
    "g1_none": ("TypeError", "`g1` must be array-like"),
    "g_str": ("TypeError", "`g` must be array-like"),
    "g_class": ("TypeError", "`g` must be array-like"),
    "g1_complex": ("TypeError", "`g1` must be real in `LinearSynapse`"),
    "g_complex": ("TypeError", "`g` must be real in `DenseMemory`"),
    "g2_complex": ("TypeError", "`g2` must be real in `ConvSynapse`"),
    "pool_complex": ("TypeError", "`g1` must be real in `PoolSynapse`"),
    "keys_complex": ("TypeError", "`g_keys` must be real in `AttentionSynapse`"),
    "g_int_ok": ("ok", "-3.0"),
    "conv_rank": ("ValueError", "expects `g1` laid out as (channels, height, width)"),
    "pool_rank": ("ValueError", "expects `g1` laid out as (channels, height, width)"),
    "tokens_rank": ("ValueError", "expects `g` of shape (num_tokens, 3), got (3,)"),
    "keys_dim": ("ValueError", "expects `g_keys` of shape (num_tokens, 3), got (4, 2)"),
}


def test_messages_for_inputs_of_the_wrong_type():
    lines = run_without_hook(_WRONG_TYPES).strip().splitlines()
    got = {}
    for line in lines:
        name, kind, message = line.split("|", 2)
        got[name.strip()] = (kind, message)
    assert set(got) == set(_EXPECTED)
    for name, (kind, text) in _EXPECTED.items():
        assert got[name][0] == kind and text in got[name][1], (name, got[name])
