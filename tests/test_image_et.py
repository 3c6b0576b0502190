import io
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tree_allclose

import hamux_lagr as hl


IET = hl.models.ImageEnergyTransformer
D, HEADS, HEAD_DIM, M = 16, 2, 8, 32


# ----------------------------------------------------------------------------------
# the authors' forward pass, transcribed in plain JAX
# ----------------------------------------------------------------------------------


def random_checkpoint(seed, image_shape, p):
    """The twelve arrays of the authors' checkpoint format, random, float32."""
    c, h, w = image_shape
    z, n = c * p * p, (h // p) * (w // p)
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    return {
        "Wq": normal(HEADS, HEAD_DIM, D, scale=D**-0.5),
        "Wk": normal(HEADS, HEAD_DIM, D, scale=D**-0.5),
        "Xi": normal(D, M, scale=D**-0.5),
        "Wenc": normal(z, D, scale=z**-0.5),
        "Benc": normal(D, scale=0.1),
        "Wdec": normal(D, z, scale=D**-0.5),
        "Bdec": normal(z, scale=0.1),
        "LNORM_gamma": np.asarray(1.3, np.float32),
        "LNORM_bias": normal(D, scale=0.1),
        "CLS_token": normal(D, scale=0.5),
        "MASK_token": normal(D, scale=0.5),
        "POS_embed": normal(n + 1, D, scale=0.5),
    }


def transcription(ck, image, mask, *, p, steps, alpha, prevent_self_attention):
    """Masked-image completion as the Energy Transformer's Flax original computes it:
    patchify, encode, mask, CLS, positions; `steps` of x <- x - alpha dE/dg(LN(x));
    LayerNorm once; decode; unpatchify."""
    c, h, w = image.shape
    rows, cols = h // p, w // p
    patches = jnp.stack(
        [
            image[:, i * p : (i + 1) * p, j * p : (j + 1) * p].reshape(-1)
            for i in range(rows)
            for j in range(cols)
        ]
    )
    x = patches @ ck["Wenc"] + ck["Benc"][None]
    x = jnp.where(mask[:, None], ck["MASK_token"][None], x)
    x = jnp.concatenate([ck["CLS_token"][None], x]) + ck["POS_embed"]

    def lnorm(x):
        xm = x - x.mean(-1, keepdims=True)
        v = ck["LNORM_gamma"] * xm / jnp.sqrt((xm**2).mean(-1, keepdims=True) + 1e-5)
        return v + ck["LNORM_bias"][None]

    beta = 1 / float(np.sqrt(ck["Wq"].shape[1]))

    def energy(g):
        k = jnp.einsum("kd,hzd->khz", g, ck["Wk"])
        q = jnp.einsum("qd,hzd->qhz", g, ck["Wq"])
        scores = beta * jnp.einsum("qhz,khz->hqk", q, k)
        n = g.shape[0]
        keep = (1.0 - jnp.eye(n)) if prevent_self_attention else jnp.ones((n, n))
        b = keep.astype(g.dtype)[None]
        att = -jnp.sum(jax.nn.logsumexp(scores, b=b, axis=-1)) / beta
        return att - 0.5 * jnp.sum(jax.nn.relu(g @ ck["Xi"]) ** 2)

    x = jax.lax.fori_loop(
        0, steps, lambda _, x: x - alpha * jax.grad(energy)(lnorm(x)), x
    )
    out = lnorm(x)[1:] @ ck["Wdec"] + ck["Bdec"][None]
    recon = jnp.zeros_like(image)
    for t, (i, j) in enumerate((i, j) for i in range(rows) for j in range(cols)):
        block = out[t].reshape(c, p, p)
        recon = recon.at[:, i * p : (i + 1) * p, j * p : (j + 1) * p].set(block)
    return recon


def write(arrays, path):
    np.savez(path, **arrays)
    return path


# (image shape, patch size, prevent_self_attention): square RGB, non-square with two
# channels, one channel with the diagonal of the attention masked.
CONFIGS = [((3, 16, 16), 4, False), ((2, 8, 12), 4, False), ((1, 12, 8), 2, True)]


@pytest.mark.parametrize("config", CONFIGS, ids=["3x16x16", "2x8x12", "1x12x8-noself"])
def test_it_matches_the_transcription_of_the_authors_forward_pass(config, tmp_path):
    image_shape, p, no_self = config
    ck = random_checkpoint(0, image_shape, p)
    model = IET.from_npz(
        write(ck, tmp_path / "ck.npz"),
        image_shape=image_shape,
        patch_size=p,
        prevent_self_attention=no_self,
    )
    assert model.image_shape == image_shape and model.patch_size == p
    n = model.num_patches
    ours = eqx.filter_jit(lambda m, im, mk, a, s: m(im, mk, steps=s, alpha=a))
    ref = jax.jit(
        lambda im, mk, a, s: transcription(
            ck, im, mk, p=p, steps=s, alpha=a, prevent_self_attention=no_self
        ),
        static_argnums=3,
    )
    rng = np.random.default_rng(1)
    image = jnp.asarray(rng.standard_normal(image_shape), jnp.float32)
    masks = [np.zeros(n, bool), np.ones(n, bool), rng.random(n) < 0.6]
    # `steps` is static (one compilation each), `alpha` traced.
    schedule = [(12, 0.1), (12, 0.05)] + ([(5, 0.3)] if image_shape[0] == 3 else [])
    for steps, alpha in schedule:
        for mask in masks:
            a = jnp.asarray(alpha, jnp.float32)
            got = ours(model, image, jnp.asarray(mask), a, steps)
            expected = ref(image, jnp.asarray(mask), a, steps)
            assert got.shape == image_shape and got.dtype == jnp.float32
            err = float(jnp.max(jnp.abs(got - expected)) / jnp.max(jnp.abs(expected)))
            assert err < 1e-5, (steps, alpha, mask, err)
    # The masked inputs change the result: the mask is used.
    full = ours(model, image, jnp.asarray(masks[0]), a, 12)
    assert not np.allclose(full, ours(model, image, jnp.asarray(masks[1]), a, 12))


def test_the_parts_compose_to_the_forward_pass(tmp_path):
    ck = random_checkpoint(2, (3, 8, 8), 2)
    model = IET.from_npz(write(ck, tmp_path / "ck.npz"))
    assert model.image_shape == (3, 8, 8) and model.patch_size == 2
    assert (model.steps, model.alpha, model.prevent_self_attention) == (12, 0.1, False)
    image = jnp.asarray(
        np.random.default_rng(3).standard_normal((3, 8, 8)), jnp.float32
    )
    mask = jnp.arange(16) % 3 == 0

    @eqx.filter_jit
    def parts(model, image, mask):
        x = model.encode(image, mask)
        sol = model.descend(x)
        return (
            x,
            sol,
            model.decode(sol.xs),
            model.decode(sol.xs["tokens"]),
            model(image, mask),
        )

    x, sol, from_dict, from_array, called = parts(model, image, mask)
    assert x.shape == (17, D)
    assert tree_allclose(x[0], jnp.asarray(ck["CLS_token"] + ck["POS_embed"][0]))
    assert tree_allclose(x[1], jnp.asarray(ck["MASK_token"] + ck["POS_embed"][1]))
    assert tree_allclose(from_dict, called) and tree_allclose(from_array, called)
    assert sol.energies.shape == (13,)
    assert tree_allclose(sol.energies[0], model.energy(x), rtol=1e-6)


# ----------------------------------------------------------------------------------
# the checkpoint format
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["str", "path", "open file", "in memory"])
def test_save_and_load_round_trip_bit_exactly(kind, tmp_path):
    ck = random_checkpoint(4, (3, 8, 8), 2)
    model = IET.from_npz(write(ck, tmp_path / "ck.npz"))
    path = tmp_path / "again.npz"
    if kind == "in memory":
        buffer = io.BytesIO()
        model.save_npz(buffer)
        buffer.seek(0)
        saved = dict(np.load(io.BytesIO(buffer.getvalue())))
        again = IET.from_npz(buffer)
    elif kind == "open file":
        with open(path, "wb") as f:
            model.save_npz(f)
        saved = dict(np.load(path))
        with open(path, "rb") as f:
            again = IET.from_npz(f)
    else:
        model.save_npz(str(path) if kind == "str" else pathlib.Path(path))
        saved = dict(np.load(path))
        again = IET.from_npz(str(path) if kind == "str" else path)
    assert sorted(saved) == sorted(ck)
    for key, value in ck.items():
        assert saved[key].dtype == np.float32 and saved[key].shape == value.shape
        assert np.array_equal(saved[key], value), key
    assert bool(eqx.tree_equal(model, again, typematch=True))


