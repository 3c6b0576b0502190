r"""Store scikit-learn's handwritten digits in a dense associative memory and recall them.

Run it with

    pip install -e ".[examples]" && python -m hamux_lagr.demo

All 1797 digits of `sklearn.datasets.load_digits` (8x8 images that ship inside
scikit-learn: nothing is downloaded) are stored in a `DenseMemory`. Each stored image is
then corrupted in two ways, its lower half masked, or 30% of its pixels replaced by
uniform noise, and recalled by descending the memory's energy with `descend`. For each
corruption and memory Lagrangian the demo prints

- **exact**: how often the stored image nearest to the recalled one is the original;
- **class**: how often that nearest stored image has the original's digit label;
- **pixel err**: the mean absolute pixel error of the recalled image (pixels in [0, 1]);
- **NN exact / NN class**: the same two accuracies of a plain nearest-neighbour lookup
  of the corrupted query among the stored images, the ceiling to read them against.
  (The lookup of a half-masked digit compares the known pixels only, as the memory
  does.)

and writes a figure (query, recall and truth for a few digits, and the energy curves).
Recall follows the dynamics for a set time, `--steps` Euler steps of `--dt`, with
`descend`, whose energy trace the figure draws; `fixed_point` runs them to the end
instead (the README's retrieval).

## The memories

**Softmax rows** (Ramsauer et al. 2020, with a Euclidean similarity). The image layer
has two channels of 64 neurons with the identity Lagrangian: the pixels $x$ and a
*confidence* $c \in \{0, 1\}$ per pixel (1 where the pixel is known). Each digit $p_\mu$
is stored as the two-channel pattern $\xi_\mu = (p_\mu, -\tfrac12 p_\mu^2)$, so the
similarity is

$$\langle \xi_\mu, (x, c)\rangle = \sum_i x_i p_{\mu i} - \tfrac12 c_i p_{\mu i}^2,$$

which, for $c = 1$, is $\tfrac12\lVert x\rVert^2 - \tfrac12\lVert x - p_\mu\rVert^2$:
the memory ranks the patterns by Euclidean distance. With `LSoftmax(beta)` the energy is
$E = \tfrac12\lVert x\rVert^2 - \frac1\beta\log\sum_\mu e^{\beta\langle\xi_\mu, (x,
c)\rangle}$ (plus the constant energy of the clamped confidence channel).

Recall is one concave-convex step (`dt = tau = 1`, Ramsauer et al.'s update
$x \leftarrow \Xi^\top\operatorname{softmax}(\beta\,\Xi x)$) in which the confidence is
0 on the unknown pixels, so that only the known ones decide which memory is read, then
`steps` Euler steps of the full energy ($c = 1$). The known pixels of a masked digit are
clamped throughout; noisy pixels are all free. Reading with $c = 0$ on the unknown
pixels is what makes inpainting exact: with $c = 1$ from the start, the zeros of the
masked half count as evidence and pull towards digits with a light lower half.

**RePU rows** (Krotov & Hopfield 2016). A polynomial energy $-\sum_\mu
\max(\langle\xi_\mu, g\rangle, 0)^n / n$ is unbounded below on identity neurons, so
these rows use a spherical layer (`LSphericalNorm`, $g = x/\lVert x\rVert$) over the
centred image and store the centred, unit-norm digits: the similarity is a cosine, and
the degree $n$ sharpens it as $\beta$ does for the softmax. The recalled direction is
rescaled to the median norm of the centred digits to be shown as an image.

**Sparse rows** (`LSparsemax`, Hu et al. 2023; `LEntmax(alpha=1.5)`, Santos et al.
2024). The softmax memory above with the sparsemax or the 1.5-entmax in place of the
softmax, read the same way. Their weights have exact zeros: when one pattern is left,
the read step returns it exactly, a fixed point of the full energy, so these rows read
only (`--steps` does not apply: settling would sort the $K$ similarities of every query
at every step, for nothing).

**L2 rows** (`LSoftmax(beta)/l2`, Millidge et al. 2022). A one-channel memory with the
distance similarity, `DenseMemory(digits, LSoftmax(beta), similarity="l2")`, energy
$E(x) = -\frac1\beta\log\sum_\mu e^{-\beta\lVert x - p_\mu\rVert^2/2}$. Its energy
already holds $\tfrac12\lVert x\rVert^2$, so it is descended on its own (no neuron
layer, whose energy would move the fixed points to half the patterns): one step of
size 1, $x \leftarrow x - \nabla E(x) = \sum_\mu w_\mu p_\mu$ with
$w = \operatorname{softmax}(-\tfrac\beta2\lVert x - p_\mu\rVert^2)$ (the read of the
softmax rows, but with every pixel trusted), then `steps` steps
of size `dt`. With no confidence channel, the zeros of a masked half count as
evidence: the rows show what the confidence channel buys.
"""

from .data import (
    accuracies as accuracies,
    corrupt as corrupt,
    CORRUPTIONS as CORRUPTIONS,
    load_data as load_data,
    nearest as nearest,
    NOISE_FRACTION as NOISE_FRACTION,
    SIDE as SIDE,
)
from .figure import draw_figure as draw_figure, make_figure as make_figure
from .memories import (
    euclidean_memory as euclidean_memory,
    format_table as format_table,
    l2_memory as l2_memory,
    polynomial_memory as polynomial_memory,
    Recall as Recall,
    recall_l2 as recall_l2,
    recall_polynomial as recall_polynomial,
    recall_softmax as recall_softmax,
    run as run,
    softmax_memory as softmax_memory,
    sparse_lagrangian as sparse_lagrangian,
)
