r"""Energy-descent dynamics of a HAM: $\tau_\ell\,\dot x_\ell = -\partial E/\partial g_\ell$.

Along these dynamics $\dot E = -\sum_\ell \tau_\ell^{-1} \langle \partial E/\partial g_\ell,
\nabla^2\mathcal{L}_\ell\, \partial E/\partial g_\ell\rangle \le 0$ (the Lagrangians are
convex), so the energy never rises (Krotov & Hopfield 2021; Hoover et al. 2022).
"""

import functools as ft
from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Bool, Float

from ._ham import HAM, prepare_states, States, StatesLike
from ._validation import (
    concrete_value,
    positive_scalar,
    static_float,
    static_int,
)


_Clamp = Mapping[str, bool | Bool[Array, "..."] | np.ndarray]
_WHERE = "descend"
# Up to this many steps, a non-finite state found under `jax.jit` is reported with its
# step (one message per step); beyond, without it.
_MAX_STEP_MESSAGES = 10_000


# ----------------------------------------------------------------------------------
# argument checks (structural: at trace time)
# ----------------------------------------------------------------------------------


def _check_dt(dt: object) -> Array:
    """`dt` as a real 0-d array, positive and finite (checked at once when it is
    concrete, at run time when it is traced)."""
    return positive_scalar(dt, "dt", _WHERE, _DT_HINT)


_DT_HINT = "Use a small step such as `dt=0.1` (in units of the layers' `tau`)."


def _check_clamp(ham: HAM, clamp: object) -> dict:
    """Each layer's mask: `None` (free), `True` (all held) or a boolean array of the
    layer's shape."""
    masks: dict = {name: None for name in ham.neurons}
    if clamp is None:
        return masks
    if not isinstance(clamp, Mapping):
        raise TypeError(
            "`clamp` must be a dict from layer name to a boolean mask (or True) in "
            f"`descend`, got {type(clamp).__name__}."
        )
    for name, mask in clamp.items():
        if name not in ham.neurons:
            raise ValueError(
                f"`clamp` names the unknown layer {name!r}; the layers are "
                f"{list(ham.neurons)}."
            )
        shape = ham.neurons[name].shape
        if isinstance(mask, (bool, np.bool_)):
            masks[name] = True if mask else None
            continue
        try:
            mask = jnp.asarray(mask)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"`clamp[{name!r}]` must be True or a boolean array, got "
                f"{type(mask).__name__}."
            ) from e
        if mask.dtype != jnp.bool_:
            raise TypeError(
                f"`clamp[{name!r}]` must be a boolean mask (True = held fixed), got "
                f"dtype {mask.dtype}; pass e.g. `mask.astype(bool)`."
            )
        if mask.shape != shape:
            batched = mask.ndim == len(shape) + 1 and mask.shape[1:] == shape
            raise ValueError(
                f"`clamp[{name!r}]` has shape {mask.shape}, but layer {name!r} has "
                f"shape {shape}: give a mask of shape {shape}, or True to hold the "
                "whole layer."
                + (
                    " `descend` acts on one sample: map per-sample masks with "
                    "`jax.vmap`, e.g. `jax.vmap(lambda x, m: hl.descend(ham, x, "
                    f"steps=20, dt=0.1, clamp={{{name!r}: m}}))(xs, masks)`."
                    if batched
                    else ""
                )
            )
        masks[name] = mask
    return masks


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


# ----------------------------------------------------------------------------------
# one sample
# ----------------------------------------------------------------------------------


def _rates(ham: HAM, dt: Array, xs: States) -> dict:
    """`dt / tau` for each layer, in the dtype of its state."""
    return {
        name: (dt / layer.tau).astype(xs[name].dtype)
        for name, layer in ham.neurons.items()
    }


def _step(ham: HAM, masks: dict, rates: dict, xs: States, dEdg: States) -> States:
    """One Euler step `x - dt / tau * dE/dg`, holding the clamped neurons."""
    out = {}
    for name in ham.neurons:
        x, mask = xs[name], masks[name]
        if mask is True:
            out[name] = x
            continue
        new = x - rates[name] * dEdg[name]
        out[name] = new if mask is None else jnp.where(mask, x, new)
    return out


def _residual(ham: HAM, masks: dict, dEdg: States) -> Float[Array, ""]:
    """max |dE/dg| over the free neurons (0 when none is free)."""
    out = None
    for name in ham.neurons:
        d, mask = dEdg[name], masks[name]
        if mask is True or d.size == 0:
            continue
        if mask is not None:
            d = jnp.where(mask, jnp.zeros((), d.dtype), d)
        # `max` propagates NaN, so a non-finite gradient is never "converged".
        res = jnp.max(jnp.abs(d))
        out = res if out is None else jnp.maximum(out, res.astype(out.dtype))
    if out is None:
        return jnp.zeros((), jnp.result_type(float))
    return out


