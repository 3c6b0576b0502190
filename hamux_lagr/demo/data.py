"""The digits, their corruptions, and nearest-neighbour lookups."""

import numpy as np


SIDE = 8  # the digits are SIDE x SIDE images
NOISE_FRACTION = 0.3
CORRUPTIONS = ("half-masked", "30% noise")


def load_data() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (shipped with the package): images in [0, 1] and labels."""
    from sklearn.datasets import load_digits

    data, labels = load_digits(return_X_y=True)
    images = (np.asarray(data) / 16.0).astype(np.float32)  # (1797, 64), pixels 0..16
    return images, np.asarray(labels)


def corrupt(
    images: np.ndarray, kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Corrupts `images`; returns the queries, the known-pixel mask and whether the
    known pixels are to be held fixed.

    - `"half-masked"`: the lower half of each image is unknown (set to 0); the upper
      half is known and clamped.
    - `"30% noise"`: 30% of the pixels, chosen at random, are replaced by uniform noise
      in [0, 1]; every pixel counts as known (the corrupted ones are not flagged) and
      every pixel is free to change.
    """
    if kind == "half-masked":
        known = np.ones((SIDE, SIDE), bool)
        known[SIDE // 2 :] = False
        known = np.broadcast_to(known.reshape(-1), images.shape).copy()
        return np.where(known, images, 0.0).astype(np.float32), known, True
    if kind == "30% noise":
        replaced = rng.random(images.shape) < NOISE_FRACTION
        noise = rng.random(images.shape, dtype=np.float32)
        queries = np.where(replaced, noise, images).astype(np.float32)
        return queries, np.ones(images.shape, bool), False
    raise ValueError(f"`kind` must be one of {CORRUPTIONS}, got {kind!r}.")


def nearest(queries: np.ndarray, patterns: np.ndarray, known=None) -> np.ndarray:
    """Index of the Euclidean-nearest pattern to each query (over `known` pixels)."""
    if known is None:
        known = np.ones_like(queries, dtype=bool)
    w = known.astype(np.float32)
    # ||w * (q - p)||^2 = sum w q^2 - 2 (w q) . p + w . p^2, for 0/1 weights.
    d2 = (
        (w * queries**2).sum(1)[:, None]
        - 2.0 * (w * queries) @ patterns.T
        + w @ (patterns**2).T
    )
    return np.argmin(d2, axis=1)


def accuracies(recalled, images, labels, targets) -> tuple[float, float]:
    """(exact, class) recall: the nearest stored image is the target / has its label."""
    j = nearest(recalled, images)
    return float(np.mean(j == targets)), float(np.mean(labels[j] == labels[targets]))
