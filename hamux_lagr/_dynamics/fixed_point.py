r"""Fixed points of a HAM's dynamics, found fast, with implicit gradients.

A fixed point of $\tau_\ell\,\dot x_\ell = -\partial E/\partial g_\ell$ is a zero of
$\partial E/\partial g$ on the free neurons, equivalently a fixed point of the Euler map
$G(x) = x - \frac{\mathrm{d}t}{\tau}\,\partial E/\partial g$ for any step. With
`dt = tau` on a leaky layer, $G(x) = -\partial E_\text{syn}/\partial g$ is the
concave-convex update (Yuille & Rangarajan 2003; Ramsauer et al. 2020). The forward
solve iterates $G$ under an energy safeguard (`solvers.py`); gradients follow from an
Optimistix adjoint: the implicit function theorem at the fixed point (Bai et al. 2019),
its linear solve chosen from the HAM's structure, or an approximation (`adjoints.py`).
"""

import functools as ft

import equinox as eqx
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jax.core import Tracer
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float

from .._clamp import check_clamp, hold, residual
from .._custom_types import Clamp, Masks, StatesLike
from .._ham import HAM, prepare_states
from .._lagrangians.polynomial import LIdentity
from .._misc import all_finite, common_dtype
from .._validation import positive_scalar, static_float, static_int
from .adjoints import structured_implicit_adjoint, symmetric_tags
from .solution import naming_the_entry, outcome, raise_if_failed, RESULTS, Solution
from .solvers import AbstractSafeguardedSolver, SafeguardedIteration


_WHERE = "fixed_point"


def _primal(inputs):
    """The forward solve: `solver` iterates `fn` from `y0` until its stop rule holds
    or `max_steps` evaluations. Returns the fixed point and `(energy, residual,
    evaluations)`."""
    fn, solver, y0, args, tol, max_steps, while_loop = inputs
    state = solver.init(y0, y0.dtype, tol)

    def cond(carry):
        return ~solver.terminate(carry[1])

    def body(carry):
        y, state = carry
        return solver.step(fn, y, args, state)

    _, state = while_loop(cond, body, (y0, state), max_steps=max_steps)
    root, energy, res = solver.postprocess(state)
    return root, (energy, res, state.evals)


def _rewrite(root, residual, inputs):
    """`G(y) - y`, zero at the fixed point: what the implicit function theorem
    differentiates."""
    del residual
    fn, _, _, args, *_ = inputs
    return fn(root, args)[0] - root


# `optimistix.implicit_jvp` wants plain global functions; a jaxtyping import hook (as
# in the test suite) wraps them, as Optimistix itself notes for its own.
_primal = getattr(_primal, "__wrapped__", _primal)
_rewrite = getattr(_rewrite, "__wrapped__", _rewrite)


def _is_symmetric(ham: HAM, masks: Masks) -> bool:
    """Whether `dG/dx` is symmetric: every free layer's state is its activation
    (`LIdentity`, so `dE/dg` is the gradient of the energy in the states) and all
    move at one rate (one `tau`)."""
    free = [name for name in ham.neurons if masks[name] is not True]
    return (
        all(isinstance(ham.neurons[name].lagrangian, LIdentity) for name in free)
        and len({ham.neurons[name].tau for name in free}) <= 1
    )


