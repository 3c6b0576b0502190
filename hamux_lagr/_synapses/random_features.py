r"""The random-feature dense associative memory (DrDAM, Hoover et al. 2024).

A `DenseMemory` with a log-sum-exp Lagrangian stores its $K$ patterns one per row, so
its cost and its parameters grow with $K$. Through positive random features of the
exponential kernel, the same energy is approximated by a memory vector of fixed size
$F$, into which new patterns are summed.
"""

import math
from typing import cast, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import AnyArray, RealLike, Scalar, SizeLike
from .._validation import check_key, check_nonempty, learnable, static_float, static_int
from .base import as_activations, Synapse


_SIMILARITIES = ("dot", "l2")


_Similarity = Literal["dot", "l2"]


def _check_similarity(similarity: object, where: str) -> _Similarity:
    if not isinstance(similarity, str):
        raise TypeError(
            f'`similarity` must be the string "dot" or "l2" in `{where}`, got '
            f"{type(similarity).__name__} {similarity!r}."
        )
    if similarity not in _SIMILARITIES:
        raise ValueError(
            f'`similarity` must be "dot" or "l2" in `{where}`, got {similarity!r}: '
            '"dot" approximates the overlaps <xi, g>, "l2" the negative half squared '
            "distances -||g - xi||^2 / 2."
        )
    return cast(_Similarity, similarity)


def _check_beta(beta: object, where: str) -> float:
    return static_float(
        beta,
        "beta",
        where,
        hint="`beta` is the inverse temperature the memory vector is built for; pass "
        "a positive Python number.",
    )


