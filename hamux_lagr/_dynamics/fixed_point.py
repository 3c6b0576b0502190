r"""Fixed points of a HAM's dynamics, found fast, with implicit gradients.

A fixed point of $\tau_\ell\,\dot x_\ell = -\partial E/\partial g_\ell$ is a zero of
$\partial E/\partial g$ on the free neurons, equivalently a fixed point of the Euler map
$G(x) = x - \frac{\mathrm{d}t}{\tau}\,\partial E/\partial g$ for any step. With
`dt = tau` on a leaky layer, $G(x) = -\partial E_\text{syn}/\partial g$ is the
concave-convex update (Yuille & Rangarajan 2003; Ramsauer et al. 2020). The forward
solve accelerates $G$ with Anderson's method (Anderson 1965; Walker & Ni 2011) under an
energy safeguard; gradients follow from the implicit function theorem at the fixed
point (Bai et al. 2019), with Optimistix and Lineax.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float, Int, PyTree

from .._clamp import check_clamp, hold, residual
from .._custom_types import Clamp, Masks, States, StatesLike
from .._ham import HAM, prepare_states
from .._misc import all_finite, common_dtype
from .._validation import positive_scalar, static_float, static_int
from .solution import raise_if_failed, RESULTS, Solution


_WHERE = "fixed_point"


def _tree_where(pred: Array, a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(lambda u, v: jnp.where(pred, u, v), a, b)


def _axpy(a: Array, x: PyTree, y: PyTree) -> PyTree:
    """`y + a * x`, leaf by leaf, in each leaf's dtype."""
    return jax.tree.map(lambda u, v: v + a.astype(v.dtype) * u, x, y)


class _State(eqx.Module):
    ys: PyTree  # the last `history` accepted iterates, leading axis `history`
    fs: PyTree  # their steps G(y) - y
    count: Int[Array, ""]  # how many of them are valid
    slot: Int[Array, ""]  # where the next one goes (a ring buffer)
    y_acc: PyTree  # the last accepted iterate ...
    f_acc: PyTree  # ... its step G(y) - y ...
    e_acc: Float[Array, ""]  # ... its energy ...
    res_acc: Float[Array, ""]  # ... and its residual max |dE/dg|
    scale: Float[Array, ""]  # the multiple of the step G(y) - y taken
    plain: Bool[Array, ""]  # whether the iterate being evaluated is a plain step
    grew: Bool[Array, ""]  # whether the last plain step made the residual grow
    evals: Int[Array, ""]
    done: Bool[Array, ""]


# Over-relaxation: while the residual grows (the state escapes a saddle), the plain
# step is doubled, up to this multiple. (On the dense memory at beta 10, where queries
# slide to a mixture state, 2 takes the fewest steps; larger multiples overshoot.)
_MAX_SCALE = 2.0