def bad(ck, key, value):
    out = dict(ck)
    if value is None:
        del out[key]
    else:
        out[key] = value
    return out


CK = random_checkpoint(5, (3, 8, 8), 2)
BAD = {
    "missing": (bad(CK, "Xi", None), "Xi", "lacks"),
    "extra": (bad(CK, "Wv", CK["Wq"]), "Wv", "unknown"),
    "wrong rank": (bad(CK, "Wq", CK["Wq"][0]), "`Wq`", "dimension"),
    "gamma not a scalar": (
        bad(CK, "LNORM_gamma", np.ones(1, np.float32)),
        "`LNORM_gamma`",
        "dimension",
    ),
    "wrong shape": (bad(CK, "Benc", np.zeros(D + 1, np.float32)), "`Benc`", "D = 17"),
    "keys disagree": (bad(CK, "Wk", CK["Wk"][:, :3]), "`Wk`", "Y = 3"),
    "decoder disagrees": (bad(CK, "Bdec", CK["Bdec"][:5]), "`Bdec`", "Z = 5"),
    "not square patches": (
        bad(
            bad(bad(CK, "Wenc", CK["Wenc"][:10]), "Wdec", CK["Wdec"][:, :10]),
            "Bdec",
            CK["Bdec"][:10],
        ),
        "`Wenc`",
        "square",
    ),
    "not a square grid": (
        bad(CK, "POS_embed", CK["POS_embed"][:13]),
        "`POS_embed`",
        "square",
    ),
    "non-finite": (
        bad(CK, "Xi", np.where(np.arange(M) == 3, np.nan, CK["Xi"]).astype(np.float32)),
        "`Xi`",
        "non-finite",
    ),
    "integer": (bad(CK, "Benc", np.zeros(D, np.int32)), "`Benc`", "floating"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_a_bad_checkpoint_is_refused_naming_the_key(case, tmp_path):
    arrays, key, words = BAD[case]
    with pytest.raises(ValueError, match=key) as info:
        IET.from_npz(write(arrays, tmp_path / "bad.npz"))
    assert words in str(info.value)


def test_image_shape_and_patch_size_override_the_inference(tmp_path):
    ck = random_checkpoint(6, (2, 8, 12), 4)  # Z = 32, 6 patches: no default geometry
    path = write(ck, tmp_path / "ck.npz")
    with pytest.raises(ValueError, match="`Wenc`"):
        IET.from_npz(path)
    with pytest.raises(ValueError, match="`POS_embed`"):
        IET.from_npz(path, patch_size=4)  # 2 channels, but 6 patches is not a square
    model = IET.from_npz(path, image_shape=(2, 12, 8))
    assert (model.image_shape, model.patch_size) == ((2, 12, 8), 4)
    with pytest.raises(ValueError, match="`POS_embed`"):
        IET.from_npz(path, image_shape=(2, 16, 16))
    with pytest.raises(ValueError, match="`image_shape`"):
        IET.from_npz(path, image_shape=(2, 12))
    with pytest.raises(FileNotFoundError, match="downloads nothing"):
        IET.from_npz(tmp_path / "missing.npz")


# ----------------------------------------------------------------------------------
# dynamics and transformations
# ----------------------------------------------------------------------------------


def small_model(key=0, **kwargs):
    options = dict(image_shape=(3, 8, 12), patch_size=4, dim=D, num_heads=HEADS)
    options.update(head_dim=HEAD_DIM, num_memories=M)
    return IET(**(options | kwargs), key=jax.random.key(key), dtype=jnp.float32)


@pytest.mark.parametrize("no_self", [False, True], ids=["attention", "no-self"])
def test_the_energy_never_rises_along_the_descent(no_self):
    model = small_model(prevent_self_attention=no_self)
    rng = np.random.default_rng(7)
    images = jnp.asarray(rng.standard_normal((4, 3, 8, 12)), jnp.float32)
    masks = jnp.asarray(rng.random((4, 6)) < 0.5)
    energies = eqx.filter_jit(
        lambda m, ims, mks: jax.vmap(
            lambda im, mk: m.descend(m.encode(im, mk), steps=40).energies
        )(ims, mks)
    )(model, images, masks)
    energies = np.asarray(energies)
    assert energies.shape == (4, 41)
    assert np.all(np.diff(energies, axis=1) <= 1e-5 * np.abs(energies[:, :-1]))
    assert np.all(energies[:, -1] < energies[:, 0])


def test_jit_vmap_and_grad():
    model = small_model(steps=3)
    rng = np.random.default_rng(8)
    images = jnp.asarray(rng.standard_normal((3, 3, 8, 12)), jnp.float32)
    masks = jnp.asarray(rng.random((3, 6)) < 0.5)

    def loss(model, images, masks):
        out = jax.vmap(model)(images, masks)
        return jnp.mean((out - images) ** 2)

    batched = eqx.filter_jit(lambda m, i, k: jax.vmap(m)(i, k))(model, images, masks)
    one = eqx.filter_jit(lambda m, i, k: m(i, k))
    for b in range(3):
        assert tree_allclose(
            batched[b], one(model, images[b], masks[b]), rtol=1e-4, atol=1e-5
        )
    value, grads = eqx.filter_jit(eqx.filter_value_and_grad(loss))(model, images, masks)
    assert np.isfinite(float(value))
    for leaf in (
        grads.W_enc,
        grads.W_dec,
        grads.mask_token,
        grads.pos_embed,
        grads.ham.synapses["attention"].Wq,
        grads.ham.synapses["memory"].patterns,
        grads.ham.neurons["tokens"].lagrangian.gamma,
    ):
        assert np.all(np.isfinite(leaf)) and np.any(leaf != 0)


def test_random_initialisation_is_the_reference_shape():
    model = small_model()
    assert model.num_patches == 6 and model.dim == D
    assert model.pos_embed.shape == (7, D) and model.W_enc.shape == (48, D)
    assert model.ham.synapses["memory"].patterns.shape == (M, D)
    assert model.ham.synapses["attention"].beta == pytest.approx(HEAD_DIM**-0.5)
    assert not model.ham.neurons["tokens"].leak
    with pytest.raises(ValueError, match="`image_shape`.*multiples of `patch_size`"):
        small_model(image_shape=(3, 8, 10))
    with pytest.raises(ValueError, match="`alpha`"):
        small_model(alpha=-0.1)


def test_bad_inputs_raise_clear_errors():
    model = small_model()
    image = jnp.zeros((3, 8, 12), jnp.float32)
    mask = jnp.zeros(6, bool)
    with pytest.raises(ValueError, match=r"`image` must have shape \(3, 8, 12\)"):
        model(jnp.zeros((3, 12, 8), jnp.float32), mask)
    with pytest.raises(ValueError, match=r"`mask` must have shape \(6,\)"):
        model(image, jnp.zeros(5, bool))
    with pytest.raises(TypeError, match="`mask` must be a boolean array"):
        model(image, jnp.zeros(6, jnp.int32))
    with pytest.raises(TypeError, match="`image` must be a floating array"):
        model(jnp.zeros((3, 8, 12), jnp.int32), mask)
    with pytest.raises(
        ValueError, match=r"`x` must be a token state of shape \(7, 16\)"
    ):
        model.decode(jnp.zeros((6, D), jnp.float32))
    with pytest.raises(ValueError, match="`alpha`"):
        model(image, mask, alpha=0.0)


def test_normalisation_round_trip():
    image = jnp.asarray(np.random.default_rng(9).random((3, 4, 5)))
    x = hl.models.normalise_image(image)
    mean = jnp.asarray(hl.models.IMAGENET_MEAN)[:, None, None]
    std = jnp.asarray(hl.models.IMAGENET_STD)[:, None, None]
    assert tree_allclose(x, (image - mean) / std)
    assert tree_allclose(hl.models.denormalise_image(x), image)
    with pytest.raises(ValueError, match=r"`image` must have shape \(3, height"):
        hl.models.normalise_image(jnp.zeros((4, 5, 3)))
