r"""What the update steps of a Hopfield layer did: `HopfieldSolution`."""

import equinox as eqx
from jaxtyping import Array, Bool, Float, Int


class HopfieldResults(eqx.Enumeration):
    """How the update steps of a head ended, one code per head.

    - `successful`: the association moved by at most `update_steps_eps` in the last
      step (converged).
    - `max_steps_reached`: the head ran `update_steps_max` steps without meeting
      `update_steps_eps` (with the default `update_steps_max=0` this is every head:
      one association, no step). Not an error: hopfield-layers' layers stop here.
    - `nonfinite`: the association is not finite (NaN or infinite).
    """

    successful = "the association converged (its last change <= update_steps_eps)"
    max_steps_reached = "update_steps_max steps ran without convergence"
    nonfinite = "the association is not finite"


class HopfieldSolution(eqx.Module):
    r"""What `Hopfield.retrieve` returns for one sample: the output, the final
    association and a report of the update steps, per head.

    Like `hamux_lagr.Solution` it reports how the retrieval went beside its result;
    under `jax.vmap` every field gains the batch axis. hopfield-layers has no way to
    see any of this.

    **Fields:**

    - `output`: the layer's output, shape `(L, out_dim)` (after dropout, the output
      projection and `association_activation`; what `layer(...)` returns).
    - `association`: the final association, shape `(num_heads, L, S)`, before dropout
      (`S` counts the bias pattern of `concat_bias_pattern` and the zero pattern of
      `add_zero_association`).
    - `num_steps`: the update steps each head took, int32, shape `(num_heads,)`.
    - `change`: the Frobenius norm of the last change of each head's association,
      $\lVert A_t - A_{t-1}\rVert_F$, shape `(num_heads,)`; `inf` for a head that took
      no step.
    - `converged`: whether `change <= update_steps_eps` per head (always `False` for a
      head that took no step).
    - `energy_initial`, `energy_final`: the energy of the state patterns in Hopfield
      space (Ramsauer et al. 2020, eq. 2, summed over the queries) before the first
      and after the last update step, shape `(num_heads,)`. The concave-convex update
      never raises it: `energy_final <= energy_initial` to float rounding.
    - `result`: a `HopfieldResults` code per head (`successful`, `max_steps_reached`,
      `nonfinite`).
    """

    output: Float[Array, "L out"]
    association: Float[Array, "H L S"]
    num_steps: Int[Array, " H"]
    change: Float[Array, " H"]
    converged: Bool[Array, " H"]
    energy_initial: Float[Array, " H"]
    energy_final: Float[Array, " H"]
    result: HopfieldResults
