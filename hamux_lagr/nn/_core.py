r"""The arithmetic of a Hopfield layer on one sample, per head, in Hopfield space.

With the projected state patterns $\xi$ (queries), stored patterns $K$ (keys) and
pattern projections $V$ (values) of one head, the inverse temperature $\beta$ (the
layer's `scaling`) and a convex Lagrangian $\mathcal{L}$ over the stored axis
($\mathcal{L} = \operatorname{logsumexp}$ by default),

$$E(\xi) = \tfrac12\lVert\xi\rVert^2 - \tfrac{1}{\beta}\mathcal{L}(\beta K\xi)
+ c, \qquad \xi \leftarrow K^\top\nabla\mathcal{L}(\beta K\xi),$$

the update being the concave-convex procedure on $E$ (Ramsauer et al. 2020, eq. 2 and
Theorem 1; Yuille & Rangarajan 2003), so $E$ never rises. The association is
$A = \nabla\mathcal{L}(\beta K\xi)$ and the head's output $A V$.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array

from .._lagrangians.base import Lagrangian


def layer_norm(x: Array, weight: Array | None, bias: Array | None, eps: float) -> Array:
    """LayerNorm over the last axis (biased variance, as `torch.nn.LayerNorm`)."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    xc = x - mean
    var = jnp.mean(xc * xc, axis=-1, keepdims=True)
    out = xc * lax.rsqrt(var + jnp.asarray(eps, x.dtype))
    if weight is not None:
        out = out * _along_last(weight.astype(x.dtype), x.ndim)
    if bias is not None:
        out = out + _along_last(bias.astype(x.dtype), x.ndim)
    return out


def _along_last(v: Array, ndim: int) -> Array:
    """A vector over the last axis, with leading axes of size 1 (explicit ranks)."""
    return v.reshape((1,) * (ndim - 1) + v.shape)


def linear(x: Array, weight: Array, bias: Array | None) -> Array:
    """`x @ weight.T + bias` (weights in PyTorch's (out, in) layout)."""
    out = x @ weight.astype(x.dtype).T
    if bias is not None:
        out = out + _along_last(bias.astype(x.dtype), out.ndim)
    return out


def masked_logits(q: Array, k: Array, scaling: Array, mask: Array | None) -> Array:
    """$\\beta_h q k^\\top$ per head, `(H, L, S)`; blocked entries at the dtype's
    lowest finite value (exact zeros after a softmax or a sparse map, and a uniform
    row rather than NaN where a whole row is blocked, as `eqx.nn.MultiheadAttention`)."""
    logits = jnp.einsum("hld,hsd->hls", q * scaling[:, None, None], k)
    if mask is None:
        return logits
    return jnp.where(mask, logits, jnp.finfo(logits.dtype).min)


def association_fn(lagrangian: Lagrangian | None) -> Callable[[Array], Array]:
    """The map from logits `(H, L, S)` to the association, row-wise over `S`."""
    if lagrangian is None:
        return lambda z: jax.nn.softmax(z, axis=-1)
    return lagrangian.activation


def _head_axes(lagrangian: Lagrangian, num_heads: int):
    # Lagrangian parameters with a leading head axis (shape (H, 1, 1)) are mapped per
    # head; the others are shared.
    return jax.tree.map(
        lambda x: (
            0
            if eqx.is_array(x) and x.ndim == 3 and x.shape[0] == num_heads > 1
            else None
        ),
        lagrangian,
    )


def energy(
    q: Array,
    k: Array,
    scaling: Array,
    mask: Array | None,
    lagrangian: Lagrangian | None,
) -> Array:
    r"""The energy of each head's queries, summed over the queries, shape `(H,)`.

    Softmax (`lagrangian=None`): Ramsauer et al. (2020), eq. 2, per query,
    $-\operatorname{lse}(\beta, K\xi) + \frac12\xi^\top\xi + \beta^{-1}\log N +
    \frac12 M^2$ with $N$ the patterns the query may attend to and $M$ their largest
    norm. Another Lagrangian: $\frac12\xi^\top\xi - \beta^{-1}\mathcal{L}(\beta K\xi)
    + \frac12 M^2$.
    """
    z = masked_logits(q, k, scaling, mask)
    num_heads, length, size = z.shape
    dtype = z.dtype
    allowed = (
        jnp.ones((1, 1, size), bool)
        if mask is None
        else jnp.broadcast_to(mask, z.shape)
    )
    sq_norms = jnp.sum(k * k, axis=-1)[:, None, :]  # (H, 1, S)
    m2 = jnp.max(jnp.where(allowed, sq_norms, jnp.zeros((), dtype)), axis=-1)  # (H, L)
    quad = 0.5 * jnp.sum(q * q, axis=-1)  # (H, L)
    inv_beta = (1 / scaling)[:, None]
    if lagrangian is None:
        count = jnp.sum(allowed, axis=-1).astype(dtype)
        per_query = (
            quad
            - inv_beta * jax.nn.logsumexp(z, axis=-1)
            + inv_beta * jnp.log(count)
            + 0.5 * m2
        )
        return jnp.sum(per_query, axis=-1)
    axes = _head_axes(lagrangian, num_heads)
    values = eqx.filter_vmap(lambda lag, zh: lag(zh), in_axes=(axes, 0))(lagrangian, z)
    return jnp.sum(quad + 0.5 * m2, axis=-1) - values.astype(dtype) / scaling


