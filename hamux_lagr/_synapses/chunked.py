r"""Streamed similarities: a dense memory's energy over its patterns in chunks.

A `DenseMemory` with `chunk_size=c` never holds its $K$ similarities at once: it walks
over the patterns $c$ at a time in a `lax.scan` and keeps only running statistics.
Each Lagrangian class declares how it reduces over the memories, as its class
variable `streaming` (`hamux_lagr.StreamedReduction`, in `_lagrangians/streaming.py`);
two shapes of reduction allow streaming, because they go through a sum that can be
accumulated chunk by chunk:

- **log-sum-exp** (`StreamedLogSumExp`: `LSoftmax`, `LSoftmaxUnstable`, `LGhostmax`):
  $\mathcal{L}(s) = \frac1\beta\log\big(e_0 + \sum_\mu e^{\beta s_\mu}\big)$, with
  $e_0 = 0$ (softmax) or $1$ (the ghost logit). The scan carries the running maximum
  $m$ of the similarities and $l = \sum_\mu e^{\beta (s_\mu - m)}$, rescaled by
  $e^{\beta(m_\text{old} - m_\text{new})}$ whenever the maximum grows (the online
  log-sum-exp of Milakov & Gimelshein 2018, as in flash attention), shifted before
  it is scaled, as `lagr_softmax` does;
- **a function of a sum of terms** (`StreamedSum`: the separable Lagrangians
  `LIdentity`, `LRelu`, `LRepu`, `LExp`, `LRexp`, `LTanh`, `LSigmoid` and the user's
  own that declare it, whose value is $\sum_\mu f(s_\mu)$; `StreamedLogSumReLU`:
  `LLogSumReLU`, $\frac1\beta\log(\epsilon + \sum_\mu \max(1 + \beta s_\mu, 0))$):
  the scan carries the sum.

The Lagrangians that couple all memories through a threshold or a normalisation
(`LSparsemax`, `LEntmax`, `LNormmax`, `LLayerNorm`, `LSphericalNorm`: `NotStreamed`)
and those that declare nothing are refused. A declaration holds for its class and the
subclasses that do not compute their own value: a subclass of `LSoftmax` with its own
`__call__` must declare its own reduction, or it is refused.

Gradients. The energy is a `filter_custom_jvp` function:

- its derivative in the state $g$ (what the dynamics need in every step) comes from
  ONE pass over the chunks that accumulates $\sum_\mu \partial\mathcal{L}/\partial
  s_\mu\, \partial s_\mu/\partial g$ next to the statistics (for the log-sum-exp, the
  softmax-weighted patterns, rescaled with $l$): two matrix products per chunk, as
  many as the unchunked memory does;
- its derivatives in the patterns and the Lagrangian's parameters (what training
  needs) are the forward-mode derivative of the chunked scan; under reverse mode
  JAX linearises and transposes that scan. Every scan body is `jax.checkpoint`-ed, so
  reverse mode stores the per-chunk carries only and recomputes each chunk's
  similarities: peak memory $O(B \times c)$, never $O(B \times K)$.

A `custom_jvp` (unlike a `custom_vjp`) is safe under `jax.vmap`: the batched rule is
made of ordinary batched operations, so the patterns' cotangent is one product
contracting the batch, not a per-sample $(B, K, D)$ array summed afterwards.

Chunks. When $c$ divides $K$, chunk $j$ holds the patterns $j, j + K/c, j + 2K/c,
\dots$ (a dynamic slice of the free reshape `(c, K/c, ...)`): patterns split over
devices in contiguous blocks (`hamux_lagr.shard`) then stay where they are, each
device streaming its own share of every chunk. Otherwise the chunks are contiguous
and the last $K \bmod c$ patterns form a final, smaller chunk (no padding, no
copy of the patterns).
"""

import functools as ft
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array

from .._lagrangians.base import _evaluated_beta, Lagrangian, unchecked_call
from .._lagrangians.sparse import _compute_dtype as compute_dtype
from .._lagrangians.streaming import (
    declared_streaming,
    NotStreamed,
    StreamedLogSumExp,
    StreamedLogSumReLU,
    StreamedReduction,
    StreamedSum,
)
from .._misc import largest_finite
from .._validation import normalise_axis


