"""`hl.nn` Hopfield layers: transformations, masks, dropout, sparse associations,
the energy and the report of the update steps, and the errors users see."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jaxtyping
import numpy as np
import pytest

import hamux_lagr as hl


def _randomised(layer, seed=0):
    rng = np.random.default_rng(seed)
    leaves, tree = jax.tree.flatten(layer)
    leaves = [
        jnp.asarray(0.3 * rng.standard_normal(x.shape)) + x
        if eqx.is_inexact_array(x)
        else x
        for x in leaves
    ]
    return jax.tree.unflatten(tree, leaves)


def _data(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal(s)) for s in shapes]


@eqx.filter_jit
def _retrieve(layer, *args, **kwargs):
    return layer.retrieve(*args, **kwargs)


def test_jit_vmap_grad(getkey):
    layer = hl.nn.Hopfield(8, num_heads=2, update_steps_max=2, key=getkey())
    layer = _randomised(layer)
    state, stored = _data((3, 4, 8), (3, 6, 8))
    direction = _data((3, 4, 8), seed=1)[0]

    def loss(layer, state):
        return jnp.sum(jax.vmap(layer)(state, stored) ** 2)

    @eqx.filter_jit
    def run(layer, state):
        value, grads = eqx.filter_value_and_grad(loss)(layer, state)
        g_state = jax.grad(loss, argnums=1)(layer, state)
        h = 1e-6
        fd = loss(layer, state + h * direction) - loss(layer, state - h * direction)
        alone = [jnp.sum(layer(state[n], stored[n]) ** 2) for n in range(3)]
        return value, grads, g_state, fd / (2 * h), sum(alone)

    value, grads, g_state, fd, alone = run(layer, state)
    np.testing.assert_allclose(value, alone, rtol=1e-12)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert bool(jnp.any(grads.q_weight != 0))
    np.testing.assert_allclose(fd, jnp.sum(g_state * direction), rtol=1e-6)


def test_equals_multihead_attention(getkey):
    # Normalisations off and no update step: multi-head attention with 1/sqrt(d).
    k1, k2 = getkey(), getkey()
    mha = eqx.nn.MultiheadAttention(
        2,
        8,
        use_query_bias=True,
        use_key_bias=True,
        use_value_bias=True,
        use_output_bias=True,
        key=k1,
    )
    mha = _randomised(mha, 1)
    off = {
        f"normalize_{p}{s}": False
        for p in ("stored_pattern", "state_pattern", "pattern_projection")
        for s in ("", "_affine")
    }
    layer = hl.nn.Hopfield(8, num_heads=2, key=k2, **off)
    layer = eqx.tree_at(
        lambda m: (
            m.q_weight,
            m.k_weight,
            m.v_weight,
            m.q_bias,
            m.k_bias,
            m.v_bias,
            m.out_weight,
            m.out_bias,
        ),
        layer,
        (
            mha.query_proj.weight,
            mha.key_proj.weight,
            mha.value_proj.weight,
            mha.query_proj.bias,
            mha.key_proj.bias,
            mha.value_proj.bias,
            mha.output_proj.weight,
            mha.output_proj.bias,
        ),
    )
    q, kv = _data((4, 8), (6, 8))
    mask = jnp.asarray(np.random.default_rng(0).random((4, 6)) < 0.7).at[:, 0].set(True)
    ours, theirs = eqx.filter_jit(
        lambda layer, mha: (
            layer(q, kv, association_mask=mask),
            mha(q, kv, kv, mask=mask),
        )
    )(layer, mha)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)


def test_masks_follow_equinox(getkey):
    layer = _randomised(hl.nn.Hopfield(8, num_heads=2, key=getkey()))
    x, y = _data((3, 8), (5, 8))
    smask = jnp.array([True, False, True, True, False])
    amask = jnp.ones((3, 5), bool).at[1, 2].set(False)
    y2 = y.at[1].set(100.0)

    @eqx.filter_jit
    def run(layer):
        return (
            layer.association_matrix(x, y, stored_mask=smask, association_mask=amask),
            layer(x, y, stored_mask=smask),
            layer(x, y2, stored_mask=smask),
        )

    assoc, out, out2 = run(layer)
    assert bool(jnp.all(assoc[:, :, 1] == 0)) and bool(jnp.all(assoc[:, :, 4] == 0))
    assert bool(jnp.all(assoc[:, 1, 2] == 0)) and bool(jnp.all(assoc[:, 0, 2] > 0))
    np.testing.assert_allclose(jnp.sum(assoc, -1), 1.0, rtol=1e-12)
    # a masked stored pattern does not change the output
    np.testing.assert_allclose(out, out2, rtol=1e-12)
    # (the jaxtyping hook of the test suite may speak first; both name the mask)
    with pytest.raises((ValueError, jaxtyping.TypeCheckError), match="stored_mask"):
        layer(x, y, stored_mask=jnp.ones(4, bool))
    with pytest.raises(TypeError, match="`association_mask`"):
        layer(x, y, association_mask=jnp.ones((3, 5)))


def test_dropout(getkey):
    layer = _randomised(hl.nn.Hopfield(8, dropout=0.5, key=getkey()))
    (x,) = _data((6, 8))
    k1, k2 = getkey(), getkey()
    a, b, c = layer(x, key=k1), layer(x, key=k1), layer(x, key=k2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    det = layer(x, inference=True)
    np.testing.assert_array_equal(det, layer(x, inference=True, key=k1))
    np.testing.assert_array_equal(det, eqx.nn.inference_mode(layer)(x))
    off = eqx.tree_at(lambda m: m.dropout, layer, eqx.nn.Dropout(0.0))
    np.testing.assert_allclose(det, off(x), rtol=1e-12)
    with pytest.raises(ValueError, match="`key` is required"):
        layer(x)


@pytest.mark.parametrize(
    "lagrangian",
    [hl.LSparsemax(), hl.LEntmax(alpha=jnp.full((2, 1, 1), 1.5)), hl.LNormmax(2.0)],
    ids=["sparsemax", "entmax_per_head", "normmax"],
)
def test_sparse_associations(lagrangian, getkey):
    layer = hl.nn.Hopfield(
        8,
        num_heads=2,
        scaling=4.0,
        update_steps_max=1,
        update_steps_eps=1e-12,
        lagrangian=lagrangian,
        key=getkey(),
    )
    layer = _randomised(layer)
    x, y = _data((4, 8), (7, 8))
    smask = jnp.arange(7) < 3  # four of the seven stored patterns masked

    @eqx.filter_jit
    def run(layer, x, y, smask):
        def loss(m):
            return jnp.sum(m(x, y, stored_mask=smask) ** 2)

        return layer.retrieve(x, y, stored_mask=smask), eqx.filter_grad(loss)(layer)

    sol, grads = run(layer, x, y, smask)
    assoc = sol.association
    assert bool(jnp.all(assoc[..., 3:] == 0))
    assert int(jnp.sum(assoc[..., :3] == 0)) > 0  # exact zeros among the allowed
    np.testing.assert_allclose(jnp.sum(assoc, -1), 1.0, rtol=1e-9)
    assert bool(jnp.all(sol.energy_final <= sol.energy_initial + 1e-10))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    if isinstance(lagrangian, hl.LEntmax):
        assert grads.lagrangian.alpha.shape == (2, 1, 1)


@pytest.mark.parametrize(
    "lagrangian", [None, hl.LSparsemax()], ids=["softmax", "sparsemax"]
)
def test_energy_never_rises(lagrangian, getkey):
    key = getkey()
    x, y = _data((5, 8), (9, 8), seed=3)
    layers = [
        _randomised(
            hl.nn.Hopfield(
                8,
                num_heads=2,
                scaling=2.0,
                update_steps_max=steps,
                update_steps_eps=1e-30,
                lagrangian=lagrangian,
                key=key,
            ),
            7,
        )
        for steps in range(4)
    ]

    @eqx.filter_jit
    def run(layers, x, y):
        sols = [layer.retrieve(x, y) for layer in layers]
        return layers[0].energy(x, y), sols

    e0, sols = run(layers, x, y)
    np.testing.assert_allclose(e0, jnp.sum(sols[0].energy_initial), rtol=1e-12)
    energies = np.stack([sols[0].energy_initial] + [s.energy_final for s in sols])
    assert np.all(np.diff(energies, axis=0) <= 1e-12)
    assert np.all(energies[-1] < energies[0])
    if lagrangian is None:
        assert np.all(energies >= -1e-12)  # eq. 2 with its constants is >= 0


def test_report(getkey):
    x, y = _data((4, 8), (1, 8))
    layer = _randomised(hl.nn.Hopfield(8, num_heads=2, key=getkey()))
    sol = _retrieve(layer, x)
    assert sol.num_steps.dtype == jnp.int32 and sol.num_steps.shape == (2,)
    assert not bool(jnp.any(sol.converged)) and bool(jnp.all(jnp.isinf(sol.change)))
    assert bool(jnp.all(sol.result == hl.nn.HopfieldResults.max_steps_reached))
    assert sol.output.shape == (4, 8) and sol.association.shape == (2, 4, 4)
    layer = _randomised(
        hl.nn.Hopfield(
            8,
            num_heads=2,
            update_steps_max=(10, 10),
            update_steps_eps=(1e-8, 1e-8),
            key=getkey(),
        )
    )
    # one stored pattern: the association is 1 at once, the first step changes nothing
    sol = _retrieve(layer, x, y)
    np.testing.assert_array_equal(sol.num_steps, [1, 1])
    assert bool(jnp.all(sol.converged)) and bool(jnp.all(sol.change == 0))
    assert bool(jnp.all(sol.result == hl.nn.HopfieldResults.successful))
    unlimited = hl.nn.Hopfield(
        8, update_steps_max=None, update_steps_eps=1e-9, key=getkey()
    )
    sol = _retrieve(_randomised(unlimited), *_data((4, 8), (6, 8)))
    assert int(sol.num_steps[0]) >= 1 and bool(sol.converged[0])
    bad = _retrieve(layer, x.at[0, 0].set(jnp.nan), y)
    assert bool(jnp.all(bad.result == hl.nn.HopfieldResults.nonfinite))
    batched = jax.vmap(lambda s: _retrieve(layer, s, y))(jnp.stack([x, x]))
    assert batched.num_steps.shape == (2, 2)


def test_pooling_and_lookup(getkey):
    (x,) = _data((6, 8))
    smask = jnp.ones(6, bool).at[0].set(False)
    pool = hl.nn.HopfieldPooling(8, num_heads=2, quantity=3, key=getkey())
    frozen = hl.nn.HopfieldPooling(8, trainable=False, key=getkey())
    look = hl.nn.HopfieldLayer(
        8,
        quantity=5,
        lookup_weights_as_separated=True,
        pattern_projection_size=3,
        lookup_targets_as_trainable=False,
        key=getkey(),
    )
    pool, frozen, look = (_randomised(m) for m in (pool, frozen, look))

    def loss(m):
        return jnp.sum(m(x) ** 2)

    @eqx.filter_jit
    def run(pool, frozen, look):
        return (
            pool(x),
            pool.association_matrix(x, stored_mask=smask),
            eqx.filter_grad(loss)(frozen),
            look(x),
            look.association_matrix(x),
            eqx.filter_grad(loss)(look),
        )

    out_p, assoc_p, grads_frozen, out_l, assoc_l, grads_look = run(pool, frozen, look)
    assert out_p.shape == (3 * 8,) and assoc_p.shape == (2, 3, 6)
    assert bool(jnp.all(assoc_p[..., 0] == 0))
    assert bool(jnp.all(grads_frozen.pooling_weights == 0))
    assert out_l.shape == (6, 8) and assoc_l.shape == (1, 6, 5)
    assert look.target_weights is not None and look.target_weights.shape == (5, 3)
    assert bool(jnp.all(grads_look.target_weights == 0))
    assert bool(jnp.any(grads_look.lookup_weights != 0))
    sd = look.to_torch_state_dict()
    assert sd["lookup_weights"].shape == (1, 5, 8)
    assert sd["target_weights"].shape == (1, 5, 3)


def test_errors(getkey):
    key = getkey()
    layer = hl.nn.Hopfield(8, key=key)
    x, y = _data((3, 8), (4, 6))
    with pytest.raises(ValueError, match=r"`state` must have shape \(length, 8\)"):
        layer(jnp.ones((3, 7)))
    with pytest.raises(ValueError, match="`stored`"):
        layer(x, y)
    with pytest.raises(ValueError, match="`input_size`.*divisible by `num_heads`"):
        hl.nn.Hopfield(8, num_heads=3, key=key)
    with pytest.raises(ValueError, match="`normalize_state_pattern_affine=True`"):
        hl.nn.Hopfield(8, normalize_state_pattern=False, key=key)
    with pytest.raises(ValueError, match="`scaling`"):
        hl.nn.Hopfield(8, num_heads=2, scaling=(1.0, 2.0, 3.0), key=key)
    with pytest.raises(ValueError, match="`scaling`"):
        hl.nn.Hopfield(8, scaling=-1.0, key=key)
    with pytest.raises(ValueError, match="`update_steps_eps`"):
        hl.nn.Hopfield(8, update_steps_eps=0.0, key=key)
    with pytest.raises(ValueError, match="`dropout`"):
        hl.nn.Hopfield(8, dropout=1.5, key=key)
    with pytest.raises(ValueError, match="`association_activation`"):
        hl.nn.Hopfield(8, association_activation="no_such_function", key=key)
    with pytest.raises(ValueError, match="`quantity`"):
        hl.nn.HopfieldPooling(8, quantity=0, key=key)


def test_unlimited_steps_implicit_gradient(getkey):
    # `update_steps_max=None` runs to the fixed point and differentiates it
    # implicitly; backpropagation through enough steps gives the same gradient.
    key = getkey()
    x, y = _data((4, 8), (6, 8))

    def make(steps):
        layer = hl.nn.Hopfield(
            8,
            num_heads=2,
            scaling=2.0,
            update_steps_max=steps,
            update_steps_eps=1e-12,
            key=key,
        )
        return _randomised(layer, 1)

    @eqx.filter_jit
    def grads(layers):
        return [
            eqx.filter_grad(lambda m: jnp.sum(m(x, y) ** 2))(layer) for layer in layers
        ]

    implicit, unrolled = grads([make(None), make(100)])
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(unrolled))
    for a, b in zip(jax.tree.leaves(implicit), jax.tree.leaves(unrolled)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9 * scale)
