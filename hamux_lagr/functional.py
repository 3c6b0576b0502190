"""The functional Lagrangians, `hamux_lagr.functional.lagr_*`.

The same functions are re-exported at the top level as `hamux_lagr.lagr_*`.
"""

from ._functional import (
    lagr_exp as lagr_exp,
    lagr_ghostmax as lagr_ghostmax,
    lagr_identity as lagr_identity,
    lagr_layernorm as lagr_layernorm,
    lagr_relu as lagr_relu,
    lagr_repu as lagr_repu,
    lagr_rexp as lagr_rexp,
    lagr_sigmoid as lagr_sigmoid,
    lagr_softmax as lagr_softmax,
    lagr_softmax_unstable as lagr_softmax_unstable,
    lagr_spherical_norm as lagr_spherical_norm,
    lagr_tanh as lagr_tanh,
)
from ._functional_sparse import (
    lagr_entmax as lagr_entmax,
    lagr_sparsemax as lagr_sparsemax,
)
from ._log_sum_relu import lagr_log_sum_relu as lagr_log_sum_relu
from ._normmax import lagr_normmax as lagr_normmax
