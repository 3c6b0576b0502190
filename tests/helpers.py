"""Helpers shared by the test files."""

import os
import subprocess
import sys
import textwrap

import equinox as eqx


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


__all__ = ["run_without_hook", "tree_allclose"]
