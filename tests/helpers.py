"""Helpers shared by the test files."""

import os
import subprocess
import sys
import textwrap

import equinox as eqx
import jax.numpy as jnp
import numpy as np

import hamux_lagr as hl


def tree_allclose(x, y, *, rtol=1e-5, atol=1e-8) -> bool:
    """True when two pytrees have the same structure, shapes, dtypes and close leaves.

    Dtype-aware (`typematch=True`): a float32 result is not "close" to a float64
    reference, and a NumPy array is not a JAX array: convert references with
    `jnp.asarray(ref, dtype)` when that is what is meant.
    """
    return bool(eqx.tree_equal(x, y, typematch=True, rtol=rtol, atol=atol))


def run_without_hook(code: str, timeout: float = 300) -> str:
    """Runs Python `code` in a fresh interpreter without the jaxtyping import hook.

    The test suite runs every `hamux_lagr` function under jaxtyping + beartype, whose
    type errors fire before our own checks. To test the messages a user without the
    hook sees (a string `beta`, a `None` state), run the calls here. Batch many checks
    into one call: each costs an interpreter start and a JAX import. Returns stdout;
    raises `AssertionError` with stderr if the code fails.
    """
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def random_patterns(k: int, d: int, dtype=jnp.float64, seed: int = 0):
    """`k` standard-normal patterns of dimension `d`, as a JAX array of `dtype`."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal((k, d)), dtype)


def dense_memory_ham(patterns, beta=1.0, *, lagrangian=None, **memory_kwargs):
    """The dense associative memory as a HAM: an identity layer `"v"` of the patterns'
    dimension and a `DenseMemory` of `patterns` (by default `LSoftmax(beta)`, in the
    patterns' dtype), the model most test files retrieve with."""
    patterns = jnp.asarray(patterns)
    if lagrangian is None:
        lagrangian = hl.LSoftmax(jnp.asarray(beta, patterns.dtype))
    return hl.HAM(
        {"v": hl.NeuronLayer(hl.LIdentity(), (patterns.shape[1],))},
        {"memory": hl.DenseMemory(patterns, lagrangian, **memory_kwargs)},
        [(("v",), "memory")],
    )
