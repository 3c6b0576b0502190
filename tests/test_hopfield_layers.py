"""`hl.nn` Hopfield layers against hopfield-layers 1.0.2: its reference fixtures, a
float64 re-statement of its forward for the rest of the argument list, and the places
where we differ from it on purpose."""

import json
import pathlib

import equinox as eqx
import hflayers_reference
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hamux_lagr as hl


ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "hflayers"
NAMES = [
    "hopfield_default",
    "hopfield_heads4",
    "hopfield_steps3_heads2",
    "hopfield_all_static",
    "pooling_default",
    "layer_default",
]
# float32 against the float64 references (README: hopfield-layers itself in float32
# is within 2e-6).
RTOL = 1e-5


def _load(name):
    path = FIXTURES / f"{name}.npz"
    if not path.exists():
        pytest.skip(
            f"hopfield-layers reference fixtures not found at {FIXTURES} (a copy of "
            "shared/ beside the repository)"
        )
    z = np.load(path)
    return z, json.loads(str(z["config"]))


def _rel(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape
    return np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), 1e-30)


def _forward(layer, ins):
    if isinstance(layer, hl.nn.HopfieldPooling):
        return layer(ins["stored"]), layer.association_matrix(ins["stored"])
    if isinstance(layer, hl.nn.HopfieldLayer):
        return layer(ins["state"]), layer.association_matrix(ins["state"])
    args = (ins["state"], ins.get("stored"), ins.get("projection"))
    return layer(*args), layer.association_matrix(*args)


@eqx.filter_jit
def _run(layer, ins, ct):
    def loss(layer, ins):
        out, _ = jax.vmap(_forward, in_axes=(None, 0))(layer, ins)
        return jnp.sum(out * ct)

    out, assoc = jax.vmap(_forward, in_axes=(None, 0))(layer, ins)
    grad_layer, grad_in = eqx.filter_grad(loss, has_aux=False)(layer, ins), None
    grad_in = jax.grad(lambda i: loss(layer, i))(ins)
    return out, assoc, grad_in, grad_layer


