"""The functional Lagrangians, `hamux_lagr.functional.lagr_*`.

Each `lagr_*` returns an array of `x`'s shape (the reducing ones keep their `axis` at
size 1) whose sum is the scalar Lagrangian; the same functions are `hamux_lagr.lagr_*`.
"""

from ._lagrangians.exponential import (
    lagr_exp as lagr_exp,
    lagr_rexp as lagr_rexp,
    lagr_sigmoid as lagr_sigmoid,
    lagr_tanh as lagr_tanh,
)
from ._lagrangians.log_sum_relu import lagr_log_sum_relu as lagr_log_sum_relu
from ._lagrangians.normmax import lagr_normmax as lagr_normmax
from ._lagrangians.norms import (
    lagr_layernorm as lagr_layernorm,
    lagr_spherical_norm as lagr_spherical_norm,
)
from ._lagrangians.polynomial import (
    lagr_identity as lagr_identity,
    lagr_relu as lagr_relu,
    lagr_repu as lagr_repu,
)
from ._lagrangians.softmax import (
    lagr_ghostmax as lagr_ghostmax,
    lagr_softmax as lagr_softmax,
    lagr_softmax_unstable as lagr_softmax_unstable,
)
from ._lagrangians.sparse import (
    lagr_entmax as lagr_entmax,
    lagr_sparsemax as lagr_sparsemax,
)
