r"""Placing a memory and its states on a mesh of devices.

A HAM is a pytree of arrays; JAX's SPMD partitioner runs `jax.jit`, `descend` and
`jax.grad` on arrays split over a `jax.sharding.Mesh` and inserts the communication
itself. These two helpers only choose the placement, with
`jax.sharding.NamedSharding`s:

- `shard(ham, mesh, patterns_axis=...)`: the stored patterns of every `DenseMemory`
  split along their first axis (the $K$ memories) over one mesh axis, every other
  array replicated;
- `shard_states(xs, mesh, batch_axis=...)`: a batch of states split along the batch
  axis over another mesh axis (data parallel).

A device then holds $K/n$ patterns and the similarities of its own patterns and
queries only; the energy's log-sum-exp and the gradient's sum over the memories are
reduced across devices by collectives of the batch's size, never of $K$.
"""

import math
from collections.abc import Sequence
from typing import Any, TypeVar

import equinox as eqx
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from ._synapses.dense_memory import DenseMemory


_Tree = TypeVar("_Tree")
#: A mesh axis name, several of them (their product is split over), or `None`.
AxisLike = str | Sequence[str] | None


def _auto_mesh(mesh: object, where: str) -> Mesh:
    """`mesh`, its axes made `AxisType.Auto`.

    `jax.make_mesh` makes `Explicit` axes by default, under which every product that
    contracts a split axis (the sum over the memories) must name its output's
    sharding; on `Auto` axes JAX's partitioner chooses them, for the library's code
    and the user's alike.
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"`mesh` must be a `jax.sharding.Mesh` in `{where}`, got "
            f"{type(mesh).__name__}; build one with e.g. "
            "`jax.make_mesh((2, 4), ('batch', 'patterns'))`."
        )
    if all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    auto = (AxisType.Auto,) * len(mesh.axis_names)
    return Mesh(mesh.devices, mesh.axis_names, axis_types=auto)


def _check_axis(axis: object, mesh: Mesh, name: str, where: str) -> Any:
    """`axis` as a `PartitionSpec` entry (a name or a tuple of names), checked to name
    axes of `mesh`."""
    if axis is None:
        return None
    names = (axis,) if isinstance(axis, str) else axis
    if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise TypeError(
            f"`{name}` must be a mesh axis name, a tuple of them, or None in "
            f"`{where}`, got {type(axis).__name__} {axis!r}."
        )
    unknown = [n for n in names if n not in mesh.axis_names]
    if unknown or not names:
        raise ValueError(
            f"`{name}` must name axes of the mesh in `{where}`, got {axis!r}; the "
            f"mesh's axes are {tuple(mesh.axis_names)}."
        )
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise ValueError(
            f"`{name}` names the mesh axis {', '.join(map(repr, repeated))} more than "
            f"once in `{where}`, got {axis!r}: an array axis is split over each mesh "
            f"axis at most once. Name each axis once, e.g. {repeated[0]!r}."
        )
    return names[0] if len(names) == 1 else tuple(names)


def _axis_size(mesh: Mesh, entry: Any) -> int:
    names = (entry,) if isinstance(entry, str) else entry
    return math.prod(mesh.shape[n] for n in names)


def _place(x: Any, sharding: NamedSharding) -> jax.Array:
    """`x` as a `jax.Array` with `sharding`.

    Across several processes (`jax.distributed.initialize`), each process passes the
    same host value and keeps the shards of its own devices.
    """
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.jit(lambda a: a, out_shardings=sharding)(x)  # already global
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda i: host[i])


def shard(tree: _Tree, mesh: Mesh, *, patterns_axis: AxisLike = None) -> _Tree:
    r"""Places a HAM (or any pytree of modules) on a mesh of devices.

    The patterns of every `DenseMemory` in `tree` are split along their first axis,
    the $K$ memories, over the mesh axis `patterns_axis`; every other array (the other
    synapses' weights, the Lagrangians' parameters) is replicated on all devices of
    the mesh. With `patterns_axis=None` everything is replicated: the placement for
    data-parallel training, with the batch split by `shard_states`.

    No device then holds all $K$ patterns, nor the similarities of all of them:
    `jax.jit`, `descend`, `fixed_point` and `jax.grad` run on the placed arrays as
    they are (JAX's SPMD partitioner reduces the log-sum-exp and the gradient's sum
    over the memories across devices, with collectives of the batch's size). The
    numbers equal those on one device, to float rounding.

    With several processes (`jax.distributed.initialize`, the mesh spanning the
    devices of all of them), every process calls `shard` on the same HAM (built from
    the same key or data) and keeps the shards of its own devices.

    !!! example

        ```python
        mesh = jax.make_mesh((2, 4), ("batch", "patterns"))
        ham = hamux_lagr.shard(ham, mesh, patterns_axis="patterns")
        queries = hamux_lagr.shard_states(queries, mesh, batch_axis="batch")
        retrieve = jax.jit(jax.vmap(lambda q: hamux_lagr.descend(
            ham, {"v": q}, steps=20, dt=0.1).xs["v"]))
        ```

    **Arguments:**

    - `tree`: a `hamux_lagr.HAM`, a `DenseMemory`, or any pytree of them and of
      arrays.
    - `mesh`: a `jax.sharding.Mesh`.
    - `patterns_axis`: the mesh axis (a name, or a tuple of names) the patterns are
      split over, or `None` (keyword-only). Its size must divide the number of
      patterns $K$ of every `DenseMemory`.

    **Returns:**

    `tree` with its arrays placed on `mesh` (`jax.sharding.NamedSharding`s).
    """
    where = "shard"
    mesh = _auto_mesh(mesh, where)
    entry = _check_axis(patterns_axis, mesh, "patterns_axis", where)
    replicated = NamedSharding(mesh, PartitionSpec())

    def place_memory(memory: DenseMemory) -> DenseMemory:
        patterns = memory.patterns
        size = _axis_size(mesh, entry)
        if patterns.shape[0] % size:
            raise ValueError(
                f"`patterns_axis` {patterns_axis!r} of size {size} in `{where}` must "
                f"divide the number of patterns, got patterns of shape "
                f"{patterns.shape}; choose a mesh axis whose size divides "
                f"{patterns.shape[0]}, or store a multiple of {size} patterns."
            )
        spec = PartitionSpec(entry, *([None] * (patterns.ndim - 1)))
        placed = _place(patterns, NamedSharding(mesh, spec))
        lagrangian = jax.tree_util.tree_map(
            lambda x: _place(x, replicated) if eqx.is_array(x) else x,
            memory.lagrangian,
        )
        return eqx.tree_at(
            lambda m: (m.patterns, m.lagrangian), memory, (placed, lagrangian)
        )

    def visit(node):
        if isinstance(node, DenseMemory) and entry is not None:
            return place_memory(node)
        if isinstance(node, DenseMemory):
            return jax.tree_util.tree_map(
                lambda x: _place(x, replicated) if eqx.is_array(x) else x, node
            )
        return _place(node, replicated) if eqx.is_array(node) else node

    return jax.tree_util.tree_map(
        visit, tree, is_leaf=lambda n: isinstance(n, DenseMemory)
    )


def shard_states(xs: _Tree, mesh: Mesh, *, batch_axis: AxisLike) -> _Tree:
    r"""Places a batch of states on a mesh of devices, split along the batch.

    Every array in `xs` has the batch first (a dict of `(B, *layer_shape)` states, or
    one `(B, D)` array of queries); it is split along that axis over the mesh axis
    `batch_axis` and replicated over the mesh's other axes: each device holds
    $B/n$ samples. `jax.vmap` of a one-sample `descend` or `fixed_point` then runs
    data parallel.

    **Arguments:**

    - `xs`: an array, or a pytree (e.g. a dict from layer name) of arrays, each with
      the batch as its first axis.
    - `mesh`: a `jax.sharding.Mesh`.
    - `batch_axis`: the mesh axis (a name, or a tuple of names) the batch is split
      over (keyword-only); `None` replicates the states. Its size must divide the
      batch size.

    **Returns:**

    `xs` with its arrays placed on `mesh` (`jax.sharding.NamedSharding`s).
    """
    where = "shard_states"
    mesh = _auto_mesh(mesh, where)
    entry = _check_axis(batch_axis, mesh, "batch_axis", where)
    size = 1 if entry is None else _axis_size(mesh, entry)

    def place(x):
        if not eqx.is_array_like(x) or isinstance(x, (str, bytes)):
            raise TypeError(
                f"`xs` must hold arrays in `{where}`, got {type(x).__name__} {x!r}."
            )
        shape = np.shape(x)
        if not shape or shape[0] % size:
            raise ValueError(
                f"Each state in `xs` must have the batch as its first axis, of a size "
                f"that `batch_axis` {batch_axis!r} (of size {size}) divides, in "
                f"`{where}`; got shape {shape}. Pad the batch to a multiple of {size}."
            )
        spec = PartitionSpec(entry, *([None] * (len(shape) - 1)))
        return _place(x, NamedSharding(mesh, spec))

    return jax.tree_util.tree_map(place, xs)
