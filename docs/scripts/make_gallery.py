r"""Draws the gallery of every Lagrangian, its activation and its energy.

Run from the repository root (it needs matplotlib, from the `[docs]` extra):

    python docs/scripts/make_gallery.py

It writes `docs/assets/lagrangians.png`, the figure shown on the docs' Gallery page.
Nothing in the figure is drawn by hand: each curve is the library's own function.

- Elementwise Lagrangians are drawn against a scalar $x$: $\mathcal{L}(x)$, the
  activation $g(x) = \mathcal{L}'(x)$ (from `jax.grad`) and the energy
  $E(x) = x\,g(x) - \mathcal{L}(x)$.
- The reducing ones (softmax family, layer and spherical norms) have an implicit sum,
  so they are drawn along one coordinate of a 3-vector, $x = (t, 0.5, -0.5)$: the
  reduced Lagrangian, the first component of the activation, and the energy.
"""

import argparse
import pathlib

import jax
import jax.numpy as jnp
import matplotlib


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import hamux_lagr as hl  # noqa: E402


_HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_OUTPUT = _HERE.parent / "assets" / "lagrangians.png"

# (title, module, reduces over the last axis?)
GALLERY = [
    ("LIdentity()", hl.LIdentity(), False),
    ("LRelu()", hl.LRelu(), False),
    ("LRepu(n=3)", hl.LRepu(n=3), False),
    ("LExp(beta=1)", hl.LExp(beta=1.0), False),
    ("LRexp(beta=1)", hl.LRexp(beta=1.0), False),
    ("LTanh(beta=1)", hl.LTanh(beta=1.0), False),
    ("LSigmoid(beta=2)", hl.LSigmoid(beta=2.0), False),
    ("LSoftmax(beta=1)", hl.LSoftmax(beta=1.0), True),
    ("LSoftmaxUnstable(beta=1)", hl.LSoftmaxUnstable(beta=1.0), True),
    ("LGhostmax(beta=1)", hl.LGhostmax(beta=1.0), True),
    ("LLayerNorm()", hl.LLayerNorm(), True),
    ("LSphericalNorm()", hl.LSphericalNorm(), True),
    ("LSparsemax(beta=1)", hl.LSparsemax(beta=1.0), True),
    ("LEntmax(alpha=1.5)", hl.LEntmax(alpha=1.5), True),
    ("LNormmax(alpha=2)", hl.LNormmax(alpha=2.0), True),
    # Not convex: a memory's separation (of similarities), not a layer's Lagrangian.
    ("LLogSumReLU(beta=1)", hl.LLogSumReLU(beta=1.0), True),
]


def curves(lagr: hl.Lagrangian, reduces: bool, t: jax.Array):
    """The Lagrangian, the activation and the energy along the line `t`."""
    if reduces:
        rest = jnp.array([0.5, -0.5])
        xs = jnp.concatenate([t[:, None], jnp.broadcast_to(rest, (t.size, 2))], 1)
        value = jax.vmap(lagr)(xs)
        act = jax.vmap(lagr.activation)(xs)[:, 0]
        energy = jax.vmap(lagr.energy)(xs)
    else:
        value = jax.vmap(lagr)(t)
        act = jax.vmap(lagr.activation)(t)
        energy = jax.vmap(lagr.energy)(t)
    return value, act, energy


def make_figure(output: pathlib.Path = DEFAULT_OUTPUT) -> pathlib.Path:
    t = jnp.linspace(-3.0, 3.0, 301)
    ncols = 4
    nrows = -(-len(GALLERY) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows))
    for ax, (title, lagr, reduces) in zip(axes.flat, GALLERY):
        value, act, energy = curves(lagr, reduces, t)
        ax.plot(t, value, label=r"$\mathcal{L}$", color="C0", lw=2)
        ax.plot(t, act, label=r"$g = \nabla\mathcal{L}$", color="C1", lw=2)
        ax.plot(
            t,
            energy,
            label=r"$E = \langle x, g\rangle - \mathcal{L}$",
            color="C2",
            ls="--",
        )
        ax.axhline(0, color="0.8", lw=0.8, zorder=0)
        ax.axvline(0, color="0.8", lw=0.8, zorder=0)
        ax.set_title(title, fontsize=10, family="monospace")
        ax.set_ylim(-3.2, 4.2)
        ax.set_xlabel(r"$x_0$ of $(x_0, 0.5, -0.5)$" if reduces else r"$x$", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(GALLERY) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", type=pathlib.Path, default=DEFAULT_OUTPUT, help="PNG to write."
    )
    args = parser.parse_args()
    path = make_figure(args.output)
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
