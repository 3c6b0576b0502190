"""Model benchmarks: `hl.models.ImageEnergyTransformer` against a plain-JAX transcription.

The Energy Transformer's masked-image model at its reference size (Hoover et al. 2023):
224 x 224 RGB images in 16-pixel patches (196 patches and a class token), tokens of
D=768, 12 heads of 64, 3072 ReLU memories, 12 Euler steps of alpha=0.1, float32, with
random weights written in the authors' checkpoint format and loaded with `from_npz`.
The reference is the authors' forward pass written out in plain JAX (patchify, encode,
mask, class token, positions; `x <- x - alpha * grad(E)(LayerNorm(x))` in a
`lax.scan`; LayerNorm once; decode; unpatchify), jitted, with the same arrays.

1. one image, 100 of 196 patches masked: `jax.jit` of `model(image, mask)` / the
   transcription (target <= 1.0);
2. a batch of 8 images (`jax.vmap`), same ratio (for information);
3. the descent alone returning the whole `hl.Solution` (energy trace, residual,
   checks): `model.descend(model.encode(...))` / the transcription (for information);
4. the model with its token-wise `DenseMemory` swapped for a synapse computing the same
   energy with the tokens first, `-1/2 sum relu(g @ patterns.T)**2` (one (N, M)
   product, the transcription's layout; `DenseMemory` lays the similarities out
   (M, N) as it vmaps over the tokens): the cost of that layout (for information).

Runs are interleaved in one process; each row gives median times and the median of the
per-round ratios (see `bench_memory.py`, whose timing helpers this reuses). Run with
`python benchmarks/bench_models.py` (`--quick` for fewer rounds).
"""

import argparse
import sys
import tempfile
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


sys.path.insert(0, str(Path(__file__).parent))
from bench_memory import compare, interleaved  # noqa: E402

import hamux_lagr as hl  # noqa: E402


IMAGE, PATCH, D, HEADS, HEAD_DIM, M = (3, 224, 224), 16, 768, 12, 64, 3072
STEPS, ALPHA = 12, 0.1


