r"""Export of functions built from `hamux_lagr`: to ONNX (through jax2onnx) and to
StableHLO (`jax.export`).

Both start from one jaxpr of the function, traced by JAX itself (so that `jax.grad`
inside `descend` is resolved into primitives before an exporter sees it), then
*simplified* by evaluating that jaxpr once, abstractly:

- the model's own arrays are constants of the jaxpr, and everything computed from
  them alone (a clamped `beta`, the checks `eqx.error_if` makes on parameters) is
  computed at export time: a check on a constant holds, or raises, then, and leaves no
  host callback behind;
- calls (`jax.jit`, `jax.checkpoint`, custom derivative rules) are inlined: an export
  is the forward pass;
- loops (`lax.scan`, `lax.while_loop`) and `lax.cond` stay loops and conditionals,
  their bodies simplified the same way; loop carries no output needs (an energy
  trace nobody reads) are dropped, and so is all other dead code;
- a run-time check on the *inputs* (`throw=True`) is a host callback, which no
  exporter can serialise: it raises a `ValueError` naming the check and the fix.
"""

import contextlib
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.core
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import ArrayLike


# Primitives whose jaxpr is inlined (the forward pass of a call, or of a function with
# a custom derivative rule), with the parameter that holds it.
_INLINED = {
    "pjit": "jaxpr",
    "jit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "remat2": "jaxpr",
    "checkpoint": "jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
}
_CALLBACKS = ("pure_callback", "io_callback", "debug_callback")
# A folded constant this large whose entries are all equal enters the exported graph
# as a broadcast of its one value, not as stored data (`jnp.ones((K, D))`).
_UNIFORM_CONSTANT_SIZE = 64


def _dtype(x):
    return x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _as_graph_value(x):
    """A concrete value entering the traced graph: a large uniform array becomes a
    broadcast of its one value."""
    if not _is_concrete(x) or jnp.issubdtype(_dtype(x), jax.dtypes.extended):
        return x
    a = np.asarray(x)
    if a.size > _UNIFORM_CONSTANT_SIZE and np.all(a == a.reshape(-1)[0]):
        return lax.broadcast(a.reshape(-1)[0], a.shape)
    return x


def _origin(eqn) -> str:
    """Where `eqn` was made, as `file:line (function)`: the innermost frame in
    `hamux_lagr`, else in the user's code; empty if JAX kept no traceback."""
    try:
        frames = list(eqn.source_info.traceback.frames)
    except AttributeError:
        return ""
    package = os.path.dirname(os.path.abspath(__file__))
    here = os.path.abspath(__file__)
    frames = [f for f in frames if os.path.abspath(f.file_name) != here]
    ours = [
        f for f in frames if os.path.abspath(f.file_name).startswith(package + os.sep)
    ]
    if ours:
        f = ours[0]
        name = os.path.relpath(f.file_name, os.path.dirname(package))
        return f"{name}:{f.line_num} ({f.function_name})"
    skip = ("site-packages", "dist-packages", f"{os.sep}jax{os.sep}")
    user = [f for f in frames if not any(s in f.file_name for s in skip)]
    if user:
        f = user[0]
        return f"{f.file_name}:{f.line_num} ({f.function_name})"
    return ""


def _dependencies(jaxpr) -> list[set[int]]:
    """For each output of `jaxpr`, the inputs (by index) it may depend on (each
    equation's outputs are taken to depend on all its inputs)."""
    deps: dict = {v: {i} for i, v in enumerate(jaxpr.invars)}
    for eqn in jaxpr.eqns:
        d: set[int] = set()
        for v in eqn.invars:
            if isinstance(v, jex.Var):
                d |= deps.get(v, set())
        for v in eqn.outvars:
            deps[v] = d
    return [
        deps.get(v, set()) if isinstance(v, jex.Var) else set() for v in jaxpr.outvars
    ]


def _open(closed):
    return closed.jaxpr if isinstance(closed, jex.ClosedJaxpr) else closed


