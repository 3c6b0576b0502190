"""The memories the demo compares, their recall, and the experiment that runs them."""

import dataclasses
import time
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import hamux_lagr as hl

from .data import accuracies, corrupt, CORRUPTIONS, load_data, nearest


@dataclasses.dataclass
class Recall:
    """What one memory made of one corruption."""

    memory: str
    corruption: str
    recalled: np.ndarray  # (B, 64) images
    energies: np.ndarray  # (B, T) energy along the descent
    seconds: float


def softmax_memory(images: np.ndarray, beta: float) -> hl.HAM:
    """A one-layer HAM: two-channel identity image layer, `DenseMemory(LSoftmax)`."""
    return euclidean_memory(images, hl.LSoftmax(beta))


def euclidean_memory(images: np.ndarray, lagrangian: hl.Lagrangian) -> hl.HAM:
    """A one-layer HAM: two-channel identity image layer (pixels, confidence) and
    `DenseMemory(lagrangian)` of the two-channel patterns $(p, -p^2/2)$."""
    patterns = np.stack([images, -0.5 * images**2], axis=1)  # (K, 2, 64)
    return hl.HAM(
        neurons={"image": hl.NeuronLayer(hl.LIdentity(), (2, images.shape[1]))},
        synapses={"memory": hl.DenseMemory(jnp.asarray(patterns), lagrangian)},
        connections=[(("image",), "memory")],
    )


def sparse_lagrangian(name: str, beta: float) -> hl.Lagrangian:
    """`LSparsemax(beta)` (`name="sparsemax"`) or `LEntmax(1.5, beta)` (`"entmax"`)."""
    return (
        hl.LSparsemax(beta) if name == "sparsemax" else hl.LEntmax(alpha=1.5, beta=beta)
    )


def l2_memory(images: np.ndarray, beta: float) -> hl.DenseMemory:
    """`DenseMemory(images, LSoftmax(beta), similarity="l2")`, one channel."""
    return hl.DenseMemory(jnp.asarray(images), hl.LSoftmax(beta), similarity="l2")


def recall_l2(
    memory: hl.DenseMemory, queries, known, hold: bool, *, steps: int, dt: float
) -> tuple[np.ndarray, np.ndarray]:
    r"""Descends the memory's own energy from the query: one step of size 1 (the
    read, $x = \Xi^\top p$), then `steps` steps of size `dt`; known pixels of a
    masked query are clamped."""
    mask = jnp.asarray(known & hold)
    final, energies = _recall_l2(memory, jnp.asarray(queries), mask, steps=steps, dt=dt)
    return np.asarray(final), np.asarray(energies)


@eqx.filter_jit
def _recall_l2(memory: hl.DenseMemory, x0, mask, *, steps: int, dt: float):
    # One query per call, batched with `jax.vmap`, with its clamp mask.
    def one(x, held):
        def step(x, size):
            x = jnp.where(held, x, x - size * jax.grad(memory)(x))
            return x, memory(x)

        sizes = jnp.concatenate(
            [jnp.ones((1,), x.dtype), jnp.full((steps,), dt, x.dtype)]
        )
        final, energies = jax.lax.scan(step, x, sizes)
        # The energy of the query itself, then after the read and each step.
        return final, jnp.concatenate([memory(x)[None], energies])

    return jax.vmap(one)(x0, mask)


def recall_softmax(
    ham: hl.HAM, queries, known, hold: bool, *, steps: int, dt: float
) -> tuple[np.ndarray, np.ndarray]:
    """Reads with confidence = known pixels (one step, dt = 1), then settles (c = 1)."""
    conf = known.astype(np.float32)
    held = np.stack([known & hold, np.ones_like(known)], axis=1)
    read = np.stack([queries, conf], axis=1)
    final, energies = _recall_softmax(
        ham, jnp.asarray(read), jnp.asarray(held), steps=steps, dt=dt
    )
    return np.asarray(final), np.asarray(energies)


@eqx.filter_jit
def _recall_softmax(ham: hl.HAM, read, held, *, steps: int, dt: float):
    # One query per call, batched with `jax.vmap`; the clamp mask is per query too.
    def one(query, mask):
        clamp = {"image": mask}
        read = hl.descend(
            ham, {"image": query}, steps=1, dt=1.0, clamp=clamp, trace=False
        )
        trusted = {"image": read.xs["image"].at[1].set(1.0)}
        sol = hl.descend(ham, trusted, steps=steps, dt=dt, clamp=clamp)
        assert sol.energies is not None
        # The energy of the query itself (all pixels trusted), then along the descent.
        start = ham.energy({"image": query.at[1].set(1.0)})
        return sol.xs["image"][0], jnp.concatenate([start[None], sol.energies])

    return jax.vmap(one)(read, held)


def polynomial_memory(images: np.ndarray, n: float) -> hl.HAM:
    """A one-layer HAM: spherical image layer, `DenseMemory(LRepu(n))` of the
    centred, unit-norm images."""
    centred = images - images.mean(0)
    patterns = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    return hl.HAM(
        neurons={"image": hl.NeuronLayer(hl.LSphericalNorm(), (images.shape[1],))},
        synapses={"memory": hl.DenseMemory(jnp.asarray(patterns), hl.LRepu(n))},
        connections=[(("image",), "memory")],
    )


