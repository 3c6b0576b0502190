"""Rewrites of the JAX primitives that jax2onnx (0.17) converts wrongly or not at
all, into forms it converts exactly: the rules of `Simplifier` for `to_onnx`.

Each rule takes the equation and its (simplified) inputs and returns its outputs;
a case it does not cover is bound unchanged, for jax2onnx to convert.
"""

import numpy as np
from jax import lax

from .jaxpr import bind, dtype_of


def _dot_general_for_onnx(eqn, invals) -> list:
    """jax2onnx (0.17) lowers a 2-D `dot_general` without batch dimensions to a
    `Gemm` that contracts the first operand's *last* axis, whatever the dimension
    numbers say. Reverse-mode gradients of `patterns @ g` under `jax.vmap` contract
    the first axis (the (K, batch) layout of `DenseMemory`): transpose that operand
    first."""
    lhs, rhs = invals
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    if not lb and not rb and tuple(lc) == (0,) and np.ndim(lhs) == 2:
        lhs = lax.transpose(lhs, (1, 0))
        dims = (((1,), tuple(rc)), ((), ()))
        return bind(eqn, [lhs, rhs], dict(eqn.params, dimension_numbers=dims))
    return bind(eqn, invals)


def _scatter_for_onnx(eqn, invals) -> list:
    """A point update `x.at[i].set(v)` under `jax.vmap` (one index per sample, into
    a buffer such as `descend`'s energy trace), which jax2onnx (0.17) has no
    conversion for, as a one-hot `select`. Other scatters go to jax2onnx as they are."""
    operand, indices, updates = invals
    p = eqn.params
    dn = p["dimension_numbers"]
    batch_o = tuple(dn.operand_batching_dims)
    batch_i = tuple(dn.scatter_indices_batching_dims)
    scattered = tuple(dn.scatter_dims_to_operand_dims)
    point_update = (
        p.get("update_jaxpr") is None
        and not dn.update_window_dims
        and sorted(dn.inserted_window_dims) == sorted(scattered)
        and sorted(batch_o + scattered) == list(range(operand.ndim))
        and sorted(batch_i) == list(range(indices.ndim - 1))
        and indices.shape[-1] == len(scattered)
        and updates.shape == indices.shape[:-1]
    )
    if not point_update:
        return bind(eqn, invals)
    # Axis j of `updates` (and of the index arrays) is operand axis batch_o[k] for
    # the k with batch_i[k] == j; move them into operand order, then broadcast.
    order = sorted(range(len(batch_i)), key=lambda j: batch_o[batch_i.index(j)])
    dims = tuple(sorted(batch_o))

    def spread(x):
        return lax.broadcast_in_dim(lax.transpose(x, order), operand.shape, dims)

    mask = None
    for k, axis in enumerate(scattered):
        index = lax.index_in_dim(indices, k, axis=indices.ndim - 1, keepdims=False)
        if p["mode"] == lax.GatherScatterMode.CLIP:
            dtype = dtype_of(index)
            size = np.asarray(operand.shape[axis] - 1, dtype)
            index = lax.clamp(np.zeros((), dtype), index, size)
        iota = lax.broadcasted_iota(dtype_of(index), operand.shape, axis)
        hit = lax.eq(iota, spread(index))
        mask = hit if mask is None else lax.bitwise_and(mask, hit)
    assert mask is not None
    updates = lax.convert_element_type(updates, dtype_of(operand))
    return [lax.select(mask, spread(updates), operand)]


def _select_n_for_onnx(eqn, invals) -> list:
    """`select_n` of boolean cases (a batched loop's `converged` flag) through int32:
    onnxruntime has no `Where` kernel for booleans."""
    which, *cases = invals
    if dtype_of(cases[0]) != np.bool_:
        return bind(eqn, invals)
    ints = [lax.convert_element_type(c, np.int32) for c in cases]
    (out,) = bind(eqn, [which, *ints])
    return [lax.ne(out, np.zeros((), np.int32))]


def _conv_for_onnx(eqn, invals) -> list:
    """A convolution in the layouts (N, C, spatial...), (O, I, spatial...), the only
    ones jax2onnx (0.17) converts: the gradient of `ConvSynapse`'s energy with respect
    to its input layer is a convolution with an (I, O, ...) kernel, so transpose the
    operands into those layouts, and the result back."""
    lhs, rhs = invals
    dn = eqn.params["dimension_numbers"]
    canonical = tuple(range(np.ndim(lhs)))
    if (dn.lhs_spec, dn.rhs_spec, dn.out_spec) == (canonical,) * 3:
        return bind(eqn, invals)
    lhs = lax.transpose(lhs, tuple(dn.lhs_spec))
    rhs = lax.transpose(rhs, tuple(dn.rhs_spec))
    params = dict(
        eqn.params,
        dimension_numbers=lax.ConvDimensionNumbers(canonical, canonical, canonical),
    )
    (out,) = bind(eqn, [lhs, rhs], params)
    return [lax.transpose(out, tuple(np.argsort(dn.out_spec)))]


