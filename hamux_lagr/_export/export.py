r"""Export of functions built from `hamux_lagr`: to ONNX (through jax2onnx) and to
StableHLO (`jax.export`).

Both start from one jaxpr of the function, traced by JAX itself (so that `jax.grad`
inside `descend` is resolved into primitives before an exporter sees it), and
simplified by `jaxpr.simplify` (the model's arrays are constants: their checks are
settled at export time; calls are inlined; dead code and unneeded loop carries are
dropped). `to_onnx` then rewrites what jax2onnx converts wrongly (`onnx_rules`).
"""

import linecache
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.export
import jax.extend.core as jex
import numpy as np
from jax import lax
from jaxtyping import ArrayLike

from .jaxpr import Frame, HostCallbackError, Simplifier, simplify
from .onnx_rules import ONNX_RULES


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LIBRARIES = ("site-packages", "dist-packages", f"{os.sep}jax{os.sep}")


def _is_ours(file_name: str) -> bool:
    return os.path.abspath(file_name).startswith(_PACKAGE + os.sep)


def _is_relevant(file_name: str) -> bool:
    """Frames that locate an operation for a reader: ours and the user's."""
    return _is_ours(file_name) or not any(s in file_name for s in _LIBRARIES)


def _where(frame: Frame) -> str:
    file_name, line, function = frame
    if _is_ours(file_name):
        file_name = os.path.relpath(file_name, os.path.dirname(_PACKAGE))
    return f"{file_name}:{line} ({function})"


def _origin(frames: list[Frame]) -> str:
    """The innermost frame in `hamux_lagr`, else in the user's code; empty if none."""
    ours = [f for f in frames if _is_ours(f[0])]
    return _where((ours or frames)[0]) if frames else ""


def _source(frame: Frame) -> str:
    return linecache.getline(frame[0], frame[1]).strip()


def _callback_message(target: str, error: HostCallbackError) -> str:
    """Names the check left on the inputs: the line of `hamux_lagr` that made it (the
    outermost, in the function the user called) and the user's line calling it."""
    ours = [f for f in error.frames if _is_ours(f[0])]
    users = [f for f in error.frames if not _is_ours(f[0])]
    made = ""
    if ours:
        line = _source(ours[-1])
        made = f", made at {_where(ours[-1])}" + (f": `{line}`" if line else "")
    if users:
        line = _source(users[0])
        made += f", called from {_where(users[0])}" + (f": `{line}`" if line else "")
    head = (
        f"`{target}` cannot export a run-time check on the function's inputs "
        f"(a host callback, `{error.primitive}`{made}): an exported model cannot run "
        "it. "
    )
    if any(os.path.basename(f[0]) == "_validation.py" for f in ours):
        return head + (
            "It checks a parameter that `fn` gives as one of its inputs (a traced "
            "value; the line above names it): make that parameter a constant of the "
            "export, a Python number or an array `fn` closes over, which is checked "
            "at export time."
        )
    return head + (
        "`descend` and `fixed_point` make such checks on the states with "
        "`throw=True` (the default): export them with `throw=False` and read the "
        "`Solution`'s `finite` and `converged` fields instead. (Checks on the model's "
        "own parameters are evaluated at export time.)"
    )


def _specs(example_args: Sequence, target: str) -> list[jax.ShapeDtypeStruct]:
    specs = []
    for i, a in enumerate(jax.tree.leaves(example_args)):
        shape, dtype = getattr(a, "shape", None), getattr(a, "dtype", None)
        if shape is None or dtype is None:
            try:
                arr = np.asarray(a)
            except (TypeError, ValueError):
                arr = None
            if arr is None or arr.dtype == object or arr.dtype.kind in "USV":
                raise TypeError(
                    f"`example_args` of `{target}` must be arrays (or "
                    "`jax.ShapeDtypeStruct`s, or pytrees of them) with the inputs' "
                    f"shapes and dtypes; input leaf {i} is a {type(a).__name__}."
                )
            shape, dtype = arr.shape, arr.dtype
        # JAX's dtype for it: float64 is float32 unless x64 is enabled, as in
        # `jax.jit`, so the model's inputs are what the traced function computes on.
        dtype = jax.dtypes.canonicalize_dtype(dtype)
        specs.append(jax.ShapeDtypeStruct(tuple(shape), dtype))
    if not specs:
        raise ValueError(
            f"`{target}` needs at least one example input (the exported model's "
            "inputs), got none; pass e.g. `jnp.zeros((64,))` after `fn`."
        )
    return specs


