r"""The Energy Transformer's masked-image model (Hoover et al. 2023), built from the
library's parts: a leak-free layer-norm layer of tokens, energy attention, a token-wise
ReLU memory, and `descend`."""

import io
import math
import os
from collections.abc import Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PRNGKeyArray, Shaped

from .._dynamics.descend import descend
from .._dynamics.solution import Solution
from .._ham import HAM
from .._lagrangians.norms import LLayerNorm
from .._lagrangians.polynomial import LRelu
from .._neurons import NeuronLayer
from .._synapses.attention import AttentionSynapse
from .._synapses.dense_memory import DenseMemory
from ._checkpoint import (
    check_checkpoint,
    checkpoint_arrays,
    infer_geometry,
    read_checkpoint,
    TOKENS,
    with_checkpoint_arrays,
    write_checkpoint,
)
from ._no_self_attention import NoSelfAttention
from ._patches import check_image_and_mask, image_geometry, patchify, unpatchify


_NAME = "ImageEnergyTransformer"
#: A checkpoint file: a path, or an open binary file.
FileLike = str | os.PathLike | io.IOBase


def _positive_int(value: object, name: str, where: str, lower: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int in `{where}`, got {value!r}.")
    if value < lower:
        raise ValueError(f"`{name}` must be >= {lower} in `{where}`, got {value}.")
    return int(value)


def _step_size(value: object, where: str) -> float | Array:
    """`alpha` as a positive finite Python float, or a traced scalar as it is (then
    `descend` checks it at run time)."""
    if isinstance(value, (bool, str)) or np.ndim(value) != 0:  # pyright: ignore
        raise TypeError(
            f"`alpha` must be a positive number in `{where}`, got {value!r}."
        )
    try:
        alpha = float(np.asarray(value))
    except jax.errors.TracerArrayConversionError:  # traced: `descend` checks it
        return value  # pyright: ignore[reportReturnType]
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(
            f"`alpha` must be a positive finite step size in `{where}`, got {alpha}; "
            "the Energy Transformer uses `alpha=0.1`."
        )
    return alpha


def _token_ham(layernorm, attention, patterns, num_tokens: int) -> HAM:
    return HAM(
        neurons={
            TOKENS: NeuronLayer(layernorm, (num_tokens, patterns.shape[1]), leak=False)
        },
        synapses={"attention": attention, "memory": DenseMemory(patterns, LRelu())},
        connections=[((TOKENS,), "attention"), ((TOKENS,), "memory")],
    )


class ImageEnergyTransformer(eqx.Module):
    r"""The Energy Transformer for masked-image completion (Hoover et al. 2023).

    An image of shape $(C, H, W)$ is cut into $N = HW/p^2$ patches of side $p$ (row by
    row, each flattened channel first) and each patch is encoded as a token,
    $x_n = P_n W_\text{enc} + b_\text{enc} \in \mathbb{R}^D$. Masked patches are
    replaced by the mask token, the class token is prepended and the position
    embedding added: $x \in \mathbb{R}^{(N+1)\times D}$. The tokens then descend one
    energy of their layer norms $g = \operatorname{LN}(x)$, with
    $\operatorname{LN}(x_n) = \gamma (x_n - \bar x_n)/\sqrt{\operatorname{Var}(x_n) +
    \epsilon} + \delta$ ($\gamma$ a scalar, $\delta \in \mathbb{R}^D$),

    $$E(g) = -\frac{1}{\beta}\sum_{h}\sum_{n}\log\sum_{m}
    e^{\beta\langle W^Q_h g_n,\, W^K_h g_m\rangle}
    \;-\; \frac12\sum_{n}\sum_{\mu}\max(\langle \xi_\mu, g_n\rangle, 0)^2,$$

    energy attention ($H$ heads of dimension $Y$, $\beta = 1/\sqrt{Y}$) plus a Hopfield
    network of $M$ memories $\xi_\mu$, for `steps` Euler steps
    $x \leftarrow x - \alpha\,\partial E/\partial g$ (the layer norm's own energy is
    not in the update: a `NeuronLayer` with `leak=False`). The final tokens are
    normalised once more and every patch token decoded,
    $\hat P_n = g_n W_\text{dec} + b_\text{dec}$, into the reconstructed image.

    The model acts on ONE image; a batch goes through `jax.vmap`:

    ```python
    model = hl.models.ImageEnergyTransformer(key=jax.random.key(0))  # 224 x 224, ViT-B
    completed = model(image, mask)                       # (3, 224, 224), mask (196,)
    completed = jax.vmap(model)(images, masks)           # a batch
    sol = model.descend(model.encode(image, mask))       # the descent: sol.energies
    ```

    Its parts are a `hamux_lagr.HAM` (`model.ham`: the layer `"tokens"`, a
    `NeuronLayer(LLayerNorm(gamma, delta), (N + 1, D), leak=False)`, the synapses
    `"attention"`, an `AttentionSynapse`, and `"memory"`, a token-wise
    `DenseMemory(patterns, LRelu())`), and the encoder, decoder and embeddings; all
    are learnable (`eqx.filter_grad`, optax).

    `hamux_lagr.models.ImageEnergyTransformer.from_npz` loads the authors' released
    weights (ViT-Base sized, trained on ImageNet with images normalised by
    `hamux_lagr.models.normalise_image`).

    **Arguments:**

    - `image_shape`: the images' shape `(C, H, W)`, channels first; `H` and `W`
      multiples of `patch_size` (static).
    - `patch_size`: the side $p$ of the square patches (static).
    - `dim`: the token dimension $D$.
    - `num_heads`: the number of attention heads $H$.
    - `head_dim`: each head's query/key dimension $Y$; $\beta = 1/\sqrt{Y}$.
    - `num_memories`: the number of memories $M$.
    - `steps`: the default number of Euler steps of the descent (static).
    - `alpha`: the default step size $\alpha$ (static).
    - `prevent_self_attention`: if `True`, each token's own key is left out of its
      attention, $\sum_{m \ne n}$ (the form of the paper); the released weights were
      trained with it in (`False`, the default) (static).
    - `key`: a JAX PRNG key for the random initial weights (keyword-only):
      $W^Q, W^K, \xi_\mu \sim \mathcal{N}(0, 1/D)$,
      $W_\text{enc} \sim \mathcal{N}(0, 1/(Cp^2))$, $W_\text{dec} \sim
      \mathcal{N}(0, 1/D)$, zero biases, $\gamma = 1$, $\delta = 0$, and class,
      mask and position embeddings $\sim \mathcal{N}(0, 0.02^2)$.
    - `dtype`: the weights' floating dtype; by default JAX's default float.
    """

    ham: HAM
    W_enc: Float[Array, "Z D"]
    b_enc: Float[Array, " D"]
    W_dec: Float[Array, "D Z"]
    b_dec: Float[Array, " Z"]
    cls_token: Float[Array, " D"]
    mask_token: Float[Array, " D"]
    pos_embed: Float[Array, "tokens D"]
    image_shape: tuple[int, int, int] = eqx.field(static=True)
    patch_size: int = eqx.field(static=True)
    steps: int = eqx.field(static=True)
    alpha: float = eqx.field(static=True)
    prevent_self_attention: bool = eqx.field(static=True)

    def __init__(
        self,
        image_shape: Sequence[int | np.integer] = (3, 224, 224),
        patch_size: int = 16,
        dim: int = 768,
        num_heads: int = 12,
        head_dim: int = 64,
        num_memories: int = 3072,
        steps: int = 12,
        alpha: float = 0.1,
        prevent_self_attention: bool = False,
        *,
        key: PRNGKeyArray,
        dtype=None,
    ):
        (c, h, w), p = image_geometry(image_shape, patch_size, _NAME)
        dim = _positive_int(dim, "dim", _NAME)
        num_heads = _positive_int(num_heads, "num_heads", _NAME)
        head_dim = _positive_int(head_dim, "head_dim", _NAME)
        num_memories = _positive_int(num_memories, "num_memories", _NAME)
        self.steps = _positive_int(steps, "steps", _NAME, lower=0)
        step = _step_size(alpha, _NAME)
        if not isinstance(step, float):
            raise TypeError(
                f"`alpha` must be a Python number in `{_NAME}` (a static default); "
                "pass a traced step size to the call instead: `model(..., alpha=a)`."
            )
        self.alpha = step
        if not isinstance(prevent_self_attention, (bool, np.bool_)):
            raise TypeError(
                "`prevent_self_attention` must be True or False in "
                f"`{_NAME}`, got {prevent_self_attention!r}."
            )
        self.prevent_self_attention = bool(prevent_self_attention)
        self.image_shape, self.patch_size = (c, h, w), p
        dtype = jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)
        z, n = c * p * p, (h // p) * (w // p)
        keys = jax.random.split(key, 8)

        def normal(k, shape, std):
            return std * jax.random.normal(k, shape, dtype)

        heads = (num_heads, head_dim, dim)
        wq, wk = normal(keys[0], heads, dim**-0.5), normal(keys[1], heads, dim**-0.5)
        patterns = normal(keys[2], (num_memories, dim), dim**-0.5)
        layernorm = LLayerNorm(jnp.ones((), dtype), jnp.zeros((dim,), dtype))
        attention = _attention(
            wq, wk, 1 / math.sqrt(head_dim), self.prevent_self_attention
        )
        self.ham = _token_ham(layernorm, attention, patterns, n + 1)
        self.W_enc = normal(keys[3], (z, dim), z**-0.5)
        self.b_enc = jnp.zeros((dim,), dtype)
        self.W_dec = normal(keys[4], (dim, z), dim**-0.5)
        self.b_dec = jnp.zeros((z,), dtype)
        self.cls_token = normal(keys[5], (dim,), 0.02)
        self.mask_token = normal(keys[6], (dim,), 0.02)
        self.pos_embed = normal(keys[7], (n + 1, dim), 0.02)

    # ------------------------------------------------------------------------------
    # sizes
    # ------------------------------------------------------------------------------

    @property
    def num_patches(self) -> int:
        """The number of patches $N$ of an image (the tokens are $N + 1$)."""
        _, h, w = self.image_shape
        return (h // self.patch_size) * (w // self.patch_size)

    @property
    def dim(self) -> int:
        """The token dimension $D$."""
        return self.W_enc.shape[1]

    # ------------------------------------------------------------------------------
    # the forward pass, in parts
    # ------------------------------------------------------------------------------

    def encode(
        self,
        image: Shaped[ArrayLike, "channels height width"],
        mask: Shaped[ArrayLike, " num_patches"],
    ) -> Float[Array, "num_tokens dim"]:
        r"""The initial token state of an image: patches encoded, masked patches
        replaced by the mask token, the class token first, positions added.

        **Arguments:**

        - `image`: one image, of shape `image_shape`, normalised as the model was
          trained (for the released weights: `normalise_image`).
        - `mask`: a boolean array of shape `(num_patches,)`, `True` where a patch is
          masked (hidden from the model); patches are numbered row by row.

        **Returns:**

        The token state $x$, of shape `(num_patches + 1, dim)`, in the image's dtype.
        """
        image, mask = check_image_and_mask(
            image, mask, self.image_shape, self.patch_size
        )
        dtype = image.dtype
        tokens = patchify(image, self.patch_size) @ self.W_enc.astype(dtype)
        tokens = tokens + self.b_enc.astype(dtype)[None]
        tokens = jnp.where(mask[:, None], self.mask_token.astype(dtype)[None], tokens)
        tokens = jnp.concatenate([self.cls_token.astype(dtype)[None], tokens])
        return tokens + self.pos_embed.astype(dtype)

    def energy(self, x: Float[ArrayLike, "num_tokens dim"]) -> Float[Array, ""]:
        r"""The Energy Transformer's energy $E(g)$ of a token state (attention plus
        memory, of the layer norms $g = \operatorname{LN}(x)$; no energy of the layer
        norm's own).

        **Arguments:**

        - `x`: a token state, of shape `(num_patches + 1, dim)`.

        **Returns:**

        The scalar energy.
        """
        return self.ham.energy({TOKENS: self._check_tokens(x, "energy")})

    def descend(
        self,
        x: Float[ArrayLike, "num_tokens dim"],
        *,
        steps: int | None = None,
        alpha: float | Float[Array, ""] | None = None,
    ) -> Solution:
        r"""Descends the energy from the token state `x`: `steps` Euler steps
        $x \leftarrow x - \alpha\,\partial E/\partial g$ (`hamux_lagr.descend` on the
        model's `ham`).

        **Arguments:**

        - `x`: the initial token state, of shape `(num_patches + 1, dim)`, e.g. from
          `encode`.
        - `steps`: the number of steps; by default the model's `steps`.
        - `alpha`: the step size; by default the model's `alpha`.

        **Returns:**

        The `hamux_lagr.Solution`: the final state `sol.xs["tokens"]`, the energy
        trace `sol.energies` (`steps + 1` energies, never rising for a small enough
        `alpha`), and its report.
        """
        return self._descend(x, steps, alpha, trace=True)

    def _descend(self, x, steps, alpha, *, trace: bool) -> Solution:
        steps = self.steps if steps is None else _positive_int(steps, "steps", _NAME, 0)
        dt = self.alpha if alpha is None else _step_size(alpha, _NAME)
        x = self._check_tokens(x, "descend")
        return descend(self.ham, {TOKENS: x}, steps=steps, dt=dt, trace=trace)

    def decode(
        self,
        x: Float[ArrayLike, "num_tokens dim"] | Mapping[str, Float[Array, "..."]],
    ) -> Float[Array, "channels height width"]:
        r"""The image a token state encodes: the layer norm once, then every patch
        token decoded, $\hat P_n = g_n W_\text{dec} + b_\text{dec}$ (the class token
        is dropped).

        **Arguments:**

        - `x`: a token state, of shape `(num_patches + 1, dim)`, or the states dict of
          a `Solution` (`sol.xs`, `{"tokens": x}`).

        **Returns:**

        The image, of shape `image_shape`, in the state's dtype.
        """
        if isinstance(x, Mapping):
            if set(x) != {TOKENS}:
                raise ValueError(
                    f"`x` must be a token state or a dict {{{TOKENS!r}: state}} (a "
                    f"`Solution`'s `xs`) in `{_NAME}.decode`, got the keys {list(x)}."
                )
            x = x[TOKENS]
        x = self._check_tokens(x, "decode")
        g = self.ham.neurons[TOKENS].activations(x)[1:]
        patches = g @ self.W_dec.astype(x.dtype) + self.b_dec.astype(x.dtype)[None]
        return unpatchify(patches, self.image_shape, self.patch_size)

    def __call__(
        self,
        image: Shaped[ArrayLike, "channels height width"],
        mask: Shaped[ArrayLike, " num_patches"],
        *,
        steps: int | None = None,
        alpha: float | Float[Array, ""] | None = None,
    ) -> Float[Array, "channels height width"]:
        r"""Completes a masked image: `decode(descend(encode(image, mask)).xs)`.

        **Arguments:**

        - `image`: one image, of shape `image_shape`, normalised as the model was
          trained.
        - `mask`: a boolean array of shape `(num_patches,)`, `True` where a patch is
          masked.
        - `steps`: the number of Euler steps; by default the model's `steps`.
        - `alpha`: the step size; by default the model's `alpha`.

        **Returns:**

        The reconstructed image, of the image's shape and dtype (every patch is
        decoded, the visible ones too).
        """
        x = self.encode(image, mask)
        # Without the energy trace, which the image does not need.
        return self.decode(self._descend(x, steps, alpha, trace=False).xs)

    # ------------------------------------------------------------------------------
    # checks
    # ------------------------------------------------------------------------------

    def _check_tokens(self, x: object, method: str) -> Array:
        x = jnp.asarray(x)
        shape = (self.num_patches + 1, self.dim)
        if x.shape != shape:
            raise ValueError(
                f"`x` must be a token state of shape {shape} (the class token and "
                f"{self.num_patches} patches) in `{_NAME}.{method}`, got {x.shape}."
            )
        return x

    # ------------------------------------------------------------------------------
    # the authors' checkpoint format
    # ------------------------------------------------------------------------------

    @classmethod
    def from_npz(
        cls,
        file: FileLike,
        *,
        steps: int = 12,
        alpha: float = 0.1,
        prevent_self_attention: bool = False,
        image_shape: Sequence[int | np.integer] | None = None,
        patch_size: int | None = None,
    ) -> "ImageEnergyTransformer":
        r"""Loads the Energy Transformer authors' checkpoint format.

        An `.npz` of twelve arrays: `Wq`, `Wk` `(H, Y, D)`; `Xi` `(D, M)`; `Wenc`
        `(Z, D)`, `Benc` `(D,)`; `Wdec` `(D, Z)`, `Bdec` `(Z,)`; `LNORM_gamma` `()`,
        `LNORM_bias` `(D,)`; `CLS_token`, `MASK_token` `(D,)`; `POS_embed`
        `(N + 1, D)`. The sizes come from the shapes: 3 channels, patches of side
        $p = \sqrt{Z/3}$ and a square grid of $\sqrt N$ patches a side (the released
        weights: 224 x 224 images, 16-pixel patches). The arrays keep the file's
        dtype (float32). The library downloads nothing: the authors publish the
        weights with their tutorial on associative memories (see the documentation's
        "The Energy Transformer" page).

        **Arguments:**

        - `file`: a path (`str` or `pathlib.Path`) or an open binary file.
        - `steps`: the model's number of Euler steps (the weights were trained with 12).
        - `alpha`: the model's step size (trained with 0.1).
        - `prevent_self_attention`: as in `ImageEnergyTransformer` (trained without).
        - `image_shape`: overrides the inferred `(C, H, W)`.
        - `patch_size`: overrides the inferred patch size.

        **Returns:**

        The `ImageEnergyTransformer`. A missing, extra, wrongly shaped or non-finite
        entry raises a `ValueError` naming the key.
        """
        where = f"{_NAME}.from_npz"
        if image_shape is not None:
            image_shape = image_geometry(image_shape, 1, where)[0]
        if patch_size is not None:
            patch_size = _positive_int(patch_size, "patch_size", where)
        arrays = read_checkpoint(file)
        sizes = check_checkpoint(arrays)
        geometry, p = infer_geometry(sizes, image_shape, patch_size)
        skeleton = eqx.filter_eval_shape(
            cls,
            geometry,
            p,
            sizes["D"],
            sizes["H"],
            sizes["Y"],
            sizes["M"],
            steps,
            alpha,
            prevent_self_attention,
            key=jax.random.key(0),
            dtype=jnp.float32,
        )
        return with_checkpoint_arrays(skeleton, arrays)

    def save_npz(self, file: FileLike) -> None:
        r"""Writes the model's weights in the authors' checkpoint format (float32;
        `LNORM_gamma` of shape `()`), which `from_npz` reads back bit for bit.

        **Arguments:**

        - `file`: a path (`str` or `pathlib.Path`; NumPy appends `.npz` when it is
          missing) or an open binary file.
        """
        write_checkpoint(file, checkpoint_arrays(self))


def _attention(wq, wk, beta: float, prevent_self_attention: bool):
    if prevent_self_attention:
        return NoSelfAttention(wq, wk, beta)
    return AttentionSynapse(wq, wk, beta)