def _declared(lagrangian: Lagrangian, where: str) -> StreamedReduction:
    """The reduction over the memories that `lagrangian`'s class declares (its class
    variable `streaming`, see `hamux_lagr.StreamedReduction`); a `ValueError` when it
    declares none, or that it cannot be streamed."""
    kind = type(lagrangian)
    name = kind.__name__
    fix = (
        "Use `chunk_size=None` (the similarities held at once), or shard the patterns "
        "over devices with `hamux_lagr.shard`."
    )
    streaming, owner = declared_streaming(kind)
    if isinstance(streaming, (StreamedSum, StreamedLogSumExp, StreamedLogSumReLU)):
        return streaming
    if isinstance(streaming, NotStreamed):
        why = f"`{name}` cannot be evaluated chunk by chunk: {streaming.reason}. {fix}"
    else:
        inherited = declared_streaming(owner.__mro__[1])[0] if owner else None
        why = (
            f"`{name}` does not declare how it reduces over the memories"
            + (
                f" (it computes its own value, in `{owner.__name__}`, so it does not "
                f"inherit the reduction of its parent class)"
                if inherited is not None and owner is not None
                else ""
            )
            + ". A Lagrangian opts into streaming with the class variable "
            "`streaming`: `streaming = hamux_lagr.StreamedSum()` when its value is a "
            "sum over the memories of one function of each similarity, "
            "`hamux_lagr.StreamedLogSumExp()` for a log-sum-exp with fields `beta`, "
            f"`min_beta` and `axis` (see `hamux_lagr.StreamedReduction`). Or: {fix}"
        )
    raise ValueError(
        f"`chunk_size` in `{where}` needs a Lagrangian that reduces over the memories "
        "by a log-sum-exp (LSoftmax, LSoftmaxUnstable, LGhostmax) or a sum (LIdentity, "
        "LRelu, LRepu, LExp, LRexp, LTanh, LSigmoid, LLogSumReLU, or a Lagrangian that "
        f"declares it); {why}"
    )


def check_chunkable(lagrangian: Lagrangian, where: str) -> None:
    """Raises a `ValueError` unless the energy of `lagrangian` can be streamed over
    the memories in chunks (its class declares a log-sum-exp or a sum, see
    `hamux_lagr.StreamedReduction`), with scalar parameters."""
    name = type(lagrangian).__name__
    fix = (
        "Use `chunk_size=None` (the similarities held at once), or shard the patterns "
        "over devices with `hamux_lagr.shard`."
    )
    streaming = _declared(lagrangian, where)
    if not isinstance(streaming, StreamedSum):
        fields = ["beta", "min_beta", "axis"]
        if isinstance(streaming, StreamedLogSumReLU):
            fields.append("eps")
        missing = [f for f in fields if not hasattr(lagrangian, f)]
        if missing:
            raise ValueError(
                f"`{name}` declares `streaming = {type(streaming).__name__}(...)`, "
                f"which needs the fields {', '.join(f'`{f}`' for f in fields)}; "
                f"it has no {', '.join(f'`{f}`' for f in missing)}. Add them, or "
                "declare `streaming = hamux_lagr.StreamedSum()` if its value is a sum "
                "over the memories."
            )
        # The similarities of one sample are a vector: its only axis is reduced.
        normalise_axis(getattr(lagrangian, "axis"), 1, f"{name} in {where}")
    for path, leaf in jax.tree_util.tree_leaves_with_path(lagrangian):
        if eqx.is_array(leaf) and leaf.size != 1:
            field = jax.tree_util.keystr(path).lstrip(".")
            raise ValueError(
                f"`chunk_size` in `{where}` needs scalar Lagrangian parameters, but "
                f"`{name}.{field}` has shape {leaf.shape}: a parameter per memory "
                f"would have to be split with the patterns. {fix}"
            )


def _state_features(g: Array, similarity: str) -> Array:
    """The state side of the similarity product: `g` flattened, augmented for "l2"."""
    v = g.reshape(-1)
    if similarity == "dot":
        return v
    half = jnp.asarray(-0.5, g.dtype)
    return jnp.concatenate([v, half[None], (half * jnp.sum(v * v))[None]])


