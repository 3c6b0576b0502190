r"""Energy-descent dynamics of a HAM: $\tau_\ell\,\dot x_\ell = -\partial E/\partial g_\ell$.

Along these dynamics $\dot E = -\sum_\ell \tau_\ell^{-1} \langle \partial E/\partial g_\ell,
\nabla^2\mathcal{L}_\ell\, \partial E/\partial g_\ell\rangle \le 0$ (the Lagrangians are
convex), so the energy never rises (Krotov & Hopfield 2021; Hoover et al. 2022).
"""

import functools as ft
import math
from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.core import Tracer
from jaxtyping import Array, Bool, Float

from ._ham import HAM, prepare_states, States, StatesLike
from ._validation import concrete_value


_Clamp = Mapping[str, bool | Bool[Array, "..."] | np.ndarray]


# ----------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------


def _check_steps(steps: object) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(
            f"`steps` must be a Python int in `descend`, got {type(steps).__name__} "
            f"{steps!r}."
        )
    if steps < 0:
        raise ValueError(
            f"`steps` must be >= 0 in `descend`, got {steps}; it is the number of "
            "Euler steps (the energy trace has `steps + 1` entries)."
        )
    return int(steps)


def _check_dt(dt: object) -> float | Array:
    if dt is None or isinstance(dt, (bool, str, bytes)):
        raise TypeError(f"`dt` must be a positive number in `descend`, got {dt!r}.")
    value = concrete_value(dt)
    if value is None:  # traced: cannot be checked, use as is
        return jnp.asarray(dt)
    if value.ndim != 0 or not np.issubdtype(value.dtype, np.number):
        raise TypeError(f"`dt` must be a positive scalar in `descend`, got {dt!r}.")
    dt = float(value)
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(
            f"`dt` must be a finite positive number in `descend`, got {dt}; use a "
            "small step such as `dt=0.1` (in units of the layers' `tau`)."
        )
    return dt


def _check_clamp(ham: HAM, clamp: object, batch: int | None) -> dict:
    """Each layer's mask: `None` (free), `True` (all held) or a boolean array."""
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
        allowed = [shape] + ([(batch, *shape)] if batch is not None else [])
        if mask.shape not in allowed:
            raise ValueError(
                f"`clamp[{name!r}]` has shape {mask.shape}, but layer {name!r} has "
                f"shape {shape}: give a mask of shape {shape}"
                + (f" or {(batch, *shape)} (one per sample)" if batch else "")
                + ", or True to hold the whole layer."
            )
        masks[name] = mask
    return masks


# ----------------------------------------------------------------------------------
# one sample
# ----------------------------------------------------------------------------------


def _step(ham: HAM, masks: dict, dt, xs: States, dEdg: States) -> States:
    """One Euler step `x - dt / tau * dE/dg`, holding the clamped neurons."""
    out = {}
    for name, layer in ham.neurons.items():
        x, mask = xs[name], masks[name]
        if mask is True:
            out[name] = x
            continue
        new = x - (dt / layer.tau) * dEdg[name]
        out[name] = new if mask is None else jnp.where(mask, x, new)
    return out


def _residual(ham: HAM, masks: dict, dEdg: States) -> Float[Array, ""]:
    """max |dE/dg| over the free neurons (0 when every neuron is held)."""
    out = jnp.zeros((), jnp.result_type(*dEdg.values()))
    for name in ham.neurons:
        d, mask = dEdg[name], masks[name]
        if mask is True or d.size == 0:
            continue
        if mask is not None:
            d = jnp.where(mask, 0, d)
        # `max` propagates NaN, so a non-finite state ends a convergence loop.
        out = jnp.maximum(out, jnp.max(jnp.abs(d)))
    return out


def _all_finite(xs: States) -> Array:
    return ft.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(x)) for x in xs.values()])


