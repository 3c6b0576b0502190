r"""hopfield-layers' `state_dict` keys and layouts, to and from our layers' fields.

Each torch key is an `Entry`: its torch shape and the fields it is made of,
concatenated along the first axis (`in_proj_weight` is the query, key and value
projections stacked; `in_proj_bias` likewise) or reshaped (`bias_k` is `(1, 1, n)`,
ours `(n,)`; `pooling_weights` is `(1, quantity, d)`, ours `(quantity, d)`).
"""

from collections.abc import Mapping
from typing import Any, NamedTuple

import equinox as eqx
import jax.numpy as jnp
import numpy as np


Path = tuple[str, ...]


class Entry(NamedTuple):
    key: str
    torch_shape: tuple[int, ...]
    # (field path, our shape); a `None` path is a part of the torch array that we do
    # not use (the value bias of a static pattern projection): zeros on the way out,
    # dropped on the way in.
    parts: tuple[tuple[Path | None, tuple[int, ...]], ...]


def _get(module: Any, path: Path) -> Any:
    for name in path:
        module = getattr(module, name)
    return module


def hopfield_entries(layer: Any, path: Path, prefix: str = "") -> list[Entry]:
    """The entries of a `Hopfield` at `path` inside a module, torch keys under
    `prefix`."""
    entries: list[Entry] = []
    core = prefix + "association_core."

    def field(name: str) -> tuple[Path, tuple[int, ...]] | None:
        value = getattr(layer, name)
        return None if value is None else ((*path, name), tuple(value.shape))

    def add(key: str, torch_shape: tuple[int, ...] | None, *parts) -> None:
        parts = tuple(p for p in parts if p is not None)
        if not parts:
            return
        if torch_shape is None:
            rows = sum(shape[0] for _, shape in parts)
            torch_shape = (rows, *parts[0][1][1:])
        entries.append(Entry(key, torch_shape, parts))

    q, k, v = field("q_weight"), field("k_weight"), field("v_weight")
    if not layer.static_execution:
        if layer.separate_weights:
            add(core + "q_proj_weight", None, q)
            add(core + "k_proj_weight", None, k)
            add(core + "v_proj_weight", None, v)
        else:
            add(core + "in_proj_weight", None, q, k, v)
        static = (
            layer.state_pattern_as_static
            and layer.stored_pattern_as_static
            and layer.pattern_projection_as_static
        )
        if layer.input_bias and not static:
            vb = field("v_bias") or (None, (layer.num_heads * layer.pattern_size,))
            add(core + "in_proj_bias", None, field("q_bias"), field("k_bias"), vb)
    add(core + "out_proj.weight", None, field("out_weight"))
    add(core + "out_proj.bias", None, field("out_bias"))
    for key, name in (("bias_k", "bias_key"), ("bias_v", "bias_value")):
        part = field(name)
        if part is not None:
            add(core + key, (1, 1, *part[1]), part)
    add(core + "p_norm_weight", None, field("hopfield_norm_weight"))
    add(core + "p_norm_bias", None, field("hopfield_norm_bias"))
    for torch_name, ours in (
        ("norm_stored_pattern", "stored_norm"),
        ("norm_state_pattern", "state_norm"),
        ("norm_pattern_projection", "projection_norm"),
    ):
        add(f"{prefix}{torch_name}.weight", None, field(f"{ours}_weight"))
        add(f"{prefix}{torch_name}.bias", None, field(f"{ours}_bias"))
    return entries


def weights_entry(layer: Any, name: str, key: str) -> list[Entry]:
    """A `(quantity, d)` field stored by torch as `(1, quantity, d)`."""
    value = getattr(layer, name)
    if value is None:
        return []
    shape = tuple(value.shape)
    return [Entry(key, (1, *shape), (((name,), shape),))]


def to_state_dict(module: Any, entries: list[Entry]) -> dict[str, np.ndarray]:
    out = {}
    for entry in entries:
        arrays = []
        dtype = None
        for path, shape in entry.parts:
            if path is not None:
                arr = np.asarray(_get(module, path))
                dtype = arr.dtype
                arrays.append(arr)
            else:
                arrays.append(None)
        arrays = [
            np.zeros(shape, dtype) if a is None else a
            for a, (_, shape) in zip(arrays, entry.parts)
        ]
        out[entry.key] = np.concatenate(arrays, axis=0).reshape(entry.torch_shape)
    return out


def from_state_dict(module: Any, state_dict: Mapping, entries: list[Entry]) -> Any:
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            "`state_dict` must be a mapping from hopfield-layers' keys to arrays "
            f"(`module.state_dict()`), got {type(state_dict).__name__}."
        )
    expected = [e.key for e in entries]
    given = [str(k) for k in state_dict]
    unknown = sorted(set(given) - set(expected))
    if unknown:
        raise ValueError(
            f"`state_dict` has the key {unknown[0]!r}, which a {type(module).__name__} "
            f"built with these arguments does not have; its keys are {expected}. "
            "Pass the constructor arguments the PyTorch module was built with."
        )
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise ValueError(
            f"`state_dict` lacks the key {missing[0]!r} that a "
            f"{type(module).__name__} built with these arguments has; its keys are "
            f"{expected}. Pass the constructor arguments the PyTorch module was "
            "built with."
        )
    for entry in entries:
        try:
            arr = np.asarray(state_dict[entry.key])
        except Exception as e:  # a tensor that needs `.detach()`, say
            raise TypeError(
                f"`state_dict[{entry.key!r}]` could not be read as an array ({e}); "
                "pass `.detach().cpu()` tensors or NumPy arrays."
            ) from None
        if arr.shape != entry.torch_shape:
            raise ValueError(
                f"`state_dict[{entry.key!r}]` has shape {arr.shape}, but this "
                f"{type(module).__name__} expects {entry.torch_shape}; pass the "
                "constructor arguments the PyTorch module was built with."
            )
        if not np.issubdtype(arr.dtype, np.floating):
            raise TypeError(
                f"`state_dict[{entry.key!r}]` must be floating, got {arr.dtype}."
            )
        rows = sum(shape[0] for _, shape in entry.parts)
        flat = arr.reshape(rows, *entry.parts[0][1][1:])
        start = 0
        for path, shape in entry.parts:
            piece = flat[start : start + shape[0]].reshape(shape)
            start += shape[0]
            if path is None:
                continue
            module = eqx.tree_at(
                lambda m, p=path: _get(m, p), module, jnp.asarray(piece)
            )
    return module
