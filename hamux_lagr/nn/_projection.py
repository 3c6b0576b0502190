r"""The projections of a `Hopfield` layer's inputs into Hopfield space, one sample:
the LayerNorms, the per-head projections (or the static patterns), the normalisation
in Hopfield space, the appended bias and zero patterns, and the masks."""

import jax.numpy as jnp

from . import _config as cfg
from ._core import layer_norm, linear


def project(layer, state, stored, projection, stored_mask, association_mask):
    """Queries `(H, L, hd)`, keys `(H, S', hd)`, values `(H, S', pd)`, the mask
    `(1, L, S')` or `None`, and `beta` `(H,)`: checked inputs, one sample."""
    w = "Hopfield"
    h, hd, pd = layer.num_heads, layer.hidden_size, layer.pattern_size
    q_static = layer.state_pattern_as_static
    k_static = layer.stored_pattern_as_static
    v_static = layer.pattern_projection_as_static
    static = layer.static_execution
    d_state = None if static else (hd if q_static else layer.input_size)
    if layer.normalize_state_pattern:
        d_state = layer.input_size
    state = cfg.features(state, d_state, "state", w)
    dtype = state.dtype
    d_stored = None if static else (hd if k_static else layer.stored_pattern_size)
    if layer.normalize_stored_pattern:
        d_stored = layer.stored_pattern_size
    if stored is None:
        stored, name = state, "state"
    else:
        name = "stored"
    stored = cfg.features(
        stored,
        d_stored,
        name,
        w,
        "(`stored` defaults to `state`.)" if name == "state" else "",
    ).astype(dtype)
    connected = layer.pattern_projection_as_connected and not k_static
    # hopfield-layers splits static values among the heads when the keys are
    # static too and the projections are separate weights; other static values
    # are the same in every head.
    split = v_static and k_static and layer.separate_weights
    if layer.normalize_pattern_projection or not v_static or connected:
        d_proj = layer.pattern_projection_size
    else:
        d_proj = None if split else pd
    if projection is None:
        projection = stored
    projection = cfg.features(projection, d_proj, "projection", w).astype(dtype)
    if split and projection.shape[1] % h:
        raise ValueError(
            f"`projection` has {projection.shape[1]} features in `{w}`; with "
            "static stored patterns and pattern projections they are split among "
            f"the heads, so they must be a multiple of `num_heads` ({h})."
        )
    length, size = state.shape[0], stored.shape[0]
    if projection.shape[0] != size:
        raise ValueError(
            f"`projection` must hold one pattern per stored pattern in `{w}`: "
            f"`stored` has {size}, `projection` has {projection.shape[0]}."
        )
    if static and not (state.shape[1] == stored.shape[1]):
        raise ValueError(
            f"With all patterns static, `state` and `stored` must have the same "
            f"features in `{w}`, got {state.shape[1]} and {stored.shape[1]}."
        )
    smask = cfg.mask(stored_mask, (size,), "stored_mask", w)
    amask = cfg.mask(association_mask, (length, size), "association_mask", w)

    if layer.normalize_state_pattern:
        eps = layer.normalize_state_pattern_eps
        state = layer_norm(state, layer.state_norm_weight, layer.state_norm_bias, eps)
    if layer.normalize_stored_pattern:
        eps = layer.normalize_stored_pattern_eps
        stored = layer_norm(
            stored, layer.stored_norm_weight, layer.stored_norm_bias, eps
        )
    if layer.normalize_pattern_projection:
        eps = layer.normalize_pattern_projection_eps
        projection = layer_norm(
            projection,
            layer.projection_norm_weight,
            layer.projection_norm_bias,
            eps,
        )

    def heads(x, n):  # (N, H * n) -> (H, N, n)
        return x.reshape(x.shape[0], h, n).transpose(1, 0, 2)

    def shared(x):  # the same (static) pattern in every head
        return jnp.broadcast_to(x[None], (h, *x.shape))

    if q_static:
        q = shared(state)
    else:
        assert layer.q_weight is not None
        q = heads(linear(state, layer.q_weight, layer.q_bias), hd)
    if k_static:
        k = shared(stored)
    else:
        assert layer.k_weight is not None
        k = heads(linear(stored, layer.k_weight, layer.k_bias), hd)
    v_in = projection
    if connected:
        assert layer.k_weight is not None
        v_in = linear(projection, layer.k_weight, layer.k_bias)
    if not v_static:
        assert layer.v_weight is not None
        v = heads(linear(v_in, layer.v_weight, layer.v_bias), pd)
    elif connected:
        v = heads(v_in, hd)
    elif split:
        v = heads(v_in, v_in.shape[1] // h)
    else:
        v = shared(v_in)
    if layer.normalize_hopfield_space:
        eps = layer.normalize_hopfield_space_eps
        wn, bn = layer.hopfield_norm_weight, layer.hopfield_norm_bias
        q = layer_norm(q, wn, bn, eps)
        k = layer_norm(k, wn, bn, eps)

    extra = 0
    if layer.concat_bias_pattern:
        bk = (
            jnp.zeros((h, 1, k.shape[-1]), dtype)
            if layer.bias_key is None
            else layer.bias_key.astype(dtype).reshape(h, 1, -1)
        )
        bv = (
            jnp.zeros((h, 1, v.shape[-1]), dtype)
            if layer.bias_value is None
            else layer.bias_value.astype(dtype).reshape(h, 1, -1)
        )
        k = jnp.concatenate([k, bk], axis=1)
        v = jnp.concatenate([v, bv], axis=1)
        extra += 1
    if layer.add_zero_association:
        k = jnp.concatenate([k, jnp.zeros((h, 1, k.shape[-1]), dtype)], axis=1)
        v = jnp.concatenate([v, jnp.zeros((h, 1, v.shape[-1]), dtype)], axis=1)
        extra += 1
    mask = None
    if smask is not None or amask is not None:
        mask = jnp.ones((length, size), bool)
        if smask is not None:
            mask = mask & smask[None, :]
        if amask is not None:
            mask = mask & amask
        # The appended patterns may always be attended to.
        mask = jnp.pad(mask, ((0, 0), (0, extra)), constant_values=True)[None]
    beta = jnp.asarray(layer.scaling, dtype)
    return q, k, v, mask, beta
