"""Benchmark: `hl.nn.Hopfield` against `eqx.nn.MultiheadAttention`, forward + backward.

d = 256 features, 4 heads, L = S = 128 patterns, a batch of 32 (`jax.vmap` of the
one-sample layers), float32. The timed function is `eqx.filter_value_and_grad` of
`sum(out ** 2)` with respect to the layer's parameters, jitted. With the three
LayerNorms off and `update_steps_max=0` a `Hopfield` computes the same function as a
`MultiheadAttention` with all four biases (checked here before timing): target ratio
ours / theirs <= 1.10. Also reported, against the same attention: the defaults (three
LayerNorms on) and `update_steps_max=3` (four associations per head).

The runs are interleaved in one process (the two alternate, in alternating order,
`--repeats` times, each call ended by `block_until_ready`); the table gives the median
time of each and the median of the per-repeat ratios.

hopfield-layers (PyTorch) is not compared: torch is not a dependency of this project
and is not installed here, so that optional row is not run.

    python benchmarks/bench_layers.py [--repeats 30]

Wall-clock numbers depend on the machine and on what else runs on it; nothing here
asserts on them.
"""

import argparse
import importlib.util
import platform
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp

import hamux_lagr as hl


D, HEADS, L, S, BATCH = 256, 4, 128, 128, 32
TARGET = 1.10


def _attention(key):
    return eqx.nn.MultiheadAttention(
        HEADS,
        D,
        use_query_bias=True,
        use_key_bias=True,
        use_value_bias=True,
        use_output_bias=True,
        dtype=jnp.float32,
        key=key,
    )


def _as_attention(layer: hl.nn.Hopfield, mha) -> hl.nn.Hopfield:
    """`layer` with `mha`'s weights (the same function when the norms are off)."""
    return eqx.tree_at(
        lambda m: (
            m.q_weight,
            m.k_weight,
            m.v_weight,
            m.q_bias,
            m.k_bias,
            m.v_bias,
            m.out_weight,
            m.out_bias,
        ),
        layer,
        (
            mha.query_proj.weight,
            mha.key_proj.weight,
            mha.value_proj.weight,
            mha.query_proj.bias,
            mha.key_proj.bias,
            mha.value_proj.bias,
            mha.output_proj.weight,
            mha.output_proj.bias,
        ),
    )


def _float32(tree):
    return jax.tree.map(
        lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, tree
    )


def _step(call):
    @eqx.filter_jit
    def step(model, q, kv):
        def loss(model):
            out = jax.vmap(lambda a, b: call(model, a, b))(q, kv)
            return jnp.sum(out**2)

        return eqx.filter_value_and_grad(loss)(model)

    return step


def _time(fn, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print(
        f"jax {jax.__version__}, equinox {eqx.__version__}, {jax.devices()[0]}, "
        f"{platform.machine()}"
    )
    print(f"d={D}, heads={HEADS}, L=S={L}, batch={BATCH}, float32, fwd + bwd")
    kq, kk, km, kh = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(kq, (BATCH, L, D), jnp.float32)
    kv = jax.random.normal(kk, (BATCH, S, D), jnp.float32)
    mha = _attention(km)
    off = {
        f"normalize_{p}{s}": False
        for p in ("stored_pattern", "state_pattern", "pattern_projection")
        for s in ("", "_affine")
    }
    layers = {
        "norms off, update_steps_max=0": _as_attention(
            _float32(hl.nn.Hopfield(D, num_heads=HEADS, key=kh, **off)), mha
        ),
        "defaults (3 LayerNorms)": _float32(hl.nn.Hopfield(D, num_heads=HEADS, key=kh)),
        "defaults, update_steps_max=3": _float32(
            hl.nn.Hopfield(D, num_heads=HEADS, update_steps_max=3, key=kh)
        ),
    }
    theirs = _step(lambda m, a, b: m(a, b, b))
    ours = _step(lambda m, a, b: m(a, b))
    same = jax.vmap(layers["norms off, update_steps_max=0"])(q, kv)
    ref = jax.vmap(mha)(q, kv, kv)
    err = float(jnp.max(jnp.abs(same - ref)) / jnp.max(jnp.abs(ref)))
    print(
        f"norms off, no step: max relative difference to MultiheadAttention {err:.1e}"
    )
    assert err < 1e-5
    print()
    print("| Hopfield | ours | MultiheadAttention | ratio | target |")
    print("|---|---|---|---|---|")
    for i, (name, layer) in enumerate(layers.items()):
        jax.block_until_ready(ours(layer, q, kv))  # compile
        jax.block_until_ready(theirs(mha, q, kv))
        t_ours, t_theirs, ratios = [], [], []
        for r in range(args.repeats):
            if r % 2:
                b = _time(theirs, mha, q, kv)
                a = _time(ours, layer, q, kv)
            else:
                a = _time(ours, layer, q, kv)
                b = _time(theirs, mha, q, kv)
            t_ours.append(a)
            t_theirs.append(b)
            ratios.append(a / b)
        ratio = statistics.median(ratios)
        target = (
            f"<= {TARGET}" + ("" if ratio <= TARGET else " **missed**")
            if i == 0
            else "(info)"
        )
        print(
            f"| {name} | {1e3 * statistics.median(t_ours):.2f} ms | "
            f"{1e3 * statistics.median(t_theirs):.2f} ms | {ratio:.3f} | {target} |"
        )
    print()
    if importlib.util.find_spec("torch") is None:
        print(
            "hopfield-layers (PyTorch): not run, torch is not installed (it is not a "
            "dependency of hamux_lagr and is not fetched for this benchmark)."
        )
    else:
        print(
            "hopfield-layers (PyTorch): not run, the hopfield-layers source is not "
            "part of this project."
        )


if __name__ == "__main__":
    main()
