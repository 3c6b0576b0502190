r"""The solvers of `hamux_lagr.fixed_point`: iterations of the Euler map of a HAM,
safeguarded by its energy.

Each solver owns its state and its stop rule, as an Optimistix solver does
(`init`/`step`/`terminate`/`postprocess`). It iterates a map `fn(y) = (G(y), (E(y),
r(y)))` on one flat vector: $G$ the Euler map of the dynamics, $E$ the energy and $r =
\max|\partial E/\partial g|$ the residual at $y$.
"""

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .._misc import all_finite


class _State(eqx.Module):
    ys: Array  # the last `history` accepted iterates, leading axis `history`
    fs: Array  # their steps G(y) - y
    count: Int[Array, ""]  # how many of them are valid
    slot: Int[Array, ""]  # where the next one goes (a ring buffer)
    y_acc: Array  # the last accepted iterate ...
    f_acc: Array  # ... its step G(y) - y ...
    e_acc: Float[Array, ""]  # ... its energy ...
    res_acc: Float[Array, ""]  # ... its residual max |dE/dg| ...
    slope_acc: Float[Array, ""]  # ... and the slope of the energy along its step
    scale: Float[Array, ""]  # the multiple of the step G(y) - y taken
    plain: Bool[Array, ""]  # whether the iterate being evaluated is a plain step
    grew: Bool[Array, ""]  # whether the last plain step made the residual grow
    evals: Int[Array, ""]
    tol: Float[Array, ""]


# The fraction of the decrease promised by the slope that a plain step must achieve.
_ARMIJO = 0.25


