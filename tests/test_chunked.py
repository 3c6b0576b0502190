"""Streamed similarities: `DenseMemory(..., chunk_size=c)` walks over its patterns `c`
at a time and gives the numbers of the unchunked memory, with the memory of one chunk.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import run_without_hook, tree_allclose

import hamux_lagr as hl


K, D, B = 12, 4, 3

CHUNKABLE = {
    "LSoftmax": hl.LSoftmax(2.0),
    "LSoftmaxUnstable": hl.LSoftmaxUnstable(1.5),
    "LGhostmax": hl.LGhostmax(0.7),
    "LIdentity": hl.LIdentity(),
    "LRelu": hl.LRelu(),
    "LRepu": hl.LRepu(3.0),
    "LExp": hl.LExp(0.5),
    "LRexp": hl.LRexp(0.8),
    "LTanh": hl.LTanh(1.2),
    "LSigmoid": hl.LSigmoid(1.1, 0.9),
    "LLogSumReLU": hl.LLogSumReLU(0.3),
}
# Chunk sizes: 8 makes two chunks (8 and 4 patterns), 4 divides K (a scan over 3
# chunks, chunk j holding patterns j, j + 3, j + 6, j + 9), 5 does not (a scan over
# two contiguous chunks, then the last 2 patterns); 16 is one chunk.
CHUNKS = (8, 4, 5, 16)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    patterns = jnp.asarray(rng.standard_normal((K, D)) / 2)
    queries = jnp.asarray(rng.standard_normal((B, D)))
    return patterns, queries


def energies_and_forces(memory, queries):
    return jax.vmap(jax.value_and_grad(memory))(queries)


def derivatives(memory, queries):
    """The gradient of the batch's energy in the patterns and the Lagrangian's
    parameters, and those of a loss of the forces (training through the dynamics)
    in the memory and in the queries."""

    def loss(m, q):
        return jnp.sum(jax.vmap(jax.grad(m))(q) ** 2)

    energy_grads = eqx.filter_grad(lambda m: jnp.sum(jax.vmap(m)(queries)))(memory)
    loss_grads = eqx.filter_grad(loss)(memory, queries)
    leaves = jax.tree_util.tree_leaves  # the arrays, not the static chunk size
    return leaves(energy_grads), leaves(loss_grads), jax.grad(loss, 1)(memory, queries)


def compare(cases, fn, patterns, queries, rtol):
    """`fn` of each chunked memory `(name, similarity, chunk)` against the unchunked
    one, all in one compilation."""

    @jax.jit
    def run(patterns, queries):
        out = []
        for name, similarity, chunk in cases:
            lagrangian = CHUNKABLE[name]
            memory = hl.DenseMemory(patterns, lagrangian, similarity, chunk)
            unchunked = hl.DenseMemory(patterns, lagrangian, similarity)
            out.append((fn(memory, queries), fn(unchunked, queries)))
        return out

    for case, (got, expected) in zip(cases, run(patterns, queries)):
        assert tree_allclose(got, expected, rtol=rtol, atol=1e-12), case


def test_every_chunkable_lagrangian_streams_energy_and_force(data):
    # Two chunks, combined by each Lagrangian's reduction over the memories.
    cases = [(name, "dot", 8) for name in CHUNKABLE]
    compare(cases, energies_and_forces, *data, rtol=1e-12)


def test_chunked_scans_stream_energy_force_and_gradients(data):
    # The scans over strided and contiguous chunks, for the log-sum-exp, the
    # separable sum and the function of a sum (with parameters to learn).
    cases = [("LSoftmax", "l2", 4), ("LSigmoid", "dot", 5), ("LLogSumReLU", "l2", 5)]
    compare(cases, derivatives, *data, rtol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("similarity", ["dot", "l2"])
def test_every_chunkable_lagrangian_and_chunk_size(data, similarity):
    cases = [(name, similarity, chunk) for name in CHUNKABLE for chunk in CHUNKS]
    compare(cases, energies_and_forces, *data, rtol=1e-12)
    compare(cases, derivatives, *data, rtol=1e-10)


def test_chunked_hessian(data):
    # Forward over reverse mode (as in `fixed_point`'s implicit gradients).
    patterns, queries = data
    unchunked = hl.DenseMemory(patterns, hl.LSoftmax(2.0))
    chunked = hl.DenseMemory(patterns, hl.LSoftmax(2.0), chunk_size=5)
    run = jax.jit(lambda m: jax.vmap(jax.hessian(m))(queries))
    assert tree_allclose(run(chunked), run(unchunked), rtol=1e-10, atol=1e-12)


def test_chunked_tokens_shapes_dtypes_and_large_beta(data):
    patterns, queries = data
    images, tokens = patterns.reshape(K, 2, 2), queries.reshape(B, 2, 2)
    patterns32 = patterns.astype(jnp.float32)
    cases = {
        # Tokens (N, D) meet the memory one by one; patterns may be images (K, 2, 2).
        "image tokens": (images, hl.LSoftmax(2.0), tokens),
        # The online log-sum-exp rescales by the running maximum: no overflow.
        "beta 1e6": (100 * patterns, hl.LSoftmax(1e6), queries[0]),
        # float32 patterns, float64 states: computed in the states' dtype, each
        # gradient in its argument's.
        "float32 patterns": (patterns32, hl.LSoftmax(2.0), queries[0]),
    }

    @jax.jit
    def run():
        out = {}
        for name, (p, lagrangian, g) in cases.items():
            for chunk in (None, 5):
                memory = hl.DenseMemory(p, lagrangian, chunk_size=chunk)
                out[name, chunk or 0] = jax.value_and_grad(memory)(g)
                if name == "float32 patterns":
                    out["patterns grad", chunk or 0] = jax.grad(lambda m: m(g))(memory)
        return out

    out = run()
    for name, (_, _, g) in cases.items():
        energy, force = out[name, 5]
        assert tree_allclose(out[name, 5], out[name, 0], rtol=1e-12), name
        assert bool(jnp.isfinite(energy)) and bool(jnp.all(jnp.isfinite(force)))
        assert energy.dtype == force.dtype == g.dtype
    patterns_grad = out["patterns grad", 5].patterns
    assert patterns_grad.dtype == jnp.float32
    assert tree_allclose(patterns_grad, out["patterns grad", 0].patterns, rtol=1e-6)


# ----------------------------------------------------------------------------------
# through the dynamics
# ----------------------------------------------------------------------------------


def _ham(memory):
    layer = hl.NeuronLayer(hl.LIdentity(), (memory.patterns.shape[1],))
    return hl.HAM({"v": layer}, {"m": memory}, [(("v",), "m")])


def test_chunked_retrieval_and_training_equal_the_unchunked(data):
    patterns, queries = data

    def retrieve(ham):
        run = jax.vmap(lambda q: hl.descend(ham, {"v": q}, steps=8, dt=0.2))
        return run(queries)

    def loss(ham):
        return jnp.sum((retrieve(ham).xs["v"] - queries) ** 2)

    @jax.jit
    def run(patterns):
        out = []
        for chunk in (None, 5):
            ham = _ham(hl.DenseMemory(patterns, hl.LSoftmax(2.0), chunk_size=chunk))
            sol = retrieve(ham)
            grads = jax.tree_util.tree_leaves(eqx.filter_grad(loss)(ham))
            out.append((sol.xs, sol.energies, grads))
        return out

    unchunked, chunked = run(patterns)
    assert tree_allclose(chunked, unchunked, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------
# compiled memory: O(B x chunk), not O(B x K)
# ----------------------------------------------------------------------------------

BIG_K, BIG_D, BIG_B, BIG_CHUNK = 2**20, 784, 256, 4096
MiB = 2**20


def _temp_bytes(fn, chunk_size, num_memories=BIG_K, dtype=jnp.float32):
    """The compiled temporary memory of `fn(memory, queries)` on abstract inputs (no
    array of the patterns' size is allocated)."""
    small = hl.DenseMemory(
        jnp.zeros((2, BIG_D), dtype), hl.LSoftmax(1.0), chunk_size=chunk_size
    )

    def run(patterns, queries):
        return fn(eqx.tree_at(lambda m: m.patterns, small, patterns), queries)

    patterns = jax.ShapeDtypeStruct((num_memories, BIG_D), dtype)
    queries = jax.ShapeDtypeStruct((BIG_B, BIG_D), dtype)
    compiled = jax.jit(run).lower(patterns, queries).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def _forces(memory, queries):
    return jax.vmap(jax.value_and_grad(memory))(queries)


def _patterns_gradient(memory, queries):
    return jax.grad(lambda m: jnp.sum(jax.vmap(m)(queries)))(memory).patterns


def _retrieval(memory, queries):
    ham = _ham(memory)
    run = jax.vmap(lambda q: hl.descend(ham, {"v": q}, steps=20, dt=0.1).xs["v"])
    return run(queries)


def _training(memory, queries):
    def loss(ham):
        run = jax.vmap(lambda q: hl.descend(ham, {"v": q}, steps=2, dt=0.1).xs["v"])
        return jnp.sum(run(queries) ** 2)

    return jax.grad(loss)(_ham(memory)).synapses["m"].patterns


@pytest.mark.parametrize("fn", [_forces, _patterns_gradient])
def test_compiled_memory_of_a_million_patterns_is_one_chunks(fn):
    # 2**20 patterns of 784 floats against 256 queries: the (K, B) similarities
    # alone take 1 GiB; streamed in chunks of 4096, the energy and the force, and the
    # patterns' gradient under `jax.vmap` (one product contracting the batch, not a
    # per-sample (B, K, D) array), need under 64 MiB beside their inputs and outputs.
    assert _temp_bytes(fn, BIG_CHUNK) < 64 * MiB
    assert _temp_bytes(fn, None) > 1024 * MiB


def test_compiled_memory_of_a_retrieval_from_a_million_patterns():
    # 20 steps of `descend`, vmapped over the 256 queries.
    assert _temp_bytes(_retrieval, BIG_CHUNK) < 64 * MiB


def test_training_through_the_dynamics_stores_no_similarities():
    # Reverse mode through 2 steps keeps one patterns-sized gradient accumulator
    # (3 GiB) and each chunk's running statistics, not each step's similarities
    # (1 GiB a step, and more for their softmax: 15 GiB for the unchunked memory,
    # 9 GiB for a chunked one whose checkpoints were lost).
    patterns_bytes = BIG_K * BIG_D * 4
    assert _temp_bytes(_training, BIG_CHUNK) < patterns_bytes + 256 * MiB


# ----------------------------------------------------------------------------------
# what cannot be chunked, and bad chunk sizes
# ----------------------------------------------------------------------------------


class _MyLagrangian(hl.Lagrangian):
    def __call__(self, x):
        return jnp.sum(jnp.abs(x))


# Subclasses of streamed Lagrangians that compute their own value: they must declare
# their reduction (a log-sum-exp twice over, or the square of a sum, is not their
# parent's), never inherit it.
class _TwiceSoftmax(hl.LSoftmax):
    def __call__(self, x):
        return 2 * hl.lagr_softmax(x, self.beta).sum()


class _SharperSoftmax(hl.LSoftmax):
    def _kernel(self, x, beta, axis):
        return hl.lagr_softmax(x, 2 * beta, axis)


class _SquaredSum(hl.LIdentity):
    def __call__(self, x):
        return jnp.sum(x) ** 2 / 2


class _Softplus(hl.Lagrangian):
    """A user's own separable Lagrangian, opting into streaming."""

    beta: jax.Array
    streaming = hl.StreamedSum()

    def __call__(self, x):
        return jnp.sum(jnp.logaddexp(self.beta * x, 0.0)) / self.beta


class _TwiceSoftmaxDeclared(hl.LSoftmax):
    """A subclass that declares its own reduction: a sum of its own values."""

    streaming = hl.StreamedSum()

    def __call__(self, x):
        return 2 * jnp.sum(x)


class _MyLogSumExp(hl.Lagrangian):
    """A user's own log-sum-exp, streamed with the online log-sum-exp."""

    beta: jax.Array
    min_beta: float = eqx.field(static=True, default=1e-6)
    axis: int = eqx.field(static=True, default=-1)
    streaming = hl.StreamedLogSumExp(ghost=True)

    def __call__(self, x):
        return jnp.sum(hl.lagr_ghostmax(x, self.beta))


class _NoBeta(hl.Lagrangian):
    streaming = hl.StreamedLogSumExp()

    def __call__(self, x):
        return jnp.sum(hl.lagr_softmax(x))


def test_own_lagrangians_opt_into_streaming(data):
    patterns, queries = data
    lagrangians = {
        "softplus": _Softplus(jnp.asarray(1.5)),
        "declared subclass": _TwiceSoftmaxDeclared(),
        "log-sum-exp": _MyLogSumExp(jnp.asarray(0.7)),
    }

    @jax.jit
    def run(patterns, queries):
        out = {}
        for name, lagrangian in lagrangians.items():
            for chunk in (5, None):
                memory = hl.DenseMemory(patterns, lagrangian, "l2", chunk)
                out[name, chunk or 0] = (
                    energies_and_forces(memory, queries),
                    derivatives(memory, queries),
                )
        return out

    out = run(patterns, queries)
    for name in lagrangians:
        assert tree_allclose(out[name, 5], out[name, 0], rtol=1e-10), name
    with pytest.raises(ValueError, match="`_NoBeta` declares `streaming = StreamedL"):
        hl.DenseMemory(patterns, _NoBeta(), chunk_size=5)


@pytest.mark.parametrize(
    "lagrangian, why",
    [
        (hl.LSparsemax(), "`LSparsemax` cannot be evaluated chunk by chunk: its thr"),
        (hl.LEntmax(), "`LEntmax` cannot be evaluated chunk by chunk: its threshold"),
        (hl.LNormmax(), "`LNormmax` cannot be evaluated chunk by chunk: its thresh"),
        (hl.LLayerNorm(), "`LLayerNorm` cannot be evaluated chunk by chunk: it norm"),
        (hl.LSphericalNorm(), "`LSphericalNorm` cannot be evaluated chunk by chunk"),
        (_MyLagrangian(), "`_MyLagrangian` does not declare how it reduces over t"),
        (_TwiceSoftmax(), "`_TwiceSoftmax` does not declare how it reduces over t"),
        (_TwiceSoftmax(), "so it does not inherit the reduction of its parent class"),
        (_SharperSoftmax(), "`_SharperSoftmax` does not declare how it reduces over"),
        (_SquaredSum(), "`_SquaredSum` does not declare how it reduces over the m"),
    ],
)
def test_lagrangians_that_couple_all_memories_are_refused(lagrangian, why):
    with pytest.raises(ValueError, match="`chunk_size` in `DenseMemory` needs") as e:
        hl.DenseMemory(jnp.ones((4, 2)), lagrangian, chunk_size=2)
    assert why in str(e.value)
    assert "Use `chunk_size=None`" in str(e.value)
    hl.DenseMemory(jnp.ones((4, 2)), lagrangian)  # unchunked: fine


def test_chunking_refuses_parameters_per_memory_and_bad_axes():
    beta = jnp.ones(4)
    with pytest.raises(ValueError, match=r"`LExp.beta` has shape \(4,\)"):
        hl.DenseMemory(jnp.ones((4, 2)), hl.LExp(beta), chunk_size=2)
    with pytest.raises(ValueError, match="`axis`"):
        hl.DenseMemory(jnp.ones((4, 2)), hl.LSoftmax(axis=1), chunk_size=2)
    for bad in (0, -3):
        with pytest.raises(ValueError, match=r"`chunk_size` must be an int in \[1, "):
            hl.DenseMemory(jnp.ones((4, 2)), hl.LSoftmax(), chunk_size=bad)
    memory = hl.DenseMemory(jnp.ones((4, 2)), hl.LSoftmax(), chunk_size=np.int64(3))
    assert memory.chunk_size == 3 and type(memory.chunk_size) is int
    assert (
        hl.DenseMemory.random(
            5, 2, hl.LSoftmax(), key=jax.random.key(0), chunk_size=2
        ).chunk_size
        == 2
    )


def test_chunked_memory_checks_a_traced_beta_at_run_time(data):
    # A memory is checked where a solve (or a HAM method) meets it: once, at entry.
    patterns, queries = data

    @jax.jit
    def energy(beta):
        memory = hl.DenseMemory(patterns, hl.LSoftmax(1.0), chunk_size=5)
        memory = eqx.tree_at(lambda m: m.lagrangian.beta, memory, beta)
        ham = hl.HAM(
            {"v": hl.NeuronLayer(hl.LIdentity(), (patterns.shape[1],))},
            {"memory": memory},
            [(("v",), "memory")],
        )
        return jax.vmap(lambda q: ham.energy_and_dEdg({"v": q}))(queries)

    energy(jnp.asarray(2.0))  # fine
    with pytest.raises(Exception, match=r"lagrangian\.beta` must be finite"):
        jax.block_until_ready(energy(jnp.asarray(jnp.nan)))


def test_chunk_size_type_errors_without_the_hook():
    out = run_without_hook(
        """
        import jax.numpy as jnp
        import hamux_lagr as hl
        for bad in (2.0, True, "2"):
            try:
                hl.DenseMemory(jnp.ones((4, 2)), hl.LSoftmax(), chunk_size=bad)
            except TypeError as e:
                print(e)
        """
    )
    assert out.count("`chunk_size` must be a Python int in `DenseMemory`") == 3


# ----------------------------------------------------------------------------------
# extreme inverse temperatures
# ----------------------------------------------------------------------------------


LOG_SUM_EXP = (hl.LSoftmax, hl.LSoftmaxUnstable, hl.LGhostmax)


@pytest.mark.parametrize(
    "dtype, jit", [(jnp.float32, True), (jnp.float64, True), (jnp.float32, False)]
)
def test_chunked_gradients_at_large_beta_equal_the_unchunked(data, dtype, jit):
    # At beta = 1e8 a logit beta * s is about 1e8, whose float32 spacing is 8: the
    # online log-sum-exp must shift the similarities by their running maximum before
    # scaling them, as the unchunked one does, or the weights and their tangents
    # (the patterns' and beta's gradients) are wrong while energy and force are not.
    patterns, queries = (a.astype(dtype) for a in data)

    def grads(memory):
        one = eqx.filter_grad(lambda m: m(queries[0]))(memory)
        batch = eqx.filter_grad(lambda m: jnp.sum(jax.vmap(m)(queries)))(memory)
        return jax.tree_util.tree_leaves((one, batch))

    cases = [
        (lagrangian, beta, similarity, chunk)
        for lagrangian in LOG_SUM_EXP
        for beta in (1e5, 1e8)
        for similarity in ("dot", "l2")
        for chunk in (3, 6)
    ]
    if not jit:  # eager: one case (each operation is dispatched on its own)
        cases = [(hl.LSoftmax, 1e8, "l2", 6)]

    def run(patterns):
        out = []
        for lagrangian, beta, similarity, chunk in cases:
            lagr = lagrangian(jnp.asarray(beta, dtype))
            memory = hl.DenseMemory(patterns, lagr, similarity, chunk)
            unchunked = hl.DenseMemory(patterns, lagr, similarity)
            out.append((grads(memory), grads(unchunked)))
        return out

    run = jax.jit(run) if jit else run
    rtol = 1e-4 if dtype == jnp.float32 else 1e-10
    for case, (got, expected) in zip(cases, run(patterns)):
        scale = max(float(jnp.max(jnp.abs(e))) for e in expected)
        assert tree_allclose(got, expected, rtol=rtol, atol=rtol * scale), case


@pytest.mark.parametrize("jit", [True, False])
def test_chunked_half_precision_at_large_beta_is_finite(data, jit):
    # float16 holds numbers up to 65504: a logit beta * s overflows from beta = 6e4
    # on, and beta = 1e5 itself does. Shifted before scaling, the chunked memory is
    # finite and equals the unchunked one; a beta beyond the format's range is
    # evaluated at its largest finite value, the limit beta -> inf to the format's
    # precision (the softmax is one-hot there).
    patterns, queries = data
    cases = [
        (dtype, lagrangian, beta, similarity)
        for dtype in (jnp.float16, jnp.bfloat16)
        for lagrangian in LOG_SUM_EXP
        for beta in (6e4, 1e5, 1e8)
        for similarity in ("dot", "l2")
    ]
    if not jit:
        cases = [(jnp.float16, hl.LSoftmax, 1e5, "l2")]

    def run(patterns, query):
        out = []
        for dtype, lagrangian, beta, similarity in cases:
            lagr = lagrangian(jnp.asarray(beta, jnp.float32))
            p, q = patterns.astype(dtype), query.astype(dtype)
            out.append(
                [
                    jax.value_and_grad(hl.DenseMemory(p, lagr, similarity, chunk))(q)
                    for chunk in (3, None)
                ]
            )
        return out

    run = jax.jit(run) if jit else run
    for case, (got, expected) in zip(cases, run(patterns, queries[0])):
        for a in (*got, *expected):
            assert bool(jnp.all(jnp.isfinite(a))), case
        assert tree_allclose(got, expected, rtol=1e-2, atol=1e-2), case
        # The limit: the energy is minus the largest similarity.
        p = patterns.astype(case[0]).astype(jnp.float64)
        q = queries[0].astype(case[0]).astype(jnp.float64)
        s = p @ q if case[3] == "dot" else -0.5 * jnp.sum((p - q[None]) ** 2, axis=1)
        if case[1] is hl.LGhostmax:  # the ghost similarity 0
            s = jnp.append(s, 0.0)
        assert abs(float(got[0]) + float(jnp.max(s))) < 2e-2, case