def _simplified(fn: Callable, example_args: tuple, simplifier: Simplifier, target: str):
    """`fn`'s jaxpr on `example_args` (flattened), simplified; with the input specs and
    the input and output pytree structures."""
    if not callable(fn):
        raise TypeError(
            f"`fn` must be a function in `{target}`, got {type(fn).__name__}."
        )
    specs = _specs(example_args, target)
    in_tree = jax.tree.structure(example_args)
    out_trees = []

    def flat_fn(*leaves):
        out = fn(*jax.tree.unflatten(in_tree, leaves))
        flat, tree = jax.tree.flatten(out)
        out_trees.append(tree)
        return flat

    try:
        closed = simplify(flat_fn, specs, simplifier)
    except HostCallbackError as e:
        raise ValueError(_callback_message(target, e)) from None
    return closed, specs, in_tree, out_trees[0]


def _import_onnx_tools():
    try:
        import jax2onnx
        import onnx
    except ImportError as e:
        raise ImportError(
            f"`to_onnx` needs jax2onnx and onnx ({e}): `pip install "
            "hamux_lagr[export]` (jax2onnx, onnx and onnxruntime)."
        ) from None
    return jax2onnx, onnx


def _distinct_outputs(closed: jex.ClosedJaxpr) -> Callable:
    """The simplified function, each output a value of its own: an output that is an
    input, or another output, goes through a copy (ONNX names every value once)."""
    seen = set(closed.jaxpr.invars)
    copied = []
    for v in closed.jaxpr.outvars:
        copied.append(isinstance(v, jex.Var) and v in seen)
        seen.add(v)

    def model(*leaves):
        outs = jex.jaxpr_as_fun(closed)(*leaves)
        return [lax.copy_p.bind(x) if c else x for x, c in zip(outs, copied)]

    return model


def to_onnx(
    fn: Callable,
    *example_args: ArrayLike | jax.ShapeDtypeStruct | Any,
    path: str | os.PathLike | None = None,
):
    r"""Exports a function built from `hamux_lagr` to an ONNX model.

    Typically a retrieval, one sample or a `jax.vmap` batch:

    ```python
    recall = jax.vmap(
        lambda q: hl.descend(ham, {"v": q}, steps=20, dt=0.1, throw=False).xs["v"]
    )
    model = hl.to_onnx(recall, jnp.zeros((16, 64), jnp.float32), path="recall.onnx")
    ```

    The model's inputs are the leaves of `example_args` (fixed shapes and dtypes,
    named `input_0`, `input_1`, ...), its outputs the leaves of what `fn` returns
    (`output_0`, ...). The HAM and every array `fn` closes over are stored in the
    model as constants. Run it with onnxruntime (`onnxruntime.InferenceSession`) or
    in a browser with onnxruntime-web.

    How it exports (jax2onnx does the conversion): `fn` is traced by JAX, and its
    jaxpr evaluated once at export time wherever it depends on the model alone, so
    the gradients inside `descend` are plain operations and the checks on the model's
    parameters are settled then. Fixed-step `descend` becomes an ONNX `Loop` of
    `steps` iterations; a `tol`-stopped one, or `fixed_point`, a `Loop` with the same
    stop rule and the same bound (`steps`, `max_steps`). Energy traces and other
    values nobody returns are dropped. An input that is also an output, or a value
    returned twice, is copied (ONNX names each output once).

    The inputs take JAX's dtypes, as under `jax.jit`: a float64 example (a NumPy
    array, a Python float) gives a float32 input unless x64 is enabled
    (`jax_enable_x64`). The model computes in those dtypes.

    Exports exactly (to float32 rounding: tested against JAX to a relative 1e-5 on
    random inputs) every Lagrangian and every synapse of `hamux_lagr`.

    **Arguments:**

    - `fn`: a function of arrays returning an array or a pytree of arrays, traceable
      by JAX. Run-time checks on its inputs cannot be exported: call `descend` and
      `fixed_point` with `throw=False`, and give them parameters (`dt`, ...) as
      constants rather than as inputs of `fn` where they would be checked at run
      time.
    - `example_args`: one example per input of `fn` (arrays, `jax.ShapeDtypeStruct`s
      or pytrees of them), giving the shapes and dtypes of the model's inputs.
    - `path`: if given, where to write the model (a `.onnx` file, self-contained).

    **Returns:**

    The `onnx.ModelProto`.

    **Raises:**

    `ImportError` without the extra (`pip install hamux_lagr[export]`); `ValueError`
    for a run-time check on the inputs (a host callback, such as `descend`'s with
    `throw=True`), naming the line that made it, or for an operation ONNX cannot
    express, naming it and where it was made.
    """
    jax2onnx, onnx = _import_onnx_tools()
    simplifier = Simplifier(ONNX_RULES, _is_relevant)
    closed, specs, _, _ = _simplified(fn, example_args, simplifier, "to_onnx")
    error = _unsupported(closed, simplifier.origins)
    if error is not None:
        raise error
    try:
        proto = jax2onnx.to_onnx(
            _distinct_outputs(closed),
            specs,
            model_name="hamux_lagr",
            enable_double_precision=any(s.dtype == np.float64 for s in specs),
            input_names=[f"input_{i}" for i in range(len(specs))],
            output_names=[f"output_{i}" for i in range(len(closed.out_avals))],
        )
    except NotImplementedError as e:
        left = "; ".join(
            f"`{p}` ({_origin(w) or 'unknown'})"
            for p, w in sorted(simplifier.origins.items())
        )
        raise ValueError(
            f"`to_onnx`: jax2onnx could not convert `fn` ({e}). The operations left "
            f"in it come from: {left}."
        ) from e
    if path is not None:
        onnx.save(proto, os.fspath(path))
    return proto


