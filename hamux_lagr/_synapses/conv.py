r"""Synapses between image-shaped layers: convolution and pooling.

Images are laid out channels-first, `(channels, height, width)`, as in
`equinox.nn.Conv2d`. A synapse's energy is minus the overlap of the second layer's
activations with a (convolved, pooled) image of the first layer's activations.
"""

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import AnyArray, PairLike, Scalar, SizeLike
from .._validation import (
    as_pair,
    as_shape,
    check_key,
    check_nonempty,
    float_dtype,
    learnable,
    static_int,
)
from .base import as_activations, optional_bias, Synapse


_Padding = PairLike | tuple[PairLike, PairLike] | str


def _as_padding(
    padding: object, where: str
) -> str | tuple[tuple[int, int], tuple[int, int]]:
    """Normalises a padding to `"SAME"`, `"VALID"` or `((top, bottom), (left, right))`."""
    if isinstance(padding, str):
        if padding.upper() in ("SAME", "VALID"):
            return padding.upper()
    else:
        # An int pads all sides alike; a pair holds, per axis, an int or a (low, high)
        # pair of non-negative ints (NumPy ints accepted).
        try:
            pads = tuple(padding)  # pyright: ignore[reportArgumentType]
        except TypeError:
            pads = (padding, padding)
        try:
            out = tuple(
                as_shape(p, "padding", where) * (2 if np.ndim(p) == 0 else 1)  # pyright: ignore[reportArgumentType]
                for p in pads
            )
        except TypeError:
            out = ()
        if len(out) == 2 and all(len(p) == 2 for p in out):
            (top, bottom), (left, right) = out
            return ((top, bottom), (left, right))
    raise ValueError(
        f"`padding` must be 'SAME', 'VALID', an int, a pair of ints or a pair of "
        f"(low, high) pairs of non-negative ints in `{where}`, got {padding!r}."
    )


class AbstractImageSynapse(Synapse):
    r"""Abstract base class of the synapses between image-shaped layers.

    Such a synapse maps the first layer's image $g_1$ to the input current
    $f(g_1)$ of the second layer (`forward`, which subclasses implement); its energy is
    minus their overlap,

    $$E(g_1, g_2) = -\big\langle g_2,\; f(g_1)\big\rangle,$$

    so that layer 2 receives $f(g_1)$ and layer 1 receives the transpose (the
    vector-Jacobian product) of $f$ applied to $g_2$. Images are
    `(channels, height, width)`.
    """

    #: The arguments that set the output shape, named in shape errors.
    _shape_arguments: eqx.AbstractClassVar[str]

    @abc.abstractmethod
    def forward(self, g1: Float[AnyArray, "c h w"]) -> Float[Array, "c2 h2 w2"]:
        r"""The input current $f(g_1)$ that the second layer receives."""
        raise NotImplementedError

    def __call__(
        self, g1: Float[AnyArray, "c h w"], g2: Float[AnyArray, "c2 h2 w2"]
    ) -> Scalar:
        r"""The energy $-\langle g_2, f(g_1)\rangle$, with $f$ the synapse's `forward`.

        **Arguments:**

        - `g1`: the first layer's activations, `(channels, height, width)`.
        - `g2`: the second layer's activations, of the shape of `forward(g1)`.

        **Returns:**

        The scalar energy.
        """
        where = type(self).__name__
        g1, g2 = as_activations(where, g1=g1, g2=g2)
        current = self.forward(g1)
        if current.shape != g2.shape:
            raise ValueError(
                f"`{where}` maps an image of shape {g1.shape} to shape "
                f"{current.shape}, but the second layer has shape {g2.shape}; change "
                f"the layer's shape, {self._shape_arguments}."
            )
        return -jnp.sum(g2 * current)


