r"""Energy-descent dynamics of a HAM: $\tau_\ell\,\dot x_\ell = -\partial E/\partial g_\ell$.

Along these dynamics $\dot E = -\sum_\ell \tau_\ell^{-1} \langle \partial E/\partial g_\ell,
\nabla^2\mathcal{L}_\ell\, \partial E/\partial g_\ell\rangle \le 0$ (the Lagrangians are
convex), so the energy never rises (Krotov & Hopfield 2021; Hoover et al. 2022).
"""

from typing import cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from equinox.internal import unvmap_any
from jax import lax
from jax.core import Tracer
from jaxtyping import Array, Float

from .._clamp import check_clamp, euler_step, residual
from .._custom_types import Clamp, States, StatesLike
from .._ham import HAM, prepare_states
from .._misc import all_finite, common_dtype, select
from .._validation import positive_scalar, static_float, static_int
from .solution import naming_the_entry, outcome, raise_if_failed, RESULTS, Solution


_WHERE = "descend"
_DT_HINT = "Use a small step such as `dt=0.1` (in units of the layers' `tau`)."


def _check_dt(dt: object) -> Array:
    """`dt` as a real 0-d array: checked positive and finite at once when it is
    concrete; a traced `dt` is checked in the solve, as a result code."""
    if isinstance(dt, Tracer):
        dt = cast(Array, dt)
        if dt.ndim != 0 or not jnp.issubdtype(dt.dtype, jnp.floating):
            raise TypeError(
                f"`dt` must be a positive real scalar in `{_WHERE}`, got a traced "
                f"array of shape {dt.shape} and dtype {dt.dtype}."
            )
        return dt
    return positive_scalar(dt, "dt", _WHERE, _DT_HINT)


def _check_solver(solver, stepsize_controller, max_steps):
    if max_steps is not None:
        max_steps = static_int(
            max_steps,
            "max_steps",
            _WHERE,
            lower=1,
            hint="It bounds the diffrax solver's steps; pass e.g. `max_steps=4096`.",
        )
    if solver is None:
        if stepsize_controller is not None:
            raise ValueError(
                "`stepsize_controller` is only used with a diffrax `solver` in "
                "`descend`; pass `solver=diffrax.Tsit5()` too, or drop it."
            )
        return None, max_steps
    try:
        import diffrax
    except ImportError as e:
        raise ImportError(
            "`descend(..., solver=...)` integrates with diffrax, which is not "
            "installed: `pip install hamux_lagr[examples]` (or `pip install "
            "diffrax`), or pass `solver=None` for the built-in Euler scan."
        ) from e
    if not isinstance(solver, diffrax.AbstractSolver):
        raise TypeError(
            "`solver` must be a diffrax solver such as `diffrax.Tsit5()`, got "
            f"{type(solver).__name__}."
        )
    adaptive = isinstance(solver, diffrax.AbstractAdaptiveSolver)
    if stepsize_controller is None:
        stepsize_controller = (
            diffrax.PIDController(rtol=1e-4, atol=1e-6)
            if adaptive
            else diffrax.ConstantStepSize()
        )
    elif not isinstance(stepsize_controller, diffrax.AbstractStepSizeController):
        raise TypeError(
            "`stepsize_controller` must be a diffrax step-size controller such as "
            "`diffrax.PIDController(rtol=1e-6, atol=1e-8)`, got "
            f"{type(stepsize_controller).__name__}."
        )
    elif (
        isinstance(stepsize_controller, diffrax.AbstractAdaptiveStepSizeController)
        and not adaptive
    ):
        raise ValueError(
            f"`stepsize_controller` {type(stepsize_controller).__name__} adapts the "
            f"step size, which needs an adaptive solver, but `solver` is "
            f"{type(solver).__name__}; use e.g. `diffrax.Tsit5()`, or "
            "`diffrax.ConstantStepSize()`."
        )
    if max_steps is None:
        raise ValueError(
            "`max_steps` must be an int with a diffrax `solver` in `descend` (the "
            "solver's buffers are sized by it), got None; pass e.g. `max_steps=4096`."
        )
    return stepsize_controller, max_steps


def _rates(ham: HAM, dt: Array, xs: States) -> dict:
    """`dt / tau` for each layer, in the dtype of its state."""
    return {
        name: (dt / layer.tau).astype(xs[name].dtype)
        for name, layer in ham.neurons.items()
    }


_NO_BAD = -1


