import jax
import numpy as np
import pytest


# Float64 is needed for finite-difference checks; float32/16 tests ask for their dtype
# explicitly. (Diffrax's test suite does the same.)
jax.config.update("jax_enable_x64", True)
# Strict dtype promotion: mixing float32 and float64 (or int32 and int64) must be
# explicit in the library, so that x64 mode never silently changes a dtype.
jax.config.update("jax_numpy_dtype_promotion", "strict")
# Rank promotion raises: a broadcast between arrays of different ranks must be
# explicit in the library (as in Equinox's, Diffrax's and Optimistix's suites).
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def getkey():
    """Returns a function that yields fresh, deterministic PRNG keys."""
    state = {"key": jax.random.key(5678)}

    def _getkey():
        state["key"], sub = jax.random.split(state["key"])
        return sub

    return _getkey


@pytest.fixture
def rng():
    """A seeded NumPy generator: test data without compiling JAX's random functions
    for every shape (each new shape costs `jax.random` a compilation)."""
    return np.random.default_rng(1234)
