r"""The result of a descent or fixed-point solve: final states and how the solve went."""

import contextlib
from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
from equinox.internal import unvmap_any
from jaxtyping import Array, Bool, Float, Int

from .._custom_types import States
from .._misc import select


_RERUN = (
    " Rerun with `throw=False` to get the `Solution` anyway: `sol.result` names the "
    "outcome and `sol.num_steps` the step at which it happened."
)


class RESULTS(eqx.Enumeration):
    """The outcomes of a solve (`hamux_lagr.Solution.result`): an `eqx.Enumeration`,
    as `diffrax.RESULTS` and `optimistix.RESULTS` are. Compare with `==`
    (`sol.result == hl.RESULTS.successful`, a boolean array under `jax.vmap`).

    - `successful`: a fixed point was reached (`residual < tol`).
    - `steps_completed`: `descend` ran its steps without meeting a `tol` (none was
      given, or it was not reached): not an error.
    - `max_steps_reached`: `fixed_point` did not reach `tol` within `max_steps`.
    - `solver_stopped`: `descend`'s diffrax solver stopped before `steps * dt` (an
      adaptive solver runs out of `max_steps` where the state diverges).
    - `nonfinite`: a state, or the energy, became NaN or infinite.
    - `invalid_dt`: a traced step size `dt` is not positive and finite.
    - `nonfinite_parameter`: a parameter of the model (a Lagrangian's `beta`, a
      synapse's weights) is NaN or infinite, so the solve could not be trusted.

    The errors come in order of precedence: where a batch fails in several ways,
    `throw=True` raises the last one listed (a cause before its symptom).
    """

    successful = ""
    steps_completed = ""
    max_steps_reached = (
        "The solve did not reach max |dE/dg| < tol within `max_steps` steps; raise "
        "`max_steps`, loosen `tol`, or pass `throw=False` to get the last state with "
        "`converged=False`. (A HAM whose energy has no minimum in some direction, "
        "e.g. a layer-norm layer with `leak=False`, never converges: use `descend` "
        "for a fixed time.)"
    )
    solver_stopped = (
        "The diffrax solver stopped before `steps * dt`: an adaptive solver runs out "
        "of `max_steps` where the state diverges; reduce `dt` or raise `max_steps` if "
        "it does not." + _RERUN
    )
    nonfinite = (
        "A state or the energy became non-finite (NaN or inf): the energy may have no "
        "lower bound, or the step overflows; reduce `dt`, check the synapses' scale, "
        "or use a Lagrangian that does not overflow (`LExp`/`LRexp` grow like "
        "exp(beta x))." + _RERUN
    )
    invalid_dt = (
        "`dt` must be positive and finite; use a small step such as `dt=0.1` (in "
        "units of the layers' `tau`)." + _RERUN
    )
    nonfinite_parameter = (
        "A parameter of the model (a Lagrangian's `beta`, a synapse's weights) is "
        "NaN or infinite; if training produced it, lower the learning rate or clip "
        "the gradients." + _RERUN
    )


def is_okay(result: RESULTS) -> Bool[Array, "..."]:
    """Whether `result` is not an error: `successful` or `steps_completed`."""
    return (result == RESULTS.successful) | (result == RESULTS.steps_completed)


def is_finite(result: RESULTS) -> Bool[Array, "..."]:
    """Whether `result` reports a finite solve (no `nonfinite*` or `solver_stopped`)."""
    return ~(
        (result == RESULTS.nonfinite)
        | (result == RESULTS.nonfinite_parameter)
        | (result == RESULTS.invalid_dt)
        | (result == RESULTS.solver_stopped)
    )


def outcome(ok: RESULTS, failures: Sequence[tuple[RESULTS, Array]]) -> RESULTS:
    """The result of a solve: the last of `failures` (pairs of an error item and
    the boolean saying whether it happened, in `RESULTS` order) that happened, or
    `ok` if none did."""
    values = [item._value for item, _ in failures]
    assert values == sorted(values), "failures must come in RESULTS order"
    result = ok
    for item, failed in failures:
        result = RESULTS.where(failed, item, result)
    return result


def raise_if_failed(
    entry: str, solution: "Solution", failures: Sequence[tuple[RESULTS, Array]]
) -> "Solution":
    """`throw=True`: one `eqx.branched_error_if` on the way out of a solve, with the
    message of its outcome (see `outcome`), prefixed by the entry the user called.

    Under `jax.vmap` the batch raises with the message of the failure that comes
    last in `RESULTS`: a cause (a non-finite parameter, a bad `dt`) before its
    symptom (a non-finite state). Each failure's presence in the batch is an
    `unvmap_any` of its own condition (defined for an empty batch too, which a
    maximum over the batch is not), so the index passed on is the same for the whole
    batch; a condition that is not batched (a parameter check, a `dt` shared by the
    batch) reduces over nothing.
    """
    messages = tuple(
        f"`{entry}`: {message}" if message else ""
        for message in RESULTS._index_to_message
    )
    index = jnp.array(0, jnp.int32)
    for item, failed in failures:
        index = select(unvmap_any(failed), jnp.int32(item._value), index)
    return eqx.branched_error_if(solution, index > 0, index, messages)


@contextlib.contextmanager
def naming_the_entry(entry: str):
    """Re-raises a `TypeError`/`ValueError` raised while tracing a solve (a model that
    does not fit its states) with the entry the user called in front; the layer and
    the synapse are named by the HAM already."""
    try:
        yield
    except (TypeError, ValueError) as e:
        if type(e) not in (TypeError, ValueError):
            raise
        raise type(e)(f"In `{entry}`: {e}") from e


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
      `steps` after an early stop with `tol`, or the step at which a state became
      non-finite), diffrax solver steps with `solver`, or the energy-gradient
      evaluations of `fixed_point`.
    - `residual`: $\max_i |\partial E/\partial g_i|$ over the free (not clamped)
      neurons at the last states where the solve evaluated the gradient, a scalar of
      the states' dtype (0 when no neuron is free, inf when an entry of the
      gradient is not finite). That is the final states for `fixed_point`, for
      `descend` with `tol` and for `descend` with a diffrax `solver`; for
      `descend`'s fixed Euler steps without `tol`, the states its last step started
      from (the final states' would cost one more evaluation of the gradient:
      `ham.dEdg(sol.xs)` gives it). At a fixed point of the dynamics it is 0.
    - `result`: the outcome, a `hamux_lagr.RESULTS` item (`successful`,
      `steps_completed`, `max_steps_reached`, `nonfinite`, `nonfinite_parameter`,
      `invalid_dt`, `solver_stopped`). With `throw=True` (the default) every outcome but
      `successful` and `steps_completed` raises instead.

    **Properties:**

    - `converged`: whether the solve reached `residual < tol` (`result ==
      RESULTS.successful`), a boolean scalar; always `False` for `descend` without
      `tol`.
    - `finite`: whether every state along the solve and every parameter stayed
      finite (and a diffrax solve reached its end time), a boolean scalar.
    """

    xs: States
    energies: Float[Array, " steps_plus_1"] | None
    num_steps: Int[Array, ""]
    residual: Float[Array, ""]
    result: RESULTS

    @property
    def converged(self) -> Bool[Array, "*batch"]:
        return jnp.asarray(self.result == RESULTS.successful)

    @property
    def finite(self) -> Bool[Array, "*batch"]:
        return jnp.asarray(is_finite(self.result))