def _pattern_features(chunk: Array, similarity: str, dtype) -> Array:
    """The pattern side: the chunk's rows flattened, augmented with (|xi|^2, 1) for
    "l2", so that `pattern_features @ state_features` are the similarities."""
    flat = chunk.reshape(chunk.shape[0], -1).astype(dtype)
    if similarity == "dot":
        return flat
    ones = jnp.ones((flat.shape[0], 1), dtype)
    squares = jnp.sum(flat * flat, axis=1, keepdims=True)
    return jnp.concatenate([flat, squares, ones], axis=1)


def _matvec(a: Array, v: Array) -> Array:
    return lax.dot_general(a, v, (((1,), (0,)), ((), ())))


def _vecmat(w: Array, a: Array) -> Array:
    return lax.dot_general(w, a, (((0,), (0,)), ((), ())))


class _LogSumExp:
    r"""$\frac1\beta\log(e_0 + \sum_\mu e^{\beta s_\mu})$ through the running
    maximum $m$ of the similarities and $l = \sum_\mu e^{\beta (s_\mu - m)}$.

    The similarities are shifted *before* they are scaled, as in `lagr_softmax`:
    $\beta(s_\mu - m)$ is exactly 0 at the maximum. (Scaled first, a logit
    $\beta s_\mu$ of $10^8$ has a float32 spacing of 8, and $\beta s$ overflows
    float16 from $\beta |s| > 65504$: the weights and their tangents in the patterns
    and `beta` would be wrong while the energy looks right.) The maximum is
    stop-gradiented, which is exact: $m + \frac1\beta\log l$ does not depend on it.
    """

    def __init__(self, lagrangian: Lagrangian, dtype, ghost: bool):
        where = type(lagrangian).__name__
        x = jnp.zeros((1,), dtype)
        beta = getattr(lagrangian, "beta")
        min_beta = getattr(lagrangian, "min_beta")
        beta = _evaluated_beta(beta, min_beta, x, (1,), where).reshape(())
        self.beta = largest_finite(beta)
        self.ghost = ghost
        self.dtype = dtype

    def init(self) -> tuple[Array, Array]:
        if self.ghost:  # the zero "ghost" similarity: m = 0, l = e^0
            return jnp.zeros((), self.dtype), jnp.ones((), self.dtype)
        return jnp.asarray(-jnp.inf, self.dtype), jnp.zeros((), self.dtype)

    def add(self, stats, s: Array):
        """The statistics with a chunk's similarities `s` added."""
        return self.add_weighted(stats, s)[0]

    def add_weighted(self, stats, s: Array):
        """The statistics with a chunk's similarities `s` added, the chunk's weights
        $e^{\beta (s - m)}$ and the factor that rescales the earlier weights."""
        m, total = stats
        new_m = lax.stop_gradient(jnp.maximum(m, jnp.max(s)))
        # An infinite maximum (no chunk yet, or an infinite similarity) shifts by 0;
        # before the first chunk the total is 0, whatever the rescaling.
        shift = jnp.where(jnp.isfinite(new_m), new_m, 0)
        rescale = jnp.exp(self.beta * jnp.where(jnp.isfinite(m), m - shift, 0))
        w = jnp.exp(self.beta * (s - shift))
        return (new_m, total * rescale + jnp.sum(w)), w, rescale

    def value(self, stats) -> Array:
        m, total = stats
        # An infinite maximum: the log-sum-exp is the maximum (as `lagr_softmax`).
        return jnp.where(jnp.isfinite(m), m + jnp.log(total) / self.beta, m)

    def scaled(self, stats, acc: Array) -> Array:
        r"""The accumulated weights `acc` scaled to $\partial\mathcal{L}/\partial
        s_\mu$."""
        return acc / stats[1]