def _all_finite(xs: States) -> Array:
    return ft.reduce(
        jnp.logical_and,
        [jnp.all(jnp.isfinite(x)) for x in xs.values()],
        jnp.array(True),
    )


_NO_BAD = -1


def _first_bad(bad: Array, t: Array, xs: States) -> Array:
    """`bad` (the first step with a non-finite state, or -1) after step `t`."""
    return jnp.where((bad < 0) & ~_all_finite(xs), t, bad)


def _euler(ham, xs, masks, rates, *, steps, trace, tol, check_finite):
    """Fixed-step Euler on one sample: returns `(xs, energies | None, bad_step)`."""
    int32 = jnp.int32
    bad = jnp.array(_NO_BAD, int32)
    if check_finite:
        bad = _first_bad(bad, jnp.array(0, int32), xs)
    if tol is None:
        # The step counter and the first non-finite step are carried only when
        # `check_finite` asks for them: the default loop is the bare update.
        def body(carry, _):
            x, bad, t = carry
            if trace:
                energy, dEdg = ham.energy_and_dEdg(x)
            else:
                energy, dEdg = None, ham.dEdg(x)
            x = _step(ham, masks, rates, x, dEdg)
            if check_finite:
                t = t + jnp.array(1, int32)
                bad = _first_bad(bad, t, x)
            return (x, bad, t), energy

        carry = (xs, bad, jnp.array(0, int32)) if check_finite else (xs, None, None)
        (xs, out_bad, _), energies = lax.scan(body, carry, length=steps)
        bad = bad if out_bad is None else out_bad
        if not trace:
            return xs, None, bad
        assert energies is not None
        return xs, jnp.concatenate([energies, ham.energy(xs)[None]]), bad

    # Run to a fixed point: stop once max |dE/dg| < tol on the free neurons, after
    # `steps` steps, or once a state is not finite (a non-finite gradient moves the
    # state to a non-finite value, so the divergence is reported, never hidden).
    energy, dEdg = ham.energy_and_dEdg(xs)
    buffer = jnp.zeros((steps + 1 if trace else 0,), energy.dtype)
    if trace:
        buffer = buffer.at[0].set(energy)

    def cond(carry):
        t, x, dEdg, _, _ = carry
        res = _residual(ham, masks, dEdg)
        return (t < steps) & ~(res < tol) & _all_finite(x)

    def loop(carry):
        t, x, dEdg, buffer, bad = carry
        x = _step(ham, masks, rates, x, dEdg)
        energy, dEdg = ham.energy_and_dEdg(x)
        t = t + jnp.array(1, int32)
        if trace:
            buffer = buffer.at[t].set(energy)
        if check_finite:
            bad = _first_bad(bad, t, x)
        return t, x, dEdg, buffer, bad

    carry = (jnp.array(0, int32), xs, dEdg, buffer, bad)
    t, xs, _, buffer, bad = lax.while_loop(cond, loop, carry)
    if not trace:
        return xs, None, bad
    # After convergence the state is (to `tol`) constant: repeat the last energy.
    return xs, jnp.where(jnp.arange(steps + 1, dtype=int32) > t, buffer[t], buffer), bad


