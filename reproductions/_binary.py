r"""Binary (+-1) dense associative memories: the update of Krotov & Hopfield (2016) and
the capacity search shared by the two capacity reproductions.

The energy is that of `hl.DenseMemory(xi, lagrangian)`, $E(\sigma) = -\sum_\mu
F(\langle\xi_\mu, \sigma\rangle)$ with $F$ the memory's (separable) Lagrangian.
Krotov & Hopfield's rule sets each neuron to the sign that gives the lower energy,
all other neurons held:

$$\sigma_i \leftarrow \operatorname{sign}\sum_\mu \big[F(\xi_{\mu i} +
r_{\mu i}) - F(-\xi_{\mu i} + r_{\mu i})\big], \qquad r_{\mu i} = \sum_{j \ne i}
\xi_{\mu j}\sigma_j.$$

We apply it to every neuron at once from the same state (one synchronous sweep).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np


def make_sweep(separation):
    """One synchronous sweep of the energy-difference rule, for a batch of states.

    `separation(x)` is the memory's elementwise Lagrangian $F$ (e.g.
    `lambda x: hl.lagr_repu(x, 3)`). Zero rows of `xi` (padding) contribute exactly 0.
    `sweep(xi, states)` updates each state against the patterns `xi` (K, D);
    `sweep(xis, states)` with `xis` of shape (B, K, D) updates state b against its own
    patterns `xis[b]`.
    """

    def one(xi, sigma):
        rest = (xi @ sigma)[:, None] - xi * sigma[None, :]  # (K, D): r_{mu i}
        gap = jnp.sum(separation(rest + xi) - separation(rest - xi), axis=0)
        return jnp.where(gap > 0, 1.0, jnp.where(gap < 0, -1.0, sigma))

    @jax.jit
    def sweep(xi, states):
        # One state at a time (`lax.map`): the (K, D) array of one state is the
        # largest thing held, whatever the batch.
        if xi.ndim == 3:
            return jax.lax.map(lambda a: one(*a), (xi, states))
        return jax.lax.map(lambda s: one(xi, s), states)

    return sweep


def check_against_memory(separation, memory_factory, key_seed=0, K=7, D=12):
    """Asserts that the rule's energy gaps are those of `hl.DenseMemory`'s energy."""
    rng = np.random.default_rng(key_seed)
    xi = rng.choice([-1.0, 1.0], size=(K, D))
    sigma = rng.choice([-1.0, 1.0], size=D)
    memory = memory_factory(jnp.asarray(xi))
    up = np.where(np.eye(D) > 0, 1.0, sigma[None, :])  # sigma with sigma_i = +1
    down = np.where(np.eye(D) > 0, -1.0, sigma[None, :])
    gap_memory = np.asarray(jax.vmap(memory)(down) - jax.vmap(memory)(up))
    rest = (xi @ sigma)[:, None] - xi * sigma[None, :]
    gap_rule = np.asarray(
        jnp.sum(
            separation(jnp.asarray(rest + xi)) - separation(jnp.asarray(rest - xi)), 0
        )
    )
    scale = max(1.0, float(np.max(np.abs(gap_memory))))
    assert np.allclose(gap_memory / scale, gap_rule / scale, atol=1e-9), (
        "the update's energy gaps differ from DenseMemory's energy"
    )


def recall_fraction(sweep, K, D, *, flip_rate, num_queries, seed):
    """The fraction of stored patterns that one sweep returns exactly.

    `flip_rate=0`: each pattern is the start (is it a fixed point?); otherwise
    `round(flip_rate * D)` of its bits, chosen at random, are flipped first. With
    `K >= num_queries` the first `num_queries` patterns of one set of `K` are tested;
    with fewer patterns, each query has a set of `K` patterns of its own.
    """
    rng = np.random.default_rng(seed)
    padded = max(64, 1 << (K - 1).bit_length())  # powers of two: few compilations
    flips = round(flip_rate * D)
    if K >= num_queries:
        xi = rng.choice([-1.0, 1.0], size=(K, D))
        truth = xi[:num_queries]
        patterns = np.zeros((padded, D))
        patterns[:K] = xi
    else:
        xi = rng.choice([-1.0, 1.0], size=(num_queries, K, D))
        truth = xi[:, 0]
        patterns = np.zeros((num_queries, padded, D))
        patterns[:, :K] = xi
    starts = truth.copy()
    for row in starts:
        row[rng.choice(D, size=flips, replace=False)] *= -1
    out = np.asarray(sweep(jnp.asarray(patterns), jnp.asarray(starts)))
    return float(np.mean(np.all(out == truth, axis=1)))


def capacity(fraction, *, threshold=0.9, k_max=2**17, rel_tol=0.06):
    """The largest K whose recall fraction is at least `threshold`.

    Doubles K from 2 until the fraction falls below `threshold`, then bisects (in
    log K) between the last two. Returns the capacity and every (K, fraction) seen.
    """
    seen = {}

    def f(k):
        if k not in seen:
            seen[k] = fraction(k)
        return seen[k]

    lo, k = 1, 2
    while k <= k_max and f(k) >= threshold:
        lo, k = k, 2 * k
    if k > k_max:
        return float(lo), sorted(seen.items())
    hi = k
    while hi - lo > max(1, rel_tol * lo):
        mid = int(round(math.sqrt(lo * hi)))
        mid = min(max(mid, lo + 1), hi - 1)
        if f(mid) >= threshold:
            lo = mid
        else:
            hi = mid
    return float(lo), sorted(seen.items())
