"""Scaling benchmarks: streamed (chunked) similarities and sharded memories.

A `DenseMemory(patterns, LSoftmax(beta=1))` on an `LIdentity` layer, D=784, B=256
queries, float32; the retrieval is `jax.vmap` of the one-sample `hl.descend` with 20
Euler steps of dt=0.1 (`trace=False`).

1. Compiled temporary memory of the retrieval (XLA's `memory_analysis()`, compiled on
   abstract inputs, nothing allocated) for K = 2^10 ... 2^20 patterns, unchunked and
   with `chunk_size=4096`.
2. Retrieval time, unchunked and chunked, for the K that are run (up to `--max-run-k`;
   a retrieval does 40 products of 2KDB flops each: at 2^20 patterns that is 17
   TFLOP, minutes on a CPU, so larger K are compiled but not run). The achieved flop
   rate (the 40 products' flops over the retrieval's time) is given as a fraction of
   the rate of a bare chain of the same 40 products (x <- P^T (P x) * D/K, jitted
   `lax.fori_loop`) timed in the same rounds: the practical limit (target >= 0.8).
3. On 8 virtual CPU devices (a subprocess with
   `--xla_force_host_platform_device_count=8`): the retrieval with the patterns split
   over 4 devices and the queries over 2 (`hl.shard`, `hl.shard_states`), unchunked
   and chunked, against one device: the largest difference and the times. The virtual
   devices share the machine's cores, so this shows correctness and overhead, not a
   speed-up.

Each timed row runs its functions interleaved, `--repeats` rounds, and gives medians.
Run with `python benchmarks/bench_scale.py` (`--quick` for small K and one round).
No GPU was lent to the session that wrote this benchmark: the figures in
`benchmarks/README.md` are from the CPU.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

import hamux_lagr as hl


D, B, STEPS, DT, CHUNK = 784, 256, 20, 0.1, 4096
MiB = 2**20


def ham_of(patterns, chunk_size):
    memory = hl.DenseMemory(patterns, hl.LSoftmax(1.0), chunk_size=chunk_size)
    layer = hl.NeuronLayer(hl.LIdentity(), (D,))
    return hl.HAM({"v": layer}, {"memory": memory}, [(("v",), "memory")])


def retrieve(ham, queries):
    def one(q):
        return hl.descend(ham, {"v": q}, steps=STEPS, dt=DT, trace=False).xs["v"]

    return jax.vmap(one)(queries)


def product_chain(patterns, queries):
    """The retrieval's 40 products and nothing else."""
    scale = jnp.asarray(D / patterns.shape[0], patterns.dtype)

    def body(_, x):  # x: (D, B)
        return (patterns.T @ (patterns @ x)) * scale

    return lax.fori_loop(0, STEPS, body, queries.T)


def problem(num_memories, seed=0):
    kp, kq = jax.random.split(jax.random.key(seed))
    patterns = jax.random.normal(kp, (num_memories, D), jnp.float32)
    patterns = patterns / jnp.linalg.norm(patterns, axis=1, keepdims=True)
    queries = patterns[:B] + 0.5 * jax.random.normal(kq, (B, D)) / D**0.5
    return patterns, queries


def temp_memory(num_memories, chunk_size):
    """Compiled temporary bytes of the retrieval, on abstract inputs."""
    small = ham_of(jnp.zeros((2, D), jnp.float32), chunk_size)

    def run(patterns, queries):
        ham = eqx.tree_at(lambda h: h.synapses["memory"].patterns, small, patterns)
        return retrieve(ham, queries)

    patterns = jax.ShapeDtypeStruct((num_memories, D), jnp.float32)
    queries = jax.ShapeDtypeStruct((B, D), jnp.float32)
    compiled = jax.jit(run).lower(patterns, queries).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def timed(fns, repeats):
    """Median seconds of each function, run interleaved `repeats` rounds."""
    times = {name: [] for name in fns}
    for fn in fns.values():
        jax.block_until_ready(fn())  # compile
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_memory(ks):
    print("\n### 1. compiled temporary memory of a 20-step retrieval (B=256, D=784)\n")
    print("| K | patterns | unchunked | chunk_size=4096 | (K, B) similarities |")
    print("|---|---|---|---|---|")
    for k in ks:
        unchunked, chunked = temp_memory(k, None), temp_memory(k, CHUNK)
        print(
            f"| 2^{k.bit_length() - 1} | {k * D * 4 / MiB:.0f} MiB "
            f"| {unchunked / MiB:.1f} MiB | {chunked / MiB:.1f} MiB "
            f"| {k * B * 4 / MiB:.1f} MiB |"
        )