def _needed_carries(
    body, first_carry: int, num_carry: int, roots: set[int], start: set[int]
) -> list[bool]:
    """The loop carries needed: those in `start`, and every carry that a needed carry
    or a body output in `roots` depends on through the body (whose outputs begin
    with the carries, and whose inputs hold them from `first_carry`)."""
    deps = _dependencies(_open(body))
    needed = set(start)
    outputs = [*start, *roots]
    while outputs:
        for j in deps[outputs.pop()]:
            c = j - first_carry
            if 0 <= c < num_carry and c not in needed:
                needed.add(c)
                outputs.append(c)
    return [i in needed for i in range(num_carry)]


def _while_carries(eqn, used: list[bool]) -> list[bool]:
    p = eqn.params
    nc, nb = p["cond_nconsts"], p["body_nconsts"]
    (cond_deps,) = _dependencies(_open(p["cond_jaxpr"]))
    start = {i for i, u in enumerate(used) if u} | {
        j - nc for j in cond_deps if j >= nc
    }
    return _needed_carries(p["body_jaxpr"], nb, len(used), set(), start)


def _scan_carries(eqn, used: list[bool]) -> list[bool]:
    p = eqn.params
    ncarry = p["num_carry"]
    start = {i for i in range(ncarry) if used[i]}
    roots = {i for i in range(ncarry, len(used)) if used[i]}
    return _needed_carries(p["jaxpr"], p["num_consts"], ncarry, roots, start)


def _needed_inputs(eqn, used: list[bool]) -> list[bool]:
    """Which inputs of `eqn` are needed for its `used` outputs."""
    name, n = eqn.primitive.name, len(eqn.invars)
    if name == "while":
        nconsts = eqn.params["cond_nconsts"] + eqn.params["body_nconsts"]
        return [True] * nconsts + _while_carries(eqn, used)
    if name == "scan":
        nconsts, ncarry = eqn.params["num_consts"], eqn.params["num_carry"]
        carries = _scan_carries(eqn, used)
        return [True] * nconsts + carries + [True] * (n - nconsts - ncarry)
    return [True] * n


def _live_equations(jaxpr, used: Sequence[bool]) -> list[list[bool] | None]:
    """For each equation, which of its outputs are used (`None`: none, and it has no
    effects: dead code)."""
    live = {v for v, u in zip(jaxpr.outvars, used) if u and isinstance(v, jex.Var)}
    plan: list[list[bool] | None] = [None] * len(jaxpr.eqns)
    for k in reversed(range(len(jaxpr.eqns))):
        eqn = jaxpr.eqns[k]
        outs = [v in live for v in eqn.outvars]
        if not any(outs) and not eqn.effects:
            continue
        plan[k] = outs
        for v, needed in zip(eqn.invars, _needed_inputs(eqn, outs)):
            if needed and isinstance(v, jex.Var):
                live.add(v)
    return plan


