r"""Clamped neurons: the `clamp` argument of the dynamics, and the pieces of a step
that hold clamped neurons fixed."""

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._custom_types import Masks, States
from ._misc import common_dtype, select


def check_clamp(neurons: Mapping, clamp: object, where: str) -> Masks:
    """Each layer's mask: `None` (free), `True` (all held) or a boolean array of the
    layer's shape. Raises at once (at trace time) for a wrong structure."""
    masks: Masks = {name: None for name in neurons}
    if clamp is None:
        return masks
    if not isinstance(clamp, Mapping):
        raise TypeError(
            "`clamp` must be a dict from layer name to a boolean mask (or True) in "
            f"`{where}`, got {type(clamp).__name__}."
        )
    for name, mask in clamp.items():
        if name not in neurons:
            raise ValueError(
                f"`clamp` names the unknown layer {name!r} in `{where}`; the layers "
                f"are {list(neurons)}."
            )
        shape = neurons[name].shape
        if isinstance(mask, (bool, np.bool_)):
            masks[name] = True if mask else None
            continue
        try:
            mask = jnp.asarray(mask)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"`clamp[{name!r}]` must be True or a boolean array, got "
                f"{type(mask).__name__}."
            ) from e
        if mask.dtype != jnp.bool_:
            raise TypeError(
                f"`clamp[{name!r}]` must be a boolean mask (True = held fixed), got "
                f"dtype {mask.dtype}; pass e.g. `mask.astype(bool)`."
            )
        if mask.shape != shape:
            batched = mask.ndim == len(shape) + 1 and mask.shape[1:] == shape
            raise ValueError(
                f"`clamp[{name!r}]` has shape {mask.shape}, but layer {name!r} has "
                f"shape {shape}: give a mask of shape {shape}, or True to hold the "
                "whole layer."
                + (
                    f" `{where}` acts on one sample: map per-sample masks with "
                    "`jax.vmap`, e.g. `jax.vmap(lambda x, m: hl.descend(ham, x, "
                    f"steps=20, dt=0.1, clamp={{{name!r}: m}}))(xs, masks)`."
                    if batched
                    else ""
                )
            )
        masks[name] = mask
    return masks


def hold(masks: Masks, old: States, new: States) -> States:
    """`new`, with the clamped neurons of `old`."""
    out = {}
    for name, x in old.items():
        mask = masks[name]
        if mask is True:
            out[name] = x
        elif mask is None:
            out[name] = new[name]
        else:
            out[name] = select(mask, x, new[name])
    return out


def euler_step(masks: Masks, rates: dict, xs: States, dEdg: States) -> States:
    """One Euler step `x - dt / tau * dE/dg`, holding the clamped neurons."""
    new = {
        name: x if masks[name] is True else x - rates[name] * dEdg[name]
        for name, x in xs.items()
    }
    return hold(masks, xs, new)


def residual(masks: Masks, dEdg: States) -> Float[Array, ""]:
    """max |dE/dg| over the free neurons (0 when none is free, inf when an entry is
    NaN), in the promoted dtype of the gradients."""
    dtype = common_dtype(dEdg)
    out = jnp.zeros((), dtype)
    for name, d in dEdg.items():
        mask = masks[name]
        if mask is True or d.size == 0:
            continue
        if mask is not None:
            d = select(mask, jnp.zeros((), d.dtype), d)
        # A NaN entry counts as infinite, so that a non-finite gradient is never
        # "converged": XLA's CPU maximum over a large array drops NaN (see
        # `all_finite`). (The select costs nothing; a second reduction would.)
        largest = jnp.max(select(jnp.isnan(d), jnp.inf, jnp.abs(d)))
        out = jnp.maximum(out, largest.astype(dtype))
    return out