def checkpoint(seed=0):
    """Random weights in the authors' format, at their scale (float32)."""
    c, h, w = IMAGE
    z, n = c * PATCH * PATCH, (h // PATCH) * (w // PATCH)
    rng = np.random.default_rng(seed)

    def normal(*shape, scale):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    return {
        "Wq": normal(HEADS, HEAD_DIM, D, scale=D**-0.5),
        "Wk": normal(HEADS, HEAD_DIM, D, scale=D**-0.5),
        "Xi": normal(D, M, scale=D**-0.5),
        "Wenc": normal(z, D, scale=z**-0.5),
        "Benc": normal(D, scale=0.02),
        "Wdec": normal(D, z, scale=D**-0.5),
        "Bdec": normal(z, scale=0.02),
        "LNORM_gamma": np.asarray(1.0, np.float32),
        "LNORM_bias": normal(D, scale=0.02),
        "CLS_token": normal(D, scale=0.02),
        "MASK_token": normal(D, scale=0.02),
        "POS_embed": normal(n + 1, D, scale=0.02),
    }


def transcription(ck, image, mask):
    """The authors' forward pass, written out."""
    c, h, w = image.shape
    p, rows, cols = PATCH, h // PATCH, w // PATCH
    patches = image.reshape(c, rows, p, cols, p).transpose(1, 3, 0, 2, 4)
    x = patches.reshape(rows * cols, c * p * p) @ ck["Wenc"] + ck["Benc"]
    x = jnp.where(mask[:, None], ck["MASK_token"], x)
    x = jnp.concatenate([ck["CLS_token"][None], x]) + ck["POS_embed"]

    def lnorm(x):
        xm = x - x.mean(-1, keepdims=True)
        v = ck["LNORM_gamma"] * xm / jnp.sqrt((xm**2).mean(-1, keepdims=True) + 1e-5)
        return v + ck["LNORM_bias"]

    beta = 1 / float(np.sqrt(HEAD_DIM))

    def energy(g):
        k = jnp.einsum("kd,hzd->khz", g, ck["Wk"])
        q = jnp.einsum("qd,hzd->qhz", g, ck["Wq"])
        a = jax.nn.logsumexp(beta * jnp.einsum("qhz,khz->hqk", q, k), axis=-1)
        return -jnp.sum(a) / beta - 0.5 * jnp.sum(jax.nn.relu(g @ ck["Xi"]) ** 2)

    def step(x, _):
        e, grad = jax.value_and_grad(energy)(lnorm(x))
        return x - ALPHA * grad, e

    x, _ = jax.lax.scan(step, x, length=STEPS)
    out = (lnorm(x)[1:] @ ck["Wdec"] + ck["Bdec"]).reshape(rows, cols, c, p, p)
    return out.transpose(2, 0, 3, 1, 4).reshape(c, h, w)


class TokensFirstReLUMemory(hl.Synapse):
    """The token-wise ReLU memory's energy with the similarities laid out (N, M)."""

    patterns: jax.Array

    def __call__(self, g):
        return -0.5 * jnp.sum(jax.nn.relu(g @ self.patterns.T.astype(g.dtype)) ** 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    reps = 3 if args.quick else 9
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; {reps} rounds per row"
    )
    ck = checkpoint()
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "et.npz", **ck)
        model = hl.models.ImageEnergyTransformer.from_npz(Path(tmp) / "et.npz")
    arrays = {k: jnp.asarray(v) for k, v in ck.items()}
    rng = np.random.default_rng(1)
    images = jnp.asarray(rng.standard_normal((8, *IMAGE)), jnp.float32)
    masks = jnp.asarray(np.stack([rng.permutation(196) < 100 for _ in range(8)]))
    image, mask = images[0], masks[0]

    ours = eqx.filter_jit(lambda m, im, mk: m(im, mk))
    ref = jax.jit(transcription)
    ours_b = eqx.filter_jit(lambda m, im, mk: jax.vmap(m)(im, mk))
    ref_b = jax.jit(jax.vmap(transcription, in_axes=(None, 0, 0)))
    sol = eqx.filter_jit(lambda m, im, mk: m.descend(m.encode(im, mk)))

    got, expected = ours(model, image, mask), ref(arrays, image, mask)
    err = float(jnp.max(jnp.abs(got - expected)) / jnp.max(jnp.abs(expected)))
    assert err < 1e-5, f"ours and the transcription differ by {err} (relative)"
    print(f"   reconstruction: relative difference to the transcription {err:.1e}")

    t = interleaved(
        {
            "ours": lambda: ours(model, image, mask),
            "ref": lambda: ref(arrays, image, mask),
            "solution": lambda: sol(model, image, mask),
        },
        reps,
    )
    compare("1. ImageEnergyTransformer / transcription", 0.0, t, "ours", "ref", 1.0)
    compare(
        "3. (descend's whole Solution / transcription)", 0.0, t, "solution", "ref", None
    )
    t = interleaved(
        {
            "ours": lambda: ours_b(model, images, masks),
            "ref": lambda: ref_b(arrays, images, masks),
        },
        max(2, reps // 3),
    )
    compare("2. (a batch of 8, vmap)", 0.0, t, "ours", "ref", None)
    swapped = eqx.tree_at(
        lambda m: m.ham.synapses["memory"],
        model,
        TokensFirstReLUMemory(model.ham.synapses["memory"].patterns),
    )
    diff = jnp.max(jnp.abs(ours(swapped, image, mask) - got)) / jnp.max(jnp.abs(got))
    assert float(diff) < 1e-5, f"the tokens-first memory differs by {diff} (relative)"
    t = interleaved(
        {
            "swapped": lambda: ours(swapped, image, mask),
            "ref": lambda: ref(arrays, image, mask),
            "ours": lambda: ours(model, image, mask),
        },
        reps,
    )
    compare("4. (tokens-first memory / transcription)", 0.0, t, "swapped", "ref", None)
    compare("1. (again, same rounds as 4)", 0.0, t, "ours", "ref", 1.0)


if __name__ == "__main__":
    main()
