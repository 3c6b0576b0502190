"""Several hosts: two processes on this machine, joined by `jax.distributed.initialize`
over loopback with JAX's CPU collectives (gloo), hold one memory split over their 4
devices and agree with one process: a retrieval with the patterns split, a training
gradient with the batch split, and a memory built from each process's own rows."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hamux_lagr as hl


K, D, B, STEPS = 32, 6, 8, 10

WORKER = r"""
import json, sys
import jax
process, port = int(sys.argv[1]), sys.argv[2]
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(
    f"127.0.0.1:{port}", num_processes=2, process_id=process,
    initialization_timeout=60,
)
import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
import hamux_lagr as hl

assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
# Every process builds the same memory and queries (same seed); `shard` keeps the
# shards of its own devices.
rng = np.random.default_rng(0)
patterns = rng.standard_normal((K, D)) / 2
queries = rng.standard_normal((B, D))
memory = hl.DenseMemory(patterns, hl.LSoftmax(3.0))
ham = hl.HAM({"v": hl.NeuronLayer(hl.LIdentity(), (D,))}, {"m": memory},
             [(("v",), "m")])


def retrieve(ham, qs):
    sol = jax.vmap(lambda q: hl.descend(ham, {"v": q}, steps=STEPS, dt=0.2))(qs)
    return sol.xs["v"], sol.energies


def patterns_grad(ham, qs):  # the gradient of a training loss through descend
    loss = lambda h: jnp.mean((retrieve(h, qs)[0] - qs) ** 2)
    return eqx.filter_grad(loss)(ham).synapses["m"].patterns


out = {}
# The patterns split over all 4 devices (2 per process), the queries replicated.
# `Auto` axes, as `shard` uses (`jax.make_mesh` makes `Explicit` ones by default).
auto = (jax.sharding.AxisType.Auto,)
mesh = jax.make_mesh((4,), ("patterns",), axis_types=auto)
sharded = hl.shard(ham, mesh, patterns_axis="patterns")
assert not sharded.synapses["m"].patterns.is_fully_addressable
qs = hl.shard_states(queries, mesh, batch_axis=None)
xs, energies = eqx.filter_jit(retrieve)(sharded, qs)
# Data parallel: the parameters replicated, the batch split over the 4 devices.
replicated = hl.shard(ham, hl_mesh := jax.make_mesh((4,), ("batch",)))
split_qs = hl.shard_states(queries, hl_mesh, batch_axis="batch")
dp_grad = eqx.filter_jit(patterns_grad)(replicated, split_qs)
# A memory no process holds whole: each passes only the rows of its own devices.
sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("patterns"))
rows = slice(process * K // 2, (process + 1) * K // 2)
split = jax.make_array_from_process_local_data(sharding, patterns[rows], (K, D))
local = eqx.tree_at(lambda h: h.synapses["m"], sharded,
                    hl.DenseMemory(split, hl.LSoftmax(3.0)))
local_xs, _ = eqx.filter_jit(retrieve)(local, qs)
try:  # its construction checks it where it lives
    hl.DenseMemory(split * np.nan, hl.LSoftmax(3.0))
except ValueError as e:
    out["nan"] = str(e)
gather = lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True))
for name, x in (("xs", xs), ("energies", energies), ("dp_grad", dp_grad),
                ("local_xs", local_xs)):
    out[name] = gather(x).tolist()
print("RESULT " + json.dumps(out), flush=True)
jax.distributed.shutdown()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    not hasattr(jax.config, "jax_cpu_collectives_implementation"),
    reason="this JAX build has no CPU collectives (no "
    "`jax_cpu_collectives_implementation` option), so no multi-process CPU runs",
)
def test_two_processes_agree_with_one():
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    }
    script = f"K, D, B, STEPS = {K}, {D}, {B}, {STEPS}\n" + textwrap.dedent(WORKER)
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(i), port],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=300)
            assert p.returncode == 0, stderr[-4000:]
            outputs.append(stdout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    results = []
    for stdout in outputs:
        (line,) = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
        results.append(json.loads(line[len("RESULT ") :]))
    assert results[0] == results[1]  # both processes see the same global arrays

    # One process, one device.
    rng = np.random.default_rng(0)
    patterns = rng.standard_normal((K, D)) / 2
    queries = jnp.asarray(rng.standard_normal((B, D)))
    memory = hl.DenseMemory(patterns, hl.LSoftmax(3.0))
    ham = hl.HAM(
        {"v": hl.NeuronLayer(hl.LIdentity(), (D,))}, {"m": memory}, [(("v",), "m")]
    )

    @eqx.filter_jit
    def expected(ham, qs):
        def retrieve(ham):
            run = jax.vmap(lambda q: hl.descend(ham, {"v": q}, steps=STEPS, dt=0.2))
            return run(qs)

        def loss(ham):
            return jnp.mean((retrieve(ham).xs["v"] - qs) ** 2)

        sol = retrieve(ham)
        return sol.xs["v"], sol.energies, eqx.filter_grad(loss)(ham)

    xs, energies, grads = expected(ham, queries)
    got = results[0]
    np.testing.assert_allclose(got["xs"], xs, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(got["energies"], energies, rtol=1e-10, atol=1e-13)
    grad = grads.synapses["m"].patterns
    np.testing.assert_allclose(got["dp_grad"], grad, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(got["local_xs"], xs, rtol=1e-10, atol=1e-13)
    assert got["nan"].startswith(
        "`patterns` must be finite (no NaN or inf) in `DenseMemory`, got a bad entry "
        "in an array of shape (32, 6) spread over several processes."
    )