class AbstractSafeguardedSolver(eqx.Module):
    r"""The safeguarded iteration of the Euler map $G$ of a HAM, shared by
    `hamux_lagr.SafeguardedIteration` and `hamux_lagr.Anderson`.

    An iterate is accepted if its energy is not above the last accepted one's (up to
    rounding) and, for a plain step $y + s\,(G(y) - y)$, lower by at least a quarter
    of what the slope of the energy along the step promises (Armijo's sufficient
    decrease; the slope is exact on `LIdentity` layers, where it is
    $-s\,\frac{\mathrm{d}t}{\tau}|\partial E/\partial g|^2$, and not counted on the
    others): a step too long for the curvature of the energy (the Euler map of a
    distance memory steps twice too far) is shortened before it leaves the basin of
    the attractor the dynamics descend to. The solve stops at the first accepted
    iterate with residual $\max|\partial E/\partial g| <$ `tol`, or with a non-finite
    energy or state.

    After an accepted plain step the next step length is doubled, up to
    `max_relaxation`, when the residual grew after two plain steps in a row (the
    state slides away from a saddle), and otherwise kept (at most 1). A rejected
    iterate is retried from the last accepted one with a plain step of length 1 if
    the rejected step was longer, else half of it. So the accepted energies never
    rise and the result's energy is never above the start's.
    """

    max_relaxation: eqx.AbstractVar[float]

    @abc.abstractmethod
    def _history(self) -> int:
        """How many accepted iterates the mixture combines (1: plain steps)."""

    def init(self, y: Array, energy_dtype, tol: float) -> _State:
        """The solver's state before the first step, from the start `y` (one flat
        vector), the dtype of the energy and the residual to stop at, `tol`."""
        m = self._history()
        size = m if m > 1 else 0
        stack = jnp.zeros((size, *y.shape), y.dtype)
        inf = jnp.array(jnp.inf, energy_dtype)
        return _State(
            ys=stack,
            fs=stack,
            count=jnp.array(0, jnp.int32),
            slot=jnp.array(0, jnp.int32),
            y_acc=y,
            f_acc=jnp.zeros_like(y),
            e_acc=inf,
            res_acc=inf,
            slope_acc=jnp.zeros((), energy_dtype),
            scale=jnp.array(1.0, energy_dtype),
            plain=jnp.array(True),
            grew=jnp.array(False),
            evals=jnp.array(0, jnp.int32),
            tol=jnp.array(tol, energy_dtype),
        )

    def step(self, fn, y: Array, args, state: _State) -> tuple[Array, _State]:
        """Evaluates `fn(y, args) = (G(y), (energy, residual, slope))` at the candidate
        `y`, accepts or rejects it, and returns the next candidate and state."""
        m = self._history()
        g, (energy, res, slope) = fn(y, args)
        f = g - y
        eps = jnp.finfo(energy.dtype).eps
        slack = 64 * eps * (1 + jnp.abs(state.e_acc))
        first = state.evals == 0
        contracting = res < state.res_acc
        one = jnp.ones((), state.scale.dtype)
        # Sufficient decrease (Armijo): a plain step of length `s` must lower the
        # energy by at least a quarter of what its slope promises, so a step too
        # long for the curvature is shortened before it leaves the basin.
        promised = jnp.where(state.plain, _ARMIJO * state.scale * state.slope_acc, 0)
        accept = first | (energy <= state.e_acc + slack + promised)
        # A plain step that made the residual grow: the state slides away from a
        # saddle; twice in a row, over-relax.
        grew = state.plain & ~contracting & ~first
        sliding = grew & state.grew
        keep = accept & ~sliding
        slot = jnp.where(keep, state.slot, 0)
        count = jnp.where(keep, jnp.minimum(state.count + 1, m), 1)
        y_new = jnp.where(accept, y, state.y_acc)
        f_new = jnp.where(accept, f, state.f_acc)
        short = jnp.minimum(state.scale, one)
        scale = jnp.where(
            accept,
            jnp.where(
                sliding, jnp.minimum(2 * state.scale, self.max_relaxation), short
            ),
            # A rejected Anderson step is retried as a plain step; a rejected plain
            # step with a shorter one.
            jnp.where(
                state.plain, jnp.where(state.scale > 1, one, state.scale / 2), short
            ),
        )
        candidate = y_new + scale.astype(y.dtype) * f_new
        if m > 1:
            at = (jnp.arange(m, dtype=jnp.int32) == slot)[:, None]
            ys = jnp.where(at, y_new[None], state.ys)
            fs = jnp.where(at, f_new[None], state.fs)
            mixing = keep & (count > 1)
            candidate = jnp.where(mixing, _mix(ys, fs, count, y_new + f_new), candidate)
        else:
            ys, fs = state.ys, state.fs
            mixing = jnp.array(False)
        new_state = _State(
            ys=ys,
            fs=fs,
            count=count,
            slot=(slot + 1) % m,
            y_acc=y_new,
            f_acc=f_new,
            e_acc=jnp.where(accept, energy, state.e_acc),
            res_acc=jnp.where(accept, res, state.res_acc),
            slope_acc=jnp.where(accept, slope, state.slope_acc),
            scale=scale,
            plain=~mixing,
            grew=jnp.where(accept, grew, state.grew),
            evals=state.evals + 1,
            tol=state.tol,
        )
        return candidate, new_state

    def terminate(self, state: _State) -> Bool[Array, ""]:
        """The stop rule: the last accepted iterate is a fixed point (residual below
        `tol`), or its energy or state is not finite (only the start, or an energy
        with no lower bound, gives one)."""
        finite = jnp.isfinite(state.e_acc) & all_finite(state.y_acc)
        return (state.res_acc < state.tol) | ((state.evals > 0) & ~finite)

    def postprocess(self, state: _State) -> tuple[Array, Array, Array]:
        """The last accepted iterate, its energy and its residual."""
        return state.y_acc, state.e_acc, state.res_acc