class Retrieval(eqx.Module):
    """The loop's result (internal)."""

    q: Array
    association: Array
    num_steps: Array
    change: Array


def retrieve(
    q: Array,
    k: Array,
    scaling: Array,
    mask: Array | None,
    lagrangian: Lagrangian | None,
    steps_max: tuple[int, ...],
    steps_eps: tuple[float, ...],
) -> Retrieval:
    r"""The association after the update steps, each head stopping on its own.

    `steps_max[h] < 0` means no limit (then the loop is a `lax.while_loop` and the
    fixed point is differentiated implicitly); otherwise a `lax.scan` of
    `max(steps_max)` guarded steps. A head stops after `steps_max[h]` steps or when its
    association moved by at most `steps_eps[h]` (Frobenius norm) in one step.
    """
    act = association_fn(lagrangian)
    dtype = q.dtype
    num_heads = q.shape[0]
    xi = act(masked_logits(q, k, scaling, mask))
    steps = jnp.zeros((num_heads,), jnp.int32)
    change = jnp.full((num_heads,), jnp.inf, dtype)
    if all(m == 0 for m in steps_max):
        return Retrieval(q, xi, steps, change)
    smax = jnp.asarray(steps_max, jnp.int32)
    seps = jnp.asarray(steps_eps, dtype)
    active = smax != 0

    def step(carry):
        q, xi, steps, change, active = carry
        q_new = jnp.einsum("hls,hsd->hld", xi, k)
        xi_new = act(masked_logits(q_new, k, scaling, mask))
        diff = jnp.sqrt(jnp.sum((xi_new - xi) ** 2, axis=(1, 2)))
        on = active[:, None, None]
        q = jnp.where(on, q_new, q)
        xi = jnp.where(on, xi_new, xi)
        change = jnp.where(active, diff, change)
        steps = steps + active.astype(jnp.int32)
        # `diff > eps` is False for NaN: a non-finite head stops.
        active = active & ((smax < 0) | (steps < smax)) & (diff > seps)
        return q, xi, steps, change, active

    carry = (q, xi, steps, change, active)
    if any(m < 0 for m in steps_max):
        return _unlimited(carry, step, k, scaling, mask, act)
    carry, _ = lax.scan(lambda c, _: (step(c), None), carry, length=max(steps_max))
    q, xi, steps, change, _ = carry
    return Retrieval(q, xi, steps, change)


# Iterations of the linear solve of the implicit gradient (a Neumann series; the
# update's Jacobian at an attractor has spectral radius < 1).
_NEUMANN_STEPS = 64


def _unlimited(carry, step, k, scaling, mask, act) -> Retrieval:
    r"""`update_steps_max=None`: a `lax.while_loop` to the fixed point
    $\xi^\star = K^\top\nabla\mathcal{L}(\beta K\xi^\star)$, differentiated
    implicitly (`lax.custom_root`): the gradient does not go through the loop."""

    def update(q):
        return jnp.einsum("hls,hsd->hld", act(masked_logits(q, k, scaling, mask)), k)

    def solve(_, q0):
        out = lax.while_loop(lambda c: jnp.any(c[-1]), step, (q0, *carry[1:]))
        # (aux as floats: `custom_root` gives its aux a tangent)
        return out[0], (out[2].astype(q0.dtype), out[3])

    def tangent_solve(g, y):
        # g(x) = (J - I) x with J the update's Jacobian: x = J x - y, iterated.
        return lax.fori_loop(
            0, _NEUMANN_STEPS, lambda _, x: g(x) + x - y, jnp.zeros_like(y)
        )

    q, (steps, change) = lax.custom_root(
        lambda q: update(q) - q, carry[0], solve, tangent_solve, has_aux=True
    )
    xi = act(masked_logits(q, k, scaling, mask))
    steps = lax.stop_gradient(steps).astype(jnp.int32)
    return Retrieval(q, xi, steps, lax.stop_gradient(change))