class _SumOf:
    r"""$\Phi(\sum_\mu h(s_\mu))$: $\Phi$ the identity for a separable Lagrangian
    (then $h$ is the Lagrangian itself), $\frac1\beta\log(\epsilon + \cdot)$ with
    $h(s) = \max(1 + \beta s, 0)$ for `LLogSumReLU`."""

    def __init__(self, lagrangian: Lagrangian, dtype, log_sum_relu: bool):
        self.dtype = dtype
        if log_sum_relu:
            x = jnp.zeros((1,), dtype)
            where = type(lagrangian).__name__
            beta = getattr(lagrangian, "beta")
            min_beta = getattr(lagrangian, "min_beta")
            beta = _evaluated_beta(beta, min_beta, x, (1,), where).reshape(())
            # Half precision sums in float32, as `lagr_log_sum_relu` does (`eps` =
            # 1e-6 is a subnormal float16, and 1 / eps overflows it).
            self.dtype = compute_dtype(dtype)
            beta = largest_finite(beta).astype(self.dtype)
            one = jnp.ones((), self.dtype)
            eps = jnp.asarray(getattr(lagrangian, "eps"), self.dtype)

            def term(s):
                # 0 at the kink 1 + beta s = 0 (`jnp.maximum` would give a half).
                z = one + beta * s.astype(beta.dtype)
                return jnp.sum(jnp.where(z > 0, z, 0))

            self.term: Callable[[Array], Array] = term
            self.outer: Callable[[Array], Array] | None = lambda t: (
                jnp.log(eps + t) / beta
            ).astype(dtype)
            # d outer / dt, applied as a quotient: beyond every kernel's reach the
            # weights are 0, and 0 / eps is 0.
            self.divide: Callable[[Array, Array], Array] | None = lambda acc, t: (
                acc.astype(beta.dtype) / (beta * (eps + t))
            ).astype(acc.dtype)
        else:
            # Unchecked: this runs in every chunk of every step of a solve, whose
            # entry has checked the parameters.
            self.term = ft.partial(unchecked_call, lagrangian)
            self.outer = None
            self.divide = None

    def init(self) -> Array:
        return jnp.zeros((), self.dtype)

    def add(self, total, s: Array):
        """The running sum with a chunk's similarities `s` added."""
        return total + self.term(s)

    def add_weighted(self, total, s: Array):
        """The running sum with a chunk's similarities `s` added, and the chunk's
        weights $h'(s)$ (never rescaled)."""
        value, w = jax.value_and_grad(self.term)(s)
        return total + value, w, None

    def value(self, total) -> Array:
        return total if self.outer is None else self.outer(total)

    def scaled(self, total, acc: Array) -> Array:
        return acc if self.divide is None else self.divide(acc, total)


def _reduction(lagrangian: Lagrangian, dtype) -> _LogSumExp | _SumOf:
    streaming = _declared(lagrangian, "DenseMemory")
    if isinstance(streaming, StreamedLogSumExp):
        return _LogSumExp(lagrangian, dtype, streaming.ghost)
    return _SumOf(lagrangian, dtype, isinstance(streaming, StreamedLogSumReLU))


def _contiguous_chunk(patterns: Array, chunk_size: int, i: Array) -> Array:
    return lax.dynamic_slice_in_dim(patterns, i * chunk_size, chunk_size)


def _over_chunks(update: Callable, carry, patterns: Array, chunk_size: int):
    """`carry` folded with `update(carry, chunk)` over the chunks of `patterns`, in a
    `jax.checkpoint`-ed `lax.scan` (reverse mode stores the carries only)."""
    full, rest = divmod(patterns.shape[0], chunk_size)
    if full == 0:
        return update(carry, patterns)  # one chunk: nothing to stream
    if full == 1:
        carry = update(carry, patterns[:chunk_size])
    else:
        if rest == 0:
            # Chunk j: patterns j, j + full, j + 2 full, ... (see the module
            # docstring).
            strided = patterns.reshape(chunk_size, full, *patterns.shape[1:])
            take = ft.partial(lax.dynamic_index_in_dim, strided, axis=1, keepdims=False)
        else:
            take = ft.partial(_contiguous_chunk, patterns, chunk_size)

        def body(carry, i):
            return update(carry, take(i)), None

        body = jax.checkpoint(body, prevent_cse=False)
        carry, _ = lax.scan(body, carry, jnp.arange(full))
    if rest:
        carry = update(carry, patterns[full * chunk_size :])
    return carry


def _energy(
    lagrangian: Lagrangian,
    patterns: Array,
    g: Array,
    *,
    chunk_size: int,
    similarity: str,
) -> Array:
    r"""The energy $-\mathcal{L}(s(g))$ of one pattern-shaped `g`, from the statistics
    alone (one product per chunk)."""
    reduction = _reduction(lagrangian, g.dtype)
    features = _state_features(g, similarity)

    def update(stats, chunk):
        s = _matvec(_pattern_features(chunk, similarity, g.dtype), features)
        return reduction.add(stats, s)

    stats = _over_chunks(update, reduction.init(), patterns, chunk_size)
    return -reduction.value(stats)


