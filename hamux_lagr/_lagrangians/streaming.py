r"""How a Lagrangian reduces over its axis, declared for streaming it in chunks.

A `DenseMemory(..., chunk_size=c)` never holds its $K$ similarities at once: it walks
over the patterns $c$ at a time and keeps running statistics of the Lagrangian's
reduction over the memories. Which statistics is a property of the Lagrangian's
*formula*, so each Lagrangian class declares it, as the class variable `streaming`:

```python
class LSoftplusSum(hamux_lagr.Lagrangian):
    beta: jax.Array
    streaming = hamux_lagr.StreamedSum()  # L(s) = sum_mu f(s_mu)

    def __call__(self, x):
        return jnp.sum(jnp.logaddexp(self.beta * x, 0.0)) / self.beta
```

The declaration belongs to the class whose `__call__` (and `_kernel`) computes the
value: a subclass that overrides either without declaring `streaming` itself does not
inherit its parent's, and chunking refuses it (its reduction is unknown).
"""

import equinox as eqx


class StreamedReduction(eqx.Module):
    """Abstract base of the declarations of a Lagrangian's reduction over the memories
    (the class variable `streaming` of a `hamux_lagr.Lagrangian` subclass)."""


class StreamedSum(StreamedReduction):
    r"""A separable Lagrangian, $\mathcal{L}(s) = \sum_\mu f(s_\mu)$: the chunked
    memory sums the Lagrangian's own value over the chunks.

    Declare it (`streaming = hamux_lagr.StreamedSum()`) for a Lagrangian whose value
    on a vector is the sum of its values on any split of the vector into parts, e.g.
    `jnp.sum(f(x))`. Its parameters must be scalars.
    """


class StreamedLogSumExp(StreamedReduction):
    r"""A log-sum-exp, $\mathcal{L}(s) = \frac1\beta\log\big(e_0 +
    \sum_\mu e^{\beta s_\mu}\big)$, with $e_0 = 0$, or $e_0 = 1$ with `ghost=True`
    (a zero "ghost" logit, as `LGhostmax`): the chunked memory keeps an online
    log-sum-exp.

    The Lagrangian must have the fields `beta` (a scalar array), `min_beta` (at which
    `beta` is clamped) and `axis`.

    **Arguments:**

    - `ghost`: whether a zero logit joins the similarities (static).
    """

    ghost: bool = eqx.field(static=True)

    def __init__(self, ghost: bool = False):
        self.ghost = bool(ghost)


class StreamedLogSumReLU(StreamedReduction):
    r"""The log-sum-ReLU, $\mathcal{L}(s) = \frac1\beta\log\big(\epsilon +
    \sum_\mu \max(1 + \beta s_\mu, 0)\big)$ (`LLogSumReLU`): the chunked memory keeps
    the sum inside the logarithm.

    The Lagrangian must have the fields `beta` (a scalar array), `min_beta`, `eps` and
    `axis`.
    """


class NotStreamed(StreamedReduction):
    """A Lagrangian whose value cannot be streamed over the memories in chunks.

    **Arguments:**

    - `reason`: why, for the error message (static).
    """

    reason: str = eqx.field(static=True)

    def __init__(self, reason: str):
        self.reason = str(reason)


def declared_streaming(kind: type) -> tuple[StreamedReduction | None, type | None]:
    """The reduction that the class `kind` declares (`None` when none), and the class
    that declares it.

    A declaration holds for the class that declares it and for the subclasses that
    change neither `__call__` nor `_kernel`: a subclass that computes its own value
    without declaring its own reduction has none.
    """
    for cls in kind.__mro__:
        if "streaming" in vars(cls):
            return vars(cls)["streaming"], cls
        if "__call__" in vars(cls) or "_kernel" in vars(cls):
            return None, cls
    return None, None