def bench_time(ks, repeats):
    print("\n### 2. retrieval time and flop rate against the bare products\n")
    print(
        "| K | unchunked | chunked | bare products | unchunked / bare rate "
        "| chunked / bare rate | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|")
    run = eqx.filter_jit(retrieve)
    chain = jax.jit(product_chain)
    for k in ks:
        patterns, queries = problem(k)
        hams = {"unchunked": ham_of(patterns, None), "chunked": ham_of(patterns, CHUNK)}
        fns = {name: (lambda h=h, q=queries: run(h, q)) for name, h in hams.items()}
        fns["bare"] = lambda p=patterns, q=queries: chain(p, q)
        t = timed(fns, repeats)
        diff = float(jnp.max(jnp.abs(fns["unchunked"]() - fns["chunked"]())))
        print(
            f"| 2^{k.bit_length() - 1} | {t['unchunked'] * 1e3:.1f} ms "
            f"| {t['chunked'] * 1e3:.1f} ms | {t['bare'] * 1e3:.1f} ms "
            f"| {t['bare'] / t['unchunked']:.2f} | {t['bare'] / t['chunked']:.2f} "
            f"| {diff:.1e} |"
        )
        del patterns, hams, fns


SHARDED = r"""
import json, sys, time, statistics
import jax, jax.numpy as jnp, equinox as eqx
sys.path.insert(0, "benchmarks")
import bench_scale as b
import hamux_lagr as hl
k, repeats = int(sys.argv[1]), int(sys.argv[2])
mesh = jax.make_mesh((2, 4), ("batch", "patterns"))
patterns, queries = b.problem(k)
run = eqx.filter_jit(b.retrieve)
rows = []
for chunk in (None, b.CHUNK):
    ham = b.ham_of(patterns, chunk)
    sharded = hl.shard(ham, mesh, patterns_axis="patterns")
    qs = hl.shard_states(queries, mesh, batch_axis="batch")
    t = b.timed({"one": lambda: run(ham, queries), "eight": lambda: run(sharded, qs)},
                repeats)
    diff = float(jnp.max(jnp.abs(run(sharded, qs) - run(ham, queries))))
    rows.append({"chunk": chunk, "one": t["one"], "eight": t["eight"], "diff": diff})
print("RESULT " + json.dumps(rows))
"""


def bench_sharded(k, repeats):
    exponent = k.bit_length() - 1
    print(
        f"\n### 3. sharded retrieval on 8 virtual CPU devices (K=2^{exponent}; "
        "patterns over 4, queries over 2)\n"
    )
    flags = os.environ.get("XLA_FLAGS", "")
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=8".strip(),
    }
    proc = subprocess.run(
        [sys.executable, "-c", SHARDED, str(k), str(repeats)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode:
        print(proc.stderr[-3000:])
        return
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    print("| chunk_size | one device | 8 devices | max abs diff |")
    print("|---|---|---|---|")
    for row in json.loads(line[len("RESULT ") :]):
        one, eight = row["one"] * 1e3, row["eight"] * 1e3
        print(f"| {row['chunk']} | {one:.1f} ms | {eight:.1f} ms | {row['diff']:.1e} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small K, one round")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds")
    parser.add_argument(
        "--max-run-k", type=int, default=2**15, help="largest K to run (not compile)"
    )
    args = parser.parse_args()
    if args.quick:
        memory_ks = [2**10, 2**14, 2**20]
        run_ks, repeats, sharded_k = [2**10, 2**12], 1, 2**12
    else:
        memory_ks = [2**e for e in range(10, 21)]
        run_ks = [k for k in memory_ks if k <= args.max_run_k]
        repeats, sharded_k = args.repeats, 2**14
    print(
        f"jax {jax.__version__}, equinox {eqx.__version__}, devices {jax.devices()}, "
        f"{os.cpu_count()} CPU cores"
    )
    bench_memory(memory_ks)
    bench_time(run_ks, repeats)
    skipped = [k for k in memory_ks if k not in run_ks]
    if skipped:
        print(
            f"\nNot run (compiled only, above): K = 2^{skipped[0].bit_length() - 1} "
            f"... 2^{skipped[-1].bit_length() - 1}; raise `--max-run-k` to run them."
        )
    bench_sharded(sharded_k, repeats)


if __name__ == "__main__":
    main()