@pytest.mark.parametrize("name", NAMES)
def test_fixture_parity(name):
    z, cfg = _load(name)
    sd = {k[3:]: z[k] for k in z.files if k.startswith("sd/")}
    cls = getattr(hl.nn, cfg["class"])
    layer = cls.from_torch_state_dict(sd, **cfg["args"])
    # the state dict round-trips exactly
    back = layer.to_torch_state_dict()
    assert sorted(back) == sorted(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(back[k], v)
    ins = {k[3:]: jnp.asarray(z[k]) for k in z.files if k.startswith("in/")}
    out, assoc, grad_in, grad_layer = _run(layer, ins, jnp.asarray(z["ct"]))
    assert out.dtype == jnp.float32
    assert _rel(out, z["out"]) < RTOL
    assert _rel(assoc, z["assoc"]) < RTOL
    for k, g in grad_in.items():
        ref = z[f"grad_in/{k}"]
        if np.max(np.abs(ref)) == 0:  # layer_default: the output ignores the input
            assert np.max(np.abs(np.asarray(g))) < 1e-6
        else:
            assert _rel(g, ref) < RTOL, k
    grads = grad_layer.to_torch_state_dict()
    refs = {k[8:]: z[k] for k in z.files if k.startswith("grad_sd/")}
    assert sorted(grads) == sorted(refs)
    scale = max((np.max(np.abs(r)) for r in refs.values()), default=1.0)
    for k, ref in refs.items():
        # Gradients that are zero in exact arithmetic (the stored patterns' LayerNorm
        # bias: the softmax ignores a shift common to all stored patterns) are
        # float32 rounding noise: compare them to the largest gradient.
        denom = np.max(np.abs(ref))
        denom = scale if denom < 1e-10 * scale else denom
        err = np.max(np.abs(np.asarray(grads[k], np.float64) - ref)) / denom
        assert err < RTOL, (k, err)


def test_state_dict_errors():
    z, cfg = _load("hopfield_heads4")
    sd = {k[3:]: z[k] for k in z.files if k.startswith("sd/")}
    bad = dict(sd)
    del bad["norm_state_pattern.bias"]
    with pytest.raises(ValueError, match="'norm_state_pattern.bias'"):
        hl.nn.Hopfield.from_torch_state_dict(bad, **cfg["args"])
    bad = {**sd, "association_core.bias_k": np.zeros((1, 1, 16), np.float32)}
    with pytest.raises(ValueError, match="'association_core.bias_k'"):
        hl.nn.Hopfield.from_torch_state_dict(bad, **cfg["args"])
    bad = {**sd, "association_core.in_proj_weight": np.zeros((48, 15), np.float32)}
    with pytest.raises(
        ValueError, match=r"'association_core.in_proj_weight'.*\(48, 15\)"
    ):
        hl.nn.Hopfield.from_torch_state_dict(bad, **cfg["args"])
    # built with other arguments than the module's: the first mismatching key
    with pytest.raises(ValueError, match="in_proj"):
        hl.nn.Hopfield.from_torch_state_dict(sd, input_size=16, pattern_size=4)
    z, cfg = _load("pooling_default")
    sd = {k[3:]: z[k] for k in z.files if k.startswith("sd/")}
    bad = {**sd, "pooling_weights": np.zeros((1, 2, 8), np.float32)}
    with pytest.raises(ValueError, match="'pooling_weights'"):
        hl.nn.HopfieldPooling.from_torch_state_dict(bad, **cfg["args"])


# ----------------------------------------------------------------------------------
# the rest of the argument list, against the float64 re-statement
# ----------------------------------------------------------------------------------

CONFIGS = [
    # hidden size, no biases, a zero pattern, an activation on the output
    dict(
        input_size=8,
        num_heads=2,
        hidden_size=6,
        add_zero_association=True,
        input_bias=False,
        association_activation="tanh",
    ),
    # separate projection weights: every size given
    dict(
        input_size=8,
        num_heads=2,
        pattern_size=5,
        output_size=7,
        stored_pattern_size=5,
        pattern_projection_size=7,
    ),
    dict(
        input_size=8,
        num_heads=2,
        stored_pattern_size=6,
        pattern_projection_size=6,
        pattern_projection_as_connected=True,
    ),
    dict(
        input_size=8,
        num_heads=2,
        hidden_size=4,
        normalize_hopfield_space=True,
        normalize_hopfield_space_affine=True,
        normalize_hopfield_space_eps=1e-3,
        normalize_state_pattern_eps=1e-2,
        normalize_stored_pattern_affine=False,
        update_steps_max=None,
        update_steps_eps=1e-6,
    ),
    dict(
        input_size=8,
        num_heads=2,
        state_pattern_as_static=True,
        normalize_state_pattern=False,
        normalize_state_pattern_affine=False,
        scaling=0.7,
        update_steps_max=(3, 1),
        update_steps_eps=(1e-30, 1e-30),
    ),
    dict(
        input_size=8,
        num_heads=2,
        stored_pattern_as_static=True,
        normalize_stored_pattern=False,
        normalize_stored_pattern_affine=False,
        disable_out_projection=True,
    ),
    dict(
        input_size=8,
        num_heads=2,
        pattern_projection_as_static=True,
        normalize_pattern_projection=False,
        normalize_pattern_projection_affine=False,
    ),
    dict(
        input_size=4,
        num_heads=2,
        hidden_size=4,
        pattern_size=3,
        stored_pattern_as_static=True,
        pattern_projection_as_static=True,
        disable_out_projection=True,
        normalize_stored_pattern=False,
        normalize_stored_pattern_affine=False,
        normalize_pattern_projection=False,
        normalize_pattern_projection_affine=False,
    ),
    dict(
        input_size=6,
        num_heads=3,
        state_pattern_as_static=True,
        stored_pattern_as_static=True,
        pattern_projection_as_static=True,
        disable_out_projection=True,
        normalize_state_pattern=False,
        normalize_state_pattern_affine=False,
        normalize_stored_pattern=False,
        normalize_stored_pattern_affine=False,
        normalize_pattern_projection=False,
        normalize_pattern_projection_affine=False,
        update_steps_max=2,
    ),
]


def _randomised(layer, seed):
    rng = np.random.default_rng(seed)
    leaves, tree = jax.tree.flatten(layer)
    leaves = [
        jnp.asarray(0.3 * rng.standard_normal(x.shape) + (x.mean() if x.size else 0))
        if eqx.is_inexact_array(x)
        else x
        for x in leaves
    ]
    return jax.tree.unflatten(tree, leaves)


def _inputs(layer, args, rng, length=4, size=6):
    heads = layer.num_heads
    hd = layer.hidden_size
    q_st = args.get("state_pattern_as_static", False)
    k_st = args.get("stored_pattern_as_static", False)
    v_st = args.get("pattern_projection_as_static", False)
    d = args["input_size"]
    d_state = hd if (q_st and hd is not None) else d
    d_stored = hd if (k_st and hd is not None) else layer.stored_pattern_size
    if v_st and layer.separate_weights and k_st:
        d_proj = 2 * heads
    elif v_st and not args.get("pattern_projection_as_connected", False):
        d_proj = layer.pattern_size or d
    else:
        d_proj = layer.pattern_projection_size
    return (
        rng.standard_normal((length, d_state)),
        rng.standard_normal((size, d_stored)),
        rng.standard_normal((size, d_proj)),
    )


@eqx.filter_jit
def _retrieve(layer, *args, **kwargs):
    return layer.retrieve(*args, **kwargs)


@pytest.mark.parametrize("index", range(len(CONFIGS)))
def test_argument_list_against_reference(index, getkey):
    args = CONFIGS[index]
    layer = _randomised(hl.nn.Hopfield(**args, key=getkey()), index)
    sd = layer.to_torch_state_dict()
    rebuilt = hl.nn.Hopfield.from_torch_state_dict(sd, **args)
    rng = np.random.default_rng(index)
    state, stored, projection = _inputs(layer, args, rng)
    blocked = rng.random((state.shape[0], stored.shape[0])) < 0.3
    blocked[:, 0] = False
    stored_blocked = np.zeros(stored.shape[0], bool)
    stored_blocked[-1] = True
    out_ref, assoc_ref = hflayers_reference.forward(
        sd, args, state, stored, projection, stored_blocked, blocked
    )
    sol = _retrieve(
        rebuilt,
        jnp.asarray(state),
        jnp.asarray(stored),
        jnp.asarray(projection),
        stored_mask=jnp.asarray(~stored_blocked),
        association_mask=jnp.asarray(~blocked),
    )
    np.testing.assert_allclose(sol.output, out_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sol.association, assoc_ref, rtol=1e-9, atol=1e-12)
    assert bool(jnp.all(sol.energy_final <= sol.energy_initial + 1e-12))


# ----------------------------------------------------------------------------------
# where hopfield-layers is wrong
# ----------------------------------------------------------------------------------


def test_per_head_scaling_scales_each_head(getkey):
    key = getkey()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((5, 8)))
    layer = _randomised(hl.nn.Hopfield(8, num_heads=2, scaling=(0.5, 3.0), key=key), 1)
    assoc = layer.association_matrix(x)
    for h, beta in enumerate((0.5, 3.0)):
        single = hl.nn.Hopfield(8, num_heads=2, scaling=beta, key=key)
        single = _randomised(single, 1)
        np.testing.assert_allclose(
            assoc[h], single.association_matrix(x)[h], rtol=1e-12
        )
    assert not np.allclose(assoc[0], assoc[1])