def _mix(ys: Array, fs: Array, count: Array, base: Array) -> Array:
    """The Anderson (type II) mixture `sum_i a_i G(y_i)`, with the affine weights `a`
    minimising `|sum_i a_i f_i|` over the valid entries, written as `base + sum_i a_i
    (G(y_i) - base)` with `base` the newest `G(y_i)`: neurons that every `G` maps to
    the same value (clamped ones) keep it exactly."""
    m = ys.shape[0]
    # Element-wise products and sums rather than `fs @ fs.T`: for a handful of rows,
    # under `jax.vmap`, XLA fuses them where a batched matmul would not.
    gram = jnp.sum(fs[:, None, :] * fs[None, :, :], axis=-1)
    valid = jnp.arange(m, dtype=jnp.int32) < count
    both = valid[:, None] & valid[None, :]
    eye = jnp.eye(m, dtype=fs.dtype)
    gram = jnp.where(both, gram, eye)
    # Tikhonov regularisation relative to the Gram matrix's scale.
    ridge = 1e3 * jnp.finfo(fs.dtype).eps * jnp.maximum(jnp.max(jnp.diag(gram)), 1e-30)
    z = _solve_spd(gram + ridge * eye, valid.astype(fs.dtype))
    alpha = jnp.where(valid, z / jnp.sum(z), 0)
    alpha = jnp.where(jnp.all(jnp.isfinite(alpha)), alpha, 0)
    return base + jnp.sum(alpha[:, None] * ((ys + fs) - base[None]), axis=0)


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


class SafeguardedIteration(AbstractSafeguardedSolver):
    r"""The default solver of `hamux_lagr.fixed_point`: steps of the Euler map
    $G(x) = x - \frac{\mathrm{d}t}{\tau}\,\partial E/\partial g$, safeguarded by the
    energy.

    Each iterate is $x + s\,(G(x) - x)$: $s = 1$ (a plain step of $G$, with the
    default `dt = tau` the concave-convex update of Yuille & Rangarajan 2003 and
    Ramsauer et al. 2020) unless the state slides away from a saddle (then $s$
    doubles, up to `max_relaxation`). An iterate whose energy is not sufficiently
    below the last accepted one's is rejected and retried with a shorter step (see
    the safeguard above). So the energy of the result is never above the start's,
    and it is the attractor the dynamics descend to.

    **Arguments:**

    - `max_relaxation`: the longest step, as a multiple of $G(x) - x$, taken while a
      state slides away from a saddle, a number `>= 1` (`1` turns over-relaxation
      off). On the dense memory at beta 10, where queries slide to a mixture state,
      2 takes the fewest steps; longer ones overshoot.
    """

    max_relaxation: float = 2.0

    def __check_init__(self):
        if not self.max_relaxation >= 1:
            raise ValueError(
                "`max_relaxation` must be a number >= 1 in `SafeguardedIteration`, "
                f"got {self.max_relaxation!r}; pass e.g. `max_relaxation=2.0`."
            )

    def _history(self) -> int:
        return 1


class Anderson(AbstractSafeguardedSolver):
    r"""Anderson acceleration of the Euler map $G$ of a HAM (Anderson 1965; Walker &
    Ni 2011), safeguarded by the energy, for `hamux_lagr.fixed_point`.

    While the residual shrinks, each new iterate is the affine combination
    $\sum_i a_i\,G(x_i)$ of the last `history` accepted iterates whose weights
    ($\sum_i a_i = 1$) minimise $|\sum_i a_i\,(G(x_i) - x_i)|$. Otherwise it steps as
    `hamux_lagr.SafeguardedIteration` does, with the same energy safeguard. It takes
    fewer evaluations of $\partial E/\partial g$ where $G$ contracts slowly, but
    each costs more bookkeeping: it pays off when evaluations are expensive.

    **Arguments:**

    - `history`: how many past iterates are mixed, an int `>= 2`.
    - `max_relaxation`: as in `hamux_lagr.SafeguardedIteration`.
    """

    history: int = 3
    max_relaxation: float = 2.0

    def __check_init__(self):
        if not (isinstance(self.history, int) and 2 <= self.history <= 100):
            raise ValueError(
                "`history` must be an int in [2, 100] in `Anderson`, got "
                f"{self.history!r}; pass e.g. `history=3` (or use "
                "`SafeguardedIteration()` for plain steps)."
            )
        if not self.max_relaxation >= 1:
            raise ValueError(
                "`max_relaxation` must be a number >= 1 in `Anderson`, got "
                f"{self.max_relaxation!r}; pass e.g. `max_relaxation=2.0`."
            )

    def _history(self) -> int:
        return self.history
