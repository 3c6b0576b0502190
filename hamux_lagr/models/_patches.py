r"""Images as patches, and the ImageNet normalisation the Energy Transformer expects.

An image of shape $(C, H, W)$ cut into square patches of side $p$ is a grid of
$H/p \times W/p$ patches, taken row by row (row-major); each patch is flattened
channel first, $(C, p, p) \to C p^2$ (Hoover et al. 2023; Dosovitskiy et al. 2020).
"""

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float


IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""ImageNet's per-channel (red, green, blue) mean of pixel values in [0, 1]."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""ImageNet's per-channel (red, green, blue) standard deviation of pixel values in
[0, 1]."""


def image_geometry(
    image_shape: object, patch_size: object, where: str
) -> tuple[tuple[int, int, int], int]:
    """`image_shape` as a `(C, H, W)` tuple of positive ints and `patch_size` as a
    positive int dividing `H` and `W`; raises a `ValueError` naming the argument."""
    if (
        isinstance(image_shape, (str, bytes))
        or not isinstance(image_shape, Sequence)
        or len(image_shape) != 3
        or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in image_shape)
    ):
        raise ValueError(
            f"`image_shape` must be three positive ints (channels, height, width) in "
            f"`{where}`, got {image_shape!r}; e.g. `image_shape=(3, 224, 224)`."
        )
    if (
        isinstance(patch_size, bool)
        or not isinstance(patch_size, (int, np.integer))
        or patch_size < 1
    ):
        raise ValueError(
            f"`patch_size` must be a positive int in `{where}`, got {patch_size!r}."
        )
    c, h, w = (int(s) for s in image_shape)
    p = int(patch_size)
    if h % p or w % p:
        raise ValueError(
            f"`image_shape` {(c, h, w)} must have a height and a width that are "
            f"multiples of `patch_size` = {p} in `{where}`; crop or pad the images, "
            "or choose a patch size that divides both."
        )
    return (c, h, w), p


def check_image_and_mask(
    image: object, mask: object, image_shape: tuple[int, int, int], patch_size: int
) -> tuple[Array, Array]:
    """The model's inputs as JAX arrays: a floating image of shape `image_shape` and a
    boolean mask of one entry per patch; raises naming the argument."""
    where = "ImageEnergyTransformer"
    image = jnp.asarray(image)
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise TypeError(
            f"`image` must be a floating array in `{where}`, got dtype {image.dtype}; "
            "normalise it first (e.g. `normalise_image(im / 255)`)."
        )
    if image.shape != tuple(image_shape):
        raise ValueError(
            f"`image` must have shape {image_shape} (channels, height, width) in "
            f"`{where}`, got {image.shape}; the model acts on one image: batch with "
            "`jax.vmap(model)(images, masks)`."
        )
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(
            f"`mask` must be a boolean array (True = masked patch) in `{where}`, got "
            f"dtype {mask.dtype}; e.g. `mask.astype(bool)`."
        )
    _, h, w = image_shape
    num_patches = (h // patch_size) * (w // patch_size)
    if mask.shape != (num_patches,):
        raise ValueError(
            f"`mask` must have shape ({num_patches},), one entry per patch (row by "
            f"row), in `{where}`, got {mask.shape}."
        )
    return image, mask


def patchify(image: Array, patch_size: int) -> Array:
    """`(C, H, W)` -> `(num_patches, C * p * p)`: row-major patches, each flattened
    channel first."""
    c, h, w = image.shape
    p = patch_size
    grid = image.reshape(c, h // p, p, w // p, p).transpose(1, 3, 0, 2, 4)
    return grid.reshape((h // p) * (w // p), c * p * p)


def unpatchify(patches: Array, image_shape: tuple[int, int, int], patch_size: int):
    """The inverse of `patchify`: `(num_patches, C * p * p)` -> `(C, H, W)`."""
    c, h, w = image_shape
    p = patch_size
    grid = patches.reshape(h // p, w // p, c, p, p).transpose(2, 0, 3, 1, 4)
    return grid.reshape(c, h, w)


def _channel_stats(image: Array, mean, std, where: str) -> tuple[Array, Array]:
    if image.ndim != 3 or image.shape[0] != len(mean):
        raise ValueError(
            f"`image` must have shape ({len(mean)}, height, width) (channels first) in "
            f"`{where}`, got {image.shape}; for a channels-last image `im` pass "
            "`jnp.moveaxis(im, -1, 0)`."
        )
    m = jnp.asarray(mean, image.dtype)[:, None, None]
    s = jnp.asarray(std, image.dtype)[:, None, None]
    return m, s


def _as_image(image: object, where: str) -> Array:
    arr = jnp.asarray(image)
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        raise TypeError(
            f"`image` must hold floating pixel values in [0, 1] in `{where}`, got "
            f"dtype {arr.dtype}; divide a uint8 image by 255 first, e.g. "
            "`image / 255.0`."
        )
    return arr


def normalise_image(
    image: Float[ArrayLike, "channels height width"],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Float[Array, "channels height width"]:
    r"""Normalises an image per channel, as the Energy Transformer's released weights
    expect: $(x_c - \mu_c) / \sigma_c$ with ImageNet's mean $\mu$ and standard
    deviation $\sigma$ (Hoover et al. 2023).

    **Arguments:**

    - `image`: a channels-first image of shape `(3, height, width)`, floating pixel
      values in $[0, 1]$ (divide a `uint8` image by 255).
    - `mean`: the per-channel means; by default `IMAGENET_MEAN`.
    - `std`: the per-channel standard deviations; by default `IMAGENET_STD`.

    **Returns:**

    The normalised image, of the same shape and dtype.
    """
    x = _as_image(image, "normalise_image")
    m, s = _channel_stats(x, mean, std, "normalise_image")
    return (x - m) / s


def denormalise_image(
    image: Float[ArrayLike, "channels height width"],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Float[Array, "channels height width"]:
    r"""Undoes `normalise_image`: $x_c \sigma_c + \mu_c$, pixel values in $[0, 1]$
    (not clipped: a reconstruction may leave the range; `jnp.clip` it to show it).

    **Arguments:**

    - `image`: a normalised channels-first image of shape `(3, height, width)`.
    - `mean`: the per-channel means; by default `IMAGENET_MEAN`.
    - `std`: the per-channel standard deviations; by default `IMAGENET_STD`.

    **Returns:**

    The image in pixel units, of the same shape and dtype.
    """
    x = _as_image(image, "denormalise_image")
    m, s = _channel_stats(x, mean, std, "denormalise_image")
    return x * s + m