class _SafeguardedAnderson(optx.AbstractFixedPointSolver):
    """Accelerated iteration of the Euler map `G` of a HAM, safeguarded by its energy.

    `fn(y, args)` returns `(G(y), (energy(y), residual(y)))`. An iterate is accepted if
    its energy is not above the last accepted one's (up to rounding); if its residual
    is then below `tol`, it is the answer. Otherwise the next iterate is:

    - while the residual shrinks (a contraction towards the fixed point), the
      Anderson mixture of the last `history` accepted iterates and their steps;
    - while it grows after two plain steps in a row (the state slides away from a
      saddle), the over-relaxed step `y + 2 (G(y) - y)`;
    - after a rejection, a plain step from the last accepted iterate: of multiple 1,
      or half the last one if that was at most 1.

    With `history=1` and no growth phase this is the plain map `G` with backtracking.
    """

    tol: float
    history: int
    # Unused by this solver (its stop rule is `tol` on the residual), but part of
    # Optimistix's solver interface.
    rtol: float = 0.0
    atol: float = 0.0
    norm: Any = optx.max_norm

    def init(self, fn, y, args, options, f_struct, aux_struct, tags) -> _State:
        del fn, args, options, f_struct, tags
        edtype = aux_struct[0].dtype
        # (No history is kept for the plain map.)
        size = self.history if self.history > 1 else 0
        stack = jax.tree.map(lambda u: jnp.zeros((size, *u.shape), u.dtype), y)
        inf = jnp.array(jnp.inf, edtype)
        return _State(
            ys=stack,
            fs=stack,
            count=jnp.array(0, jnp.int32),
            slot=jnp.array(0, jnp.int32),
            y_acc=y,
            f_acc=jax.tree.map(jnp.zeros_like, y),
            e_acc=inf,
            res_acc=inf,
            scale=jnp.array(1.0, edtype),
            plain=jnp.array(True),
            grew=jnp.array(False),
            evals=jnp.array(0, jnp.int32),
            done=jnp.array(False),
        )

    def step(self, fn, y, args, options, state: _State, tags):
        del options, tags
        g, (energy, res) = fn(y, args)
        f = jax.tree.map(jnp.subtract, g, y)
        eps = jnp.finfo(energy.dtype).eps
        slack = 64 * eps * (1 + jnp.abs(state.e_acc))
        first = state.evals == 0
        accept = first | (energy <= state.e_acc + slack)
        converged = accept & (res < self.tol)
        contracting = res < state.res_acc
        one = jnp.ones((), state.scale.dtype)
        # Accepted and contracting: push (y, f) into the history and mix.
        # Accepted and growing: restart the history at y, and over-relax.
        # Rejected: restart the history at the last accepted iterate.
        # A plain step that made the residual grow: the state slides away from a
        # saddle. Otherwise (contracting, or an Anderson step) keep mixing.
        grew = state.plain & ~contracting & ~first
        sliding = grew & state.grew
        keep = accept & ~sliding
        slot = jnp.where(keep, state.slot, 0)
        count = jnp.where(keep, jnp.minimum(state.count + 1, self.history), 1)
        at = jnp.arange(self.history, dtype=jnp.int32) == slot
        y_new = _tree_where(accept, y, state.y_acc)
        f_new = _tree_where(accept, f, state.f_acc)

        def push(h, u):
            return jnp.where(at.reshape(-1, *([1] * u.ndim)), u[None], h)

        if self.history > 1:
            ys = jax.tree.map(push, state.ys, y_new)
            fs = jax.tree.map(push, state.fs, f_new)
        else:
            ys, fs = state.ys, state.fs
        scale = jnp.where(
            accept,
            jnp.where(sliding, jnp.minimum(2 * state.scale, _MAX_SCALE), one),
            # A rejected Anderson step is retried as a plain step; a rejected plain
            # step with a smaller one.
            jnp.where(
                state.plain, jnp.where(state.scale > 1, one, state.scale / 2), one
            ),
        )
        plain = _axpy(scale, f_new, y_new)
        mixing = keep & (count > 1) if self.history > 1 else jnp.array(False)
        if self.history > 1:
            mixed = self._mix(ys, fs, count, _axpy(one, f_new, y_new))
            candidate = _tree_where(mixing, mixed, plain)
        else:
            candidate = plain
        new_state = _State(
            ys=ys,
            fs=fs,
            count=count,
            slot=(slot + 1) % self.history,
            y_acc=y_new,
            f_acc=f_new,
            e_acc=jnp.where(accept, energy, state.e_acc),
            res_acc=jnp.where(accept, res, state.res_acc),
            scale=scale,
            plain=~mixing,
            grew=jnp.where(accept, grew, state.grew),
            evals=state.evals + 1,
            # A non-finite accepted iterate (only the start can be one) ends the solve.
            done=converged | (accept & ~(jnp.isfinite(energy) & all_finite(y))),
        )
        return _tree_where(converged, y, candidate), new_state, (energy, res)

    def _mix(self, ys: PyTree, fs: PyTree, count: Array, base: PyTree) -> PyTree:
        """The Anderson (type II) mixture `sum_i a_i G(y_i)`, with the affine weights
        `a` minimising `|sum_i a_i f_i|` over the valid entries, written as
        `base + sum_i a_i (G(y_i) - base)` with `base` the newest `G(y_i)`: neurons
        that every `G` maps to the same value (clamped ones) keep it exactly."""
        m = self.history
        leaves = jax.tree.leaves(fs)
        with jax.numpy_dtype_promotion("standard"):
            work = jnp.result_type(jnp.float32, *leaves)
        flat = [u.reshape(m, -1).astype(work) for u in leaves]
        # Element-wise products and sums rather than `u @ u.T`: for a handful of
        # rows, under `jax.vmap`, XLA fuses them where a batched matmul would not.
        gram = sum(jnp.sum(u[:, None, :] * u[None, :, :], axis=-1) for u in flat)
        assert isinstance(gram, Array)
        valid = jnp.arange(m, dtype=jnp.int32) < count
        both = valid[:, None] & valid[None, :]
        eye = jnp.eye(m, dtype=work)
        gram = jnp.where(both, gram, eye)
        # Tikhonov regularisation relative to the Gram matrix's scale.
        ridge = 1e3 * jnp.finfo(work).eps * jnp.maximum(jnp.max(jnp.diag(gram)), 1e-30)
        z = _solve_spd(gram + ridge * eye, valid.astype(work))
        alpha = jnp.where(valid, z / jnp.sum(z), 0)
        alpha = jnp.where(jnp.all(jnp.isfinite(alpha)), alpha, 0)

        def combine(y, f, b):
            a = alpha.reshape(m, *([1] * b.ndim)).astype(b.dtype)
            return b + jnp.sum(a * ((y + f) - b), axis=0)

        return jax.tree.map(combine, ys, fs, base)

    def terminate(self, fn, y, args, options, state: _State, tags):
        del fn, y, args, options, tags
        return state.done, optx.RESULTS.successful

    def postprocess(self, fn, y, aux, args, options, state: _State, tags, result):
        del fn, y, aux, args, options, tags, result
        return state.y_acc, (state.e_acc, state.res_acc), {}