def _unsupported(closed, origins: dict[str, list[Frame]]) -> ValueError | None:
    """The primitives left in `closed` that jax2onnx has no conversion for, named
    with where each was made (`None` if there are none)."""
    from jax2onnx.plugins import plugin_system

    plugin_system.import_all_plugins()  # what `jax2onnx.to_onnx` does first
    found = {e.primitive.name for e in _subjaxprs(closed.jaxpr)}
    missing = sorted(found - set(plugin_system.PLUGIN_REGISTRY))
    if not missing:
        return None
    pieces = ", ".join(
        f"`{p}`" + (f" (made at {_origin(origins[p])})" if origins.get(p) else "")
        for p in missing
    )
    return ValueError(
        f"`to_onnx` cannot export {pieces}: jax2onnx has no ONNX conversion for it. "
        "Express that part with other operations (for a Lagrangian, one of the "
        "`hamux_lagr` Lagrangians, which all export), or export with "
        "`to_jax_export` (StableHLO) instead."
    )


def _subjaxprs(jaxpr) -> Iterator:
    """Every equation of `jaxpr`, and of the jaxprs its equations hold."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, (jex.Jaxpr, jex.ClosedJaxpr)):
                    yield from _subjaxprs(getattr(sub, "jaxpr", sub))


def to_jax_export(
    fn: Callable,
    *example_args: ArrayLike | jax.ShapeDtypeStruct | Any,
    path: str | os.PathLike | None = None,
) -> jax.export.Exported:
    r"""Exports a function built from `hamux_lagr` with `jax.export` (StableHLO), for
    deployment from JAX to JAX.

    ```python
    recall = lambda q: hl.descend(ham, {"v": q}, steps=20, dt=0.1, throw=False).xs["v"]
    exported = hl.to_jax_export(recall, jnp.zeros((64,), jnp.float32), path="recall.bin")
    # elsewhere, without hamux_lagr or the model's code:
    exported = jax.export.deserialize(bytearray(open("recall.bin", "rb").read()))
    exported.call(query)
    ```

    It is `jax.export.export(jax.jit(fn))(*example_args)` of the simplified function
    that `to_onnx` exports too: a check that `eqx.error_if` makes on a traced value
    is a host callback, which `jax.export` cannot serialise ("serialization of host
    callbacks is not yet implemented"); those on the model's parameters are
    evaluated here at export time, as the parameters are constants of the exported
    function. The result is the forward pass (custom derivative rules are not kept).
    The inputs take JAX's dtypes, as under `jax.jit`; a `jax.ShapeDtypeStruct` with
    a symbolic batch size (`jax.export.symbolic_shape("b, 64")`) exports a function
    of any batch.

    **Arguments:**

    - `fn`: a function of arrays returning an array or a pytree of arrays. Run-time
      checks on its inputs cannot be serialised: call `descend` and `fixed_point`
      with `throw=False`.
    - `example_args`: one example per input of `fn` (arrays, `jax.ShapeDtypeStruct`s
      or pytrees of them), giving the shapes and dtypes; `exported.call` takes
      inputs of the same structure.
    - `path`: if given, where to write `exported.serialize()` (which needs the
      `flatbuffers` package: `pip install hamux_lagr[export]` brings it).

    **Returns:**

    The `jax.export.Exported`.

    **Raises:**

    `ValueError` for a run-time check on the inputs (a host callback, such as
    `descend`'s with `throw=True`), naming the line that made it.
    """
    simplifier = Simplifier(relevant=_is_relevant)
    closed, specs, in_tree, out_tree = _simplified(
        fn, example_args, simplifier, "to_jax_export"
    )

    def exported_fn(*args):
        out = jex.jaxpr_as_fun(closed)(*jax.tree.leaves(args))
        return jax.tree.unflatten(out_tree, out)

    args = jax.tree.unflatten(in_tree, specs)
    exported = jax.export.export(jax.jit(exported_fn))(*args)
    if path is not None:
        with open(os.fspath(path), "wb") as f:
            f.write(exported.serialize())
    return exported