def _first_nonfinite(step, xs: States, steps: int) -> Array:
    """The first of `steps` Euler steps (`step`) from `xs` whose state is not
    finite, or -1."""

    def cond(carry):
        t, x = carry
        return (t < steps) & all_finite(x)

    def body(carry):
        t, x = carry
        return t + jnp.array(1, jnp.int32), step(x, None)[0]

    t, x = lax.while_loop(cond, body, (jnp.array(0, jnp.int32), xs))
    return select(all_finite(x), jnp.int32(_NO_BAD), t)


def _euler(ham, xs, masks, rates, *, steps, trace, tol, locate):
    """Fixed-step Euler on one sample: returns `(xs, energies | None, bad_step,
    num_steps, energy | None, residual)`: `energy` (when computed) and `residual`
    those of the last state where the gradient was evaluated, `bad_step` the first
    step with a non-finite state (-1 if none; `steps` if some state was not finite
    and `locate` is false).

    Without `tol`, the loop is what a hand-written one is: `steps` evaluations of the
    gradient (and of the energy, for the trace), each followed by a step; the last
    step's gradient also gives the residual (that of the state the last step started
    from: the final state's would cost one more evaluation of the gradient). A
    non-finite state stays non-finite (an Euler step from it is NaN or infinite), so
    the final state's finiteness says whether any state was not finite; only then is
    the loop replayed, with a check of each state, to find the first (a `lax.cond` on
    the whole batch: never in a finite solve). Only with `locate`: with `throw=True`
    a non-finite state raises, so the step is never seen, and the replay is not
    compiled. The trace's last energy is one evaluation of the energy alone. No
    buffer grows with `steps` unless the energy trace is asked for.
    """
    int32 = jnp.int32
    if tol is None:

        def evaluate(x):
            if trace:
                return ham._energy_and_dsyn(x)
            return None, ham._dsyn(x)

        def step(x, _):
            energy, dsyn = evaluate(x)
            return euler_step(masks, rates, x, ham._dEdg(x, dsyn)), energy

        def last_residual(x, dsyn, _):
            return residual(masks, ham._dEdg(x, dsyn))

        def body(carry, _):
            x, t, res = carry
            energy, dsyn = evaluate(x)
            # The residual in the last step only: a conditional on the step counter
            # (not batched under `jax.vmap`), so that dE/dg is not written out in
            # each step but fused into the update. The update depends on it (the
            # residual is never negative: the select never holds), which orders the
            # conditional's read of the state before the update overwrites the
            # state in place: XLA would otherwise copy the state in every step.
            res = lax.cond(
                t == steps - 1, last_residual, lambda x, d, r: r, x, dsyn, res
            )
            new = euler_step(masks, rates, x, ham._dEdg(x, dsyn))
            x = jax.tree.map(lambda old, new: select(res < 0, old, new), x, new)
            return (x, t + jnp.array(1, int32), res), energy

        if steps == 0:
            energy, dsyn = ham._energy_and_dsyn(xs)
            bad = select(all_finite(xs), jnp.int32(_NO_BAD), jnp.int32(0))
            energies = energy[None] if trace else None
            res = residual(masks, ham._dEdg(xs, dsyn))
            return xs, energies, bad, jnp.array(0, int32), energy, res
        start = (xs, jnp.array(0, int32), jnp.zeros((), common_dtype(xs)))
        (final, _, res), energies = lax.scan(body, start, None, length=steps)
        last = None
        if trace:
            assert energies is not None
            last = ham._energy(final)
            energies = jnp.concatenate([energies, last[None]])
        if locate:
            bad = lax.cond(
                unvmap_any(~all_finite(final)),
                lambda: _first_nonfinite(step, xs, steps),
                lambda: jnp.array(_NO_BAD, int32),
            )
        else:
            bad = select(all_finite(final), jnp.int32(_NO_BAD), jnp.int32(steps))
        num_steps = select(bad < 0, jnp.array(steps, int32), bad)
        return final, energies, bad, num_steps, last, res
    # Run to a fixed point: stop once max |dE/dg| < tol on the free neurons, after
    # `steps` steps, or at the first non-finite state (a non-finite gradient moves
    # the state to a non-finite value, so the divergence is reported, never hidden).
    edtype = common_dtype(xs)
    buffer = jnp.zeros((steps + 1 if trace else 0,), edtype)

    # The flag `done` is an int32, not a bool: under `jax.vmap` every carry goes
    # through a select, and ONNX runtimes have no select of booleans.
    def cond(carry):
        return carry[-1] == 0

    def loop(carry):
        t, x, _, _, buffer, _ = carry
        if trace:
            energy, dEdg = ham._energy_and_dEdg(x)
            buffer = buffer.at[t].set(energy.astype(edtype))
        else:
            energy, dEdg = None, ham._dEdg_only(x)
        res = residual(masks, dEdg)
        stop = (t >= steps) | (res < tol) | ~all_finite(x)
        x = jax.tree.map(
            lambda old, new: select(stop, old, new),
            x,
            euler_step(masks, rates, x, dEdg),
        )
        t = select(stop, t, t + jnp.array(1, int32))
        energy = jnp.zeros((), edtype) if energy is None else energy.astype(edtype)
        return t, x, energy, res, buffer, stop.astype(int32)

    zero = jnp.zeros((), edtype)
    carry = (jnp.array(0, int32), xs, zero, zero, buffer, jnp.array(0, int32))
    t, final, last, res, buffer, _ = lax.while_loop(cond, loop, carry)
    bad = select(all_finite(final), jnp.int32(_NO_BAD), t)
    energies = None
    if trace:
        # After convergence the state is (to `tol`) constant: repeat the last energy.
        energies = select(jnp.arange(steps + 1, dtype=int32) > t, buffer[t], buffer)
    return final, energies, bad, t, (last if trace else None), res