class _Simplifier:
    """Evaluates a jaxpr concretely where it can and traced where it must.

    `rules` maps a primitive's name to `(eqn, invals) -> outvals`, the form an export
    target wants it in (a traced equation without a rule is bound as it is).
    `origins` records, for each primitive left in the graph, where the first one was
    made (for error messages)."""

    def __init__(self, target: str, rules: dict[str, Callable] | None = None):
        self.target = target
        self.rules = rules or {}
        self.origins: dict[str, str] = {}
        self.context: list = []

    def evaluate(self, closed, args, used: Sequence[bool] | None = None) -> list:
        jaxpr = _open(closed)
        consts = closed.consts if isinstance(closed, jex.ClosedJaxpr) else ()
        if used is None:
            used = [True] * len(jaxpr.outvars)
        env: dict = {}

        def read(v):
            return v.val if isinstance(v, jex.Literal) else env[v]

        env.update(zip(jaxpr.constvars, consts))
        env.update(zip(jaxpr.invars, args))
        for eqn, outs in zip(jaxpr.eqns, _live_equations(jaxpr, used)):
            if outs is None:
                continue
            needed = _needed_inputs(eqn, outs)
            invals = [read(v) if n else None for v, n in zip(eqn.invars, needed)]
            env.update(zip(eqn.outvars, self.equation(eqn, invals, outs)))
        return [read(v) if u else None for v, u in zip(jaxpr.outvars, used)]

    def equation(self, eqn, invals: list, used: list[bool]) -> list:
        name = eqn.primitive.name
        # (A callback is never run here: in a branch of a traced `lax.cond`, it would
        # run whether or not the branch is taken.)
        foldable = name not in _CALLBACKS and not eqn.effects
        if foldable and all(_is_concrete(x) for x in invals):
            if name not in ("while", "scan") or all(x is not None for x in invals):
                # Folded: a value of the model alone is computed now (and a check on
                # it raises now, if it fails).
                with jax.ensure_compile_time_eval():
                    return _bind(eqn, invals)
        if name in _INLINED or name in ("custom_linear_solve", "cond", "while", "scan"):
            self.context.append(eqn)
            try:
                return self.structured(eqn, invals, used)
            finally:
                self.context.pop()
        if name in _CALLBACKS:
            raise _callback_error(self.origin(eqn), eqn.primitive.name, self.target)
        self.origins.setdefault(name, self.origin(eqn))
        invals = [_as_graph_value(x) for x in invals]
        rule = self.rules.get(name)
        return rule(eqn, invals) if rule is not None else _bind(eqn, invals)

    def structured(self, eqn, invals: list, used: list[bool]) -> list:
        """An equation holding jaxprs: inlined, or rebuilt from simplified ones."""
        name = eqn.primitive.name
        if name in _INLINED:
            return self.evaluate(eqn.params[_INLINED[name]], invals, used)
        if name == "custom_linear_solve":
            # The forward solve (the other jaxprs are its derivative rules).
            split = np.cumsum([0, *eqn.params["const_lengths"]])
            solve_consts = invals[split[2] : split[3]]
            b = invals[split[-1] :]
            return self.evaluate(eqn.params["jaxprs"].solve, [*solve_consts, *b], used)
        if name == "cond":
            return self.cond(eqn, invals, used)
        if name == "while":
            return self.while_loop(eqn, invals, used)
        return self.scan(eqn, invals, used)

    def origin(self, eqn) -> str:
        """Where `eqn` was made, or else the innermost enclosing equation (a branch
        traced inside a library keeps only the library's frames)."""
        for e in [eqn, *reversed(self.context)]:
            where = _origin(e)
            if where:
                return where
        return ""

    def cond(self, eqn, invals: list, used: list[bool]) -> list:
        index, *operands = invals
        branches = eqn.params["branches"]
        if _is_concrete(index):
            chosen = branches[int(np.clip(int(index), 0, len(branches) - 1))]
            return self.evaluate(chosen, operands, used)

        def branch(b):
            return lambda *ops: self.evaluate(b, ops, used)

        operands = [None if x is None else _as_graph_value(x) for x in operands]
        return list(lax.switch(index, [branch(b) for b in branches], *operands))

    def while_loop(self, eqn, invals: list, used: list[bool]) -> list:
        """`lax.while_loop` again, from the simplified condition and body, over the
        needed carries only. Under `jax.vmap` the `while` primitive takes a batched
        predicate (it loops while any sample goes on, holding each sample's carry once
        its own predicate is false): written out here as `any` in the condition and a
        `select` in the body, the form every exporter reads."""
        p = eqn.params
        nc, nb = p["cond_nconsts"], p["body_nconsts"]
        cond_consts, body_consts = invals[:nc], invals[nc : nc + nb]
        carried = _while_carries(eqn, used)
        avals = [v.aval for v in eqn.outvars]
        kept = [i for i, c in enumerate(carried) if c]

        def full(sub):
            values: list = [None] * len(carried)
            for i, x in zip(kept, sub):
                values[i] = x
            return values

        def predicate(sub):
            (out,) = self.evaluate(p["cond_jaxpr"], [*cond_consts, *full(sub)])
            return out

        def cond(sub):
            pred = predicate(sub)
            return pred if np.ndim(pred) == 0 else lax.reduce_or(pred, range(pred.ndim))

        def body(sub):
            out = self.evaluate(p["body_jaxpr"], [*body_consts, *full(sub)], carried)
            new = _like([out[i] for i in kept], [avals[i] for i in kept])
            pred = predicate(sub)
            if np.ndim(pred) == 0:
                return new
            dims = tuple(range(pred.ndim))
            return [
                lax.select(lax.broadcast_in_dim(pred, x.shape, dims), x, old)
                for x, old in zip(new, sub)
            ]

        init = _like([invals[nc + nb + i] for i in kept], [avals[i] for i in kept])
        return full(lax.while_loop(cond, body, init))

    def scan(self, eqn, invals: list, used: list[bool]) -> list:
        """`lax.scan` again, from the simplified body, over the needed carries."""
        p = eqn.params
        nc, ncarry = p["num_consts"], p["num_carry"]
        consts, xs = invals[:nc], invals[nc + ncarry :]
        carried = _scan_carries(eqn, used)
        kept = [i for i, c in enumerate(carried) if c]
        ys_used = used[ncarry:]
        avals = [v.aval for v in eqn.outvars[:ncarry]]

        def body(sub, x):
            carry: list = [None] * ncarry
            for i, c in zip(kept, sub):
                carry[i] = c
            out = self.evaluate(
                p["jaxpr"], [*consts, *carry, *(x or ())], carried + ys_used
            )
            new = _like([out[i] for i in kept], [avals[i] for i in kept])
            return new, [y for y, u in zip(out[ncarry:], ys_used) if u]

        init = _like([invals[nc + i] for i in kept], [avals[i] for i in kept])
        sub, ys = lax.scan(
            body,
            init,
            [_as_graph_value(x) for x in xs] if xs else None,
            length=p["length"],
            reverse=p["reverse"],
            unroll=p["unroll"],
        )
        carry: list = [None] * ncarry
        for i, c in zip(kept, sub):
            carry[i] = c
        ys = iter(ys)
        return [*carry, *(next(ys) if u else None for u in ys_used)]


