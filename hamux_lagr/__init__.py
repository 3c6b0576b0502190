"""Energy-based associative memories in Equinox.

A *Lagrangian* is a convex scalar function of a layer's state; its gradient is the
layer's activation function and its Legendre transform is the layer's energy.
"""

import importlib.metadata

from . import functional as functional
from ._dynamics.adjoints import (
    JacobianFreeAdjoint as JacobianFreeAdjoint,
    PhantomAdjoint as PhantomAdjoint,
)
from ._dynamics.descend import descend as descend
from ._dynamics.fixed_point import fixed_point as fixed_point
from ._dynamics.solution import RESULTS as RESULTS, Solution as Solution
from ._dynamics.solvers import (
    Anderson as Anderson,
    SafeguardedIteration as SafeguardedIteration,
)
from ._export.export import to_jax_export as to_jax_export, to_onnx as to_onnx
from ._ham import HAM as HAM
from ._lagrangians.base import Lagrangian as Lagrangian
from ._lagrangians.exponential import (
    LExp as LExp,
    LRexp as LRexp,
    LSigmoid as LSigmoid,
    LTanh as LTanh,
)
from ._lagrangians.log_sum_relu import LLogSumReLU as LLogSumReLU
from ._lagrangians.normmax import LNormmax as LNormmax
from ._lagrangians.norms import (
    LLayerNorm as LLayerNorm,
    LSphericalNorm as LSphericalNorm,
)
from ._lagrangians.polynomial import (
    LIdentity as LIdentity,
    LRelu as LRelu,
    LRepu as LRepu,
)
from ._lagrangians.softmax import (
    LGhostmax as LGhostmax,
    LSoftmax as LSoftmax,
    LSoftmaxUnstable as LSoftmaxUnstable,
)
from ._lagrangians.sparse import LEntmax as LEntmax, LSparsemax as LSparsemax
from ._lagrangians.streaming import (
    NotStreamed as NotStreamed,
    StreamedLogSumExp as StreamedLogSumExp,
    StreamedLogSumReLU as StreamedLogSumReLU,
    StreamedReduction as StreamedReduction,
    StreamedSum as StreamedSum,
)
from ._neurons import NeuronLayer as NeuronLayer
from ._sharding import shard as shard, shard_states as shard_states
from ._synapses.attention import AttentionSynapse as AttentionSynapse
from ._synapses.base import Synapse as Synapse
from ._synapses.conv import ConvSynapse as ConvSynapse, PoolSynapse as PoolSynapse
from ._synapses.dense_memory import DenseMemory as DenseMemory
from ._synapses.linear import BiasSynapse as BiasSynapse, LinearSynapse as LinearSynapse
from ._synapses.random_features import RandomFeatureMemory as RandomFeatureMemory
from .functional import (
    lagr_entmax as lagr_entmax,
    lagr_exp as lagr_exp,
    lagr_ghostmax as lagr_ghostmax,
    lagr_identity as lagr_identity,
    lagr_layernorm as lagr_layernorm,
    lagr_log_sum_relu as lagr_log_sum_relu,
    lagr_normmax as lagr_normmax,
    lagr_relu as lagr_relu,
    lagr_repu as lagr_repu,
    lagr_rexp as lagr_rexp,
    lagr_sigmoid as lagr_sigmoid,
    lagr_softmax as lagr_softmax,
    lagr_softmax_unstable as lagr_softmax_unstable,
    lagr_sparsemax as lagr_sparsemax,
    lagr_spherical_norm as lagr_spherical_norm,
    lagr_tanh as lagr_tanh,
)


# The layers and models are built from the names above.
# isort: split
from . import models as models, nn as nn


__version__ = importlib.metadata.version("hamux_lagr")
