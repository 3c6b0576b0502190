r"""A jaxpr simplification pass for export, independent of any exporter.

A function's jaxpr is evaluated once, abstractly. What depends on constants alone (a
model's arrays, the checks made on them) is computed now: a check on a constant holds,
or raises, now, and leaves no host callback behind. Calls (`jax.jit`, custom derivative
rules) are inlined: the result is the forward pass. Loops and `lax.cond` stay loops and
conditionals, simplified within; carries no output needs, and other dead code, are
dropped. Equinox's own primitives (`unvmap_any`, `nonbatchable`, ...) become the JAX
operations they stand for, by Equinox's finalisation (`equinox.internal.finalise_jaxpr`).
A host callback left on the inputs raises `HostCallbackError`; an exporter's `rules`
rewrite the primitives left in the graph.
"""

import os
from collections.abc import Callable, Sequence
from typing import TypeAlias

import equinox.internal as eqxi
import jax
import jax.core
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
from jax import lax


#: A Python frame: file name, line number, function name.
Frame: TypeAlias = tuple[str, int, str]
_HERE = os.path.dirname(os.path.abspath(__file__))


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
_STRUCTURED = ("custom_linear_solve", "cond", "while", "scan")
_CALLBACKS = ("pure_callback", "io_callback", "debug_callback")
# A folded constant this large whose entries are all equal enters the exported graph
# as a broadcast of its one value, not as stored data (`jnp.ones((K, D))`).
_UNIFORM_CONSTANT_SIZE = 64


def dtype_of(x):
    return x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _as_graph_value(x):
    """A concrete value entering the traced graph: a large uniform array becomes a
    broadcast of its one value."""
    if not _is_concrete(x) or jnp.issubdtype(dtype_of(x), jax.dtypes.extended):
        return x
    a = np.asarray(x)
    if a.size > _UNIFORM_CONSTANT_SIZE and np.all(a == a.reshape(-1)[0]):
        return lax.broadcast(a.reshape(-1)[0], a.shape)
    return x


def _static_shapes(eqn) -> bool:
    """Whether `eqn`'s output shapes are known (not a symbolic `jax.export` size)."""
    shapes = [getattr(v.aval, "shape", ()) for v in eqn.outvars]
    return all(isinstance(d, (int, np.integer)) for shape in shapes for d in shape)


def _frames(eqn) -> list[Frame]:
    """The frames where `eqn` was made, innermost first, but this folder's."""
    try:
        frames = list(eqn.source_info.traceback.frames)
    except AttributeError:
        return []
    return [
        (f.file_name, f.line_num, f.function_name)
        for f in frames
        if os.path.dirname(os.path.abspath(f.file_name)) != _HERE
    ]


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


class Simplifier:
    """Evaluates a jaxpr concretely where it can and traced where it must.

    `rules` maps a primitive's name to `(eqn, invals) -> outvals`, the form an export
    target wants it in (a traced equation without a rule is bound as it is).
    `relevant(file_name)` says which Python frames locate an operation for a reader
    (the user's code, the library's own). `origins` records, for each primitive left
    in the graph, those frames where the first one was made (for error messages)."""

    def __init__(
        self,
        rules: dict[str, Callable] | None = None,
        relevant: Callable[[str], bool] = lambda file_name: True,
    ):
        self.rules = rules or {}
        self.relevant = relevant
        self.origins: dict[str, list[Frame]] = {}
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
        foldable = name not in _CALLBACKS and not eqn.effects and _static_shapes(eqn)
        if foldable and all(_is_concrete(x) for x in invals):
            if name not in ("while", "scan") or all(x is not None for x in invals):
                # Folded: a value of the model alone is computed now (and a check on
                # it raises now, if it fails).
                with jax.ensure_compile_time_eval():
                    return bind(eqn, invals)
        structured = name in _INLINED or name in _STRUCTURED
        if structured or eqn.primitive in eqxi.primitive_finalisations:
            self.context.append(eqn)
            try:
                if structured:
                    return self.structured(eqn, invals, used)
                return self.finalised(eqn, invals, used)
            finally:
                self.context.pop()
        if name in _CALLBACKS:
            raise HostCallbackError(name, self.origin(eqn))
        self.origins.setdefault(name, self.origin(eqn))
        invals = [_as_graph_value(x) for x in invals]
        rule = self.rules.get(name)
        return rule(eqn, invals) if rule is not None else bind(eqn, invals)

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

    def finalised(self, eqn, invals: list, used: list[bool]) -> list:
        """An Equinox primitive (`unvmap_any`, `nonbatchable`, ...) as the JAX
        operations it stands for, by Equinox's own finalisation, simplified in turn."""
        avals = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars]
        one = jax.make_jaxpr(lambda *a: bind(eqn, a))(*avals)
        return self.evaluate(eqxi.finalise_jaxpr(one), invals, used)

    def origin(self, eqn) -> list[Frame]:
        """The relevant frames where `eqn` was made (innermost first), or else those of
        the innermost enclosing equation (a branch traced in a library has none)."""
        for e in [eqn, *reversed(self.context)]:
            frames = [f for f in _frames(e) if self.relevant(f[0])]
            if frames:
                return frames
        return []

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
        needed carries. A batched predicate (of `jax.vmap`) is written out as `any` in
        the condition and a `select` in the body, the form every exporter reads."""
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


def bind(eqn, invals, params=None) -> list:
    """`eqn`'s primitive applied to `invals` (with `params`, by default its own)."""
    bind_params = eqn.primitive.get_bind_params(
        eqn.params if params is None else params
    )
    subfuns = []
    if isinstance(bind_params, tuple):  # JAX < 0.9.2: (subfuns, params)
        subfuns, bind_params = bind_params
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*subfuns, *invals, **bind_params)
    return list(out) if eqn.primitive.multiple_results else [out]


class HostCallbackError(Exception):
    """A host callback (`primitive`, made at `frames`, innermost first) is left in
    the simplified jaxpr: it depends on the function's inputs."""

    def __init__(self, primitive: str, frames: list[Frame]):
        super().__init__(primitive, frames)
        self.primitive = primitive
        self.frames = frames


def simplify(
    fn: Callable, specs: Sequence[jax.ShapeDtypeStruct], simplifier: Simplifier
) -> jex.ClosedJaxpr:
    """The jaxpr of `fn` (a function of the leaves `specs`, returning a list of
    arrays), simplified by `simplifier`."""
    closed = jax.make_jaxpr(fn)(*specs)
    return jax.make_jaxpr(lambda *a: simplifier.evaluate(closed, a))(*specs)
