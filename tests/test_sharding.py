"""Sharded memories on 8 virtual CPU devices: `hamux_lagr.shard` splits the patterns
over devices, `hamux_lagr.shard_states` the batch, and everything gives the numbers of
one device, without gathering the patterns.

The checks run in one subprocess with `--xla_force_host_platform_device_count=8`, so
that the rest of the suite keeps its single device.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest
from helpers import run_without_hook

import hamux_lagr as hl


SCRIPT = r"""
import json, re
import jax
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
import hamux_lagr as hl
import equinox as eqx
import jax.numpy as jnp
import numpy as np
import optax

assert jax.device_count() == 8, jax.devices()
K, D, B = 48, 6, 8  # 12 patterns and 2 or 1 queries per device
mesh = jax.make_mesh((2, 4), ("batch", "patterns"))
rng = np.random.default_rng(0)
patterns = jnp.asarray(rng.standard_normal((K, D)) / 2)
queries = jnp.asarray(rng.standard_normal((B, D)))
out = {}
FUNCTIONS = ("energy", "descend", "grad", "fixed_point")


def ham_of(chunk_size):
    memory = hl.DenseMemory(patterns, hl.LSoftmax(3.0), chunk_size=chunk_size)
    layer = hl.NeuronLayer(hl.LIdentity(), (D,))
    return hl.HAM({"v": layer}, {"m": memory}, [(("v",), "m")])


def energy(ham, qs):
    return jax.vmap(lambda q: ham.energy({"v": q}))(qs)


def retrieve(ham, qs):
    sol = jax.vmap(lambda q: hl.descend(ham, {"v": q}, steps=10, dt=0.2))(qs)
    return sol.xs["v"], sol.energies


def fixed_point(ham, qs):
    return jax.vmap(lambda q: hl.fixed_point(ham, {"v": q}, tol=1e-10).xs["v"])(qs)


def loss(ham, qs):
    return jnp.mean((retrieve(ham, qs)[0] - qs) ** 2)


def grad(ham, qs):
    grads = eqx.filter_grad(loss)(ham, qs)
    return grads.synapses["m"].patterns, grads.synapses["m"].lagrangian.beta


def everything(ham, qs):
    return energy(ham, qs), retrieve(ham, qs), grad(ham, qs), fixed_point(ham, qs)


def streamed(ham, qs):  # fixed_point runs the same code as descend
    return energy(ham, qs), retrieve(ham, qs), grad(ham, qs)


def compiled(fn, *args):
    return eqx.filter_jit(fn).lower(*args).compile()


def gathers(compiled):
    # The all-gathers of the compiled program, and those with a K-sized dimension.
    text = compiled.compiled.as_text()
    lines = [l for l in text.splitlines() if re.search(r"all-gather(-start)?\(", l)]
    shapes = [re.findall(r"\[([\d,]*)\]", l) for l in lines]
    big = [l for l, s in zip(lines, shapes) if any(str(K) in d.split(",") for d in s)]
    return len(lines), len(big)


def error(a, b):
    a, b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return max(
        float(jnp.max(jnp.abs(x - y)) / (1e-300 + jnp.max(jnp.abs(y))))
        for x, y in zip(a, b)
    )


# Patterns split over "patterns" (4 ways), queries over "batch" (2 ways), against one
# device (where chunking changes nothing but the memory used). A chunk size that
# divides K streams each device's own patterns; one that does not is the control:
# its contiguous chunks gather the patterns, which the check must see.
qs = hl.shard_states(queries, mesh, batch_axis="batch")
reference = eqx.filter_jit(everything)(ham_of(None), queries)
for chunk_size in (None, 12, 10):
    sharded = hl.shard(ham_of(chunk_size), mesh, patterns_axis="patterns")
    spec = sharded.synapses["m"].patterns.sharding.spec
    row = {"spec": [str(s) for s in spec], "qspec": [str(s) for s in qs.sharding.spec]}
    if chunk_size == 10:
        row["gathers"] = gathers(compiled(energy, sharded, qs))
    else:
        program = compiled(everything if chunk_size is None else streamed, sharded, qs)
        row["gathers"] = gathers(program)
        results = program(sharded, qs)
        for name, got, expected in zip(FUNCTIONS, results, reference):
            row[name] = error(got, expected)
        p_grad = results[2][0]
        row["grad_shard_shape"] = list(p_grad.sharding.shard_shape(p_grad.shape))
    out[f"chunk {chunk_size}"] = row


