"""Prints each Lagrangian's value, activation and energy at a few points.

Run with `python examples/quickstart.py`.
"""

import jax
import jax.numpy as jnp

import hamux_lagr as hl


def main() -> None:
    x = jnp.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    lagrangians = {
        "LIdentity()": hl.LIdentity(),
        "LRelu()": hl.LRelu(),
        "LRepu(n=3)": hl.LRepu(n=3),
        "LExp(beta=1)": hl.LExp(),
        "LRexp(beta=1)": hl.LRexp(),
        "LTanh(beta=2)": hl.LTanh(beta=2.0),
        "LSigmoid(beta=2)": hl.LSigmoid(beta=2.0),
        "LSoftmax(beta=1)": hl.LSoftmax(),
        "LSoftmaxUnstable(beta=1)": hl.LSoftmaxUnstable(),
        "LGhostmax(beta=1)": hl.LGhostmax(),
        "LLayerNorm()": hl.LLayerNorm(),
        "LSphericalNorm()": hl.LSphericalNorm(),
    }
    print(f"x = {x}")
    print(f"{'Lagrangian':26s} {'L(x)':>9s} {'E(x)':>9s}  activation g(x) = dL/dx")
    for name, lagr in lagrangians.items():
        value, g = jax.value_and_grad(lagr)(x)
        energy = lagr.energy(x)
        act = " ".join(f"{float(v):+.3f}" for v in g)
        print(f"{name:26s} {float(value):9.4f} {float(energy):9.4f}  [{act}]")


if __name__ == "__main__":
    main()