def _reduce_window_for_onnx(eqn, invals) -> list:
    """Max (min) pooling of more than 3 dimensions, which jax2onnx (0.17) writes as an
    ONNX `MaxPool` over every dimension (onnxruntime pools at most 3): the leading
    dimensions the window does not touch (the batch of `jax.vmap`, the channels)
    become one."""
    (x,) = invals
    p = eqn.params
    names = (
        "window_dimensions",
        "window_strides",
        "padding",
        "base_dilation",
        "window_dilation",
    )
    untouched = (1, 1, (0, 0), 1, 1)
    trivial = 0
    for size, stride, pad, base, dilation in zip(*(p[n] for n in names)):
        if (size, stride, tuple(pad), base, dilation) != untouched:
            break
        trivial += 1
    if np.ndim(x) <= 3 or trivial < 2:
        return bind(eqn, invals)
    merged = lax.reshape(x, (int(np.prod(x.shape[:trivial])), *x.shape[trivial:]))
    params = {n: tuple(p[n])[trivial - 1 :] for n in names}
    (out,) = bind(eqn, [merged], dict(p, **params))
    return [lax.reshape(out, eqn.outvars[0].aval.shape)]


def _pad(x, value, config):
    """`lax.pad` with its interior padding written as an interleave (a concatenation
    and a reshape): jax2onnx (0.17) converts edge padding only. The gradients of
    strided pooling are such pads."""
    for axis, (_, _, interior) in enumerate(config):
        if interior <= 0 or x.shape[axis] == 0:
            continue
        n = x.shape[axis]
        spread = lax.expand_dims(x, (axis + 1,))
        shape = list(spread.shape)
        shape[axis + 1] = interior
        filler = lax.broadcast_in_dim(value, tuple(shape), ())
        both = lax.concatenate([spread, filler], axis + 1)
        shape = list(x.shape)
        shape[axis] = n * (interior + 1)
        x = lax.slice_in_dim(
            lax.reshape(both, tuple(shape)), 0, shape[axis] - interior, axis=axis
        )
    return lax.pad(x, value, [(lo, hi, 0) for lo, hi, _ in config])


def _pad_for_onnx(eqn, invals) -> list:
    x, value = invals
    config = eqn.params["padding_config"]
    if all(interior == 0 for _, _, interior in config):
        return bind(eqn, invals)
    return [_pad(x, value, config)]


def _select_and_scatter_add_for_onnx(eqn, invals) -> list:
    """The gradient of max (or min) pooling, which jax2onnx (0.17) has no conversion
    for, from slices: each window's first maximum (XLA's choice) receives the
    window's gradient, and the windows' contributions add up."""
    source, operand = invals
    p = eqn.params
    window, strides = p["window_dimensions"], p["window_strides"]
    if any(lo or hi for lo, hi in p["padding"]) or p["select_prim"] not in (
        lax.ge_p,
        lax.le_p,
    ):
        return bind(eqn, invals)
    offsets = list(np.ndindex(*window))
    # The window's elements at each offset: x[o + s * i] for every window i.
    candidates = []
    for offset in offsets:
        limit = [o + s * (n - 1) + 1 for o, s, n in zip(offset, strides, source.shape)]
        candidates.append(lax.slice(operand, offset, limit, strides))
    stacked = lax.concatenate([lax.expand_dims(c, (0,)) for c in candidates], 0)
    pick = lax.argmax if p["select_prim"] is lax.ge_p else lax.argmin
    chosen = pick(stacked, 0, np.int32)
    zero = np.zeros((), dtype_of(source))
    out = None
    for k, offset in enumerate(offsets):
        share = lax.select(
            lax.eq(chosen, np.full((), k, np.int32)),
            source,
            lax.full_like(source, zero),
        )
        config = [
            (o, size - (o + s * (n - 1) + 1), s - 1)
            for o, s, n, size in zip(offset, strides, source.shape, operand.shape)
        ]
        spread = _pad(share, zero, config)
        out = spread if out is None else lax.add(out, spread)
    return [out]


ONNX_RULES = {
    "dot_general": _dot_general_for_onnx,
    "scatter": _scatter_for_onnx,
    "select_n": _select_n_for_onnx,
    "conv_general_dilated": _conv_for_onnx,
    "pad": _pad_for_onnx,
    "reduce_window_max": _reduce_window_for_onnx,
    "reduce_window_min": _reduce_window_for_onnx,
    "select_and_scatter_add": _select_and_scatter_add_for_onnx,
}
