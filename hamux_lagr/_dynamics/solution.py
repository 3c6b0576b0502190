r"""The result of a descent or fixed-point solve: final states and a convergence report."""

import equinox as eqx
from jaxtyping import Array, Bool, Float, Int

from .._custom_types import States


class Solution(eqx.Module):
    r"""What `hamux_lagr.descend` and `hamux_lagr.fixed_point` return, for one sample.

    Like `diffrax.Solution` and `optimistix.Solution`, it reports how the solve went
    beside its result. Under `jax.vmap` every field gains the batch axis.

    **Fields:**

    - `xs`: the final states, a dict from layer name to state (shaped and typed like
      the initial states).
    - `energies`: the energy at each of the `steps + 1` recorded times of `descend`
      (shape `(steps + 1,)`; after an early stop the last energy is repeated), or
      `None` when it was not recorded (`trace=False`, and always for `fixed_point`).
    - `num_steps`: the steps actually taken, an int32 scalar: Euler steps (fewer than
      `steps` after an early stop with `tol`), diffrax solver steps with `solver`, or
      the energy-gradient evaluations of `fixed_point`.
    - `residual`: $\max_i |\partial E/\partial g_i|$ over the free (not clamped)
      neurons at the final states, a scalar of the states' dtype (0 when no neuron is
      free). At a fixed point of the dynamics it is 0.
    - `converged`: whether `residual < tol`, a boolean scalar (always `False` when no
      `tol` was given).
    - `finite`: whether every state along the solve stayed finite (no NaN or inf), a
      boolean scalar; with a diffrax solver in `descend`, also `False` when the solve
      stopped before its end time (an adaptive solver does where the state diverges). With `throw=True` (the default) a non-finite state raises
      instead, so a returned `Solution` has `finite=True`; with `throw=False` it is
      returned and marked here.
    """

    xs: States
    energies: Float[Array, " steps_plus_1"] | None
    num_steps: Int[Array, ""]
    residual: Float[Array, ""]
    converged: Bool[Array, ""]
    finite: Bool[Array, ""]