def _ode(ham, xs, masks, dt, *, steps, trace, tol, solver, options):
    """An ODE solve with diffrax on one sample: returns `(xs, energies | None,
    bad_step, num_steps, stopped, energy, residual)`, those at the final state.

    The solve ends at `steps * dt`, at a fixed point (`tol`), or at the first step
    whose state is not finite (a diffrax event): `num_steps` is then that step.
    `stopped` says whether the solver gave up before (an adaptive solver rejects the
    steps of a diverging state until it runs out of `max_steps`). The solve runs in
    the states' dtype promoted to at least float32 (times and states alike), and the
    results are cast back to the states' dtypes.
    """
    import diffrax

    dtypes = {name: x.dtype for name, x in xs.items()}
    with jax.numpy_dtype_promotion("standard"):
        work = jnp.result_type(jnp.float32, *dtypes.values())
    y0 = {name: x.astype(work) for name, x in xs.items()}
    dt = dt.astype(work)
    t1 = steps * dt
    subs = [diffrax.SubSaveAt(t1=True)]
    ts = None
    if trace:
        # The trace is what was asked for: `steps + 1` energies.
        ts = jnp.linspace(jnp.zeros((), work), t1, steps + 1)
        subs.append(diffrax.SubSaveAt(ts=ts, fn=lambda t, y, ham: ham._energy(y)))

    def stop(t, y, ham, **kwargs):
        diverged = ~all_finite(y)
        if tol is None:
            return diverged
        return diverged | (residual(masks, ham._dEdg_only(y)) < tol)

    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, ham: ham._vector_field(y, masks)),
        solver,
        t0=jnp.zeros((), work),
        t1=t1,
        dt0=dt,
        y0=y0,
        args=ham,
        saveat=diffrax.SaveAt(subs=subs),
        stepsize_controller=options["stepsize_controller"],
        max_steps=options["max_steps"],
        event=diffrax.Event(stop),
        throw=False,
    )
    assert solution.ys is not None and solution.ts is not None
    final = jax.tree.map(lambda y: y[-1], solution.ys[0])
    num_steps = jnp.asarray(solution.stats["num_steps"]).astype(jnp.int32)
    stopped = ~diffrax.is_okay(solution.result)
    bad = select(all_finite(final), jnp.int32(_NO_BAD), num_steps)
    # A non-finite start is step 0 (the solver cannot tell it from a later one).
    start_bad = ~all_finite(y0)
    bad = select(start_bad, jnp.int32(0), bad)
    num_steps = select(start_bad, jnp.int32(0), num_steps)
    final = {name: final[name].astype(dtypes[name]) for name in final}
    last, dEdg = ham._energy_and_dEdg(final)
    res = residual(masks, dEdg)
    if not trace:
        return final, None, bad, num_steps, stopped, last, res
    assert ts is not None
    edtype = common_dtype(dtypes)
    # Times after an early stop are not saved (diffrax fills them with inf): the
    # trace repeats the last energy.
    reached = ts < solution.ts[0][-1]
    energies = select(reached, solution.ys[1].astype(edtype), last.astype(edtype))
    return final, energies, bad, num_steps, stopped, last, res


