r"""`Hopfield`: the Hopfield layer of Ramsauer et al. (2020), with hopfield-layers'
arguments, one sample per call."""

import inspect
import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PRNGKeyArray, Shaped

from .._lagrangians.base import Lagrangian
from . import _config as cfg
from ._core import energy, linear, retrieve
from ._projection import project
from ._report import HopfieldResults, HopfieldSolution
from ._torch import from_state_dict, hopfield_entries, to_state_dict


_WHERE = "Hopfield"


def _normal(key: PRNGKeyArray, shape: tuple[int, ...], dtype) -> Array:
    # hopfield-layers' initialisation of every projection: normal(0, 0.02).
    return 0.02 * jax.random.normal(key, shape, dtype)


class Hopfield(eqx.Module):
    r"""A modern Hopfield layer (Ramsauer et al. 2020, "Hopfield Networks is All You
    Need"): hopfield-layers' `Hopfield` in Equinox, one sample per call.

    The state patterns $R$ (queries, `(L, input_size)`), stored patterns $Y$ (keys,
    `(S, stored_pattern_size)`) and pattern projections (values, `(S,
    pattern_projection_size)`) are layer-normalised, projected per head into the
    Hopfield space, $\xi = R W_Q$, $K = Y W_K$, $V = Y W_V$, and the state descends
    the energy of a dense associative memory on the stored patterns,

    $$E(\xi) = \tfrac12\xi^\top\xi - \tfrac1\beta\mathcal{L}(\beta K\xi) + c,
    \qquad \xi \leftarrow K^\top\nabla\mathcal{L}(\beta K\xi),$$

    for up to `update_steps_max` concave-convex steps (each lowers $E$). The final
    association $A = \nabla\mathcal{L}(\beta K\xi)$ (the softmax, by default) weighs
    the values: the output is $\operatorname{concat}_h(A_h V_h)\,W_O$. With no step and
    the normalisations off this is multi-head attention with $\beta = 1/\sqrt{d}$.

    Arguments, names and defaults are hopfield-layers' (`batch_first` is gone: one
    sample per call, batches by `jax.vmap`); see the "Hopfield layers" page for the
    table and for where we differ from it on purpose.

    **Arguments:**

    - `input_size`: features of the state patterns (and, by default, of the stored
      patterns and pattern projections).
    - `hidden_size`: features per head in Hopfield space (default
      `input_size // num_heads`).
    - `output_size`: features of the output (default `input_size`).
    - `pattern_size`: features per head of the projected values (default
      `hidden_size`).
    - `num_heads`: number of heads.
    - `scaling`: $\beta$: a number, or one per head (a sequence or array of
      `num_heads`); default $1/\sqrt{\text{hidden\_size}}$ (1.0 when all patterns are
      static). Static.
    - `update_steps_max`: the most update steps per head (an int, `None` for no
      limit, or one per head); 0 is one association, as in attention. With `None`
      the fixed point is differentiated implicitly (not through the steps).
    - `update_steps_eps`: a head stops once its association moved by at most this
      much (Frobenius norm) in one step; a number or one per head.
    - `normalize_stored_pattern`, `normalize_state_pattern`,
      `normalize_pattern_projection` (and their `_affine`, `_eps`): LayerNorm of the
      three inputs before the projections.
    - `normalize_hopfield_space` (and `_affine`, `_eps`): LayerNorm of the projected
      queries and keys, per head.
    - `stored_pattern_as_static`, `state_pattern_as_static`,
      `pattern_projection_as_static`: use that input as it is, unprojected, the same
      pattern in every head (it must then have `hidden_size` / `pattern_size`
      features). As in hopfield-layers, static pattern projections with static stored
      patterns and separate projection weights (e.g. `pattern_size` given) are split
      among the heads instead.
    - `pattern_projection_as_connected`: project the values through the keys'
      projection first.
    - `stored_pattern_size`, `pattern_projection_size`: features of the stored
      patterns and pattern projections (default `input_size`).
    - `association_activation`: `None`, or the name of a `jax.nn` / `jax.numpy`
      function applied to the output (hopfield-layers takes a `torch` name).
    - `dropout`: dropout probability on the association.
    - `input_bias`: biases in the projections.
    - `concat_bias_pattern`: append one learned stored pattern (key and value).
    - `add_zero_association`: append one all-zero stored pattern.
    - `disable_out_projection`: no output projection ($W_O = I$).
    - `lagrangian`: `None` for the softmax, or a `hamux_lagr.Lagrangian` over the
      stored axis whose activation replaces it, applied to $\beta\,\xi K^\top$ of
      shape `(num_heads, L, S)`: `LSparsemax()`, `LEntmax(alpha)`, `LNormmax(alpha)`
      give sparse Hopfield layers (Hu et al. 2023; Santos et al. 2024). A parameter of
      shape `(num_heads, 1, 1)` (e.g. `LEntmax(alpha=jnp.full((4, 1, 1), 1.5))`) is
      one per head.
    - `key`: a JAX PRNG key for the initialisation (keyword-only): normal(0, 0.02)
      projections and learned bias patterns, zero biases, LayerNorms at identity.
    """

    q_weight: Float[Array, "hq d_state"] | None
    k_weight: Float[Array, "hk d_stored"] | None
    v_weight: Float[Array, "hv d_in"] | None
    q_bias: Float[Array, " hq"] | None
    k_bias: Float[Array, " hk"] | None
    v_bias: Float[Array, " hv"] | None
    out_weight: Float[Array, "out hv"] | None
    out_bias: Float[Array, " out"] | None
    bias_key: Float[Array, " hk"] | None
    bias_value: Float[Array, " hv"] | None
    stored_norm_weight: Float[Array, " d_stored"] | None
    stored_norm_bias: Float[Array, " d_stored"] | None
    state_norm_weight: Float[Array, " d_state"] | None
    state_norm_bias: Float[Array, " d_state"] | None
    projection_norm_weight: Float[Array, " d_proj"] | None
    projection_norm_bias: Float[Array, " d_proj"] | None
    hopfield_norm_weight: Float[Array, " hidden"] | None
    hopfield_norm_bias: Float[Array, " hidden"] | None
    lagrangian: Lagrangian | None
    dropout: eqx.nn.Dropout

    input_size: int = eqx.field(static=True)
    stored_pattern_size: int = eqx.field(static=True)
    pattern_projection_size: int = eqx.field(static=True)
    hidden_size: int | None = eqx.field(static=True)
    pattern_size: int | None = eqx.field(static=True)
    output_size: int | None = eqx.field(static=True)
    num_heads: int = eqx.field(static=True)
    scaling: tuple[float, ...] = eqx.field(static=True)
    update_steps_max: tuple[int, ...] = eqx.field(static=True)
    update_steps_eps: tuple[float, ...] = eqx.field(static=True)
    normalize_stored_pattern: bool = eqx.field(static=True)
    normalize_stored_pattern_eps: float = eqx.field(static=True)
    normalize_state_pattern: bool = eqx.field(static=True)
    normalize_state_pattern_eps: float = eqx.field(static=True)
    normalize_pattern_projection: bool = eqx.field(static=True)
    normalize_pattern_projection_eps: float = eqx.field(static=True)
    normalize_hopfield_space: bool = eqx.field(static=True)
    normalize_hopfield_space_eps: float = eqx.field(static=True)
    stored_pattern_as_static: bool = eqx.field(static=True)
    state_pattern_as_static: bool = eqx.field(static=True)
    pattern_projection_as_static: bool = eqx.field(static=True)
    pattern_projection_as_connected: bool = eqx.field(static=True)
    association_activation: str | None = eqx.field(static=True)
    input_bias: bool = eqx.field(static=True)
    concat_bias_pattern: bool = eqx.field(static=True)
    add_zero_association: bool = eqx.field(static=True)
    disable_out_projection: bool = eqx.field(static=True)
    separate_weights: bool = eqx.field(static=True)

    def __init__(
        self,
        input_size: int,
        hidden_size: int | None = None,
        output_size: int | None = None,
        pattern_size: int | None = None,
        num_heads: int = 1,
        scaling: float | Sequence[float] | ArrayLike | None = None,
        update_steps_max: int | Sequence[int | None] | None = 0,
        update_steps_eps: float | Sequence[float] | ArrayLike = 1e-4,
        normalize_stored_pattern: bool = True,
        normalize_stored_pattern_affine: bool = True,
        normalize_stored_pattern_eps: float = 1e-5,
        normalize_state_pattern: bool = True,
        normalize_state_pattern_affine: bool = True,
        normalize_state_pattern_eps: float = 1e-5,
        normalize_pattern_projection: bool = True,
        normalize_pattern_projection_affine: bool = True,
        normalize_pattern_projection_eps: float = 1e-5,
        normalize_hopfield_space: bool = False,
        normalize_hopfield_space_affine: bool = False,
        normalize_hopfield_space_eps: float = 1e-5,
        stored_pattern_as_static: bool = False,
        state_pattern_as_static: bool = False,
        pattern_projection_as_static: bool = False,
        pattern_projection_as_connected: bool = False,
        stored_pattern_size: int | None = None,
        pattern_projection_size: int | None = None,
        association_activation: str | None = None,
        dropout: float = 0.0,
        input_bias: bool = True,
        concat_bias_pattern: bool = False,
        add_zero_association: bool = False,
        disable_out_projection: bool = False,
        lagrangian: Lagrangian | None = None,
        *,
        key: PRNGKeyArray,
    ):
        w = _WHERE
        self.input_size = d = cfg.required_size(input_size, "input_size", w)
        num_heads = cfg.required_size(num_heads, "num_heads", w)
        self.num_heads = num_heads
        flags = {}
        for name, value in [
            ("normalize_stored_pattern", normalize_stored_pattern),
            ("normalize_stored_pattern_affine", normalize_stored_pattern_affine),
            ("normalize_state_pattern", normalize_state_pattern),
            ("normalize_state_pattern_affine", normalize_state_pattern_affine),
            ("normalize_pattern_projection", normalize_pattern_projection),
            (
                "normalize_pattern_projection_affine",
                normalize_pattern_projection_affine,
            ),
            ("normalize_hopfield_space", normalize_hopfield_space),
            ("normalize_hopfield_space_affine", normalize_hopfield_space_affine),
            ("stored_pattern_as_static", stored_pattern_as_static),
            ("state_pattern_as_static", state_pattern_as_static),
            ("pattern_projection_as_static", pattern_projection_as_static),
            ("pattern_projection_as_connected", pattern_projection_as_connected),
            ("input_bias", input_bias),
            ("concat_bias_pattern", concat_bias_pattern),
            ("add_zero_association", add_zero_association),
            ("disable_out_projection", disable_out_projection),
        ]:
            flags[name] = cfg.flag(value, name, w)
        for part in ("stored_pattern", "state_pattern", "pattern_projection"):
            if flags[f"normalize_{part}_affine"] and not flags[f"normalize_{part}"]:
                raise ValueError(
                    f"`normalize_{part}_affine=True` needs `normalize_{part}=True` in "
                    f"`{w}` (an affine map without the normalisation has no effect)."
                )
        if (
            flags["normalize_hopfield_space_affine"]
            and not flags["normalize_hopfield_space"]
        ):
            raise ValueError(
                "`normalize_hopfield_space_affine=True` needs "
                f"`normalize_hopfield_space=True` in `{w}`."
            )
        for name, value in flags.items():
            if not name.endswith("_affine"):
                setattr(self, name, value)
        q_static = self.state_pattern_as_static
        k_static = self.stored_pattern_as_static
        v_static = self.pattern_projection_as_static
        connected = self.pattern_projection_as_connected
        kdim = cfg.size(stored_pattern_size, "stored_pattern_size", w) or d
        vdim = cfg.size(pattern_projection_size, "pattern_projection_size", w) or d
        self.stored_pattern_size, self.pattern_projection_size = kdim, vdim
        self.output_size = cfg.size(output_size, "output_size", w)
        hidden_size = cfg.size(hidden_size, "hidden_size", w)
        pattern_size = cfg.size(pattern_size, "pattern_size", w)
        # hopfield-layers stacks the three projections into `in_proj_weight` only
        # when they all take `input_size` features and `pattern_size` is not given.
        self.separate_weights = (
            kdim != d or vdim != d or pattern_size is not None or connected
        )
        static_execution = (
            q_static
            and k_static
            and v_static
            and not connected
            and not self.normalize_hopfield_space
            and self.disable_out_projection
        )
        if static_execution:
            # Nothing is projected: the patterns' own features are the Hopfield space.
            hd = pd = None
            self.separate_weights = pattern_size is not None
        else:
            if hidden_size is None:
                if d % num_heads:
                    raise ValueError(
                        f"`input_size` ({d}) must be divisible by `num_heads` "
                        f"({num_heads}) in `{w}`, or give `hidden_size` (features per "
                        "head)."
                    )
                hidden_size = d // num_heads
            hd = hidden_size
            pd = hidden_size if pattern_size is None else pattern_size
        self.hidden_size, self.pattern_size = hd, pd
        if connected and (kdim != vdim or pd != hd):
            raise ValueError(
                f"`pattern_projection_as_connected=True` needs `stored_pattern_size` "
                f"== `pattern_projection_size` and `pattern_size` == `hidden_size` in "
                f"`{w}`, got {kdim}, {vdim}, {pd}, {hd}."
            )
        if self.concat_bias_pattern and k_static and v_static:
            raise ValueError(
                f"`concat_bias_pattern=True` needs a projected (non-static) stored "
                f"pattern or pattern projection in `{w}`."
            )
        if scaling is None:
            scale = 1.0 if hd is None else 1.0 / math.sqrt(hd)
            self.scaling = (scale,) * num_heads
        else:
            self.scaling = cfg.per_head(
                scaling, "scaling", w, num_heads, cfg.positive_float
            )
        self.update_steps_max = cfg.per_head(
            update_steps_max, "update_steps_max", w, num_heads, cfg.steps_max
        )
        self.update_steps_eps = cfg.per_head(
            update_steps_eps, "update_steps_eps", w, num_heads, cfg.positive_float
        )
        for part in ("stored_pattern", "state_pattern", "pattern_projection"):
            name = f"normalize_{part}_eps"
            setattr(self, name, cfg.positive_float(locals()[name], name, w))
        self.normalize_hopfield_space_eps = cfg.positive_float(
            normalize_hopfield_space_eps, "normalize_hopfield_space_eps", w
        )
        cfg.activation(association_activation, w)
        self.association_activation = association_activation
        dropout = float(dropout)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1) in `{w}`, got {dropout}.")
        self.dropout = eqx.nn.Dropout(dropout)
        if lagrangian is not None and not isinstance(lagrangian, Lagrangian):
            raise TypeError(
                f"`lagrangian` must be None (the softmax) or a `hamux_lagr.Lagrangian` "
                f"over the stored axis in `{w}`, e.g. `hl.LSparsemax()`; got "
                f"{type(lagrangian).__name__}."
            )
        self.lagrangian = lagrangian

        dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
        kq, kk, kv, ko, kbk, kbv = jax.random.split(key, 6)
        zeros = lambda n: jnp.zeros((n,), dtype)  # noqa: E731
        ones = lambda n: jnp.ones((n,), dtype)  # noqa: E731
        bias = self.input_bias
        if static_execution:
            self.q_weight = self.k_weight = self.v_weight = None
            self.q_bias = self.k_bias = self.v_bias = None
        else:
            assert hd is not None and pd is not None
            hq, hv = num_heads * hd, num_heads * pd
            v_in = hq if (connected and not k_static) else vdim
            self.q_weight = None if q_static else _normal(kq, (hq, d), dtype)
            self.k_weight = None if k_static else _normal(kk, (hq, kdim), dtype)
            self.v_weight = None if v_static else _normal(kv, (hv, v_in), dtype)
            self.q_bias = zeros(hq) if (bias and not q_static) else None
            self.k_bias = zeros(hq) if (bias and not k_static) else None
            self.v_bias = zeros(hv) if (bias and not v_static) else None
        if self.disable_out_projection:
            self.out_weight = self.out_bias = None
        else:
            assert pd is not None
            out = d if self.output_size is None else self.output_size
            self.out_weight = _normal(ko, (out, num_heads * pd), dtype)
            self.out_bias = zeros(out) if bias else None
        if self.concat_bias_pattern:
            assert hd is not None and pd is not None
            self.bias_key = None if k_static else _normal(kbk, (num_heads * hd,), dtype)
            self.bias_value = (
                None if v_static else _normal(kbv, (num_heads * pd,), dtype)
            )
        else:
            self.bias_key = self.bias_value = None

        def norm(on: bool, affine: bool, n: int):
            return (ones(n), zeros(n)) if (on and affine) else (None, None)

        self.stored_norm_weight, self.stored_norm_bias = norm(
            self.normalize_stored_pattern, normalize_stored_pattern_affine, kdim
        )
        self.state_norm_weight, self.state_norm_bias = norm(
            self.normalize_state_pattern, normalize_state_pattern_affine, d
        )
        self.projection_norm_weight, self.projection_norm_bias = norm(
            self.normalize_pattern_projection,
            normalize_pattern_projection_affine,
            vdim,
        )
        self.hopfield_norm_weight, self.hopfield_norm_bias = norm(
            self.normalize_hopfield_space,
            normalize_hopfield_space_affine,
            hd or 0,
        )

    # ------------------------------------------------------------------------------
    # the projections into Hopfield space
    # ------------------------------------------------------------------------------

    @property
    def static_execution(self) -> bool:
        """Whether nothing is projected (all three patterns static, no output
        projection): the patterns' own features are the Hopfield space."""
        return self.hidden_size is None

    @property
    def out_dim(self) -> int | None:
        """Features of the output (`None` when it is the static projection's)."""
        if not self.disable_out_projection:
            return self.input_size if self.output_size is None else self.output_size
        if self.pattern_size is None or (
            self.stored_pattern_as_static
            and self.pattern_projection_as_static
            and self.separate_weights
        ):
            return None
        return self.num_heads * self.pattern_size

    # ------------------------------------------------------------------------------
    # public methods
    # ------------------------------------------------------------------------------

    def retrieve(
        self,
        state: Shaped[ArrayLike, "L d_state"],
        stored: Shaped[ArrayLike, "S d_stored"] | None = None,
        projection: Shaped[ArrayLike, "S d_proj"] | None = None,
        *,
        stored_mask: Shaped[ArrayLike, " S"] | None = None,
        association_mask: Shaped[ArrayLike, "L S"] | None = None,
        key: PRNGKeyArray | None = None,
        inference: bool | None = None,
    ) -> HopfieldSolution:
        r"""The output together with the association and a report of the update
        steps, per head.

        **Arguments:** as `__call__`.

        **Returns:**

        A `HopfieldSolution`: `output`, `association`, and per head `num_steps`,
        `change`, `converged`, `energy_initial`, `energy_final` and `result`.
        """
        q, k, v, mask, beta = project(
            self, state, stored, projection, stored_mask, association_mask
        )
        out = retrieve(
            q,
            k,
            beta,
            mask,
            self.lagrangian,
            self.update_steps_max,
            self.update_steps_eps,
        )
        assoc = out.association
        if self.dropout.p > 0 and key is None:
            off = self.dropout.inference if inference is None else inference
            if not off:
                raise ValueError(
                    f"`key` is required in `{_WHERE}` with `dropout` > 0 in training "
                    "mode: pass `key=jax.random.key(...)`, or `inference=True` (or "
                    "`eqx.nn.inference_mode(layer)`) to turn dropout off."
                )
        dropped = self.dropout(assoc, key=key, inference=inference)
        heads = jnp.einsum("hls,hsp->lhp", dropped, v)
        output = heads.reshape(heads.shape[0], -1)
        if self.out_weight is not None:
            output = linear(output, self.out_weight, self.out_bias)
        fn = cfg.activation(self.association_activation, _WHERE)
        if fn is not None:
            output = fn(output)
        e0 = energy(q, k, beta, mask, self.lagrangian)
        e1 = energy(out.q, k, beta, mask, self.lagrangian)
        finite = jnp.all(jnp.isfinite(assoc), axis=(1, 2))
        eps = jnp.asarray(self.update_steps_eps, out.change.dtype)
        converged = (out.num_steps > 0) & (out.change <= eps)
        result = jax.vmap(
            lambda ok, conv: HopfieldResults.where(
                ok,
                HopfieldResults.where(
                    conv,
                    HopfieldResults.successful,
                    HopfieldResults.max_steps_reached,
                ),
                HopfieldResults.nonfinite,
            )
        )(finite, converged)
        return HopfieldSolution(
            output=output,
            association=assoc,
            num_steps=out.num_steps,
            change=out.change,
            converged=converged,
            energy_initial=e0,
            energy_final=e1,
            result=result,
        )

    def __call__(
        self,
        state: Shaped[ArrayLike, "L d_state"],
        stored: Shaped[ArrayLike, "S d_stored"] | None = None,
        projection: Shaped[ArrayLike, "S d_proj"] | None = None,
        *,
        stored_mask: Shaped[ArrayLike, " S"] | None = None,
        association_mask: Shaped[ArrayLike, "L S"] | None = None,
        key: PRNGKeyArray | None = None,
        inference: bool | None = None,
    ) -> Float[Array, "L out"]:
        r"""The layer's output for one sample.

        hopfield-layers' `module((stored, state, projection))` is
        `layer(state, stored, projection)`; its `module(x)` is `layer(x)`.

        **Arguments:**

        - `state`: the state patterns (queries), shape `(L, input_size)`.
        - `stored`: the stored patterns (keys), shape `(S, stored_pattern_size)`;
          default `state`.
        - `projection`: the pattern projections (values), shape
          `(S, pattern_projection_size)`; default `stored`.
        - `stored_mask`: `(S,)` boolean or integer (uint8) mask, True / non-zero =
          may be attended to (Equinox's convention, the inverse of hopfield-layers').
        - `association_mask`: `(L, S)` mask, likewise.
        - `key`: a PRNG key for dropout (keyword-only; needed with `dropout > 0`
          unless `inference`).
        - `inference`: `True` turns dropout off, as in `eqx.nn.Dropout`.

        **Returns:**

        The output, shape `(L, out_dim)`.
        """
        return self.retrieve(
            state,
            stored,
            projection,
            stored_mask=stored_mask,
            association_mask=association_mask,
            key=key,
            inference=inference,
        ).output

    def association_matrix(
        self,
        state: Shaped[ArrayLike, "L d_state"],
        stored: Shaped[ArrayLike, "S d_stored"] | None = None,
        projection: Shaped[ArrayLike, "S d_proj"] | None = None,
        *,
        stored_mask: Shaped[ArrayLike, " S"] | None = None,
        association_mask: Shaped[ArrayLike, "L S"] | None = None,
    ) -> Float[Array, "H L S2"]:
        r"""The final association (after the update steps, before dropout),
        hopfield-layers' `get_association_matrix` for one sample.

        **Arguments:** as `__call__`.

        **Returns:**

        Shape `(num_heads, L, S)` (`S` plus one for `concat_bias_pattern` and one
        for `add_zero_association`).
        """
        q, k, _, mask, beta = project(
            self, state, stored, projection, stored_mask, association_mask
        )
        return retrieve(
            q,
            k,
            beta,
            mask,
            self.lagrangian,
            self.update_steps_max,
            self.update_steps_eps,
        ).association

    def energy(
        self,
        state: Shaped[ArrayLike, "L d_state"],
        stored: Shaped[ArrayLike, "S d_stored"] | None = None,
        projection: Shaped[ArrayLike, "S d_proj"] | None = None,
        *,
        stored_mask: Shaped[ArrayLike, " S"] | None = None,
        association_mask: Shaped[ArrayLike, "L S"] | None = None,
    ) -> Float[Array, ""]:
        r"""The energy of the state patterns in Hopfield space, summed over heads
        and queries (Ramsauer et al. 2020, eq. 2):

        $$E = \sum_{h,l} -\operatorname{lse}(\beta_h, K_h\xi_{hl})
        + \tfrac12\xi_{hl}^\top\xi_{hl} + \beta_h^{-1}\log N + \tfrac12 M_h^2,$$

        $\xi_{hl}$ the projected (and normalised) queries, $K_h$ the keys, $N$ the
        stored patterns a query may attend to and $M_h$ their largest norm. With a
        `lagrangian`, $-\beta^{-1}\mathcal{L}(\beta K\xi)$ replaces the log-sum-exp
        and the $\log N$ term is left out. The update steps never raise it
        (`retrieve(...).energy_final`).

        **Arguments:** as `__call__`.

        **Returns:**

        The scalar energy.
        """
        q, k, _, mask, beta = project(
            self, state, stored, projection, stored_mask, association_mask
        )
        return jnp.sum(energy(q, k, beta, mask, self.lagrangian))

    # ------------------------------------------------------------------------------
    # PyTorch state dicts
    # ------------------------------------------------------------------------------

    @classmethod
    def from_torch_state_dict(cls, state_dict, **config) -> "Hopfield":
        r"""The layer of a hopfield-layers `Hopfield`, from its `state_dict()`.

        ```python
        layer = hl.nn.Hopfield.from_torch_state_dict(
            {k: v.numpy() for k, v in torch_module.state_dict().items()},
            input_size=16, num_heads=4,
        )
        ```

        **Arguments:**

        - `state_dict`: a mapping from hopfield-layers' keys
          (`association_core.in_proj_weight`, `norm_stored_pattern.weight`, ...) to
          arrays: NumPy arrays, tensors (`.detach().cpu()`), anything `np.asarray`
          takes. No torch import is needed.
        - `**config`: the keyword arguments the PyTorch module was built with
          (`batch_first` is accepted and ignored).

        **Returns:**

        A `Hopfield` computing the same outputs, in the arrays' dtype. A missing,
        unknown or mis-shaped key is a `ValueError` naming it.
        """
        config.pop("batch_first", None)
        layer = cls(**config, key=jax.random.key(0))
        return from_state_dict(layer, state_dict, hopfield_entries(layer, ()))

    def to_torch_state_dict(self) -> dict:
        r"""This layer's parameters under hopfield-layers' `state_dict` keys, as
        NumPy arrays (the inverse of `from_torch_state_dict`; load them into the
        PyTorch module with `{k: torch.from_numpy(v) ...}`).

        **Returns:**

        A dict from hopfield-layers' keys to NumPy arrays.
        """
        return to_state_dict(self, hopfield_entries(self, ()))


def hopfield_arguments(namespace: dict) -> dict:
    """The arguments of `Hopfield` (all but `key`) from `namespace`, the `locals()`
    of a layer's constructor that takes them under the same names (`HopfieldPooling`,
    `HopfieldLayer`)."""
    return {name: namespace[name] for name in _ARGUMENTS}


_ARGUMENTS = tuple(
    name
    for name in inspect.signature(Hopfield.__init__).parameters
    if name not in ("self", "key")
)
