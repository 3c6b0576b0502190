r"""The Energy Transformer authors' checkpoint format: one `.npz` of twelve arrays.

| key | shape | what |
|---|---|---|
| `Wq`, `Wk` | `(H, Y, D)` | the attention's query and key projections |
| `Xi` | `(D, M)` | the memory's patterns, one per column |
| `Wenc`, `Benc` | `(Z, D)`, `(D,)` | the patch encoder, $Z = C p^2$ |
| `Wdec`, `Bdec` | `(D, Z)`, `(Z,)` | the patch decoder |
| `LNORM_gamma`, `LNORM_bias` | `()`, `(D,)` | the layer norm's scale and shift |
| `CLS_token`, `MASK_token` | `(D,)` | the class token and the mask token |
| `POS_embed` | `(N + 1, D)` | the position embedding, class token first |

(Hoover et al. 2023; the format of the weights they release with their tutorial.)
"""

import math
import os
from collections.abc import Mapping

import equinox as eqx
import jax.numpy as jnp
import numpy as np


#: Each key and the names of its axes; the names tie the keys' sizes together.
AXES = {
    "Wq": ("H", "Y", "D"),
    "Wk": ("H", "Y", "D"),
    "Xi": ("D", "M"),
    "Wenc": ("Z", "D"),
    "Benc": ("D",),
    "Wdec": ("D", "Z"),
    "Bdec": ("Z",),
    "LNORM_gamma": (),
    "LNORM_bias": ("D",),
    "CLS_token": ("D",),
    "MASK_token": ("D",),
    "POS_embed": ("N+1", "D"),
}
_WHERE = "ImageEnergyTransformer.from_npz"
#: The name of the token layer in the model's `HAM`.
TOKENS = "tokens"
#: The keys of the model's arrays in `_leaves` order.
_LEAF_KEYS = (
    "LNORM_gamma",
    "LNORM_bias",
    "Wq",
    "Wk",
    "Xi",
    "Wenc",
    "Benc",
    "Wdec",
    "Bdec",
    "CLS_token",
    "MASK_token",
    "POS_embed",
)