@eqx.filter_jit
def _descend(ham, xs, masks, dt, *, steps, trace, tol, throw, solver, options):
    # The checks at the entry, once: every parameter of the model, and `dt` (a
    # traced one), each reduced on the device to one boolean.
    params_ok = all_finite(eqx.filter(ham, eqx.is_inexact_array))
    dt_ok = (dt > 0) & jnp.isfinite(dt)
    if solver is None:
        rates = _rates(ham, dt, xs)
        # With `throw=True` a failed solve raises: where a state went non-finite is
        # never seen, so it is not looked for.
        out = _euler(
            ham, xs, masks, rates, steps=steps, trace=trace, tol=tol, locate=not throw
        )
        final, energies, bad, num_steps, last, res = out
        stopped = None
    else:
        out = _ode(
            ham,
            xs,
            masks,
            dt,
            steps=steps,
            trace=trace,
            tol=tol,
            solver=solver,
            options=options,
        )
        final, energies, bad, num_steps, stopped, last, res = out
    converged = jnp.array(False) if tol is None else res < tol
    nonfinite = bad >= 0
    if last is not None:
        nonfinite = nonfinite | ~jnp.isfinite(last)
    failures = [
        (RESULTS.nonfinite, nonfinite),
        (RESULTS.invalid_dt, ~dt_ok),
        (RESULTS.nonfinite_parameter, ~params_ok),
    ]
    if stopped is not None:
        failures.insert(0, (RESULTS.solver_stopped, stopped))
    ok = RESULTS.where(converged, RESULTS.successful, RESULTS.steps_completed)
    result = outcome(ok, failures)
    solution = Solution(
        xs=final, energies=energies, num_steps=num_steps, residual=res, result=result
    )
    if throw:
        solution = raise_if_failed(_WHERE, solution, failures)
    return solution