class ConvSynapse(AbstractImageSynapse):
    r"""A convolutional synapse between two image-shaped layers.

    $$E(g_1, g_2) = -\big\langle g_2,\; K \star g_1 + b\big\rangle
    = -\sum_{c,i,j} (g_2)_{cij}\Big(b_c + \sum_{c',u,v} K_{c c' u v}\,
    (g_1)_{c',\, s i + u,\, s j + v}\Big),$$

    the energy of a 2-D convolution (cross-correlation, stride $s$, optional padding
    of $g_1$) from the first layer to the second (Hoover et al. 2022). Layer 2 receives
    the input current $K \star g_1 + b$; layer 1 receives the transposed convolution
    of $g_2$. Images are `(channels, height, width)`.

    **Arguments:**

    - `kernel`: the kernel, of shape `(out_channels, in_channels, kh, kw)`. Learnable.
    - `bias`: an optional bias of shape `(out_channels,)`. Learnable.
    - `stride`: the stride, an int or a pair (static).
    - `padding`: `"VALID"` (default 0), `"SAME"`, an int, a pair, or a pair of
      `(low, high)` pairs, applied to the first layer's image (static).
    """

    kernel: Float[Array, "c_out c_in kh kw"]
    bias: Float[Array, " c_out"] | None
    stride: tuple[int, int] = eqx.field(static=True)
    padding: str | tuple[tuple[int, int], tuple[int, int]] = eqx.field(static=True)
    _shape_arguments: ClassVar[str] = "the kernel size, `stride` or `padding`"

    def __init__(
        self,
        kernel: ArrayLike,
        bias: ArrayLike | None = None,
        *,
        stride: PairLike = 1,
        padding: _Padding = 0,
    ):
        self.kernel = learnable(kernel, "kernel", "ConvSynapse", ndim=4)
        check_nonempty(self.kernel, "kernel", "ConvSynapse")
        channels = self.kernel.shape[0]
        self.bias = optional_bias(bias, channels, "ConvSynapse", per="output channel")
        self.stride = as_pair(stride, "stride", "ConvSynapse")
        self.padding = _as_padding(padding, "ConvSynapse")

    def forward(self, g1: Float[AnyArray, "c_in h w"]) -> Float[Array, "c_out h2 w2"]:
        r"""The input current $K \star g_1 + b$ that the second layer receives.

        **Arguments:**

        - `g1`: the first layer's activations, `(in_channels, height, width)`.

        **Returns:**

        The convolved image, `(out_channels, height', width')`.
        """
        (g1,) = as_activations("ConvSynapse.forward", g1=g1)
        channels = self.kernel.shape[1]
        if g1.ndim != 3 or g1.shape[0] != channels:
            raise ValueError(
                "`ConvSynapse` expects `g1` laid out as (channels, height, width) with "
                f"{channels} channels, got activations of shape {g1.shape}."
            )
        out = lax.conv_general_dilated(
            g1[None],
            self.kernel.astype(g1.dtype),
            window_strides=self.stride,
            padding=self.padding,
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
        )[0]
        if self.bias is not None:
            out = out + self.bias.astype(g1.dtype)[:, None, None]
        return out

    @classmethod
    def random(
        cls,
        in_channels: SizeLike,
        out_channels: SizeLike,
        kernel_size: PairLike,
        *,
        key: PRNGKeyArray,
        stride: PairLike = 1,
        padding: _Padding = 0,
        use_bias: bool = False,
        dtype=None,
    ) -> "ConvSynapse":
        r"""A `ConvSynapse` with a normal random kernel.

        Each kernel entry is $\mathcal{N}(0, 1/(C_\text{in} k_h k_w))$, one over the
        fan-in; the bias (if any) starts at zero.

        **Arguments:**

        - `in_channels`, `out_channels`: the channels of the first and second layer.
        - `kernel_size`: an int or a pair `(kh, kw)`.
        - `key`: a JAX PRNG key (keyword-only).
        - `stride`, `padding`: as in `ConvSynapse`.
        - `use_bias`: whether to add a (zero-initialised) bias per output channel.
        - `dtype`: the floating dtype; by default JAX's default float.

        **Returns:**

        A `ConvSynapse` with a kernel of shape `(out_channels, in_channels, kh, kw)`.
        """
        where = "ConvSynapse.random"
        check_key(key, where)
        c_in = static_int(in_channels, "in_channels", where, lower=1)
        c_out = static_int(out_channels, "out_channels", where, lower=1)
        kh, kw = as_pair(kernel_size, "kernel_size", where)
        dtype = float_dtype(dtype)
        std = (c_in * kh * kw) ** -0.5
        kernel = std * jax.random.normal(key, (c_out, c_in, kh, kw), dtype)
        bias = jnp.zeros((c_out,), dtype) if use_bias else None
        return cls(kernel, bias, stride=stride, padding=padding)