def recall_polynomial(
    ham: hl.HAM,
    images: np.ndarray,
    queries,
    known,
    hold: bool,
    *,
    steps: int,
    dt: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Descends from the centred query (unknown pixels at the mean image)."""
    mean = images.mean(0)
    scale = np.median(np.linalg.norm(images - mean, axis=1))
    x0 = np.where(known, queries - mean, 0.0).astype(np.float32)
    mask = jnp.asarray(known & hold) if hold else None
    final, energies = _recall_polynomial(ham, jnp.asarray(x0), mask, steps=steps, dt=dt)
    x = np.asarray(final)
    direction = x / np.linalg.norm(x, axis=1, keepdims=True)
    return mean + scale * direction, np.asarray(energies)


@eqx.filter_jit
def _recall_polynomial(ham: hl.HAM, x0, mask, *, steps: int, dt: float):
    # One query per call, batched with `jax.vmap` (with its clamp mask, if any).
    def one(x, mask):
        clamp = None if mask is None else {"image": mask}
        sol = hl.descend(ham, {"image": x}, steps=steps, dt=dt, clamp=clamp)
        assert sol.energies is not None
        return sol.xs["image"], sol.energies

    if mask is None:
        return jax.vmap(lambda x: one(x, None))(x0)
    return jax.vmap(one)(x0, mask)


def run(
    *,
    betas: Sequence[float],
    degrees: Sequence[float],
    sparse_betas: Sequence[float] = (),
    l2_betas: Sequence[float] = (),
    steps: int,
    dt: float,
    num_queries: int | None,
    seed: int,
    progress=None,
) -> tuple[list[dict], dict]:
    """Stores every digit, corrupts `num_queries` of them, recalls them with each memory.

    Returns the table's rows (dicts) and what the figure needs.
    """
    images, labels = load_data()
    rng = np.random.default_rng(seed)
    targets = np.arange(len(images))
    if num_queries is not None and num_queries < len(images):
        targets = np.sort(rng.choice(len(images), num_queries, replace=False))
    memories = [(f"LSoftmax(beta={b:g})", "softmax", b) for b in betas]
    memories += [(f"LRepu(n={n:g})", "repu", n) for n in degrees]
    memories += [(f"LSparsemax(beta={b:g})", "sparsemax", b) for b in sparse_betas] + [
        (f"LEntmax(alpha=1.5,beta={b:g})", "entmax", b) for b in sparse_betas
    ]
    memories += [(f"LSoftmax(beta={b:g})/l2", "l2", b) for b in l2_betas]
    queries = {}
    for kind in CORRUPTIONS:
        queries[kind] = corrupt(images[targets], kind, rng)
    jobs = [(kind, memory) for kind in CORRUPTIONS for memory in memories]
    bar = progress(jobs, desc="recall", unit="memory") if progress else jobs
    rows, recalls = [], []
    for kind, (name, family, param) in bar:
        q, known, hold = queries[kind]
        start = time.perf_counter()
        if family in ("softmax", "sparsemax", "entmax"):
            if family == "softmax":
                ham = softmax_memory(images, param)
            else:
                ham = euclidean_memory(images, sparse_lagrangian(family, param))
            # A sparse read is the memory's answer: settling (each step sorts the K
            # similarities of every query) would not move a one-pattern read, a fixed
            # point of the energy.
            settle = steps if family == "softmax" else 0
            recalled, energies = recall_softmax(
                ham, q, known, hold, steps=settle, dt=dt
            )
        elif family == "l2":
            recalled, energies = recall_l2(
                l2_memory(images, param), q, known, hold, steps=steps, dt=dt
            )
        else:
            ham = polynomial_memory(images, param)
            recalled, energies = recall_polynomial(
                ham, images, q, known, hold, steps=steps, dt=dt
            )
        seconds = time.perf_counter() - start
        exact, klass = accuracies(recalled, images, labels, targets)
        j_nn = nearest(q, images, known)
        rows.append(
            dict(
                corruption=kind,
                memory=name,
                exact=exact,
                klass=klass,
                pixel_error=float(np.mean(np.abs(recalled - images[targets]))),
                nn_exact=float(np.mean(j_nn == targets)),
                nn_class=float(np.mean(labels[j_nn] == labels[targets])),
                seconds=seconds,
                monotone=bool(
                    np.all(
                        np.diff(energies, axis=1)
                        <= 1e-4 * (1 + np.abs(energies[:, :-1]))
                    )
                ),
            )
        )
        recalls.append(Recall(name, kind, recalled, energies, seconds))
    blind = nearest(queries["half-masked"][0], images)
    extra = dict(
        images=images,
        labels=labels,
        targets=targets,
        queries={k: v[0] for k, v in queries.items()},
        known={k: v[1] for k, v in queries.items()},
        recalls=recalls,
        blind_nn_exact=float(np.mean(blind == targets)),
        blind_nn_class=float(np.mean(labels[blind] == labels[targets])),
    )
    return rows, extra


def format_table(rows: list[dict]) -> str:
    """The results as a fixed-width text table."""
    head = (
        f"{'corruption':<12} {'memory':<28} {'exact':>6} {'class':>6} "
        f"{'pixel err':>9} {'NN exact':>9} {'NN class':>9} {'time':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['corruption']:<12} {r['memory']:<28} {r['exact']:>6.3f} "
            f"{r['klass']:>6.3f} {r['pixel_error']:>9.3f} {r['nn_exact']:>9.3f} "
            f"{r['nn_class']:>9.3f} {r['seconds']:>5.1f}s"
        )
    return "\n".join(lines)