def descend(
    ham: HAM,
    xs: StatesLike,
    *,
    steps: int | np.integer,
    dt: float | int | Float[Array, ""] | np.floating,
    clamp: Clamp | None = None,
    solver=None,
    trace: bool = True,
    tol: float | int | np.floating | None = None,
    throw: bool = True,
    stepsize_controller=None,
    max_steps: int | np.integer | None = 4096,
) -> Solution:
    r"""Descends the energy of a HAM: $\tau_\ell\,\dot x_\ell = -\partial E/\partial
    g_\ell$, for one sample.

    By default, `steps` Euler steps in one `jax.lax.scan`,

    $$x_\ell \leftarrow x_\ell - \frac{\mathrm{d}t}{\tau_\ell}
    \frac{\partial E}{\partial g_\ell},$$

    with each layer's own time constant $\tau_\ell$. Along the exact dynamics the
    energy never rises; with Euler steps it does not either when `dt` is small against
    the curvature of the energy (say `dt <= 0.1 * tau`). Clamped neurons are held
    fixed. To *retrieve* (run to the attractor), `hamux_lagr.fixed_point` is faster;
    `descend` follows the dynamics for a given time, and is what to backpropagate
    through a fixed number of steps.

    `descend` acts on **one sample** (each state of its layer's shape) and is
    compiled with `eqx.filter_jit`, as `diffrax.diffeqsolve` is; `dt` is traced, so a
    new value does not recompile. A batch is `jax.vmap` of it, with per-sample clamp
    masks as one more mapped argument; every field of the returned
    `hamux_lagr.Solution` then has the batch axis:

    ```python
    sol = jax.vmap(lambda x: hl.descend(ham, x, steps=20, dt=0.1))(xs)
    sol.xs, sol.energies          # final states; energies of shape (batch, 21)
    sol = jax.vmap(
        lambda x, m: hl.descend(ham, x, steps=20, dt=0.1, clamp={"image": m})
    )(xs, masks)
    ```

    Choosing the scheme:

    - `dt`: for a `DenseMemory` on an `LIdentity` layer (and any one-layer memory whose
      synapse energies are concave in the activations), one step with `dt = tau` is
      the concave-convex update $x \leftarrow -\partial E_\text{syn}/\partial g$
      (Ramsauer et al.'s $\Xi^\top\operatorname{softmax}(\beta\,\Xi x)$): the energy
      provably never rises. For deeper HAMs keep `dt` small.
    - `tol`: stop once $\max|\partial E/\partial g| <$ `tol` on the free neurons (at
      most `steps` steps), in a `jax.lax.while_loop`. For inference: reverse-mode
      gradients need `tol=None` (or `hamux_lagr.fixed_point`'s implicit gradients).
    - `solver`: a diffrax solver (e.g. `diffrax.Tsit5()`) integrates
      `ham.vector_field` from $t = 0$ to `steps * dt` with adaptive steps (`dt` is the
      first step), and records the energy at `steps + 1` evenly spaced times. Needs
      `pip install hamux_lagr[examples]` (or `pip install diffrax`). The solve runs in
      at least float32 and its results are cast back to the states' dtypes. An
      adaptive solver follows the dynamics to its tolerances, so the energy is
      non-increasing up to them, a fixed point is reached to about them (a `tol` far
      below `atol` is never met) and gradients through it are exact up to them (its
      step choices are not differentiated); give `stepsize_controller` for tighter
      ones.

    Checks run once, where their values are born, never inside the loop: wrong
    types, shapes and layer names raise at once (at trace time); a concrete `dt` that
    is not positive and finite raises a `ValueError` at once; at the entry of the
    solve, every parameter of the model (a traced one included) and a traced `dt`
    are checked with one reduction each. What went wrong, if anything, is the
    `Solution`'s `result` (a `hamux_lagr.RESULTS` item): a state or energy that became
    NaN or infinite (`nonfinite`, with `num_steps` the step at which it did), a
    non-finite parameter (`nonfinite_parameter`), a bad traced `dt` (`invalid_dt`), a
    diffrax solve that stopped early (`solver_stopped`).

    **Arguments:**

    - `ham`: the `hamux_lagr.HAM`.
    - `xs`: the initial states of one sample, a dict from layer name to a state of
      the layer's shape. A batched dict raises a `ValueError` pointing at `jax.vmap`.
    - `steps`: the number of Euler steps (or of recorded intervals with `solver`), an
      int in `[0, 2**31 - 1]`.
    - `dt`: the step size, `> 0`, in the same units as the layers' `tau`: a Python
      number or a 0-d array (traced: new values do not recompile).
    - `clamp`: a dict from layer name to `True` (hold the whole layer) or a boolean
      mask of the layer's shape, `True` where a neuron is held at its initial state.
      Holding *some* neurons of a layer whose Lagrangian couples its neurons
      (softmax, layer norm) keeps the energy non-increasing only if the mask is
      constant along the coupled axis.
    - `solver`: `None` for the Euler scan, or a diffrax solver.
    - `trace`: whether to record the energy. It comes from the pass that computes
      $\partial E/\partial g$, so it costs little; `False` skips it (and the loop
      then evaluates the gradient alone, as a hand-written loop does).
    - `tol`: if given, a positive number: stop early at a fixed point (see above).
    - `throw`: if `True` (the default), a `result` other than `successful` and
      `steps_completed` raises, with its message, through one `eqx.branched_error_if`
      on the way out (an `equinox.EquinoxRuntimeError`, eagerly, under `jax.jit` and
      under `jax.vmap` alike). If `False`, nothing raises and no host callback is
      compiled at all: the `Solution` says what happened (`result`, `finite`,
      `num_steps`). Export with `throw=False` (`hamux_lagr.to_onnx`,
      `hamux_lagr.to_jax_export`, or a plain `jax.export`).
    - `stepsize_controller`: with `solver`, a diffrax step-size controller; by default
      `diffrax.PIDController(rtol=1e-4, atol=1e-6)` for adaptive solvers and constant
      steps of `dt` otherwise.
    - `max_steps`: with `solver`, the most solver steps (diffrax's `max_steps`), a
      positive int.

    **Returns:**

    A `hamux_lagr.Solution`: the final states `xs` (shaped and typed like the input),
    the energy at each of the `steps + 1` times $0, \mathrm{d}t, \dots,$
    `steps * dt` (`energies`, shape `(steps + 1,)`; after an early stop with `tol` the
    last energy is repeated; `None` when `trace=False`), the steps taken
    (`num_steps`), the `residual` $\max|\partial E/\partial g|$ over the free
    neurons (at the final states; without `tol` and `solver`, at the states the last
    Euler step started from) and the `result` (`converged`: `residual < tol`, `False`
    without `tol`; `finite`).
    """
    if not isinstance(ham, HAM):
        raise TypeError(
            f"`ham` must be a `HAM` in `descend`, got {type(ham).__name__}."
        )
    steps = static_int(
        steps,
        "steps",
        _WHERE,
        hint="It is the number of Euler steps (the energy trace has `steps + 1` "
        "entries).",
    )
    states = prepare_states(ham, xs, _WHERE)
    masks = check_clamp(ham.neurons, clamp, _WHERE)
    if tol is not None:
        tol = static_float(
            tol, "tol", _WHERE, hint="It is the residual max |dE/dg| to stop at."
        )
    stepsize_controller, max_steps = _check_solver(
        solver, stepsize_controller, max_steps
    )
    dt = _check_dt(dt)
    with naming_the_entry(_WHERE):
        return _descend(
            ham,
            states,
            masks,
            dt,
            steps=steps,
            trace=bool(trace),
            tol=tol,
            throw=bool(throw),
            solver=solver,
            options={
                "stepsize_controller": stepsize_controller,
                "max_steps": max_steps,
            },
        )