class PoolSynapse(AbstractImageSynapse):
    r"""The energy of a pooled image of one layer, aligned with a smaller layer.

    $$E(g_1, g_2) = -\big\langle g_2,\; \operatorname{pool}(h(g_1))\big\rangle,\qquad
    \operatorname{pool}(y)_{cij} = \max_{(u, v) \in W_{ij}} y_{cuv}
    \;\text{ or }\; \frac{1}{|W_{ij}|}\sum_{(u, v) \in W_{ij}} y_{cuv},$$

    where $W_{ij}$ is the $(k_h, k_w)$ window at position $(s i, s j)$ and $h$ is the
    identity, or the convolution $K \star g_1 + b$ of an optional `ConvSynapse` (the
    convolution-with-pooling synapse of HAMUX). Layer 2 receives the pooled image as
    its input current; with max pooling, layer 1 receives $g_2$ routed back to each
    window's maximum (the energy is piecewise linear there, its gradient defined almost
    everywhere), with average pooling it receives $g_2$ spread evenly over the window.

    **Arguments:**

    - `window`: the pooling window `(kh, kw)`, an int or a pair (static).
    - `stride`: the pooling stride; by default the window (non-overlapping windows).
    - `mode`: `"max"` or `"avg"` (static).
    - `conv`: an optional `ConvSynapse` applied before pooling (learnable).
    """

    conv: ConvSynapse | None
    window: tuple[int, int] = eqx.field(static=True)
    stride: tuple[int, int] = eqx.field(static=True)
    mode: str = eqx.field(static=True)
    _shape_arguments: ClassVar[str] = "`window` or `stride`"

    def __init__(
        self,
        window: PairLike,
        *,
        stride: PairLike | None = None,
        mode: str = "max",
        conv: ConvSynapse | None = None,
    ):
        self.window = as_pair(window, "window", "PoolSynapse")
        self.stride = (
            self.window if stride is None else as_pair(stride, "stride", "PoolSynapse")
        )
        if mode not in ("max", "avg"):
            raise ValueError(
                f"`mode` must be 'max' or 'avg' in `PoolSynapse`, got {mode!r}."
            )
        self.mode = mode
        if conv is not None and not isinstance(conv, ConvSynapse):
            raise TypeError(
                "`conv` must be a `ConvSynapse` or None in `PoolSynapse`, got "
                f"{type(conv).__name__}."
            )
        self.conv = conv

    def forward(self, g1: Float[AnyArray, "c h w"]) -> Float[Array, "c2 h2 w2"]:
        r"""The input current $\operatorname{pool}(h(g_1))$ of the second layer.

        **Arguments:**

        - `g1`: the first layer's activations, `(channels, height, width)`.

        **Returns:**

        The pooled image.
        """
        (g1,) = as_activations("PoolSynapse.forward", g1=g1)
        if self.conv is not None:
            y = self.conv.forward(g1)
        else:
            if g1.ndim != 3:
                raise ValueError(
                    "`PoolSynapse` expects `g1` laid out as (channels, height, width), "
                    f"got activations of shape {g1.shape}."
                )
            y = g1
        dims = (1, *self.window)
        strides = (1, *self.stride)
        if self.mode == "max":
            return lax.reduce_window(y, -jnp.inf, lax.max, dims, strides, "VALID")
        total = lax.reduce_window(y, 0.0, lax.add, dims, strides, "VALID")
        return total / (self.window[0] * self.window[1])

    @classmethod
    def random(
        cls,
        in_channels: SizeLike,
        out_channels: SizeLike,
        kernel_size: PairLike,
        window: PairLike,
        *,
        key: PRNGKeyArray,
        stride: PairLike | None = None,
        mode: str = "max",
        conv_stride: PairLike = 1,
        padding: _Padding = 0,
        use_bias: bool = False,
        dtype=None,
    ) -> "PoolSynapse":
        r"""A `PoolSynapse` over a random convolution (see `ConvSynapse.random`).

        **Arguments:**

        - `in_channels`, `out_channels`, `kernel_size`: the convolution's, as in
          `ConvSynapse.random`.
        - `window`, `stride`, `mode`: the pooling's, as in `PoolSynapse`.
        - `key`: a JAX PRNG key (keyword-only).
        - `conv_stride`, `padding`, `use_bias`: the convolution's stride, padding and
          bias.
        - `dtype`: the floating dtype; by default JAX's default float.

        **Returns:**

        A `PoolSynapse` whose `conv` is a random `ConvSynapse`. (For pooling alone,
        without parameters, use `PoolSynapse(window, mode=...)`.)
        """
        conv = ConvSynapse.random(
            in_channels,
            out_channels,
            kernel_size,
            key=key,
            stride=conv_stride,
            padding=padding,
            use_bias=use_bias,
            dtype=dtype,
        )
        return cls(window, stride=stride, mode=mode, conv=conv)