def _ode(ham, xs, masks, dt, *, steps, trace, tol, check_finite, solver, options):
    """An ODE solve with diffrax on one sample: returns `(xs, energies, bad_step)`.

    The solve runs in the states' dtype promoted to at least float32 (times and
    states alike), and the results are cast back to the states' dtypes.
    """
    import diffrax

    dtypes = {name: x.dtype for name, x in xs.items()}
    with jax.numpy_dtype_promotion("standard"):
        work = jnp.result_type(jnp.float32, *dtypes.values())
    y0 = {name: x.astype(work) for name, x in xs.items()}
    taus = {name: layer.tau for name, layer in ham.neurons.items()}

    def vector_field(t, y, args):
        ham, masks = args
        dEdg = ham.dEdg(y)
        out = {}
        for name in ham.neurons:
            mask = masks[name]
            if mask is True:
                out[name] = jnp.zeros_like(y[name])
                continue
            v = -dEdg[name] / taus[name]
            out[name] = v if mask is None else jnp.where(mask, jnp.zeros_like(v), v)
        return out

    dt = dt.astype(work)
    t1 = steps * dt
    ts = jnp.linspace(jnp.zeros((), work), t1, steps + 1)

    def record(t, y, args):
        ham, masks = args
        return ham.energy(y) if trace else None, _all_finite(y)

    subs = [diffrax.SubSaveAt(t1=True), diffrax.SubSaveAt(ts=ts, fn=record)]
    event = None
    if tol is not None:

        def converged(t, y, args, **kwargs):
            ham, masks = args
            return _residual(ham, masks, ham.dEdg(y)) < tol

        event = diffrax.Event(converged)
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        solver,
        t0=jnp.zeros((), work),
        t1=t1,
        dt0=dt,
        y0=y0,
        args=(ham, masks),
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
    bad = jnp.array(_NO_BAD, jnp.int32)
    ok = diffrax.is_okay(solution.result)
    if check_finite:
        # A diffrax step that goes non-finite is kept (fixed steps), or rejected
        # until the solver runs out of `max_steps` (adaptive steps): the bad step is
        # the first recorded time at which the state is not finite, or that the
        # solve could not reach.
        stopped = ~ok | ~_all_finite(final)
        candidates = (reached & ~saved_finite) | (~reached & stopped)
        any_bad = jnp.any(candidates)
        bad = jnp.where(any_bad, jnp.argmax(candidates).astype(jnp.int32), bad)
        ok = ok | any_bad  # reported as a divergence, not as diffrax's failure
    # (Not `solution.result.error_if`: its message index cannot be reduced over an
    # empty `jax.vmap` batch.)
    max_steps_reached = solution.result == diffrax.RESULTS.max_steps_reached
    final = eqx.error_if(
        final,
        ~ok & max_steps_reached,
        f"`descend`'s diffrax solver took `max_steps` = {options['max_steps']} steps "
        "before reaching `t1 = steps * dt`; raise `max_steps`, loosen the step-size "
        "controller's tolerances, or pass `check_finite=True` to see whether the "
        "state diverges.",
    )
    final = eqx.error_if(
        final,
        ~ok & ~max_steps_reached,
        "`descend`'s diffrax solver failed before reaching `t1 = steps * dt` (call "
        "`diffrax.diffeqsolve` on `ham`'s vector field for diffrax's own message).",
    )
    final = {name: final[name].astype(dtypes[name]) for name in final}
    if not trace:
        return final, None, bad
    with jax.numpy_dtype_promotion("standard"):
        edtype = jnp.result_type(*dtypes.values())
    last = ham.energy(final)
    energies = jnp.where(reached, saved_energies.astype(edtype), last.astype(edtype))
    return final, energies, bad


@eqx.filter_jit
def _descend(ham, xs, masks, dt, *, steps, trace, tol, check_finite, solver, options):
    if solver is None:
        return _euler(
            ham,
            xs,
            masks,
            _rates(ham, dt, xs),
            steps=steps,
            trace=trace,
            tol=tol,
            check_finite=check_finite,
        )
    return _ode(
        ham,
        xs,
        masks,
        dt,
        steps=steps,
        trace=trace,
        tol=tol,
        check_finite=check_finite,
        solver=solver,
        options=options,
    )


def _non_finite_message(step: int | None, solver: bool) -> str:
    at = "" if step is None else f" at step {step}"
    return (
        f"`descend` produced a non-finite state (NaN or inf){at}"
        + (
            ", or its diffrax solver could not get there (an adaptive solver runs "
            "out of `max_steps` where the state diverges)"
            if solver
            else ""
        )
        + "; reduce `dt`, check the synapses' scale, or use a Lagrangian that does "
        "not overflow (`LExp`/`LRexp` grow like exp(beta x))."
    )


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
    # Under `jax.vmap` the index is the batch's maximum: message `i` is for step
    # `steps - i`, so that the maximum reports the earliest bad step of the batch.
    messages = tuple(_non_finite_message(steps - i, solver) for i in range(steps + 1))
    index = jnp.where(bad >= 0, steps - bad, 0)
    return eqx.branched_error_if(xs, bad >= 0, index, messages)