def test_concat_bias_pattern_is_used(getkey):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((4, 8)))
    layer = _randomised(
        hl.nn.Hopfield(8, num_heads=2, concat_bias_pattern=True, key=getkey()), 2
    )
    moved = eqx.tree_at(lambda m: m.bias_value, layer, layer.bias_value + 1.0)

    @eqx.filter_jit
    def run(layer, moved):
        grads = eqx.filter_grad(lambda m: jnp.sum(m(x) ** 2))(layer)
        return layer.association_matrix(x), layer(x), moved(x), grads

    assoc, out, out_moved, grads = run(layer, moved)
    assert assoc.shape == (2, 4, 5)  # 4 stored patterns + the learned one
    assert bool(jnp.all(assoc[..., -1] > 0))
    # the learned key and value change the output; hopfield-layers' never do
    assert not np.allclose(out, out_moved)
    assert bool(jnp.all(grads.bias_key != 0)) and bool(jnp.all(grads.bias_value != 0))
    keys = sorted(layer.to_torch_state_dict())
    assert "association_core.bias_k" in keys and "association_core.bias_v" in keys


def test_update_steps_stop_per_sample(getkey):
    # Sample 0 converges at once (one stored pattern), sample 1 keeps moving: each
    # stops on its own, where hopfield-layers would run the batch jointly.
    layer = _randomised(
        hl.nn.Hopfield(8, update_steps_max=5, update_steps_eps=1e-3, key=getkey()), 3
    )
    rng = np.random.default_rng(2)
    state = jnp.asarray(rng.standard_normal((2, 3, 8)))
    stored = jnp.asarray(rng.standard_normal((2, 6, 8)))
    stored = stored.at[0].set(jnp.broadcast_to(stored[0, :1], (6, 8)))

    @eqx.filter_jit
    def run(layer):
        batched = jax.vmap(lambda s, y: layer.retrieve(s, y))(state, stored)
        return batched, layer.retrieve(state[1], stored[1])

    sols, alone = run(layer)
    steps = np.asarray(sols.num_steps[:, 0])
    assert steps[0] == 1 and steps[1] > 1
    np.testing.assert_allclose(sols.output[1], alone.output, rtol=1e-12)


