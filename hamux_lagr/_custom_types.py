"""Every type alias of the package, in one place."""

from collections.abc import Mapping, Sequence
from typing import TypeAlias

import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Bool, Float, Shaped


#: Anything `jnp.asarray` accepts: a Python scalar, a NumPy or JAX array (of any dtype:
#: integer and boolean states are promoted to the default float dtype).
StateLike: TypeAlias = Shaped[ArrayLike, "..."]
#: A (learnable) parameter: a Python number or a scalar/array that broadcasts with `x`.
ParamLike: TypeAlias = ArrayLike
#: The scalar value of a reduced Lagrangian or an energy.
Scalar: TypeAlias = Float[Array, ""]

#: Activations as synapses accept them: JAX or NumPy arrays.
AnyArray: TypeAlias = Array | np.ndarray
#: A size (a number of neurons, channels, heads): a Python or NumPy int.
SizeLike: TypeAlias = int | np.integer
#: A layer's shape: a size (a vector layer) or a sequence of sizes.
ShapeLike: TypeAlias = SizeLike | Sequence[SizeLike]
#: A 2-D window size or stride: a size (both axes) or a pair of sizes.
PairLike: TypeAlias = SizeLike | tuple[SizeLike, SizeLike]
#: A static real hyper-parameter: a Python or NumPy number.
RealLike: TypeAlias = float | int | np.floating | np.integer

#: One sample's states or activations: a dict from layer name to array.
States: TypeAlias = dict[str, Float[Array, "..."]]
#: States as the user may give them: any array-likes.
StatesLike: TypeAlias = Mapping[str, Shaped[ArrayLike, "..."]]
#: A connection: the names of the layers a synapse connects, and the synapse's name.
Connection: TypeAlias = tuple[tuple[str, ...], str]

#: `clamp` as users give it: layer name -> `True` (hold the layer) or a boolean mask.
Clamp: TypeAlias = Mapping[str, bool | Bool[Array, "..."] | np.ndarray]
#: `clamp` checked: layer name -> `None` (free), `True` (held) or a boolean mask.
Masks: TypeAlias = dict[str, None | bool | Array]