def _euler(ham, xs, masks, *, steps, dt, trace, tol, check_finite):
    """Fixed-step Euler on one sample: returns `(xs, energies | None, bad_step)`."""
    no_bad = jnp.array(-1, jnp.int32)
    if tol is None:
        # The step counter and the first non-finite step are carried only when
        # `check_finite` asks for them: the default loop is the bare update.
        def body(carry, _):
            x, bad, t = carry
            if trace:
                energy, dEdg = ham.energy_and_dEdg(x)
            else:
                energy, dEdg = None, ham.dEdg(x)
            x = _step(ham, masks, dt, x, dEdg)
            if check_finite:
                bad = jnp.where((bad < 0) & ~_all_finite(x), t + 1, bad)
                t = t + 1
            return (x, bad, t), energy

        carry = (
            (xs, no_bad, jnp.array(0, jnp.int32)) if check_finite else (xs, None, None)
        )
        (xs, bad, _), energies = lax.scan(body, carry, length=steps)
        bad = no_bad if bad is None else bad
        if not trace:
            return xs, None, bad
        assert energies is not None
        return xs, jnp.concatenate([energies, ham.energy(xs)[None]]), bad

    # Run to a fixed point: stop once max |dE/dg| < tol on the free neurons (or after
    # `steps` steps). Each step evaluates the energy and its gradient once.
    energy, dEdg = ham.energy_and_dEdg(xs)
    # The energy trace, filled as the loop goes (a dummy when it is not recorded).
    buffer = jnp.zeros((steps + 1 if trace else 0,), energy.dtype)
    if trace:
        buffer = buffer.at[0].set(energy)

    def cond(carry):
        t, _, dEdg, _, _ = carry
        res = _residual(ham, masks, dEdg)
        return (t < steps) & (res >= tol) & jnp.isfinite(res)

    def loop(carry):
        t, x, dEdg, buffer, bad = carry
        x = _step(ham, masks, dt, x, dEdg)
        energy, dEdg = ham.energy_and_dEdg(x)
        if trace:
            buffer = buffer.at[t + 1].set(energy)
        if check_finite:
            bad = jnp.where((bad < 0) & ~_all_finite(x), t + 1, bad)
        return t + 1, x, dEdg, buffer, bad

    carry = (jnp.array(0, jnp.int32), xs, dEdg, buffer, no_bad)
    t, xs, _, buffer, bad = lax.while_loop(cond, loop, carry)
    if not trace:
        return xs, None, bad
    # After convergence the state is (to `tol`) constant: repeat the last energy.
    return xs, jnp.where(jnp.arange(steps + 1) > t, buffer[t], buffer), bad


def _ode(ham, xs, masks, *, steps, dt, trace, tol, check_finite, solver, options):
    """An ODE solve with diffrax on one sample: returns `(xs, energies, bad_step)`."""
    import diffrax

    def vector_field(t, y, args):
        ham, masks = args
        dEdg = ham.dEdg(y)
        out = {}
        for name, layer in ham.neurons.items():
            mask = masks[name]
            if mask is True:
                out[name] = jnp.zeros_like(y[name])
                continue
            v = -dEdg[name] / layer.tau
            out[name] = v if mask is None else jnp.where(mask, 0, v)
        return out

    t1 = steps * dt
    controller = options["stepsize_controller"]
    if controller is None:
        if isinstance(solver, diffrax.AbstractAdaptiveSolver):
            controller = diffrax.PIDController(rtol=1e-4, atol=1e-6)
        else:
            controller = diffrax.ConstantStepSize()
    ts = jnp.linspace(0, t1, steps + 1)
    subs = [diffrax.SubSaveAt(t1=True)]
    if trace:
        subs.append(diffrax.SubSaveAt(ts=ts, fn=lambda t, y, args: args[0].energy(y)))
    event = None
    if tol is not None:

        def converged(t, y, args, **kwargs):
            ham, masks = args
            return _residual(ham, masks, ham.dEdg(y)) < tol

        event = diffrax.Event(converged)
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        solver,
        t0=0.0,
        t1=t1,
        dt0=dt,
        y0=xs,
        args=(ham, masks),
        saveat=diffrax.SaveAt(subs=subs),
        stepsize_controller=controller,
        max_steps=options["max_steps"],
        event=event,
    )
    assert solution.ys is not None and solution.ts is not None
    final = jax.tree.map(lambda y: y[0], solution.ys[0])
    bad = jnp.array(-1, jnp.int32)
    if check_finite:
        bad = jnp.where(_all_finite(final), bad, steps)
    if not trace:
        return final, None, bad
    # After an early stop (`tol`), diffrax saves nothing: repeat the last energy.
    t_end = solution.ts[0][0]
    energies = jnp.where(ts > t_end, ham.energy(final), solution.ys[1])
    if check_finite:
        ok = jnp.isfinite(energies)
        bad = jnp.where(jnp.all(ok), bad, jnp.argmin(ok).astype(jnp.int32))
    return final, energies, bad


