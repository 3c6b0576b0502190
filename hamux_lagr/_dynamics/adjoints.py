r"""How gradients pass through `hamux_lagr.fixed_point`: the exact implicit adjoint's
linear solve chosen from the HAM's structure, and two cheap approximate adjoints.

At a fixed point $x^\ast = G(x^\ast, \theta)$ of the Euler map, the implicit function
theorem gives $\mathrm{d}x^\ast/\mathrm{d}\theta = (I - \partial_x G)^{-1}
\partial_\theta G$ (Bai et al. 2019). The approximate adjoints replace the inverse by
a few terms of its Neumann series, $(I - J)^{-1} \approx \sum_{i<k} J^i$, differentiating
$k$ steps of $G$ from the fixed point (Geng et al. 2021; $k = 1$ is Fung et al. 2022).
"""

import functools as ft

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import lineax as lx
import optimistix as optx
from jaxtyping import PyTree


class _RelativeTolerance(lx.AbstractLinearSolver):
    """A lineax solver that solves `A y = b / max|b|` with `inner` and scales the
    solution back: `inner`'s tolerances, which Lineax applies element by element,
    are then relative to the largest entry of `b` (a cotangent's scale is the loss's,
    which no absolute tolerance can anticipate)."""

    inner: lx.AbstractLinearSolver

    def init(self, operator, options):
        return self.inner.init(operator, options)

    def compute(self, state, vector, options):
        scale = jnp.max(jnp.abs(vector))
        safe = jnp.where(scale > 0, scale, jnp.ones_like(scale))
        solution, result, stats = self.inner.compute(state, vector / safe, options)
        return solution * safe, result, stats

    def transpose(self, state, options):
        return self.inner.transpose(state, options)

    def conj(self, state, options):
        return self.inner.conj(state, options)

    def assume_full_rank(self):
        return self.inner.assume_full_rank()

    # Lineax 0.0.6 (our floor) asks these instead of `assume_full_rank`.
    def allow_dependent_columns(self, operator):
        return getattr(self.inner, "allow_dependent_columns")(operator)

    def allow_dependent_rows(self, operator):
        return getattr(self.inner, "allow_dependent_rows")(operator)


def structured_implicit_adjoint(
    symmetric: bool, tol: float, dtype
) -> optx.ImplicitAdjoint:
    r"""The exact implicit adjoint, its linear solve chosen from the structure.

    The solve is $(\partial_x G - I)\,v = b$. Where $\partial_x G = I - \mathrm{d}t\,
    \nabla^2 E$ is symmetric (every free layer an `LIdentity`, at one rate), $\partial_x
    G - I$ is symmetric negative definite at a minimum of the energy: conjugate
    gradients. Otherwise GMRES. Both stop at a relative residual tied to the forward
    `tol` (the fixed point is only known to it), not below float rounding.
    """
    eps = float(jnp.finfo(dtype).eps)
    rtol = min(max(tol, 100 * eps), 1e-3)
    if symmetric:
        inner = lx.CG(rtol=rtol, atol=rtol, max_steps=256)
    else:
        inner = lx.GMRES(rtol=rtol, atol=rtol, restart=5, stagnation_iters=20)
    return optx.ImplicitAdjoint(linear_solver=_RelativeTolerance(inner))


def symmetric_tags(symmetric: bool) -> frozenset:
    """Lineax tags of `dG/dx - I` (see `structured_implicit_adjoint`)."""
    if symmetric:
        return frozenset({lx.symmetric_tag, lx.negative_semidefinite_tag})
    return frozenset()


def _stop(tree: PyTree) -> PyTree:
    return jax.tree.map(
        lambda x: jax.lax.stop_gradient(x) if eqx.is_inexact_array(x) else x, tree
    )


def _unrolled(primal_fn, rewrite_fn, inputs, steps: int, damping: float):
    """The fixed point, its value exact, its derivatives those of `steps` damped
    steps of the map from it, `y <- y + damping * (G(y) - y)`."""
    loop = ft.partial(eqxi.while_loop, kind="lax")
    root, residual = primal_fn(_stop(inputs) + (loop,))
    root, residual = _stop(root), _stop(residual)
    y = root
    for _ in range(steps):
        y = jax.tree.map(
            lambda u, d: u + damping * d, y, rewrite_fn(y, residual, inputs)
        )
    # The value of the solve (not moved by the extra steps), their derivatives.
    root = jax.tree.map(lambda r, u: r + (u - jax.lax.stop_gradient(u)), root, y)
    return root, residual


class JacobianFreeAdjoint(optx.AbstractAdjoint):
    r"""The one-step, "Jacobian-free" gradient of a fixed point (Fung et al. 2022):
    $\mathrm{d}x^\ast/\mathrm{d}\theta \approx \partial_\theta G(x^\ast, \theta)$,
    the implicit gradient with $(I - \partial_x G)^{-1}$ replaced by $I$.

    For `hamux_lagr.fixed_point(..., adjoint=hamux_lagr.JacobianFreeAdjoint())`: a
    training step then costs the forward solve and the backward pass of *one* step of
    the Euler map $G$, and no linear solve. It is not the exact gradient, but where
    $G$ contracts ($\lVert\partial_x G\rVert < 1$, e.g. the concave-convex update of a
    dense memory) it is a descent direction for the loss, which is what training
    needs. Forward and reverse mode.
    """

    def apply(self, primal_fn, rewrite_fn, inputs, tags):
        """Runs the solve without gradients, then one step of the map from its
        fixed point, whose derivatives the fixed point takes."""
        del tags
        return _unrolled(primal_fn, rewrite_fn, inputs, 1, 1.0)


class PhantomAdjoint(optx.AbstractAdjoint):
    r"""The $k$-step "phantom" gradient of a fixed point (Geng et al. 2021): the
    derivative of $k$ damped steps $y \leftarrow (1 - \lambda)\,y + \lambda\,G(y)$ of
    the Euler map from the fixed point, i.e. $(I - \partial_x G)^{-1}$ replaced by
    $\lambda\sum_{i<k}(I - \lambda(I - \partial_x G))^i$, the first $k$ terms of its
    damped Neumann series.

    For `hamux_lagr.fixed_point(..., adjoint=hamux_lagr.PhantomAdjoint(steps=5))`: a
    training step costs the forward solve and the backward pass of `steps` steps of
    $G$, whatever the number of steps the solve took; more steps bring it closer to
    the exact implicit gradient where $G$ contracts. Forward and reverse mode.

    **Arguments:**

    - `steps`: $k$, the number of steps differentiated, an int `>= 1`.
    - `damping`: $\lambda \in (0, 1]$.
    """

    steps: int = 5
    damping: float = 1.0

    def __check_init__(self):
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise ValueError(
                f"`steps` must be an int >= 1 in `PhantomAdjoint`, got {self.steps!r};"
                " pass e.g. `steps=5`."
            )
        if not 0 < self.damping <= 1:
            raise ValueError(
                f"`damping` must be in (0, 1] in `PhantomAdjoint`, got "
                f"{self.damping!r}; pass e.g. `damping=0.5`."
            )

    def apply(self, primal_fn, rewrite_fn, inputs, tags):
        """Runs the solve without gradients, then `steps` damped steps of the map from
        its fixed point, whose derivatives the fixed point takes."""
        del tags
        return _unrolled(primal_fn, rewrite_fn, inputs, self.steps, self.damping)
