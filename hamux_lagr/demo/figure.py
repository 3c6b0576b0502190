"""The demo's figure: query, recall and truth for a few digits, and the energy curves."""

import pathlib

import numpy as np

from .data import CORRUPTIONS, SIDE
from .memories import Recall


def _is_two_channel_softmax(memory: str) -> bool:
    return memory.startswith("LSoftmax") and not memory.endswith("/l2")


def best_softmax(rows: list[dict], recalls: list[Recall], kind: str) -> Recall:
    candidates = [
        (r["exact"], rec)
        for r, rec in zip(rows, recalls)
        if r["corruption"] == kind and _is_two_channel_softmax(rec.memory)
    ]
    if not candidates:
        candidates = [
            (r["exact"], rec)
            for r, rec in zip(rows, recalls)
            if r["corruption"] == kind
        ]
    return max(candidates, key=lambda c: c[0])[1]


def make_figure(rows: list[dict], extra: dict, output: pathlib.Path) -> pathlib.Path:
    """Draws the figure (see `draw_figure`) and writes it to `output`; returns the path
    written."""
    import matplotlib.pyplot as plt

    fig = draw_figure(rows, extra)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return output


def draw_figure(rows: list[dict], extra: dict):
    """Query -> recall -> truth for one digit of each class and each corruption (by the
    best softmax memory), and the energy curves of every memory; returns the
    matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, targets, recalls = extra["images"], extra["targets"], extra["recalls"]
    labels = extra["labels"][targets]
    pick = [int(np.flatnonzero(labels == k)[0]) for k in np.unique(labels)][:10]
    fig = plt.figure(figsize=(14, 6.4))
    outer = fig.add_gridspec(1, 2, width_ratios=(len(pick), 4.5), wspace=0.12)
    left = outer[0].subgridspec(
        7, len(pick), hspace=0.08, wspace=0.08, height_ratios=(1, 1, 1, 0.35, 1, 1, 1)
    )
    right = outer[1].subgridspec(2, 1, hspace=0.45)
    for block, kind in enumerate(CORRUPTIONS):
        best = best_softmax(rows, recalls, kind)
        triples = [
            (f"{kind}\nquery", extra["queries"][kind]),
            (f"recall\n{best.memory}", best.recalled),
            ("truth", images[targets]),
        ]
        cmap = matplotlib.colormaps["gray_r"].with_extremes(bad="#f6c6c6")
        for r, (label, data) in enumerate(triples):
            for c, i in enumerate(pick):
                ax = fig.add_subplot(left[4 * block + r, c])
                image = np.clip(data[i], 0, 1)
                if r == 0:  # unknown pixels of the query in pink
                    image = np.ma.masked_where(~extra["known"][kind][i], image)
                ax.imshow(
                    image.reshape(SIDE, SIDE),
                    cmap=cmap,
                    vmin=0,
                    vmax=1,
                )
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0:
                    ax.set_ylabel(
                        label, fontsize=8, rotation=0, ha="right", va="center"
                    )
        ax = fig.add_subplot(right[block])
        for rec in recalls:
            if rec.corruption != kind:
                continue
            gap = np.mean(rec.energies - rec.energies[:, -1:], axis=0)[:-1]
            ax.semilogy(np.maximum(gap, 1e-12), marker=".", label=rec.memory)
        reads = [
            name
            for name in ("LSparsemax", "LEntmax", "LSoftmax")
            if any(r.corruption == kind and r.memory.startswith(name) for r in recalls)
        ]
        xlabel = "step (0 = the query"
        if reads:  # these memories' first step is the read, of size 1
            ax.axvline(1, color="0.6", lw=0.8, ls=":", zorder=0)
            xlabel += f"; {', '.join(reads)}: 1 = the read step, dt = 1"
        ax.set_title(f"{kind}: energy along the descent", fontsize=9)
        ax.set_xlabel(xlabel + ")", fontsize=8)
        ax.set_ylabel("mean $E(t) - E(T)$", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"hamux_lagr: {len(images)} digits stored in a dense associative memory, "
        f"{len(targets)} corrupted and recalled by energy descent",
        fontsize=11,
    )
    return fig