def _draw_projection(key, num_features: int, shape, dtype, orthogonal: bool) -> Array:
    r"""`num_features` rows $w_i \sim \mathcal{N}(0, I)$, of shape `(F, *shape)`."""
    dim = math.prod(shape)
    if not orthogonal:
        return jax.random.normal(key, (num_features, *shape), dtype)
    # Orthogonal random features (Choromanski et al. 2021): blocks of `dim` mutually
    # orthogonal directions, each row rescaled to the norm of a Gaussian vector, so
    # that every row is still marginally N(0, I).
    num_blocks = -(-num_features // dim)
    keys = jax.random.split(key, 2)
    gaussians = jax.random.normal(keys[0], (num_blocks, dim, dim), dtype)
    q, r = jnp.linalg.qr(gaussians)
    # Fix QR's sign convention (Householder QR makes each column's sign depend on the
    # Gaussian's first entry): with the signs of R's diagonal, Q is Haar-distributed.
    q = q * jnp.sign(jnp.diagonal(r, axis1=1, axis2=2))[:, None, :]
    directions = jnp.swapaxes(q, 1, 2).reshape(num_blocks * dim, dim)[:num_features]
    norms = jnp.sqrt(
        jnp.sum(jax.random.normal(keys[1], (num_features, dim), dtype) ** 2, axis=1)
    )
    return (directions * norms[:, None]).reshape(num_features, *shape)


class RandomFeatureMemory(Synapse):
    r"""A dense associative memory of fixed size, through positive random features.

    It approximates `DenseMemory(patterns, LSoftmax(beta))`,

    $$E(g) = -\frac{1}{\beta}\log\sum_{\mu=1}^{K} e^{\beta s_\mu(g)}, \qquad
    s_\mu(g) = \langle\xi_\mu, g\rangle \;(\texttt{"dot"}) \;\text{ or }\;
    -\tfrac12\lVert g - \xi_\mu\rVert^2 \;(\texttt{"l2"}),$$

    the distributed representation (DrDAM) of Hoover et al. (2024), "Dense
    Associative Memory through the lens of random features" (NeurIPS). The kernel
    $k(a, b) = e^{\beta s(a, b)}$ is written as an expectation over $w \sim
    \mathcal{N}(0, I)$ of a product of *positive* random features (Choromanski et
    al. 2021, "Rethinking attention with Performers"),

    $$\varphi_i(u) = \frac{1}{\sqrt F}\exp\big(\sqrt\beta\,\langle w_i, u\rangle
    - c\,\beta\lVert u\rVert^2\big), \qquad
    \mathbb{E}\big[\varphi(a)\cdot\varphi(b)\big] = k(a, b),$$

    with $c = \tfrac12$ for `"dot"` ($k = e^{\beta\langle a, b\rangle}$) and $c = 1$
    for `"l2"` ($k = e^{-\beta\lVert a - b\rVert^2/2}$). The $K$ patterns enter only
    through the memory vector $T = \sum_\mu \varphi(\xi_\mu) \in \mathbb{R}^F$:

    $$\hat E(g) = -\frac{1}{\beta}\log\big(\varphi(g)\cdot T\big),$$

    so an energy (and gradient) evaluation costs $O(F D)$ whatever $K$, and storing
    more patterns (`add`) changes $T$, not the number of parameters. The memory
    keeps $\log T$ and evaluates $\log(\varphi(g)\cdot T)$ as a log-sum-exp over the
    features of $\log\varphi_i(g) + \log T_i$, so large `beta` or large norms do not
    overflow.

    **Error.** The kernel estimate is unbiased; for one pair its relative standard
    deviation is (Choromanski et al. 2021, Lemma 2)

    $$\frac{\operatorname{std}\,\hat k(a, b)}{k(a, b)}
    = \sqrt{\frac{e^{\beta\lVert a + b\rVert^2} - 1}{F}},$$

    and that of $\varphi(g)\cdot T$, a sum of such estimates, is at most its largest
    term's. For small errors the energy is off by about $1/\beta$ times that relative
    error, $|\hat E - E| \lesssim \frac{1}{\beta}\sqrt{(e^{\beta(\lVert g\rVert +
    \max_\mu\lVert\xi_\mu\rVert)^2} - 1)/F}$: the error falls like $1/\sqrt F$ with
    a factor that grows exponentially with $\beta$ and the squared norms. Hoover et
    al. (2024) bound the error of the energy and of the retrieval dynamics in the
    same form: $O(1/\sqrt F)$ times a factor exponential in $\beta$ and the
    patterns' norms. In practice keep $\beta\lVert g + \xi\rVert^2$ moderate
    against $\log F$: with unit-norm patterns and queries and $\beta = 1$ the
    energy is off by about $0.02$ at $F = 2^{12}$, while at $\beta = 30$ the
    energy stays finite but is no longer a useful estimate for any practical $F$.
    The orthogonal variant (`orthogonal=True` in `from_patterns`) lowers the error
    further when $F$ is not much larger than the layer's size.

    The random projection $w$ is a fixed random draw, **not** a parameter: the
    energy treats it as a constant (`jax.lax.stop_gradient`), so training updates
    only $\log T$ (and $T$ is only consistent with the patterns for the `beta` it was
    built with, which is why `beta` is static).

    Build one with `RandomFeatureMemory.from_patterns`; `__init__` takes the parts.

    **Arguments:**

    - `projection`: the random directions $w_i$, of shape `(F, *shape)` with `shape`
      the layer's shape. A fixed draw, not trained.
    - `log_T`: the logarithm of the memory vector $T$, of shape `(F,)`. Learnable.
    - `beta`: the inverse temperature $\beta > 0$, a Python number (static).
    - `similarity`: `"dot"` (the default) or `"l2"`, as in `DenseMemory`.
    """

    projection: Float[Array, "F ..."]
    log_T: Float[Array, " F"]
    beta: float = eqx.field(static=True)
    similarity: str = eqx.field(static=True)

    def __init__(
        self,
        projection: ArrayLike,
        log_T: ArrayLike,
        beta: RealLike,
        similarity: Literal["dot", "l2"] = "dot",
    ):
        where = "RandomFeatureMemory"
        self.projection = learnable(projection, "projection", where)
        if self.projection.ndim < 2:
            raise ValueError(
                "`projection` must have shape (num_features, *layer_shape), at least 2 "
                f"dimensions, in `{where}`; got shape {self.projection.shape}. Build "
                "the memory with `RandomFeatureMemory.from_patterns`."
            )
        check_nonempty(self.projection, "projection", where)
        self.log_T = learnable(log_T, "log_T", where, ndim=1)
        if self.log_T.shape != self.projection.shape[:1]:
            raise ValueError(
                f"`log_T` must have shape ({self.projection.shape[0]},), one entry per "
                f"random feature (row of `projection`), in `{where}`; got "
                f"{self.log_T.shape}."
            )
        self.beta = _check_beta(beta, where)
        self.similarity = _check_similarity(similarity, where)

    @property
    def num_features(self) -> int:
        """The number of random features $F$."""
        return self.projection.shape[0]

    def log_features(self, u: Float[AnyArray, "..."]) -> Float[Array, " F"]:
        r"""The logarithms of the random features, $\log\varphi_i(u)$.

        **Arguments:**

        - `u`: a state of the layer's shape, `projection.shape[1:]`.

        **Returns:**

        The `F` values $\sqrt\beta\langle w_i, u\rangle - c\,\beta\lVert u\rVert^2 -
        \tfrac12\log F$.
        """
        (u,) = as_activations("RandomFeatureMemory", g=u)
        shape = self.projection.shape[1:]
        if u.shape != shape:
            raise ValueError(
                f"`RandomFeatureMemory` with `projection` of shape "
                f"{self.projection.shape} acts on a layer of shape {shape}, but got "
                f"activations of shape {u.shape}; build it from patterns of the "
                "layer's shape."
            )
        w = lax.stop_gradient(self.projection).astype(u.dtype)
        axes = tuple(range(u.ndim))
        dims = ((tuple(a + 1 for a in axes), axes), ((), ()))
        # Features first: under `jax.vmap` the projections come out as (F, batch),
        # the layout `DenseMemory.similarities` uses.
        proj = lax.dot_general(w, u, dims)
        c = 0.5 if self.similarity == "dot" else 1.0
        sq = jnp.sum(u * u)
        return (
            math.sqrt(self.beta) * proj
            - (c * self.beta) * sq
            - 0.5 * math.log(self.num_features)
        )

    def __call__(self, g: Float[AnyArray, "..."]) -> Scalar:
        r"""The approximate energy $-\frac{1}{\beta}\log(\varphi(g)\cdot T)$.

        **Arguments:**

        - `g`: the layer's activations, of shape `projection.shape[1:]`.

        **Returns:**

        The scalar energy.
        """
        log_phi = self.log_features(g)
        log_t = self.log_T.astype(log_phi.dtype)
        return -jax.nn.logsumexp(log_phi + log_t) / self.beta

    def _log_memory(self, patterns: Array) -> Array:
        r"""$\log\sum_\mu \varphi(\xi_\mu)$ of a `(K, *shape)` batch of patterns."""
        log_phi = jax.vmap(self.log_features, out_axes=1)(patterns)
        return jax.nn.logsumexp(log_phi, axis=1)

    def add(self, patterns: ArrayLike) -> "RandomFeatureMemory":
        r"""A new memory with `patterns` stored too: $T \leftarrow T + \sum_\mu
        \varphi(\xi_\mu)$.

        The number of parameters stays $F$; adding in batches gives the same memory
        as building from all patterns at once (up to rounding). It evaluates the
        features of all new patterns at once, a `(K, F)` array: add a very large set
        in chunks.

        **Arguments:**

        - `patterns`: the new patterns, of shape `(K, *shape)` with `shape` the
          layer's shape; finite.

        **Returns:**

        A new `RandomFeatureMemory` (this one is unchanged).
        """
        patterns = _check_patterns(
            patterns, self.projection.shape[1:], "RandomFeatureMemory.add"
        )
        added = self._log_memory(patterns.astype(self.log_T.dtype))
        return eqx.tree_at(lambda m: m.log_T, self, jnp.logaddexp(self.log_T, added))

    @classmethod
    def from_patterns(
        cls,
        patterns: ArrayLike,
        beta: RealLike,
        num_features: SizeLike,
        *,
        key: PRNGKeyArray,
        similarity: Literal["dot", "l2"] = "dot",
        orthogonal: bool = False,
    ) -> "RandomFeatureMemory":
        r"""A `RandomFeatureMemory` storing `patterns`, with a fresh random
        projection.

        **Arguments:**

        - `patterns`: the patterns to store, of shape `(K, *shape)` with `shape` the
          layer's shape; finite. Their dtype is the memory's.
        - `beta`: the inverse temperature $\beta > 0$ (a Python number).
        - `num_features`: the number of random features $F \geq 1$; the error falls
          like $1/\sqrt F$.
        - `key`: a JAX PRNG key for the projection (keyword-only).
        - `similarity`: `"dot"` (the default) or `"l2"`.
        - `orthogonal`: draw the directions in orthogonal blocks (Choromanski et al.
          2021), which lowers the error for the same `F` when `F` is not much larger
          than the layer's size; by default independent Gaussian draws.

        **Returns:**

        A `RandomFeatureMemory` with `F` features approximating
        `DenseMemory(patterns, LSoftmax(beta))`.
        """
        where = "RandomFeatureMemory.from_patterns"
        check_key(key, where)
        beta = _check_beta(beta, where)
        similarity = _check_similarity(similarity, where)
        num_features = static_int(
            num_features,
            "num_features",
            where,
            lower=1,
            hint="The error falls like 1/sqrt(num_features); try 4096.",
        )
        if not isinstance(orthogonal, bool):
            raise TypeError(
                f"`orthogonal` must be a bool in `{where}`, got "
                f"{type(orthogonal).__name__} {orthogonal!r}."
            )
        patterns = _check_patterns(patterns, None, where)
        shape = patterns.shape[1:]
        projection = _draw_projection(
            key, num_features, shape, patterns.dtype, orthogonal
        )
        zeros = jnp.zeros((num_features,), patterns.dtype)
        empty = cls(projection, zeros, beta, similarity)
        return eqx.tree_at(lambda m: m.log_T, empty, empty._log_memory(patterns))


def _check_patterns(patterns: object, shape, where: str) -> Array:
    """Finite, non-empty patterns of shape `(K, *shape)`."""
    arr = learnable(patterns, "patterns", where)
    if arr.ndim < 2 or (shape is not None and arr.shape[1:] != tuple(shape)):
        want = "(num_memories, *layer_shape)" if shape is None else f"(K, *{shape})"
        raise ValueError(
            f"`patterns` must have shape {want} in `{where}`; got shape {arr.shape}."
            " For a single pattern `p`, pass `p[None]`."
        )
    check_nonempty(
        arr,
        "patterns",
        where,
        "Store at least one pattern, of the layer's (non-empty) shape.",
    )
    return arr