@eqx.filter_jit
def _solve(ham, x0, masks, rates, *, tol, max_steps, solver, adjoint, throw):
    # The checks at the entry, once: every parameter of the model, reduced on the
    # device to one boolean.
    params_ok = all_finite(eqx.filter(ham, eqx.is_inexact_array))
    dtypes = {name: x.dtype for name, x in x0.items()}
    # The solve runs in at least float32: the energy safeguard needs to resolve
    # energy differences (bfloat16's rounding is 1e-2), and Lineax's linear solves
    # need float32 or wider.
    work = common_dtype({"": jnp.float32, **dtypes})
    x0 = {name: x.astype(work) for name, x in x0.items()}
    rates = {name: rate.astype(work) for name, rate in rates.items()}
    # The solver sees one flat vector: its bookkeeping is then a few operations per
    # step, not a few per layer.
    flat0, unravel = ravel_pytree(x0)

    def euler_map(y, args):
        ham, x0, rates = args
        # Clamped neurons are read from (and mapped to) their initial values, not
        # `y`: the implicit linear system stays non-singular, carries their tangents,
        # and keeps the symmetry of `dG/dx` where the energy gives it.
        xs = hold(masks, x0, unravel(y))
        energy, dEdg = ham._energy_and_dEdg(xs)
        new = hold(masks, x0, {n: xs[n] - rates[n] * dEdg[n] for n in xs})
        # The slope of the energy along the step, d/ds E(x + s (G(x) - x)) at 0,
        # where it is known exactly: on layers whose state is their activation.
        slope = sum(
            (jnp.vdot(dEdg[n], new[n] - xs[n]) for n in identity),
            jnp.zeros((), energy.dtype),
        )
        return ravel_pytree(new)[0], (energy, residual(masks, dEdg), slope)

    identity = [
        name
        for name, layer in ham.neurons.items()
        if isinstance(layer.lagrangian, LIdentity) and masks[name] is not True
    ]
    args = (ham, x0, rates)
    fn = eqx.filter_closure_convert(euler_map, flat0, args)
    symmetric = _is_symmetric(ham, masks)
    # Optimistix's default linear solver (which would materialise the Jacobian for
    # these tags): choose a matrix-free one from the structure.
    if isinstance(adjoint, optx.ImplicitAdjoint) and adjoint.linear_solver == (
        lx.AutoLinearSolver(well_posed=None)
    ):
        adjoint = structured_implicit_adjoint(symmetric, tol, work)
    inputs = (fn, solver, flat0, args, tol, max_steps)
    root, (energy, res, evals) = adjoint.apply(
        _primal, _rewrite, inputs, symmetric_tags(symmetric)
    )
    final = {name: x.astype(dtypes[name]) for name, x in unravel(root).items()}
    finite = jnp.isfinite(energy) & jnp.isfinite(res) & all_finite(root)
    # A traced `dt` is checked here, once, as a result code (no host callback).
    dt_ok = ft.reduce(
        jnp.logical_and,
        [(r > 0) & jnp.isfinite(r) for r in rates.values()],
        jnp.array(True),
    )
    failures = [
        (RESULTS.max_steps_reached, ~(res < tol)),
        (RESULTS.nonfinite, ~finite),
        (RESULTS.invalid_dt, ~dt_ok),
        (RESULTS.nonfinite_parameter, ~params_ok),
    ]
    result = outcome(RESULTS.successful, failures)
    solution = Solution(
        xs=final,
        energies=None,
        num_steps=evals.astype(jnp.int32),
        residual=res.astype(common_dtype(dtypes)),
        result=result,
    )
    if throw:
        solution = raise_if_failed(_WHERE, solution, failures)
    return solution