def _descend(ham, xs, masks, batch, batched_masks, **kwargs):
    solver = kwargs.pop("solver")
    options = kwargs.pop("options")
    if solver is None:
        run = lambda x, m: _euler(ham, x, m, **kwargs)  # noqa: E731
    else:
        run = lambda x, m: _ode(  # noqa: E731
            ham, x, m, solver=solver, options=options, **kwargs
        )
    if batch is None:
        return run(xs, masks)
    # A batch is the vmap of one sample: each sample has its own trace (and its own
    # step sizes and stopping time with `tol` or an adaptive solver).
    in_masks = {name: 0 if name in batched_masks else None for name in masks}
    # `True`/`None` masks are static: close over them rather than map them.
    static = {k: v for k, v in masks.items() if v is None or v is True}
    dynamic = {k: v for k, v in masks.items() if k not in static}

    def one(x, dyn):
        return run(x, {**static, **dyn})

    axes = {k: in_masks[k] for k in dynamic}
    return jax.vmap(one, in_axes=(0, axes))(xs, dynamic)


# Called outside any trace (eagerly), `descend` runs compiled and cached; called under
# `jit`, `grad` or `vmap`, it traces straight into the caller's program.
_descend_jit = eqx.filter_jit(_descend)


def _traced(*trees) -> bool:
    return any(isinstance(leaf, Tracer) for leaf in jax.tree_util.tree_leaves(trees))


@eqx.filter_jit
def _energy(ham, xs):
    return ham.energy(xs)


def _raise_non_finite(bad) -> None:
    bad = np.asarray(bad)
    if np.any(bad >= 0):
        flat = np.where(bad.reshape(-1) >= 0, bad.reshape(-1), np.iinfo(np.int32).max)
        sample = int(np.argmin(flat))
        where = f" (sample {sample} of the batch)" if bad.ndim else ""
        raise ValueError(
            f"`descend` produced a non-finite state (NaN or inf) at step "
            f"{int(flat[sample])}{where}; reduce `dt`, check the synapses' scale, or "
            "use a Lagrangian that does not overflow (`LExp`/`LRexp` grow like "
            "exp(beta x))."
        )


