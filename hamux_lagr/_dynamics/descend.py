r"""Energy-descent dynamics of a HAM: $\tau_\ell\,\dot x_\ell = -\partial E/\partial g_\ell$.

Along these dynamics $\dot E = -\sum_\ell \tau_\ell^{-1} \langle \partial E/\partial g_\ell,
\nabla^2\mathcal{L}_\ell\, \partial E/\partial g_\ell\rangle \le 0$ (the Lagrangians are
convex), so the energy never rises (Krotov & Hopfield 2021; Hoover et al. 2022).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from equinox.internal import unvmap_any
from jax import lax
from jaxtyping import Array, Float

from .._clamp import check_clamp, euler_step, residual
from .._custom_types import Clamp, States, StatesLike
from .._ham import HAM, prepare_states
from .._misc import all_finite, common_dtype
from .._validation import concrete_value, positive_scalar, static_float, static_int
from .solution import Solution


_WHERE = "descend"
# Up to this many steps, a non-finite state found under `jax.jit` is reported with its
# step (one message per step); beyond, without it.
_MAX_STEP_MESSAGES = 10_000


def _check_dt(dt: object) -> Array:
    """`dt` as a real 0-d array, positive and finite (checked at once when it is
    concrete, at run time when it is traced)."""
    return positive_scalar(dt, "dt", _WHERE, _DT_HINT)


_DT_HINT = "Use a small step such as `dt=0.1` (in units of the layers' `tau`)."


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


def _first_bad(bad: Array, t: Array, xs: States) -> Array:
    """`bad` (the first step with a non-finite state, or -1) after step `t`."""
    return jnp.where((bad < 0) & ~all_finite(xs), t, bad)


def _euler(ham, xs, masks, rates, *, steps, trace, tol, throw):
    """Fixed-step Euler on one sample: returns `(xs, energies | None, bad_step,
    num_steps, dEdg)`, `dEdg` at the final states, `bad_step` the first step with a
    non-finite state (-1 if none; with `throw=False` only whether there is one)."""
    int32 = jnp.int32
    if tol is None:
        # With `throw`, the first step with a non-finite state is tracked; without,
        # the final states tell whether there was one (a non-finite free neuron stays
        # non-finite: x - r * dE/dg), and the loop is the bare update.
        def body(carry, t):
            x, bad = carry
            if trace:
                energy, dEdg = ham.energy_and_dEdg(x)
            else:
                energy, dEdg = None, ham.dEdg(x)
            x = euler_step(masks, rates, x, dEdg)
            return (x, None if bad is None else _first_bad(bad, t, x)), energy

        start = _first_bad(jnp.array(_NO_BAD, int32), jnp.array(0, int32), xs)
        (final, bad), energies = lax.scan(
            body,
            (xs, start if throw else None),
            jnp.arange(1, steps + 1, dtype=int32),
        )
        last, dEdg = ham.energy_and_dEdg(final)
        if trace:
            assert energies is not None
            energies = jnp.concatenate([energies, last[None]])
        if bad is None:
            bad = jnp.where(all_finite(final), jnp.int32(_NO_BAD), jnp.int32(steps))
        return final, energies, bad, jnp.array(steps, int32), dEdg

    # Run to a fixed point: stop once max |dE/dg| < tol on the free neurons, after
    # `steps` steps, or once a state is not finite (a non-finite gradient moves the
    # state to a non-finite value, so the divergence is reported, never hidden).
    energy, dEdg = ham.energy_and_dEdg(xs)
    buffer = jnp.zeros((steps + 1 if trace else 0,), energy.dtype)
    if trace:
        buffer = buffer.at[0].set(energy)

    def cond(carry):
        t, x, dEdg, _ = carry
        return (t < steps) & ~(residual(masks, dEdg) < tol) & all_finite(x)

    def loop(carry):
        t, x, dEdg, buffer = carry
        x = euler_step(masks, rates, x, dEdg)
        energy, dEdg = ham.energy_and_dEdg(x)
        t = t + jnp.array(1, int32)
        if trace:
            buffer = buffer.at[t].set(energy)
        return t, x, dEdg, buffer

    carry = (jnp.array(0, int32), xs, dEdg, buffer)
    t, final, dEdg, buffer = lax.while_loop(cond, loop, carry)
    # The loop stops at the first non-finite state.
    bad = jnp.where(all_finite(final), jnp.int32(_NO_BAD), t)
    energies = None
    if trace:
        # After convergence the state is (to `tol`) constant: repeat the last energy.
        energies = jnp.where(jnp.arange(steps + 1, dtype=int32) > t, buffer[t], buffer)
    return final, energies, bad, t, dEdg


def _ode(ham, xs, masks, dt, *, steps, trace, tol, solver, options):
    """An ODE solve with diffrax on one sample: returns `(xs, energies, bad_step,
    num_steps, dEdg)`.

    The solve runs in the states' dtype promoted to at least float32 (times and
    states alike), and the results are cast back to the states' dtypes.
    """
    import diffrax

    dtypes = {name: x.dtype for name, x in xs.items()}
    with jax.numpy_dtype_promotion("standard"):
        work = jnp.result_type(jnp.float32, *dtypes.values())
    y0 = {name: x.astype(work) for name, x in xs.items()}
    clamp = {name: mask for name, mask in masks.items() if mask is not None}

    dt = dt.astype(work)
    t1 = steps * dt
    ts = jnp.linspace(jnp.zeros((), work), t1, steps + 1)

    def record(t, y, args):
        ham, _ = args
        return ham.energy(y) if trace else None, all_finite(y)

    subs = [diffrax.SubSaveAt(t1=True), diffrax.SubSaveAt(ts=ts, fn=record)]
    event = None
    if tol is not None:

        def converged(t, y, args, **kwargs):
            ham, _ = args
            return residual(masks, ham.dEdg(y)) < tol

        event = diffrax.Event(converged)
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: args[0].vector_field(t, y, args[1])),
        solver,
        t0=jnp.zeros((), work),
        t1=t1,
        dt0=dt,
        y0=y0,
        args=(ham, clamp),
        saveat=diffrax.SaveAt(subs=subs),
        stepsize_controller=options["stepsize_controller"],
        max_steps=options["max_steps"],
        event=event,
        throw=False,
    )
    assert solution.ys is not None and solution.ts is not None
    final = jax.tree.map(lambda y: y[-1], solution.ys[0])
    t_end = solution.ts[0][-1]
    saved_energies, saved_finite = solution.ys[1]
    # Times the solve reached; after an early stop (`tol`, or a failure) diffrax
    # saves nothing (it fills with inf): the trace repeats the last energy.
    reached = ts < t_end
    ok = diffrax.is_okay(solution.result)
    # The first recorded time at which the state is not finite (a constant-step
    # solver keeps a non-finite step), or that a failed solve could not reach: an
    # adaptive solver rejects the steps of a diverging state until it runs out of
    # `max_steps`, so its states stay finite while it cannot go on.
    seen = (reached & ~saved_finite).at[0].set(~all_finite(y0))
    candidates = seen | (~reached & ~ok)
    bad = jnp.where(
        jnp.any(candidates),
        jnp.argmax(candidates).astype(jnp.int32),
        jnp.where(all_finite(final), jnp.int32(_NO_BAD), jnp.int32(steps)),
    )
    final = {name: final[name].astype(dtypes[name]) for name in final}
    last, dEdg = ham.energy_and_dEdg(final)
    num_steps = jnp.asarray(solution.stats["num_steps"]).astype(jnp.int32)
    if not trace:
        return final, None, bad, num_steps, dEdg
    edtype = common_dtype(dtypes)
    energies = jnp.where(reached, saved_energies.astype(edtype), last.astype(edtype))
    return final, energies, bad, num_steps, dEdg


@eqx.filter_jit
def _descend(ham, xs, masks, dt, *, steps, trace, tol, throw, solver, options):
    if solver is None:
        out = _euler(
            ham,
            xs,
            masks,
            _rates(ham, dt, xs),
            steps=steps,
            trace=trace,
            tol=tol,
            throw=throw,
        )
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
    final, energies, bad, num_steps, dEdg = out
    res = residual(masks, dEdg)
    converged = jnp.array(False) if tol is None else res < tol
    return final, energies, bad, num_steps, res, converged


def _non_finite_message(step: int | None, solver: bool) -> str:
    at = "" if step is None else f" at step {step}"
    return (
        f"`descend` produced a non-finite state (NaN or inf){at}"
        + (
            ", or its diffrax solver could not get there (an adaptive solver runs "
            "out of `max_steps` where the state diverges; raise `max_steps` if it "
            "does not)"
            if solver
            else ""
        )
        + "; reduce `dt`, check the synapses' scale, or use a Lagrangian that does "
        "not overflow (`LExp`/`LRexp` grow like exp(beta x)). Pass `throw=False` to "
        "get the `Solution` anyway, marked `finite=False`."
    )


def _earliest(bad: Array, steps: int) -> tuple[Array, Array]:
    """Whether any sample has a bad step (`bad >= 0`), and the earliest one, as
    values that are the same for a whole `jax.vmap` batch.

    A binary search over the steps with `unvmap_any`, which (unlike a maximum) is
    defined for an empty batch too.
    """
    any_bad = unvmap_any(bad >= 0)
    # The smallest k in [0, steps] with any(0 <= bad <= k): k = below + 1, where
    # `below` is the largest value with no bad step at or before it.
    below = jnp.array(-1, jnp.int32)
    for bit in reversed(range(max(steps, 1).bit_length())):
        trial = below + jnp.int32(1 << bit)
        none_yet = ~unvmap_any((bad >= 0) & (bad <= trial))
        below = jnp.where(none_yet & (trial <= steps), trial, below)
    return any_bad, jnp.minimum(below + 1, steps)


def _report_non_finite(xs: States, bad: Array, steps: int, solver: bool) -> States:
    """Raises for a non-finite state at step `bad >= 0`: a `ValueError` at once when
    `bad` is concrete, else an error at run time (`eqx.branched_error_if`)."""
    value = concrete_value(bad)
    if value is not None:
        if int(value) >= 0:
            raise ValueError(_non_finite_message(int(value), solver))
        return xs
    if steps > _MAX_STEP_MESSAGES:
        return eqx.error_if(xs, bad >= 0, _non_finite_message(None, solver))
    # Under `jax.vmap`, the earliest bad step of the batch.
    any_bad, step = _earliest(bad, steps)
    messages = tuple(_non_finite_message(i, solver) for i in range(steps + 1))
    return eqx.branched_error_if(xs, any_bad, step, messages)


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

    Checks: wrong types, shapes and layer names raise at once (at trace time). `dt`
    must be positive and finite: a concrete bad value raises a `ValueError` at once, a
    traced one (under `jax.jit`) raises at run time (`eqx.error_if`). A state that
    becomes NaN or infinite is reported (`throw`).

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
      $\partial E/\partial g$, so it costs little; `False` skips it.
    - `tol`: if given, a positive number: stop early at a fixed point (see above).
    - `throw`: if `True` (the default), a state that becomes NaN or infinite (the
      initial state included, as step 0) raises, naming the first such step: a
      `ValueError` when called outside `jax.jit`; under `jax.jit` an error at run
      time carrying the same message (`eqx.branched_error_if`; without the step
      number beyond 10,000 steps). A diffrax solve that stops before `steps * dt`
      counts as diverging (an adaptive solver rejects the steps of a diverging state
      until it runs out of `max_steps`), at the first recorded time it did not reach.
      If `False`, nothing raises: the `Solution` is returned with `finite=False`.
      Export with `throw=False` (`hamux_lagr.to_onnx`, `hamux_lagr.to_jax_export`):
      an exported model cannot run the error's host callback.
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
    (`num_steps`), the final `residual` $\max|\partial E/\partial g|$ over the free
    neurons, `converged` (`residual < tol`; `False` without `tol`) and `finite`.
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
    final, energies, bad, num_steps, res, converged = _descend(
        ham,
        states,
        masks,
        dt,
        steps=steps,
        trace=bool(trace),
        tol=tol,
        throw=bool(throw),
        solver=solver,
        options={"stepsize_controller": stepsize_controller, "max_steps": max_steps},
    )
    if throw:
        final = _report_non_finite(final, bad, steps, solver is not None)
    return Solution(
        xs=final,
        energies=energies,
        num_steps=num_steps,
        residual=res,
        converged=converged,
        finite=bad < 0,
    )