def fixed_point(
    ham: HAM,
    xs: StatesLike,
    *,
    tol: float | int | np.floating = 1e-4,
    max_steps: int | np.integer = 1000,
    clamp: Clamp | None = None,
    dt: float | int | Float[Array, ""] | np.floating | None = None,
    solver: AbstractSafeguardedSolver = SafeguardedIteration(),
    adjoint: optx.AbstractAdjoint = optx.ImplicitAdjoint(),
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

    Solvers (`solver=`, both safeguarded by the energy: an iterate whose energy is
    not sufficiently below the last accepted one's is rejected, and the solve goes on
    from the last accepted iterate with a shorter plain step of $G$; so the accepted
    energies never rise, the result's energy is never above the start's, and it is
    the attractor the dynamics descend to, e.g. for separated patterns the retrieved
    pattern):

    - `hamux_lagr.SafeguardedIteration()` (default): steps of $G$, over-relaxed while
      a state slides away from a saddle (e.g. a query drifting to a mixture of
      patterns), shortened where $G$ steps too far for the curvature of the energy
      (a distance memory, `similarity="l2"`). On the dense memory of
      `benchmarks/bench_dynamics.py` it needs 3 / 14 evaluations of $\partial
      E/\partial g$ at beta 1 / 10, where the concave-convex update
      `descend(dt=tau, tol=...)` needs 3 / 16, and 11 on a 3-layer classifier HAM
      where Euler steps of `dt = 0.1` need 150.
    - `hamux_lagr.Anderson(history=3)`: Anderson acceleration of $G$ (Walker & Ni
      2011). It takes fewer evaluations where $G$ contracts slowly, but each costs
      more bookkeeping: it pays off when evaluations are expensive.

    Gradients (`adjoint=`, reverse and forward mode) are by default exact and
    implicit (`optimistix.ImplicitAdjoint()`): at the fixed point $x^\ast = G(x^\ast,
    \theta)$, the implicit function theorem gives $\mathrm{d}x^\ast/\mathrm{d}\theta
    = (I - \partial_x G)^{-1}\partial_\theta G$ (Bai et al. 2019), one matrix-free
    linear solve whatever the number of steps: conjugate gradients (`lineax.CG`)
    where $\partial_x G$ is symmetric (every free layer an `LIdentity`, one `tau`:
    e.g. a dense memory), GMRES otherwise, at a tolerance tied to `tol`. Memory does
    not grow with the steps, and the gradient does not vanish with them. They are the
    gradients of the exact fixed point, so they are as accurate as the solve: use a
    `tol` well below the accuracy you need. For training, the approximate
    `hamux_lagr.JacobianFreeAdjoint()` (Fung et al. 2022) and
    `hamux_lagr.PhantomAdjoint(steps=k)` (Geng et al. 2021) skip the linear solve;
    `optimistix.RecursiveCheckpointAdjoint()` backpropagates through the iterations.

    The solve runs in the states' dtype promoted to at least float32 (bfloat16's
    rounding cannot resolve the energy safeguard, and Lineax solves in float32 or
    wider); the result is rounded back to the states' dtypes.

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
    - `solver`: `hamux_lagr.SafeguardedIteration(...)` (the default) or
      `hamux_lagr.Anderson(history=...)` (see above).
    - `adjoint`: any `optimistix.AbstractAdjoint`: `optimistix.ImplicitAdjoint()` (the
      default; with its default `lineax.AutoLinearSolver(well_posed=None)` the linear
      solve is chosen as above, any other `linear_solver` is used as given, e.g.
      `lineax.AutoLinearSolver(well_posed=True)` for a dense solve of a small HAM),
      `hamux_lagr.JacobianFreeAdjoint()`, `hamux_lagr.PhantomAdjoint(...)` or
      `optimistix.RecursiveCheckpointAdjoint()`.
    - `throw`: if `True` (the default), a solve that does not converge within
      `max_steps`, or meets a non-finite state or energy (e.g. an energy with no
      lower bound), raises: an error at run time (`eqx.branched_error_if`) naming
      the outcome. If `False` nothing
      raises: the `Solution` says `converged=False` (or `finite=False`). Export with
      `throw=False` (`hamux_lagr.to_onnx`, `hamux_lagr.to_jax_export`): an exported
      model cannot run the error's host callback.

    **Returns:**

    A `hamux_lagr.Solution`: the fixed point `xs` (the last accepted iterate if it did
    not converge), `energies=None`, the iterations taken (`num_steps`), the
    `residual` $\max|\partial E/\partial g|$ at `xs` (of the solve, before rounding
    to a half-precision dtype) and the `result` (`successful`, `max_steps_reached`,
    `nonfinite`, `nonfinite_parameter`; `converged` and `finite`).
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
    if not isinstance(solver, AbstractSafeguardedSolver):
        raise TypeError(
            "`solver` must be `hamux_lagr.SafeguardedIteration(...)` or "
            f"`hamux_lagr.Anderson(...)` in `fixed_point`, got {type(solver).__name__}."
        )
    if not isinstance(adjoint, optx.AbstractAdjoint):
        raise TypeError(
            "`adjoint` must be an `optimistix.AbstractAdjoint` in `fixed_point`, e.g. "
            "`optimistix.ImplicitAdjoint()` (the default), "
            "`hamux_lagr.JacobianFreeAdjoint()` or "
            "`optimistix.RecursiveCheckpointAdjoint()`, got "
            f"{type(adjoint).__name__}."
        )
    if dt is None:
        rates = {name: jnp.ones((), x.dtype) for name, x in states.items()}
    else:
        step = (
            jnp.asarray(dt)
            if isinstance(dt, Tracer)
            else positive_scalar(
                dt, "dt", _WHERE, "Pass e.g. `dt=1.0` (in units of the layers' `tau`)."
            )
        )
        rates = {
            name: (step / layer.tau).astype(states[name].dtype)
            for name, layer in ham.neurons.items()
        }
    with naming_the_entry(_WHERE):
        return _solve(
            ham,
            states,
            masks,
            rates,
            tol=tol,
            max_steps=max_steps,
            solver=solver,
            adjoint=adjoint,
            throw=bool(throw),
        )