def descend(
    ham: HAM,
    xs: StatesLike,
    *,
    steps: int | np.integer,
    dt: float | int | Float[Array, ""] | np.floating,
    clamp: _Clamp | None = None,
    solver=None,
    trace: bool = True,
    tol: float | int | np.floating | None = None,
    check_finite: bool = False,
    stepsize_controller=None,
    max_steps: int | np.integer | None = 4096,
) -> tuple[States, Float[Array, " steps_plus_1"] | None]:
    r"""Descends the energy of a HAM: $\tau_\ell\,\dot x_\ell = -\partial E/\partial
    g_\ell$, for one sample.

    By default, `steps` Euler steps in one `jax.lax.scan`,

    $$x_\ell \leftarrow x_\ell - \frac{\mathrm{d}t}{\tau_\ell}
    \frac{\partial E}{\partial g_\ell},$$

    with each layer's own time constant $\tau_\ell$. Along the exact dynamics the
    energy never rises; with Euler steps it does not either when `dt` is small against
    the curvature of the energy (say `dt <= 0.1 * tau`). Clamped neurons are held
    fixed.

    `descend` acts on **one sample** (each state of its layer's shape) and is
    compiled with `eqx.filter_jit`, as `diffrax.diffeqsolve` is; `dt` is traced, so a
    new value does not recompile. A batch is `jax.vmap` of it, with per-sample clamp
    masks as one more mapped argument:

    ```python
    xs, energies = jax.vmap(lambda x: hl.descend(ham, x, steps=20, dt=0.1))(xs)
    xs, energies = jax.vmap(
        lambda x, m: hl.descend(ham, x, steps=20, dt=0.1, clamp={"image": m})
    )(xs, masks)
    ```

    Choosing the scheme:

    - `dt`: for a `DenseMemory` on an `LIdentity` layer (and any one-layer memory whose
      synapse energies are concave in the activations), one step with `dt = tau` is
      the concave-convex update $x \leftarrow -\partial E_\text{syn}/\partial g$
      (Ramsauer et al.'s $\Xi^\top\operatorname{softmax}(\beta\,\Xi x)$): the energy
      provably never rises, and it reaches a fixed point in a few steps. It is the
      fastest option there (see `benchmarks/bench_memory.py`). For deeper HAMs keep
      `dt` small.
    - `tol`: stop once $\max|\partial E/\partial g| <$ `tol` on the free neurons (at
      most `steps` steps), in a `jax.lax.while_loop`. For inference: reverse-mode
      gradients need `tol=None`.
    - `solver`: a diffrax solver (e.g. `diffrax.Tsit5()`) integrates the ODE from
      $t = 0$ to `steps * dt` with adaptive steps (`dt` is the first step), and
      records the energy at `steps + 1` evenly spaced times. Needs
      `pip install hamux_lagr[examples]` (or `pip install diffrax`). The solve runs in
      at least float32 and its results are cast back to the states' dtypes. An
      adaptive solver follows the dynamics to its tolerances, so the energy is
      non-increasing up to them, a fixed point is reached to about them (a `tol` far
      below `atol` is never met) and gradients through it are exact up to them (its
      step choices are not differentiated); give `stepsize_controller` for tighter
      ones. For a dense memory it is no faster than Euler (see
      `benchmarks/bench_memory.py`).

    Checks: wrong types, shapes and layer names raise at once (at trace time). `dt`
    must be positive and finite: a concrete bad value raises a `ValueError` at once, a
    traced one (under `jax.jit`) raises at run time (`eqx.error_if`).

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
    - `check_finite`: if `True`, raise when a state becomes NaN or infinite (the
      initial state included, as step 0), naming the first such step: a `ValueError`
      when called outside `jax.jit`; under `jax.jit` an error at run time carrying
      the same message (`eqx.branched_error_if`; without the step number beyond
      10,000 steps). With `solver`, a solve that cannot go on because the state
      diverges is reported so too, at the first recorded time it did not reach.
    - `stepsize_controller`: with `solver`, a diffrax step-size controller; by default
      `diffrax.PIDController(rtol=1e-4, atol=1e-6)` for adaptive solvers and constant
      steps of `dt` otherwise.
    - `max_steps`: with `solver`, the most solver steps (diffrax's `max_steps`), a
      positive int. A solve that needs more raises diffrax's error.

    **Returns:**

    A pair `(xs, energies)`: the final states (shaped and typed like `xs`) and the
    energy at each of the `steps + 1` times $0, \mathrm{d}t, \dots,$ `steps * dt`
    (shape `(steps + 1,)`; after an early stop with `tol` the last energy is
    repeated), or `None` when `trace=False`.
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
    masks = _check_clamp(ham, clamp)
    if tol is not None:
        tol = static_float(
            tol, "tol", _WHERE, hint="It is the residual max |dE/dg| to stop at."
        )
    stepsize_controller, max_steps = _check_solver(
        solver, stepsize_controller, max_steps
    )
    dt = _check_dt(dt)
    final, energies, bad = _descend(
        ham,
        states,
        masks,
        dt,
        steps=steps,
        trace=bool(trace),
        tol=tol,
        check_finite=bool(check_finite),
        solver=solver,
        options={"stepsize_controller": stepsize_controller, "max_steps": max_steps},
    )
    if check_finite:
        final = _report_non_finite(final, bad, steps, solver is not None)
    return final, energies


__all__ = ["descend"]
