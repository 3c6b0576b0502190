"""Energy-based associative memories in Equinox.

A *Lagrangian* is a convex scalar function of a layer's state; its gradient is the
layer's activation function and its Legendre transform is the layer's energy.
"""

import importlib.metadata

from . import functional as functional
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
from ._lagrangians import (
    Lagrangian as Lagrangian,
    LExp as LExp,
    LGhostmax as LGhostmax,
    LIdentity as LIdentity,
    LLayerNorm as LLayerNorm,
    LRelu as LRelu,
    LRepu as LRepu,
    LRexp as LRexp,
    LSigmoid as LSigmoid,
    LSoftmax as LSoftmax,
    LSoftmaxUnstable as LSoftmaxUnstable,
    LSphericalNorm as LSphericalNorm,
    LTanh as LTanh,
)
from ._lagrangians_sparse import LEntmax as LEntmax, LSparsemax as LSparsemax
from ._log_sum_relu import (
    lagr_log_sum_relu as lagr_log_sum_relu,
    LLogSumReLU as LLogSumReLU,
)
from ._normmax import lagr_normmax as lagr_normmax, LNormmax as LNormmax


# --- associative memories (neurons, synapses, HAM, dynamics) ---
# isort: split
from ._attention import AttentionSynapse as AttentionSynapse
from ._conv import ConvSynapse as ConvSynapse, PoolSynapse as PoolSynapse
from ._dense_memory import DenseMemory as DenseMemory
from ._dynamics import descend as descend
from ._export import to_jax_export as to_jax_export, to_onnx as to_onnx
from ._fixed_point import fixed_point as fixed_point
from ._ham import HAM as HAM
from ._neurons import NeuronLayer as NeuronLayer
from ._random_features import RandomFeatureMemory as RandomFeatureMemory
from ._sharding import shard as shard, shard_states as shard_states
from ._solution import Solution as Solution
from ._synapses import (
    BiasSynapse as BiasSynapse,
    LinearSynapse as LinearSynapse,
    Synapse as Synapse,
)


# --- end associative memories ---
# isort: split
from . import nn as nn


__version__ = importlib.metadata.version("hamux_lagr")