# Data-parallel training: parameters replicated, the batch split over all 8 devices;
# optax steps equal one device's. (The gradient with the patterns split is above.)
optimizer = optax.adam(1e-2)


def step(ham, opt_state, qs):
    value, grads = eqx.filter_value_and_grad(loss)(ham, qs)
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int and float
        params = eqx.filter(ham, eqx.is_array)
        updates, opt_state = optimizer.update(grads, opt_state, params)
    return value, eqx.apply_updates(ham, updates), opt_state


def train(ham, qs, steps=2):
    opt_state = optimizer.init(eqx.filter(ham, eqx.is_array))
    program = compiled(step, ham, opt_state, qs)
    values = []
    for _ in range(steps):
        value, ham, opt_state = program(ham, opt_state, qs)
        values.append(value)
    return (values, eqx.filter(ham, eqx.is_array)), gathers(program)


ham = ham_of(None)
reference, _ = train(ham, queries)
placed = hl.shard(ham, mesh)
split = hl.shard_states(queries, mesh, batch_axis=("batch", "patterns"))
got, count = train(placed, split)
out["train"], out["train gathers"] = error(got, reference), count

# Placement errors on a real mesh: sizes that do not divide.
messages = []
for fn in (
    lambda: hl.shard(hl.DenseMemory(patterns[:10], hl.LSoftmax()), mesh,
                     patterns_axis="patterns"),
    lambda: hl.shard_states(queries[:3], mesh, batch_axis="batch"),
    lambda: hl.shard_states({"v": queries}, mesh, batch_axis=("batch", "patterns"))
    and hl.shard_states(queries[:4], mesh, batch_axis=("batch", "patterns")),
):
    try:
        fn()
    except ValueError as e:
        messages.append(str(e))
out["errors"] = messages
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def results():
    flags = os.environ.get("XLA_FLAGS", "")
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=8".strip(),
    }
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(line[len("RESULT ") :])


@pytest.mark.parametrize("chunk_size", [None, 12])
def test_sharded_memory_equals_one_device(results, chunk_size):
    # energy, descend (states and energy trace), the gradient through descend in
    # the patterns and beta, and (unchunked) fixed_point.
    row = results[f"chunk {chunk_size}"]
    assert row["spec"] == ["patterns", "None"] and row["qspec"] == ["batch", "None"]
    names = ["energy", "descend", "grad"] + (
        ["fixed_point"] if chunk_size is None else []
    )
    for name in names:
        assert row[name] < 1e-10, (name, row[name])
    # The patterns' gradient stays split: 12 of the 48 patterns per device.
    assert row["grad_shard_shape"] == [12, 6]


@pytest.mark.parametrize("chunk_size", [None, 12])
def test_sharded_memory_never_gathers_the_patterns(results, chunk_size):
    # No device receives all K patterns, nor any K-sized array: the log-sum-exp and
    # the gradient's sum over the memories are reduced across devices instead.
    count, k_sized = results[f"chunk {chunk_size}"]["gathers"]
    assert k_sized == 0, (count, k_sized)


def test_contiguous_chunks_of_sharded_patterns_are_gathered(results):
    # A chunk size that does not divide K streams contiguous chunks, which cross the
    # devices' blocks: the partitioner gathers the patterns (documented). This also
    # shows that the check above sees a K-sized all-gather when there is one.
    assert results["chunk 10"]["gathers"][1] > 0


def test_data_parallel_optax_step_equals_one_device(results):
    assert results["train"] < 1e-10
    assert results["train gathers"][1] == 0