def test_integer_masks_work(getkey):
    layer = _randomised(hl.nn.Hopfield(8, num_heads=2, key=getkey()), 4)
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((4, 8)))
    allowed = np.array([1, 0, 1, 1], np.uint8)
    a_bool = layer.association_matrix(x, stored_mask=jnp.asarray(allowed.astype(bool)))
    a_uint = layer.association_matrix(x, stored_mask=jnp.asarray(allowed))
    np.testing.assert_array_equal(a_bool, a_uint)
    assert bool(jnp.all(a_uint[..., 1] == 0))
    amask = np.ones((4, 4), np.uint8)
    amask[0, 2] = 0
    a = layer.association_matrix(x, association_mask=jnp.asarray(amask))
    assert bool(jnp.all(a[:, 0, 2] == 0)) and bool(jnp.all(a[:, 1, 2] > 0))


def test_pooling_and_lookup_take_eps(getkey):
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((5, 8)))
    key = getkey()
    a = hl.nn.HopfieldPooling(8, normalize_stored_pattern_eps=1e-5, key=key)
    b = hl.nn.HopfieldPooling(8, normalize_stored_pattern_eps=10.0, key=key)
    assert b.hopfield.normalize_stored_pattern_eps == 10.0
    out_a, out_b = eqx.filter_jit(lambda a, b: (a(x), b(x)))(a, b)
    assert not np.allclose(out_a, out_b)
    c = hl.nn.HopfieldLayer(8, normalize_state_pattern_eps=10.0, quantity=3, key=key)
    assert c.hopfield.normalize_state_pattern_eps == 10.0


def test_static_pattern_same_in_every_head_per_sample(getkey):
    # A static state pattern with two heads: every head of a sample meets that
    # sample's pattern, so a batch equals its samples run alone.
    args = CONFIGS[4]
    layer = _randomised(hl.nn.Hopfield(**args, key=getkey()), 5)
    rng = np.random.default_rng(5)
    state = jnp.asarray(rng.standard_normal((3, 4, 4)))
    stored = jnp.asarray(rng.standard_normal((3, 6, 8)))
    batched, alone = eqx.filter_jit(
        lambda layer: (
            jax.vmap(layer.association_matrix)(state, stored),
            [layer.association_matrix(state[n], stored[n]) for n in range(3)],
        )
    )(layer)
    for n in range(3):
        np.testing.assert_allclose(batched[n], alone[n], rtol=1e-12)
    sd = layer.to_torch_state_dict()
    _, ref = hflayers_reference.forward(
        sd, args, np.asarray(state[1]), np.asarray(stored[1]), np.asarray(stored[1])
    )
    np.testing.assert_allclose(batched[1], ref, rtol=1e-9)