def _like(values: list, avals: list) -> list:
    """Loop carries typed as the loop's (a folded constant is a NumPy value, or may
    have lost its weak type)."""
    out = []
    for x, aval in zip(values, avals):
        x = _as_graph_value(x)
        if _is_concrete(x):
            x = jnp.asarray(x, dtype=aval.dtype)
        out.append(x)
    return out


def _bind(eqn, invals, params=None) -> list:
    """`eqn`'s primitive applied to `invals` (with `params`, by default its own)."""
    params = eqn.primitive.get_bind_params(eqn.params if params is None else params)
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _callback_error(origin: str, primitive: str, target: str) -> ValueError:
    at = f", made at {origin}" if origin else ""
    return ValueError(
        f"`{target}` cannot export a run-time check on the function's inputs: "
        f"`eqx.error_if` raises through a host callback (`{primitive}`{at}), "
        "which an exported model cannot run. `descend` and `fixed_point` make such "
        "checks with `throw=True` (the default): export them with `throw=False` and "
        "read the `Solution`'s `finite` and `converged` fields instead. (Checks on "
        "the model's own parameters are evaluated at export time.)"
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
        specs.append(jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype)))
    if not specs:
        raise ValueError(
            f"`{target}` needs at least one example input (the exported model's "
            "inputs), got none; pass e.g. `jnp.zeros((64,))` after `fn`."
        )
    return specs


def _simplified(fn: Callable, example_args: tuple, simplifier: _Simplifier):
    """`fn`'s jaxpr on `example_args` (flattened), simplified; with the input and
    output pytree structures."""
    if not callable(fn):
        raise TypeError(
            f"`fn` must be a function in `{simplifier.target}`, got "
            f"{type(fn).__name__}."
        )
    specs = _specs(example_args, simplifier.target)
    in_tree = jax.tree.structure(example_args)
    out_trees = []

    def flat_fn(*leaves):
        out = fn(*jax.tree.unflatten(in_tree, leaves))
        flat, tree = jax.tree.flatten(out)
        out_trees.append(tree)
        return flat

    closed = jax.make_jaxpr(flat_fn)(*specs)
    simplified = jax.make_jaxpr(lambda *a: simplifier.evaluate(closed, a))(*specs)
    return simplified, specs, in_tree, out_trees[0]


def _subjaxprs(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, (jex.Jaxpr, jex.ClosedJaxpr)):
                    yield from _subjaxprs(_open(sub))