def _energy_and_grad(
    lagrangian: Lagrangian,
    patterns: Array,
    g: Array,
    *,
    chunk_size: int,
    similarity: str,
) -> tuple[Array, Array]:
    """The energy and its gradient in `g`, from one pass (two products per chunk)."""
    reduction = _reduction(lagrangian, g.dtype)
    features, features_vjp = jax.vjp(lambda v: _state_features(v, similarity), g)

    def update(carry, chunk):
        stats, acc = carry
        a = _pattern_features(chunk, similarity, g.dtype)
        stats, w, rescale = reduction.add_weighted(stats, _matvec(a, features))
        if rescale is not None:
            acc = acc * rescale
        return stats, acc + _vecmat(w, a)

    init = (reduction.init(), jnp.zeros_like(features))
    stats, acc = _over_chunks(update, init, patterns, chunk_size)
    acc = reduction.scaled(stats, acc)
    (dL_dg,) = features_vjp(acc)
    return -reduction.value(stats), -dL_dg


def _jvp(fn: Callable, primals: tuple, tangents: tuple):
    """`jax.jvp(fn, primals, tangents)` in the leaves that have a tangent only (`None`
    marks a leaf with none, as `eqx.filter_custom_jvp` gives them)."""
    has_tangent = jax.tree_util.tree_map(
        lambda t: t is not None, tangents, is_leaf=lambda t: t is None
    )
    diff, static = eqx.partition(primals, has_tangent)
    t_diff = eqx.filter(tangents, has_tangent)
    return jax.jvp(lambda d: fn(*eqx.combine(d, static)), (diff,), (t_diff,))


def _own_jvp(fn: Callable) -> Callable:
    """`fn` behind a custom JVP that is `fn`'s own JVP.

    It keeps the `jax.checkpoint` of the scan over the chunks: where `fn` runs on
    values that are known when JAX linearises a function around it (the state
    gradient inside `streamed_energy`'s rule, when training differentiates the
    dynamics), JAX evaluates the known part of a checkpoint inline, as plain
    operations, and an outer reverse pass would then store every chunk's
    similarities. A custom JVP is kept as one call there, and its rule, the JVP of
    the checkpointed scan, is linearised with the checkpoint in place.
    """
    wrapped = eqx.filter_custom_jvp(fn)

    @wrapped.def_jvp
    def rule(primals, tangents, **static):
        return _jvp(lambda *p: fn(*p, **static), primals, tangents)

    return wrapped


_checkpointed_energy = _own_jvp(_energy)
_checkpointed_energy_and_grad = _own_jvp(_energy_and_grad)


@eqx.filter_custom_jvp
def streamed_energy(
    lagrangian: Lagrangian,
    patterns: Array,
    g: Array,
    *,
    chunk_size: int,
    similarity: str,
) -> Array:
    r"""The dense memory's energy $-\mathcal{L}(s(g))$ of ONE pattern-shaped `g`,
    streamed over the patterns `chunk_size` at a time (see the module docstring)."""
    return _energy(
        lagrangian, patterns, g, chunk_size=chunk_size, similarity=similarity
    )


@streamed_energy.def_jvp
def _streamed_energy_jvp(primals, tangents, *, chunk_size, similarity):
    static = dict(chunk_size=chunk_size, similarity=similarity)
    lagrangian, patterns, g = primals
    t_lagrangian, t_patterns, t_g = tangents
    if t_g is None:
        energy = _checkpointed_energy(lagrangian, patterns, g, **static)
        t_energy = jnp.zeros_like(energy)
    else:
        # The state gradient from the same pass as the energy: what the dynamics
        # need, at the cost of the unchunked memory.
        energy, grad = _checkpointed_energy_and_grad(lagrangian, patterns, g, **static)
        t_energy = jnp.sum(grad * t_g)
    if jax.tree_util.tree_leaves((t_lagrangian, t_patterns)):
        # The patterns' and the Lagrangian's: forward mode through the chunked scan
        # (reverse mode transposes it, the checkpointed body recomputing each chunk).
        _, t_params = _jvp(
            lambda lagrangian, patterns: _checkpointed_energy(
                lagrangian, patterns, g, **static
            ),
            (lagrangian, patterns),
            (t_lagrangian, t_patterns),
        )
        t_energy = t_energy + t_params
    return energy, t_energy