def _solve_spd(a: Array, b: Array) -> Array:
    """Solves the small symmetric positive definite system `a z = b` by Gaussian
    elimination without pivoting, unrolled: under `jax.vmap` a few fused element-wise
    operations, where a LAPACK call per sample would cost more than the solve."""
    m = b.shape[0]
    rows = [a[i] for i in range(m)]
    rhs = [b[i] for i in range(m)]
    for k in range(m):
        for i in range(k + 1, m):
            factor = rows[i][k] / rows[k][k]
            rows[i] = rows[i] - factor * rows[k]
            rhs[i] = rhs[i] - factor * rhs[k]
    z = [jnp.zeros((), b.dtype)] * m
    for i in reversed(range(m)):
        acc = rhs[i]
        for j in range(i + 1, m):
            acc = acc - rows[i][j] * z[j]
        z[i] = acc / rows[i][i]
    return jnp.stack(z)


def _euler_map(masks: Masks, rates: dict):
    def fn(y: States, args) -> tuple[States, Any]:
        ham, x0 = args
        energy, dEdg = ham._energy_and_dEdg(y)
        new = {name: y[name] - rates[name] * dEdg[name] for name in y}
        # Clamped neurons map to their initial values (not to `y`), so that the
        # implicit linear system stays non-singular and carries their tangents.
        return hold(masks, x0, new), (energy, residual(masks, dEdg))

    return fn


def _linear_solver(xs: States) -> lx.AbstractLinearSolver:
    tol = 1e-10 if jnp.finfo(common_dtype(xs)).bits >= 64 else 1e-5
    return lx.GMRES(rtol=tol, atol=tol, restart=20, stagnation_iters=20)


@eqx.filter_jit
def _solve(ham, x0, masks, rates, *, tol, max_steps, history, adjoint, throw):
    # The solver sees one flat vector: its bookkeeping is then a few operations per
    # step, not a few per layer.
    flat0, unravel = ravel_pytree(x0)
    step = _euler_map(masks, rates)

    def fn(y, args):
        ham, x0 = args
        g, aux = step(unravel(y), (ham, x0))
        return ravel_pytree(g)[0], aux

    sol = optx.fixed_point(
        fn,
        _SafeguardedAnderson(tol=tol, history=history),
        flat0,
        (ham, x0),
        has_aux=True,
        max_steps=max_steps,
        adjoint=adjoint,
        throw=False,
    )
    _, res = sol.aux
    final = unravel(sol.value)
    params_ok = all_finite(eqx.filter(ham, eqx.is_inexact_array))
    finite = (sol.result != optx.RESULTS.nonfinite) & all_finite(final)
    finite = finite & jnp.isfinite(res)
    num_steps = jnp.asarray(sol.stats["num_steps"]).astype(jnp.int32)
    result = RESULTS.where(res < tol, RESULTS.successful, RESULTS.max_steps_reached)
    result = RESULTS.where(finite, result, RESULTS.nonfinite)
    result = RESULTS.where(params_ok, result, RESULTS.nonfinite_parameter)
    solution = Solution(
        xs=final, energies=None, num_steps=num_steps, residual=res, result=result
    )
    if throw:
        solution = raise_if_failed(_WHERE, solution)
    return solution