def _dot_general_for_onnx(eqn, invals) -> list:
    """jax2onnx (0.17) lowers a 2-D `dot_general` without batch dimensions to a
    `Gemm` that contracts the first operand's *last* axis, whatever the dimension
    numbers say. Reverse-mode gradients of `patterns @ g` under `jax.vmap` contract
    the first axis (the (K, batch) layout of `DenseMemory`): transpose that operand
    first."""
    lhs, rhs = invals
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    if not lb and not rb and tuple(lc) == (0,) and np.ndim(lhs) == 2:
        lhs = lax.transpose(lhs, (1, 0))
        dims = (((1,), tuple(rc)), ((), ()))
        return _bind(eqn, [lhs, rhs], dict(eqn.params, dimension_numbers=dims))
    return _bind(eqn, invals)


def _scatter_for_onnx(eqn, invals) -> list:
    """A point update `x.at[i].set(v)` under `jax.vmap` (one index per sample, into
    a buffer such as `descend`'s energy trace), which jax2onnx (0.17) has no
    conversion for, as a one-hot `select`. Other scatters go to jax2onnx as they are."""
    operand, indices, updates = invals
    p = eqn.params
    dn = p["dimension_numbers"]
    batch_o = tuple(dn.operand_batching_dims)
    batch_i = tuple(dn.scatter_indices_batching_dims)
    scattered = tuple(dn.scatter_dims_to_operand_dims)
    point_update = (
        p.get("update_jaxpr") is None
        and not dn.update_window_dims
        and sorted(dn.inserted_window_dims) == sorted(scattered)
        and sorted(batch_o + scattered) == list(range(operand.ndim))
        and sorted(batch_i) == list(range(indices.ndim - 1))
        and indices.shape[-1] == len(scattered)
        and updates.shape == indices.shape[:-1]
    )
    if not point_update:
        return _bind(eqn, invals)
    # Axis j of `updates` (and of the index arrays) is operand axis batch_o[k] for
    # the k with batch_i[k] == j; move them into operand order, then broadcast.
    order = sorted(range(len(batch_i)), key=lambda j: batch_o[batch_i.index(j)])
    dims = tuple(sorted(batch_o))

    def spread(x):
        return lax.broadcast_in_dim(lax.transpose(x, order), operand.shape, dims)

    mask = None
    for k, axis in enumerate(scattered):
        index = lax.index_in_dim(indices, k, axis=indices.ndim - 1, keepdims=False)
        if p["mode"] == lax.GatherScatterMode.CLIP:
            dtype = _dtype(index)
            size = np.asarray(operand.shape[axis] - 1, dtype)
            index = lax.clamp(np.zeros((), dtype), index, size)
        iota = lax.broadcasted_iota(_dtype(index), operand.shape, axis)
        hit = lax.eq(iota, spread(index))
        mask = hit if mask is None else lax.bitwise_and(mask, hit)
    assert mask is not None
    updates = lax.convert_element_type(updates, _dtype(operand))
    return [lax.select(mask, spread(updates), operand)]


def _lu_for_onnx(eqn, invals) -> list:
    """A batched LU factorisation (the small least-squares solve of Anderson
    acceleration in `fixed_point`, under `jax.vmap`), which jax2onnx (0.17) converts
    for single matrices only: one factorisation per matrix of the (static) batch."""
    (x,) = invals
    if np.ndim(x) <= 2:
        return _bind(eqn, invals)
    batch, matrix = x.shape[:-2], x.shape[-2:]
    flat = lax.reshape(x, (int(np.prod(batch)), *matrix))
    parts = [_bind(eqn, [flat[b]]) for b in range(flat.shape[0])]
    outs = []
    for k, aval in enumerate(v.aval for v in eqn.outvars):
        stacked = lax.concatenate([lax.expand_dims(p[k], (0,)) for p in parts], 0)
        outs.append(lax.reshape(stacked, aval.shape))
    return outs


def _select_n_for_onnx(eqn, invals) -> list:
    """`select_n` of boolean cases (a batched loop's `converged` flag) through int32:
    onnxruntime has no `Where` kernel for booleans."""
    which, *cases = invals
    if _dtype(cases[0]) != np.bool_:
        return _bind(eqn, invals)
    ints = [lax.convert_element_type(c, np.int32) for c in cases]
    (out,) = _bind(eqn, [which, *ints])
    return [lax.ne(out, np.zeros((), np.int32))]


