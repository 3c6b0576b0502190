r"""Parameterized sparse Lagrangians: `LSparsemax` and `LEntmax` (learnable `alpha`)."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._custom_types import ParamLike, Scalar, StateLike
from ._functional_softmax import _reduced_shape
from ._functional_sparse import _entmax, _sparsemax
from ._lagrangians import (
    _AbstractSoftmaxLagrangian,
    _min_beta,
    _NON_FINITE_HINT,
    Lagrangian,
)
from ._validation import (
    as_state,
    check_broadcasts,
    ensure_finite,
    learnable,
    normalise_axis,
    static_axis,
    static_float,
)


class LSparsemax(_AbstractSoftmaxLagrangian):
    r"""Reduced Lagrangian whose activation function is the sparsemax
    (Martins & Astudillo 2016).

    $\mathcal{L}(x) = \frac{1}{\beta}\max_{p\in\Delta}(\langle p, \beta x\rangle -
    \frac{1}{2}\|p\|^2)$ over `axis` (summed over the other axes),
    $g(x) = \operatorname{sparsemax}(\beta x)$, with exact zeros; the energy is
    $E = \frac{1}{2\beta}\|g\|^2$. The sparse modern Hopfield network of Hu et al.
    (2023). See `lagr_sparsemax`.

    **Arguments:**

    - `beta`: inverse temperature. Learnable; clamped at `min_beta` when evaluated.
      NaN or infinite values are refused (a `ValueError`; under `jax.jit`, a run-time
      error).
    - `axis`: the axis over which to apply the sparsemax (static).
    - `min_beta`: minimal accepted value of `beta` (static, a positive Python
      number). For energy dynamics, it is important that `beta` be positive.
    """

    def _kernel(self, x: Array, beta: Array, axis: int) -> Array:
        return _sparsemax(x, beta, axis)


class LEntmax(Lagrangian):
    r"""Reduced Lagrangian whose activation function is the $\alpha$-entmax
    (Peters, Niculae & Martins 2019), with a learnable $\alpha$ (Correia, Niculae &
    Martins 2019).

    $\mathcal{L}(x) = \frac{1}{\beta}\max_{p\in\Delta}(\langle p, \beta x\rangle +
    H_\alpha(p))$ over `axis` (summed over the other axes), $H_\alpha$ the Tsallis
    entropy, $g(x) = \alpha\text{-entmax}(\beta x)$; the energy is
    $E = -H_\alpha(g)/\beta$. `alpha` near 1 is close to `LSoftmax`, `alpha = 2` is
    the sparsemax (`LSparsemax`, whose value is lower by $\frac{1}{2\beta}$). Both
    `alpha` and `beta` are trained by gradients: the value's derivative in `alpha` is
    exact (Danskin's theorem), and so is the activation's (Correia et al. 2019). In
    Hopfield networks: Santos et al. (2024). See `lagr_entmax`.

    The threshold is exact (sorting) when `alpha` is concrete and equal to 1.5 or 2;
    otherwise (in particular under `jax.jit`, when the module is an argument) it is
    found by bisection, accurate to about $10^{-15}$ in float64.

    **Arguments:**

    - `alpha`: the entmax parameter. Learnable; clamped at `min_alpha` when evaluated.
      NaN or infinite values are refused (a `ValueError`; under `jax.jit`, a run-time
      error).
    - `beta`: inverse temperature. Learnable; clamped at `min_beta` when evaluated.
      NaN or infinite values are refused.
    - `axis`: the axis over which to apply the entmax (static).
    - `min_beta`: minimal accepted value of `beta` (static, a positive Python
      number).
    - `min_alpha`: minimal accepted value of `alpha` (static, a Python number
      `> 1`; by default 1.01). The entmax is defined for `alpha > 1`; near 1 the
      `alpha` derivatives lose about $\log_{10}(1/(\alpha-1))$ digits to cancellation,
      so the default keeps them accurate in float32.
    """

    alpha: Float[Array, "..."]
    beta: Float[Array, "..."]
    axis: int = eqx.field(static=True)
    min_beta: float = eqx.field(static=True)
    min_alpha: float = eqx.field(static=True)

    def __init__(
        self,
        alpha: ParamLike = 1.5,
        beta: ParamLike = 1.0,
        axis: int = -1,
        min_beta: int | float = 1e-6,
        min_alpha: int | float = 1.01,
    ):
        where = "LEntmax"
        self.alpha = learnable(alpha, "alpha", where)
        self.beta = learnable(beta, "beta", where)
        self.axis = static_axis(axis, where)
        self.min_beta = _min_beta(min_beta, where)
        self.min_alpha = static_float(
            min_alpha,
            "min_alpha",
            where,
            lower=1.0,
            hint="It is the smallest entmax parameter the dynamics may use; the "
            "entmax is defined for alpha > 1.",
        )

    def __call__(self, x: StateLike) -> Scalar:
        r"""The scalar Lagrangian of one unbatched state, `beta` clamped at
        `min_beta` and `alpha` at `min_alpha`.

        **Arguments:**

        - `x`: one unbatched state, at least one dimension; `axis` is reduced, the
          other axes summed.

        **Returns:**

        The scalar $\mathcal{L}(x)$.
        """
        where = "LEntmax"
        x = as_state(x, where)
        axis = normalise_axis(self.axis, x.ndim, where)
        shape = _reduced_shape(x.shape, axis)
        alpha, beta = ensure_finite(
            where, _NON_FINITE_HINT, alpha=self.alpha, beta=self.beta
        )
        beta = jnp.maximum(beta, self.min_beta).astype(x.dtype)
        alpha = jnp.maximum(alpha, self.min_alpha).astype(x.dtype)
        check_broadcasts(beta, shape, "beta", where)
        check_broadcasts(alpha, shape, "alpha", where)
        return jnp.sum(_entmax(x, beta, alpha, axis))


__all__ = ["LEntmax", "LSparsemax"]