def test_placement_errors_name_the_axis_and_the_sizes(results):
    patterns, batch, batch8 = results["errors"]
    assert "`patterns_axis` 'patterns' of size 4 in `shard` must divide" in patterns
    assert "got patterns of shape (10, 6)" in patterns
    assert "`batch_axis` 'batch' (of size 2) divides" in batch
    assert "got shape (3, 6)" in batch
    assert "(of size 8)" in batch8 and "got shape (4, 6)" in batch8


# ----------------------------------------------------------------------------------
# in this process (one device)
# ----------------------------------------------------------------------------------


def test_shard_on_one_device_changes_nothing_but_the_placement():
    mesh = jax.make_mesh((1,), ("patterns",))
    memory = hl.DenseMemory(jnp.ones((4, 3)), hl.LSoftmax(2.0))
    ham = hl.HAM(
        {"v": hl.NeuronLayer(hl.LIdentity(), (3,))}, {"m": memory}, [(("v",), "m")]
    )
    placed = hl.shard(ham, mesh, patterns_axis="patterns")
    states = hl.shard_states({"v": jnp.ones((2, 3))}, mesh, batch_axis="patterns")
    assert jax.tree_util.tree_structure(placed) == jax.tree_util.tree_structure(ham)
    patterns = placed.synapses["m"].patterns
    assert patterns.sharding.spec == jax.sharding.PartitionSpec("patterns", None)
    # `shard` places on `Auto` axes, on which JAX's partitioner chooses the
    # shardings of the library's products (`jax.make_mesh` makes `Explicit` ones).
    assert patterns.sharding.mesh.axis_types == (jax.sharding.AxisType.Auto,)
    energy = jax.jit(jax.vmap(lambda h, v: h.energy({"v": v}), (None, 0)))
    assert bool(jnp.all(energy(placed, states["v"]) == energy(ham, jnp.ones((2, 3)))))


def test_shard_refuses_unknown_axes():
    mesh = jax.make_mesh((1,), ("data",))
    memory = hl.DenseMemory(jnp.ones((4, 3)), hl.LSoftmax())
    with pytest.raises(ValueError, match=r"`patterns_axis` must name axes of the mesh"):
        hl.shard(memory, mesh, patterns_axis="model")
    with pytest.raises(ValueError, match=r"the mesh's axes are \('data',\)"):
        hl.shard_states(jnp.ones((2, 3)), mesh, batch_axis=("data", "model"))
    with pytest.raises(ValueError, match="the batch as its first axis"):
        hl.shard_states(jnp.ones(()), mesh, batch_axis="data")
    # A mesh axis named twice: our message, not JAX's `DuplicateSpecError`.
    for repeated in (("data", "data"), ["data", "data"]):
        with pytest.raises(ValueError, match="`patterns_axis` names the mesh axis 'd"):
            hl.shard(memory, mesh, patterns_axis=repeated)
        with pytest.raises(ValueError, match="`batch_axis` names the mesh axis 'dat"):
            hl.shard_states(jnp.ones((2, 3)), mesh, batch_axis=repeated)


def test_shard_type_errors_without_the_hook():
    out = run_without_hook(
        """
        import jax, jax.numpy as jnp
        import hamux_lagr as hl
        mesh = jax.make_mesh((1,), ("data",))
        memory = hl.DenseMemory(jnp.ones((4, 3)), hl.LSoftmax())
        for call in (
            lambda: hl.shard(memory, "data"),
            lambda: hl.shard_states(jnp.ones((2, 3)), None, batch_axis="data"),
            lambda: hl.shard(memory, mesh, patterns_axis=0),
            lambda: hl.shard_states({"v": "abc"}, mesh, batch_axis="data"),
        ):
            try:
                call()
            except TypeError as e:
                print(e)
        """
    )
    assert "`mesh` must be a `jax.sharding.Mesh` in `shard`, got str" in out
    assert "`mesh` must be a `jax.sharding.Mesh` in `shard_states`, got NoneType" in out
    assert "`patterns_axis` must be a mesh axis name, a tuple of them, or None" in out
    assert "`xs` must hold arrays in `shard_states`, got str 'abc'" in out