def _conv_for_onnx(eqn, invals) -> list:
    """A convolution in the layouts (N, C, spatial...), (O, I, spatial...), the only
    ones jax2onnx (0.17) converts: the gradient of `ConvSynapse`'s energy with respect
    to its input layer is a convolution with an (I, O, ...) kernel, so transpose the
    operands into those layouts, and the result back."""
    lhs, rhs = invals
    dn = eqn.params["dimension_numbers"]
    canonical = tuple(range(np.ndim(lhs)))
    if (dn.lhs_spec, dn.rhs_spec, dn.out_spec) == (canonical,) * 3:
        return _bind(eqn, invals)
    lhs = lax.transpose(lhs, tuple(dn.lhs_spec))
    rhs = lax.transpose(rhs, tuple(dn.rhs_spec))
    params = dict(
        eqn.params,
        dimension_numbers=lax.ConvDimensionNumbers(canonical, canonical, canonical),
    )
    (out,) = _bind(eqn, [lhs, rhs], params)
    return [lax.transpose(out, tuple(np.argsort(dn.out_spec)))]


def _reduce_window_for_onnx(eqn, invals) -> list:
    """Max (min) pooling of more than 3 dimensions, which jax2onnx (0.17) writes as an
    ONNX `MaxPool` over every dimension (onnxruntime pools at most 3): the leading
    dimensions the window does not touch (the batch of `jax.vmap`, the channels)
    become one."""
    (x,) = invals
    p = eqn.params
    names = (
        "window_dimensions",
        "window_strides",
        "padding",
        "base_dilation",
        "window_dilation",
    )
    untouched = (1, 1, (0, 0), 1, 1)
    trivial = 0
    for size, stride, pad, base, dilation in zip(*(p[n] for n in names)):
        if (size, stride, tuple(pad), base, dilation) != untouched:
            break
        trivial += 1
    if np.ndim(x) <= 3 or trivial < 2:
        return _bind(eqn, invals)
    merged = lax.reshape(x, (int(np.prod(x.shape[:trivial])), *x.shape[trivial:]))
    params = {n: tuple(p[n])[trivial - 1 :] for n in names}
    (out,) = _bind(eqn, [merged], dict(p, **params))
    return [lax.reshape(out, eqn.outvars[0].aval.shape)]


def _pad(x, value, config):
    """`lax.pad` with its interior padding written as an interleave (a concatenation
    and a reshape): jax2onnx (0.17) converts edge padding only. The gradients of
    strided pooling are such pads."""
    for axis, (_, _, interior) in enumerate(config):
        if interior <= 0 or x.shape[axis] == 0:
            continue
        n = x.shape[axis]
        spread = lax.expand_dims(x, (axis + 1,))
        shape = list(spread.shape)
        shape[axis + 1] = interior
        filler = lax.broadcast_in_dim(value, tuple(shape), ())
        both = lax.concatenate([spread, filler], axis + 1)
        shape = list(x.shape)
        shape[axis] = n * (interior + 1)
        x = lax.slice_in_dim(
            lax.reshape(both, tuple(shape)), 0, shape[axis] - interior, axis=axis
        )
    return lax.pad(x, value, [(lo, hi, 0) for lo, hi, _ in config])


def _pad_for_onnx(eqn, invals) -> list:
    x, value = invals
    config = eqn.params["padding_config"]
    if all(interior == 0 for _, _, interior in config):
        return _bind(eqn, invals)
    return [_pad(x, value, config)]


