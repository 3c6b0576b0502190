"""hopfield-layers 1.0.2's `Hopfield` forward on one sample, in float64 NumPy.

Written from hopfield-layers' documented behaviour (its `state_dict` layout, the
projections' slicing, the LayerNorms, the update-step loop and its stop rule) to check
configurations that the reference fixtures do not hold. It reads the parameters under
hopfield-layers' own keys, so it also checks the key mapping. Masks are in
hopfield-layers' convention (True = blocked). The learned bias pattern
(`concat_bias_pattern`) is ignored, as hopfield-layers ignores it.
"""

import numpy as np


DEFAULTS = dict(
    hidden_size=None,
    output_size=None,
    pattern_size=None,
    num_heads=1,
    scaling=None,
    update_steps_max=0,
    update_steps_eps=1e-4,
    normalize_stored_pattern=True,
    normalize_stored_pattern_affine=True,
    normalize_stored_pattern_eps=1e-5,
    normalize_state_pattern=True,
    normalize_state_pattern_affine=True,
    normalize_state_pattern_eps=1e-5,
    normalize_pattern_projection=True,
    normalize_pattern_projection_affine=True,
    normalize_pattern_projection_eps=1e-5,
    normalize_hopfield_space=False,
    normalize_hopfield_space_affine=False,
    normalize_hopfield_space_eps=1e-5,
    stored_pattern_as_static=False,
    state_pattern_as_static=False,
    pattern_projection_as_static=False,
    pattern_projection_as_connected=False,
    stored_pattern_size=None,
    pattern_projection_size=None,
    association_activation=None,
    input_bias=True,
    concat_bias_pattern=False,
    add_zero_association=False,
    disable_out_projection=False,
)


def _layer_norm(x, weight, bias, eps):
    centred = x - x.mean(-1, keepdims=True)
    out = centred / np.sqrt((centred**2).mean(-1, keepdims=True) + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def forward(sd, args, state, stored, projection, stored_blocked=None, blocked=None):
    """Returns (output (L, out), association (H, L, S))."""
    a = {**DEFAULTS, **args}
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    state, stored, projection = (
        np.asarray(x, np.float64) for x in (state, stored, projection)
    )
    heads = a["num_heads"]
    q_st, k_st, v_st = (
        a["state_pattern_as_static"],
        a["stored_pattern_as_static"],
        a["pattern_projection_as_static"],
    )
    conn = a["pattern_projection_as_connected"]
    static_run = (
        q_st
        and k_st
        and v_st
        and not conn
        and not a["normalize_hopfield_space"]
        and a["disable_out_projection"]
    )
    embed = None if static_run else a["input_size"]
    kdim = None if static_run else (a["stored_pattern_size"] or embed)
    vdim = None if static_run else (a["pattern_projection_size"] or embed)
    same = kdim == embed and vdim == embed and a["pattern_size"] is None and not conn
    if static_run:
        hd = state.shape[1]
        pd = a["pattern_size"]
    else:
        hd = a["hidden_size"] or embed // heads
        pd = a["pattern_size"] or hd
    if q_st and k_st:
        hd = state.shape[1]

    def norm(x, name, part):
        if not a[f"normalize_{part}"]:
            return x
        return _layer_norm(
            x,
            sd.get(f"{name}.weight"),
            sd.get(f"{name}.bias"),
            a[f"normalize_{part}_eps"],
        )

    stored = norm(stored, "norm_stored_pattern", "stored_pattern")
    state = norm(state, "norm_state_pattern", "state_pattern")
    projection = norm(projection, "norm_pattern_projection", "pattern_projection")

    core = "association_core."
    bias = sd.get(core + "in_proj_bias")
    stacked = sd.get(core + "in_proj_weight")
    width = heads * hd
    offset_w = offset_b = 0

    def take(name):
        nonlocal offset_w, offset_b
        if same:
            w = stacked[offset_w : offset_w + width]
            offset_w += width
        else:
            w = sd[core + f"{name}_proj_weight"]
        b = None
        if bias is not None:
            b = bias[offset_b : offset_b + w.shape[0]]
            offset_b += w.shape[0]
        return w, b

    def lin(x, wb):
        w, b = wb
        return x @ w.T + (0 if b is None else b)

    def split(x, n):  # (N, heads * n) -> (heads, N, n)
        return x.reshape(x.shape[0], heads, n).transpose(1, 0, 2)

    def tile(x):
        return np.broadcast_to(x, (heads, *x.shape))

    q = tile(state) if q_st else split(lin(state, take("q")), hd)
    k_wb = None if k_st else take("k")
    k = tile(stored) if k_st else split(lin(stored, k_wb), hd)
    if same:
        v = tile(projection) if v_st else split(lin(projection, take("v")), pd)
    else:
        v = projection
        if conn and not k_st:
            v = lin(v, k_wb)
        if v_st:
            v = split(v, v.shape[1] // heads) if (conn or k_st) else tile(v)
        else:
            w = sd[core + "v_proj_weight"]
            b = None if bias is None else bias[offset_b:]
            v = split(lin(v, (w, b)), pd)
    if a["normalize_hopfield_space"]:
        w, b = sd.get(core + "p_norm_weight"), sd.get(core + "p_norm_bias")
        eps = a["normalize_hopfield_space_eps"]
        q, k = _layer_norm(q, w, b, eps), _layer_norm(k, w, b, eps)
    size = k.shape[1]
    if a["add_zero_association"]:
        k = np.concatenate([k, np.zeros((heads, 1, k.shape[2]))], 1)
        v = np.concatenate([v, np.zeros((heads, 1, v.shape[2]))], 1)
        if stored_blocked is not None:
            stored_blocked = np.concatenate([stored_blocked, [False]])
        if blocked is not None:
            blocked = np.concatenate(
                [blocked, np.zeros((blocked.shape[0], 1), bool)], 1
            )
        size += 1
    scaling = a["scaling"]
    if scaling is None:
        scaling = 1.0 if static_run else 1.0 / np.sqrt(hd)
    beta = np.broadcast_to(np.asarray(scaling, np.float64), (heads,))[:, None, None]

    def association(q):
        z = beta * q @ k.transpose(0, 2, 1)
        if blocked is not None:
            z = np.where(blocked[None], -np.inf, z)
        if stored_blocked is not None:
            z = np.where(stored_blocked[None, None], -np.inf, z)
        return _softmax(z)

    steps_max = a["update_steps_max"]
    steps_max = np.broadcast_to(
        np.asarray(-1 if steps_max is None else steps_max), (heads,)
    )
    eps = np.broadcast_to(np.asarray(a["update_steps_eps"], np.float64), (heads,))
    xi = association(q)
    active = (steps_max != 0).copy()
    step = 0
    while active.any():
        q_new = xi @ k
        xi_new = association(q_new)
        change = np.sqrt(((xi_new - xi) ** 2).sum(axis=(1, 2)))
        q = np.where(active[:, None, None], q_new, q)
        xi = np.where(active[:, None, None], xi_new, xi)
        step += 1
        active = active & ((steps_max < 0) | (step < steps_max)) & (change > eps)
    out = np.einsum("hls,hsp->lhp", xi, v).reshape(xi.shape[1], -1)
    if not a["disable_out_projection"]:
        out = out @ sd[core + "out_proj.weight"].T
        if core + "out_proj.bias" in sd:
            out = out + sd[core + "out_proj.bias"]
    if a["association_activation"] is not None:
        out = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0)}[
            a["association_activation"]
        ](out)
    return out, xi