def fixed_point(
    ham: HAM,
    xs: StatesLike,
    *,
    tol: float | int | np.floating = 1e-4,
    max_steps: int | np.integer = 1000,
    clamp: Clamp | None = None,
    dt: float | int | Float[Array, ""] | np.floating | None = None,
    method: str = "iterate",
    history: int | np.integer = 3,
    adjoint: str | optx.AbstractAdjoint = "implicit",
    throw: bool = True,
) -> Solution:
    r"""Finds the fixed point the dynamics of a HAM descend to, for one sample.

    A fixed point of $\tau_\ell\,\dot x_\ell = -\partial E/\partial g_\ell$ is a state
    at which $\partial E/\partial g = 0$ on the free neurons; `fixed_point` stops at
    the first iterate with $\max|\partial E/\partial g| <$ `tol`. It iterates the Euler
    map

    $$G(x)_\ell = x_\ell - \frac{\mathrm{d}t}{\tau_\ell}
    \frac{\partial E}{\partial g_\ell},$$

    whose fixed points are those of the dynamics. With the default `dt = tau` (each
    layer's own) on a leaky layer $G(x) = -\partial E_\text{syn}/\partial g$, the
    concave-convex update: for a `DenseMemory` on an `LIdentity` layer it is Ramsauer
    et al.'s $\Xi^\top\operatorname{softmax}(\beta\,\Xi x)$, which never raises the
    energy.

    Methods (both safeguarded by the energy: an iterate whose energy is above the
    last accepted one's is rejected, and the solve goes on from the last accepted
    iterate with a plain step of $G$, halved each time a plain step is rejected too;
    so the accepted energies never rise, the result's energy is never above the
    start's, and it is the attractor the dynamics descend to, e.g. for separated
    patterns the retrieved pattern):

    - `method="iterate"` (default): steps of $G$; while the residual grows from one
      step to the next twice in a row (a state sliding away from a saddle, e.g. a
      query drifting to a mixture of patterns), the over-relaxed step
      $x + 2(G(x) - x)$. On the dense memory of `benchmarks/bench_dynamics.py` it
      needs 3 / 13 evaluations of $\partial E/\partial g$ at beta 1 / 10, where the
      concave-convex update `descend(dt=tau, tol=...)` needs 3 / 16, and 11 on a
      3-layer classifier HAM where Euler steps of `dt = 0.1` need 150.
    - `method="anderson"`: while the residual shrinks, Anderson acceleration of $G$
      (Walker & Ni 2011) with the last `history` iterates: each new iterate is the
      affine combination of the last ones that best cancels their steps. It takes
      fewer evaluations where $G$ contracts slowly (9 instead of 11 on that HAM), but
      each costs more bookkeeping: it pays off when evaluations are expensive.

    Gradients (reverse and forward mode) are by default implicit: at the fixed point
    $x^\ast = G(x^\ast, \theta)$, the implicit function theorem gives
    $\mathrm{d}x^\ast/\mathrm{d}\theta = (I - \partial_x G)^{-1}\partial_\theta G$
    (Bai et al. 2019), solved matrix-free by `lineax.GMRES` through
    `optimistix.ImplicitAdjoint`. Memory does not grow with the steps, and the
    gradient does not vanish with them. They are the gradients of the exact fixed
    point, so they are as accurate as the solve: use a `tol` well below the
    accuracy you need. `adjoint="backprop"` backpropagates through the iterations
    instead (`optimistix.RecursiveCheckpointAdjoint`).

    It acts on **one sample** and is compiled with `eqx.filter_jit`; a batch is
    `jax.vmap` of it:

    ```python
    sol = jax.vmap(lambda q: hl.fixed_point(ham, {"image": q}))(queries)
    sol.xs["image"], sol.num_steps, sol.converged
    ```

    **Arguments:**

    - `ham`: the `hamux_lagr.HAM`.
    - `xs`: the initial states of one sample, a dict from layer name to a state of
      the layer's shape.
    - `tol`: stop once $\max|\partial E/\partial g| <$ `tol` over the free neurons, a
      positive number.
    - `max_steps`: the most iterations (each one evaluation of $\partial E/\partial
      g$), a positive int.
    - `clamp`: as in `hamux_lagr.descend`: a dict from layer name to `True` or a
      boolean mask; clamped neurons keep their initial states.
    - `dt`: the Euler step of $G$, in units of the layers' `tau` (a positive number or
      0-d array); by default each layer's own `tau` (steps of one time constant).
      Layers with `leak=False` have no $-x$ term to balance the step: give them a
      smaller one, e.g. `dt=0.1`.
    - `method`: `"iterate"` or `"anderson"` (see above).
    - `history`: how many past iterates Anderson mixes, a positive int (`1` is the
      plain map).
    - `adjoint`: `"implicit"` (default), `"backprop"`, or any
      `optimistix.AbstractAdjoint`, e.g. `optimistix.ImplicitAdjoint(linear_solver=
      lineax.AutoLinearSolver(well_posed=True))` for a dense solve of a small HAM.
    - `throw`: if `True` (the default), a solve that does not converge within
      `max_steps`, or meets a non-finite state, raises: a `ValueError` outside
      `jax.jit`, an error at run time (`eqx.error_if`) under it. If `False` nothing
      raises: the `Solution` says `converged=False` (or `finite=False`). Export with
      `throw=False` (`hamux_lagr.to_onnx`, `hamux_lagr.to_jax_export`): an exported
      model cannot run the error's host callback.

    **Returns:**

    A `hamux_lagr.Solution`: the fixed point `xs` (the last accepted iterate if it did
    not converge), `energies=None`, the iterations taken (`num_steps`), the
    `residual` $\max|\partial E/\partial g|$ at `xs`, `converged` and `finite`.
    """
    if not isinstance(ham, HAM):
        raise TypeError(
            f"`ham` must be a `HAM` in `fixed_point`, got {type(ham).__name__}."
        )
    states = prepare_states(ham, xs, _WHERE)
    masks = check_clamp(ham.neurons, clamp, _WHERE)
    tol = static_float(tol, "tol", _WHERE, hint="It is the residual max |dE/dg|.")
    max_steps = static_int(
        max_steps,
        "max_steps",
        _WHERE,
        lower=1,
        hint="It bounds the iterations; pass e.g. `max_steps=1000`.",
    )
    history = static_int(
        history, "history", _WHERE, lower=1, upper=1000, hint="Pass e.g. `history=5`."
    )
    if method not in ("anderson", "iterate"):
        raise ValueError(
            f"`method` must be 'anderson' or 'iterate' in `fixed_point`, got {method!r}."
        )
    if method == "iterate":
        history = 1
    if isinstance(adjoint, str):
        if adjoint == "implicit":
            adjoint = optx.ImplicitAdjoint(linear_solver=_linear_solver(states))
        elif adjoint == "backprop":
            adjoint = optx.RecursiveCheckpointAdjoint()
        else:
            raise ValueError(
                "`adjoint` must be 'implicit', 'backprop' or an "
                f"`optimistix.AbstractAdjoint` in `fixed_point`, got {adjoint!r}."
            )
    elif not isinstance(adjoint, optx.AbstractAdjoint):
        raise TypeError(
            "`adjoint` must be 'implicit', 'backprop' or an "
            f"`optimistix.AbstractAdjoint` in `fixed_point`, got "
            f"{type(adjoint).__name__}."
        )
    if dt is None:
        rates = {name: jnp.ones((), x.dtype) for name, x in states.items()}
    else:
        step = positive_scalar(
            dt, "dt", _WHERE, "Pass e.g. `dt=1.0` (in units of the layers' `tau`)."
        )
        rates = {
            name: (step / layer.tau).astype(states[name].dtype)
            for name, layer in ham.neurons.items()
        }
    return _solve(
        ham,
        states,
        masks,
        rates,
        tol=tol,
        max_steps=max_steps,
        history=history,
        adjoint=adjoint,
        throw=bool(throw),
    )