def _select_and_scatter_add_for_onnx(eqn, invals) -> list:
    """The gradient of max (or min) pooling, which jax2onnx (0.17) has no conversion
    for, from slices: each window's first maximum (XLA's choice) receives the
    window's gradient, and the windows' contributions add up."""
    source, operand = invals
    p = eqn.params
    window, strides = p["window_dimensions"], p["window_strides"]
    if any(lo or hi for lo, hi in p["padding"]) or p["select_prim"] not in (
        lax.ge_p,
        lax.le_p,
    ):
        return _bind(eqn, invals)
    offsets = list(np.ndindex(*window))
    # The window's elements at each offset: x[o + s * i] for every window i.
    candidates = []
    for offset in offsets:
        limit = [o + s * (n - 1) + 1 for o, s, n in zip(offset, strides, source.shape)]
        candidates.append(lax.slice(operand, offset, limit, strides))
    stacked = lax.concatenate([lax.expand_dims(c, (0,)) for c in candidates], 0)
    pick = lax.argmax if p["select_prim"] is lax.ge_p else lax.argmin
    chosen = pick(stacked, 0, np.int32)
    zero = np.zeros((), _dtype(source))
    out = None
    for k, offset in enumerate(offsets):
        share = lax.select(
            lax.eq(chosen, np.full((), k, np.int32)),
            source,
            lax.full_like(source, zero),
        )
        config = [
            (o, size - (o + s * (n - 1) + 1), s - 1)
            for o, s, n, size in zip(offset, strides, source.shape, operand.shape)
        ]
        spread = _pad(share, zero, config)
        out = spread if out is None else lax.add(out, spread)
    return [out]


def _reduce_all(reduce):
    def rule(eqn, invals):
        (x,) = invals
        return [reduce(x, tuple(range(np.ndim(x))))] if np.ndim(x) else [x]

    return rule


# Equinox's primitives for its loops and checks, as their forward pass: the jaxpr is
# batched already, so `unvmap_any(x)` is `any(x)` over every axis, an unbatched
# `select_if_vmap(pred, x, y)` is `x` (a batched one is a `select` already), and
# `nonbatchable`, `nontraceable`, `nondifferentiable_backward` are the identity.
_ONNX_RULES = {
    "dot_general": _dot_general_for_onnx,
    "scatter": _scatter_for_onnx,
    "lu": _lu_for_onnx,
    "select_n": _select_n_for_onnx,
    "conv_general_dilated": _conv_for_onnx,
    "pad": _pad_for_onnx,
    "reduce_window_max": _reduce_window_for_onnx,
    "reduce_window_min": _reduce_window_for_onnx,
    "select_and_scatter_add": _select_and_scatter_add_for_onnx,
    "unvmap_any": _reduce_all(lax.reduce_or),
    "unvmap_all": _reduce_all(lax.reduce_and),
    "unvmap_max": _reduce_all(lax.reduce_max),
    "nonbatchable": lambda eqn, invals: list(invals),
    "nontraceable": lambda eqn, invals: list(invals),
    "nondifferentiable_backward": lambda eqn, invals: list(invals),
    "select_if_vmap": lambda eqn, invals: [invals[1]],
}


def _import_onnx_tools():
    try:
        import jax2onnx
        import jax2onnx.plugins.plugin_system as plugin_system
        import onnx
    except ImportError as e:
        raise ImportError(
            f"`to_onnx` needs jax2onnx and onnx ({e}): `pip install "
            "hamux_lagr[export]` (jax2onnx, onnx and onnxruntime)."
        ) from None
    return jax2onnx, plugin_system, onnx