def descend(
    ham: HAM,
    xs: StatesLike,
    *,
    steps: int,
    dt: float | int | Float[Array, ""],
    clamp: _Clamp | None = None,
    solver=None,
    trace: bool = True,
    tol: float | int | None = None,
    check_finite: bool = False,
    stepsize_controller=None,
    max_steps: int | None = 4096,
) -> tuple[States, Float[Array, "*batch steps_plus_1"] | None]:
    r"""Descends the energy of a HAM: $\tau_\ell\,\dot x_\ell = -\partial E/\partial
    g_\ell$.

    By default, `steps` Euler steps in one `jax.lax.scan`,

    $$x_\ell \leftarrow x_\ell - \frac{\mathrm{d}t}{\tau_\ell}
    \frac{\partial E}{\partial g_\ell},$$

    with each layer's own time constant $\tau_\ell$. Along the exact dynamics the
    energy never rises; with Euler steps it does not either when `dt` is small against
    the curvature of the energy (say `dt <= 0.1 * tau`). Clamped neurons are held
    fixed.

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
      `pip install hamux_lagr[examples]` (or `pip install diffrax`). An adaptive
      solver follows the dynamics to its tolerances, so the energy is non-increasing
      up to them, a fixed point is reached to about them (a `tol` far below
      `atol` is never met) and gradients through it are exact up to them (its step
      choices are not differentiated); give `stepsize_controller` for tighter ones.
      For a dense memory it is no faster than Euler (see
      `benchmarks/bench_memory.py`).

    Batches: `xs` may hold one sample or a batch (a leading axis on every layer); a
    batch is `jax.vmap` of one sample, each with its own trace.

    **Arguments:**

    - `ham`: the `hamux_lagr.HAM`.
    - `xs`: the initial states, one sample or a batch.
    - `steps`: the number of Euler steps (or of recorded intervals with `solver`),
      `>= 0`.
    - `dt`: the step size, `> 0`, in the same units as the layers' `tau`.
    - `clamp`: a dict from layer name to `True` (hold the whole layer) or a boolean
      mask of the layer's shape (or `(batch, *shape)`), `True` where a neuron is held
      at its initial state. Holding *some* neurons of a layer whose Lagrangian couples
      its neurons (softmax, layer norm) keeps the energy non-increasing only if the
      mask is constant along the coupled axis.
    - `solver`: `None` for the Euler scan, or a diffrax solver.
    - `trace`: whether to record the energy. It comes from the pass that computes
      $\partial E/\partial g$, so it costs little; `False` skips it.
    - `tol`: if given, stop early at a fixed point (see above).
    - `check_finite`: if `True`, raise a `ValueError` naming the first step at which a
      state became NaN or infinite. (Called under `jax.jit` the error is raised at run
      time by a callback, as a `JaxRuntimeError` carrying the same message.)
    - `stepsize_controller`: with `solver`, a diffrax step-size controller; by default
      `diffrax.PIDController(rtol=1e-4, atol=1e-6)` for adaptive solvers and constant
      steps of `dt` otherwise.
    - `max_steps`: with `solver`, the most solver steps (diffrax's `max_steps`).

    **Returns:**

    A pair `(xs, energies)`: the final states (shaped like `xs`) and the energy at each
    of the `steps + 1` times $0, \mathrm{d}t, \dots,$ `steps * dt` (shape
    `(steps + 1,)`, or `(batch, steps + 1)` for a batch; after an early stop with `tol`
    the last energy is repeated), or `None` when `trace=False`.
    """
    if not isinstance(ham, HAM):
        raise TypeError(
            f"`ham` must be a `HAM` in `descend`, got {type(ham).__name__}."
        )
    steps = _check_steps(steps)
    dt = _check_dt(dt)
    states, batch = prepare_states(ham, xs, "descend")
    masks = _check_clamp(ham, clamp, batch)
    if tol is not None:
        tol = float(tol)
        if not tol > 0:
            raise ValueError(f"`tol` must be positive in `descend`, got {tol}.")
    if solver is not None:
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
    if steps == 0:
        energies = _energy(ham, states)[..., None] if trace else None
        return states, energies
    batched_masks = frozenset(
        name
        for name, mask in masks.items()
        if batch is not None
        and mask is not None
        and mask is not True
        and mask.ndim == len(ham.neurons[name].shape) + 1
    )
    run = _descend if _traced(ham, states, masks, dt) else _descend_jit
    final, energies, bad = run(
        ham,
        states,
        masks,
        batch,
        batched_masks,
        steps=steps,
        dt=dt,
        trace=bool(trace),
        tol=tol,
        check_finite=bool(check_finite),
        solver=solver,
        options={"stepsize_controller": stepsize_controller, "max_steps": max_steps},
    )
    if check_finite:
        concrete = concrete_value(bad)
        if concrete is not None:
            _raise_non_finite(concrete)
        else:
            jax.debug.callback(_raise_non_finite, bad)
    return final, energies


__all__ = ["descend"]
