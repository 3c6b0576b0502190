import jax
import jax.numpy as jnp
import numpy as np
import pytest


# Float64 is needed for finite-difference checks; float32/16 tests ask for their dtype
# explicitly. (Diffrax's test suite does the same.)
jax.config.update("jax_enable_x64", True)


@pytest.fixture
def getkey():
    """Returns a function that yields fresh, deterministic PRNG keys."""
    state = {"key": jax.random.key(5678)}

    def _getkey():
        state["key"], sub = jax.random.split(state["key"])
        return sub

    return _getkey


def tree_allclose(x, y, *, rtol=1e-5, atol=1e-8):
    """True when two pytrees have the same structure and allclose leaves."""
    xs, xdef = jax.tree_util.tree_flatten(x)
    ys, ydef = jax.tree_util.tree_flatten(y)
    if xdef != ydef:
        return False
    return all(
        np.shape(a) == np.shape(b)
        and np.allclose(
            np.asarray(a, dtype=np.float64),
            np.asarray(b, dtype=np.float64),
            rtol=rtol,
            atol=atol,
        )
        for a, b in zip(xs, ys)
    )


@pytest.fixture
def allclose():
    return tree_allclose


__all__ = ["jnp", "tree_allclose"]


@pytest.fixture
def rng():
    """A seeded NumPy generator: test data without compiling JAX's random functions
    for every shape (each new shape costs `jax.random` a compilation)."""
    return np.random.default_rng(1234)