def read_checkpoint(file) -> dict[str, np.ndarray]:
    """The arrays of an `.npz` file (a path or an open binary file), read at once."""
    if isinstance(file, (str, os.PathLike)) and not os.path.exists(file):
        raise FileNotFoundError(
            f"`file` {os.fspath(file)!r} does not exist in `{_WHERE}`; the library "
            "downloads nothing: pass the path of the checkpoint you downloaded."
        )
    with np.load(file, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def check_checkpoint(arrays: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Checks the twelve arrays and returns the sizes `H, Y, D, M, Z, N+1`.

    Raises a `ValueError` naming the key: missing, extra, not a real floating array,
    of the wrong rank, of a shape that disagrees with the other keys (the later key
    in `AXES` order is named), or with a non-finite entry.
    """
    missing = [k for k in AXES if k not in arrays]
    extra = sorted(k for k in arrays if k not in AXES)
    if missing or extra:
        raise ValueError(
            f"The checkpoint given to `{_WHERE}` "
            + (f"lacks the key(s) {missing}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"has the unknown key(s) {extra}" if extra else "")
            + f"; the Energy Transformer's checkpoint holds exactly {list(AXES)}."
        )
    sizes: dict[str, int] = {}
    origin: dict[str, str] = {}
    for key, axes in AXES.items():
        arr = arrays[key]
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(
                f"`{key}` must be a floating array in the checkpoint given to "
                f"`{_WHERE}`, got dtype {arr.dtype}."
            )
        if arr.ndim != len(axes):
            raise ValueError(
                f"`{key}` must have {len(axes)} dimension(s) {axes} in the checkpoint "
                f"given to `{_WHERE}`, got shape {arr.shape}."
            )
        for axis, size in zip(axes, arr.shape):
            if size < 1:
                raise ValueError(
                    f"`{key}` has an empty axis {axis!r} (shape {arr.shape}) in the "
                    f"checkpoint given to `{_WHERE}`."
                )
            if axis in sizes and sizes[axis] != size:
                raise ValueError(
                    f"`{key}` has shape {arr.shape}, which gives {axis} = {size}, but "
                    f"`{origin[axis]}` gives {axis} = {sizes[axis]} in the checkpoint "
                    f"given to `{_WHERE}`; the keys must agree (`{key}` has the axes {axes})."
                )
            sizes.setdefault(axis, size)
            origin.setdefault(axis, key)
        if not np.all(np.isfinite(arr)):
            raise ValueError(
                f"`{key}` has a non-finite entry (NaN or inf) in the checkpoint given "
                f"to `{_WHERE}`."
            )
    return sizes


def infer_geometry(
    sizes: Mapping[str, int],
    image_shape: tuple[int, ...] | None,
    patch_size: int | None,
) -> tuple[tuple[int, int, int], int]:
    """The image shape and patch size a checkpoint's sizes imply.

    By default 3 channels, square patches of side `sqrt(Z / 3)` and a square grid of
    `sqrt(N)` patches a side. `image_shape` and `patch_size` override the inference;
    a geometry the keys do not fit raises a `ValueError` naming the key.
    """
    z, n = sizes["Z"], sizes["N+1"] - 1
    if image_shape is not None:
        channels = int(image_shape[0])
    elif patch_size is not None:
        channels = z // (int(patch_size) ** 2)
    else:
        channels = 3
    if patch_size is None:
        patch_size = math.isqrt(z // channels) if z % channels == 0 else 0
    p = int(patch_size)
    if channels * p * p != z:
        raise ValueError(
            f"`Wenc` has shape {(z, sizes['D'])}: Z = {z} patch elements, which is not "
            f"{channels} channel(s) of square patches"
            + (f" of side {p}" if p else "")
            + f" in `{_WHERE}`; pass `image_shape=(C, H, W)` and `patch_size=p` with "
            f"C * p * p = {z}."
        )
    if image_shape is None:
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(
                f"`POS_embed` has {n + 1} rows: {n} patches and the class token, not a "
                f"square grid of patches, in `{_WHERE}`; pass `image_shape=(C, H, W)`."
            )
        image_shape = (channels, side * p, side * p)
    c, h, w = (int(s) for s in image_shape)
    if h % p or w % p or (h // p) * (w // p) != n:
        raise ValueError(
            f"`POS_embed` has {n + 1} rows ({n} patches and the class token), but "
            f"`image_shape` {(c, h, w)} with `patch_size` {p} makes "
            f"{(h // p) * (w // p) if not (h % p or w % p) else 'no whole number of'} "
            f"patches in `{_WHERE}`."
        )
    return (c, h, w), p


def _leaves(model) -> list:
    """An `ImageEnergyTransformer`'s arrays, in `_LEAF_KEYS` order (the memory's
    patterns are `Xi.T`)."""
    layernorm = model.ham.neurons[TOKENS].lagrangian
    attention = model.ham.synapses["attention"]
    return [
        layernorm.gamma,
        layernorm.delta,
        attention.Wq,
        attention.Wk,
        model.ham.synapses["memory"].patterns,
        model.W_enc,
        model.b_enc,
        model.W_dec,
        model.b_dec,
        model.cls_token,
        model.mask_token,
        model.pos_embed,
    ]


def with_checkpoint_arrays(model, arrays: Mapping[str, np.ndarray]):
    """`model` (of the checkpoint's sizes) holding the checkpoint's arrays, as JAX
    arrays of the file's dtype."""
    values = [jnp.asarray(arrays[key]) for key in _LEAF_KEYS]
    values[_LEAF_KEYS.index("Xi")] = values[_LEAF_KEYS.index("Xi")].T
    return eqx.tree_at(_leaves, model, values)


def checkpoint_arrays(model) -> dict[str, np.ndarray]:
    """The checkpoint's twelve arrays of a model (`LNORM_gamma` of shape `()`, a
    scalar `LNORM_bias` broadcast to `(D,)`)."""
    arrays = {k: np.asarray(v) for k, v in zip(_LEAF_KEYS, _leaves(model))}
    arrays["Xi"] = arrays["Xi"].T
    arrays["LNORM_gamma"] = arrays["LNORM_gamma"].reshape(())
    arrays["LNORM_bias"] = np.broadcast_to(arrays["LNORM_bias"], (model.dim,))
    return arrays


def write_checkpoint(file, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes the twelve arrays as float32 to an `.npz` (a path or an open file)."""
    out = {key: np.asarray(arrays[key], dtype=np.float32) for key in AXES}
    np.savez(file, **out)  # pyright: ignore[reportArgumentType]
