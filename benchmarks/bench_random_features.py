"""Random-feature memory against the dense memory: cost of a retrieval step against K.

One retrieval step is one energy-gradient evaluation, `jax.vmap(jax.grad(memory))`
over a batch of B=256 queries of dimension D=784 (float32), jitted. For K = 2^10 ...
2^18 stored unit-norm patterns it times

- `RandomFeatureMemory.from_patterns(patterns, beta, F)` (F=4096 random features by
  default): its step costs O(B F D) whatever K;
- `DenseMemory(patterns, LSoftmax(beta))`: O(B K D), its patterns an input of size K D;

and prints them side by side with the compiled memory (arguments + temporaries, from
`jax.jit(...).lower(...).compile().memory_analysis()`), then the K from which the
random-feature step is faster. DenseMemory sizes whose compiled memory exceeds
`--max-gb` (8 GB) are skipped.

The random-feature memory for each K is built by adding the new patterns in chunks
(`memory.add`), a one-off O(K F D) cost that is not part of the step; with
`--build-up-to` (2^14 by default, to keep the run short on 2 cores) only the first
that many patterns are summed into T for larger K: the step's computation is the
same either way (T has F entries whatever K; only its values differ), so this changes
what the row measures in no way but the build time. `--build-up-to 0` builds all.

Run with `python benchmarks/bench_random_features.py` (`--max-log2k 16` for a shorter
run, `--features 2048` for another F).
"""

import argparse
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp

import hamux_lagr as hl
from hamux_lagr._synapses.random_features import RandomFeatureMemory


D, B, BETA, CHUNK = 784, 256, 1.0, 2048


def step_fn(memory):
    """The jitted batched energy gradient of `memory` (an argument, not a constant)."""

    @jax.jit
    def step(memory, queries):
        return jax.vmap(jax.grad(memory))(queries)

    return step


def measure(step, memory, queries, budget_s: float = 2.0, max_reps: int = 20):
    """Compiled memory (MB) and median wall time (ms) of `step(memory, queries)`."""
    compiled = step.lower(memory, queries).compile()
    stats = compiled.memory_analysis()
    mb = float("nan")
    if stats is not None:
        mb = (stats.argument_size_in_bytes + stats.temp_size_in_bytes) / 2**20
    jax.block_until_ready(compiled(memory, queries))  # warm up
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (
        len(times) < 3 or time.perf_counter() - start < budget_s
    ):
        t = time.perf_counter()
        jax.block_until_ready(compiled(memory, queries))
        times.append(time.perf_counter() - t)
    return mb, 1e3 * statistics.median(times), compiled


def dense_bytes_estimate(k: int) -> float:
    """A lower bound on the dense step's memory: patterns + two (K, B) arrays."""
    return 4.0 * (k * D + 2 * k * B)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--min-log2k", type=int, default=10)
    parser.add_argument("--max-log2k", type=int, default=18)
    parser.add_argument("--build-up-to", type=int, default=2**14)
    parser.add_argument("--max-gb", type=float, default=8.0)
    args = parser.parse_args()

    k_max = 2**args.max_log2k
    kp, kq, kf = jax.random.split(jax.random.key(0), 3)
    patterns = jax.random.normal(kp, (k_max, D), jnp.float32)
    patterns = patterns / jnp.linalg.norm(patterns, axis=1, keepdims=True)
    queries = patterns[:B] + 0.5 * jax.random.normal(kq, (B, D), jnp.float32) / D**0.5

    print(
        f"One retrieval step: grad of the energy, vmapped over B={B} queries, D={D}, "
        f"beta={BETA}, float32; RandomFeatureMemory with F={args.features} features."
    )
    print(
        f"JAX {jax.__version__}, {jax.devices()[0].platform}, {jax.device_count()} device(s)"
    )
    add = eqx.filter_jit(lambda m, p: m.add(p))
    rf_step = step_fn(None)
    dense_step = step_fn(None)
    t = time.perf_counter()
    memory = RandomFeatureMemory.from_patterns(
        patterns[: 2**args.min_log2k], BETA, args.features, key=kf
    )
    stored = 2**args.min_log2k
    build_s = time.perf_counter() - t
    build_limit = args.build_up_to or k_max

    header = (
        f"{'K':>8} | {'RF ms':>8} {'RF MB':>8} {'built':>7} | {'Dense ms':>9} "
        f"{'Dense MB':>9} | {'dense/RF':>8}"
    )
    print(header)
    print("-" * len(header))
    faster_from = None
    rf_times = []
    for log2k in range(args.min_log2k, args.max_log2k + 1):
        k = 2**log2k
        t = time.perf_counter()
        while stored < min(k, build_limit):
            n = min(CHUNK, min(k, build_limit) - stored)
            memory = add(memory, patterns[stored : stored + n])
            stored += n
        jax.block_until_ready(memory)
        build_s += time.perf_counter() - t
        rf_mb, rf_ms, _ = measure(rf_step, memory, queries)
        rf_times.append(rf_ms)
        if dense_bytes_estimate(k) > args.max_gb * 2**30:
            dense_ms, dense_mb = float("nan"), float("nan")
        else:
            dense = hl.DenseMemory(patterns[:k], hl.LSoftmax(BETA))
            compiled = dense_step.lower(dense, queries).compile()
            stats = compiled.memory_analysis()
            need = (
                stats.argument_size_in_bytes + stats.temp_size_in_bytes
                if stats is not None
                else dense_bytes_estimate(k)
            )
            if need > args.max_gb * 2**30:
                dense_ms, dense_mb = float("nan"), need / 2**20
            else:
                dense_mb, dense_ms, _ = measure(dense_step, dense, queries)
        ratio = dense_ms / rf_ms
        if faster_from is None and ratio > 1:
            faster_from = k
        print(
            f"{k:>8} | {rf_ms:>8.2f} {rf_mb:>8.1f} {stored:>7} | {dense_ms:>9.2f} "
            f"{dense_mb:>9.1f} | {ratio:>8.2f}",
            flush=True,
        )
    print(
        "MB: the compiled step's arguments + temporaries (memory_analysis); built: "
        "the patterns summed into T (--build-up-to); nan: skipped (over --max-gb)."
    )
    print(
        f"RandomFeatureMemory step: {min(rf_times):.2f} to {max(rf_times):.2f} ms over "
        f"K (flat: the same computation for every K); build (one-off, {stored} "
        f"patterns summed into T): {build_s:.1f} s."
    )
    if faster_from is None:
        print("The random-feature step was not faster at any K measured.")
    else:
        print(f"The random-feature step is faster from K = {faster_from}.")


if __name__ == "__main__":
    main()