@contextlib.contextmanager
def _jax_plugins_only(plugin_system):
    """jax2onnx imports all its plugins on first use, and its Equinox and Flax ones
    build example models as they are imported (some 15 s). A simplified jaxpr holds
    JAX primitives alone: load the plugins for those, and restore jax2onnx's state
    afterwards, so that a later direct use of jax2onnx imports the rest."""
    flag = "_already_imported_plugins"
    if getattr(plugin_system, flag, True):
        yield
        return
    root = os.path.join(os.path.dirname(plugin_system.__file__), "jax")
    plugin_system._import_tree(pathlib.Path(root), "jax2onnx.plugins.jax")
    setattr(plugin_system, flag, True)
    try:
        yield
    finally:
        setattr(plugin_system, flag, False)


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
    values nobody returns are dropped. The model computes in the dtype of the inputs
    (float32, or float64 when an input is float64).

    Exports exactly (to float32 rounding: tested against JAX to a relative 1e-5 on
    random inputs) every Lagrangian and every synapse of `hamux_lagr`.

    **Arguments:**

    - `fn`: a function of arrays returning an array or a pytree of arrays, traceable
      by JAX. Run-time checks on its inputs cannot be exported: call `descend` and
      `fixed_point` with `throw=False`.
    - `example_args`: one example per input of `fn` (arrays, `jax.ShapeDtypeStruct`s
      or pytrees of them), giving the shapes and dtypes of the model's inputs.
    - `path`: if given, where to write the model (a `.onnx` file, self-contained).

    **Returns:**

    The `onnx.ModelProto`.

    **Raises:**

    `ImportError` without the extra (`pip install hamux_lagr[export]`); `ValueError`
    for a run-time check on the inputs (a host callback, such as `descend`'s with
    `throw=True`), or for an operation ONNX cannot express, naming it and where it
    was made.
    """
    jax2onnx, plugin_system, onnx = _import_onnx_tools()
    simplifier = _Simplifier("to_onnx", _ONNX_RULES)
    closed, specs, _, _ = _simplified(fn, example_args, simplifier)
    wide = any(s.dtype == np.float64 for s in specs)

    def model(*leaves):
        return jex.jaxpr_as_fun(closed)(*leaves)

    with _jax_plugins_only(plugin_system):
        registry = plugin_system.PLUGIN_REGISTRY
        plugin_system.import_all_plugins()
        missing = sorted(
            {e.primitive.name for e in _subjaxprs(closed.jaxpr)} - set(registry)
        )
        if missing:
            raise ValueError(_unsupported_message(missing, simplifier.origins))
        try:
            proto = jax2onnx.to_onnx(
                model,
                specs,
                model_name="hamux_lagr",
                enable_double_precision=wide,
                input_names=[f"input_{i}" for i in range(len(specs))],
                output_names=[f"output_{i}" for i in range(len(closed.out_avals))],
            )
        except NotImplementedError as e:
            raise ValueError(
                f"`to_onnx`: jax2onnx could not convert `fn` ({e}). The operations "
                f"left in it come from: {_origins_text(simplifier.origins)}."
            ) from e
    if path is not None:
        onnx.save(proto, os.fspath(path))
    return proto


def _origins_text(origins: dict[str, str]) -> str:
    return "; ".join(f"`{p}` ({w or 'unknown'})" for p, w in sorted(origins.items()))


def _unsupported_message(missing: list[str], origins: dict[str, str]) -> str:
    pieces = ", ".join(
        f"`{p}`" + (f" (made at {origins[p]})" if origins.get(p) else "")
        for p in missing
    )
    return (
        f"`to_onnx` cannot export {pieces}: jax2onnx has no ONNX conversion for it. "
        "Express that part with other operations (for a Lagrangian, one of the "
        "`hamux_lagr` Lagrangians, which all export), or export with `to_jax_export` "
        "(StableHLO) instead."
    )


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
    that `to_onnx` exports too: the checks that `eqx.error_if` makes on the model's
    parameters run under `descend`'s `jax.jit` as host callbacks, which `jax.export`
    cannot serialise ("serialization of host_callbacks is not yet implemented");
    here they are evaluated at export time, as the parameters are constants of the
    exported function. The result is the forward pass (custom derivative rules are
    not kept).

    **Arguments:**

    - `fn`: a function of arrays returning an array or a pytree of arrays. Run-time
      checks on its inputs cannot be serialised: call `descend` and `fixed_point`
      with `throw=False`.
    - `example_args`: one example per input of `fn` (arrays, `jax.ShapeDtypeStruct`s
      or pytrees of them), giving the shapes and dtypes; `exported.call` takes
      inputs of the same structure.
    - `path`: if given, where to write `exported.serialize()`.

    **Returns:**

    The `jax.export.Exported`.

    **Raises:**

    `ValueError` for a run-time check on the inputs (a host callback, such as
    `descend`'s with `throw=True`).
    """
    simplifier = _Simplifier("to_jax_export")
    closed, specs, in_tree, out_tree = _simplified(fn, example_args, simplifier)

    def exported_fn(*args):
        leaves = jax.tree.leaves(args)
        out = jex.jaxpr_as_fun(closed)(*leaves)
        return jax.tree.unflatten(out_tree, out)

    args = jax.tree.unflatten(in_tree, specs)
    exported = jax.export.export(jax.jit(exported_fn))(*args)
    if path is not None:
        with open(os.fspath(path), "wb") as f:
            f.write(exported.serialize())
    return exported
